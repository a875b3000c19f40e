"""The real influxd of the store tests (one per session, a fresh database per test)."""

from tests.store.conftest import influx_db, influxd

__all__ = ["influx_db", "influxd"]
