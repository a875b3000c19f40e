"""The InfluxDB pieces the Grafana Foundation SDK lacks: a raw InfluxQL target and an
InfluxDB annotation query, as SDK builders (imported only by numbat.grafana when it
builds a dashboard, so the SDK stays out of everything else)."""

from __future__ import annotations

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants
from grafana_foundation_sdk.models import dashboard as model


class InfluxQuery(variants.Dataquery):
    """A raw InfluxQL query, as Grafana's InfluxDB plugin stores one in a panel."""

    def __init__(self, ref_id: str, query: str, datasource: model.DataSourceRef) -> None:
        self.ref_id, self.query, self.datasource = ref_id, query, datasource

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": self.datasource,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": "time_series",
        }


class InfluxQueryBuilder(cogbuilder.Builder[variants.Dataquery]):
    """Builds an :class:`InfluxQuery` (the SDK has no InfluxDB query builder)."""

    def __init__(self, ref_id: str, query: str, datasource: model.DataSourceRef) -> None:
        self._internal = InfluxQuery(ref_id, query, datasource)

    def build(self) -> variants.Dataquery:
        return self._internal


class InfluxAnnotation(model.AnnotationQuery):
    """The SDK's AnnotationQuery plus the InfluxDB plugin's keys: ``query`` (InfluxQL)
    and the columns Grafana reads the text, tags and title from."""

    def __init__(
        self,
        *,
        query: str,
        text_column: str,
        tags_column: str,
        title_column: str,
        **base: object,
    ) -> None:
        super().__init__(**base)  # type: ignore[arg-type]
        self.query, self.text_column = query, text_column
        self.tags_column, self.title_column = tags_column, title_column

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload.update(
            query=self.query,
            rawQuery=True,
            textColumn=self.text_column,
            tagsColumn=self.tags_column,
            titleColumn=self.title_column,
        )
        return payload


class InfluxAnnotationBuilder(cogbuilder.Builder[model.AnnotationQuery]):
    """Builds an :class:`InfluxAnnotation`."""

    def __init__(self, annotation: InfluxAnnotation) -> None:
        self._internal = annotation

    def build(self) -> model.AnnotationQuery:
        return self._internal
