"""The ``numbat`` command: the only place that turns exceptions into exit codes.

Exit codes: 0 success; 1 the work could not be done (an event was not delivered, a
daemon could not listen); 2 bad usage, bad input or a bad config file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

# First thing, before click and the rest load: a SIGHUP (a reload, a logrotate
# postrotate) that comes while a daemon command is still starting must not end it, as
# SIGHUP's default would. A daemon's own handler replaces this once it runs. (Nothing
# imports this module but the `numbat` command.)
signal.signal(signal.SIGHUP, signal.SIG_IGN)

import click  # noqa: E402

from numbat.errors import ConfigError, EventError, NumbatError, URIError  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterable

    from numbat.config import Config

EXIT_UNDELIVERED = 1
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
MAX_QUERY_SPAN_MS = 400 * 86_400_000  # numbat query --since


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="numbat-metrics", prog_name="numbat")
def cli() -> None:
    """numbat: metrics, monitoring and alerting."""


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
def check(config: Path) -> None:
    """Validate a numbat.toml file; exit 2 with the offending key named if it is wrong."""
    from numbat.collector.daemon import check_paths, check_plugins
    from numbat.config import from_dict, read

    raw = read(config)
    checked = from_dict(raw, source=str(config))
    if "collector" in raw:  # a file for the collector: what it checks before starting
        check_plugins(checked, str(config))
        check_paths(checked, str(config))
    if "analyzer" in raw:  # its rules built, its notifiers found, as at start
        from numbat.analyzer.daemon import check_analyzer

        check_analyzer(checked, str(config))
    click.echo(f"{config}: ok")


def _field(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx, param)
        fields[key] = _scalar(raw)
    return fields


def _scalar(raw: str) -> Any:
    """``3`` -> 3, ``2.5`` -> 2.5, ``true`` -> True; anything else stays a string."""
    try:
        val = json.loads(raw)
    except ValueError:
        return raw
    return val if isinstance(val, int | float | bool) else raw


def _number(ctx: click.Context, param: click.Parameter, raw: str | None) -> int | float | None:
    if raw is None:
        return None
    val = _scalar(raw)
    if isinstance(val, bool) or not isinstance(val, int | float):
        raise click.BadParameter(f"{raw!r} is not a number", ctx, param)
    return val


@cli.command()
@click.argument("name")
@click.argument("value", required=False, callback=_number)
@click.option(
    "-c",
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read defaults from this numbat.toml's [emitter] section.",
)
@click.option("--uri", envvar="NUMBAT_URI", help="Destination [default: tcp://127.0.0.1:3333].")
@click.option("--app", envvar="NUMBAT_APP", help="Name prefix [default: numbat].")
@click.option("--node", help="Instance name sent as the node field.")
@click.option(
    "--status",
    type=click.Choice(["ok", "okay", "warning", "critical", "unknown"], case_sensitive=False),
)
@click.option("--ttl", callback=_number, help="Milliseconds the event stays valid.")
@click.option("--description", help="Free text (at most 255 bytes are kept).")
@click.option(
    "--field",
    "fields",
    multiple=True,
    callback=_field,
    metavar="KEY=VALUE",
    help="Extra field; numbers and true/false are typed. Repeatable.",
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to try to deliver.")
def emit(
    name: str,
    value: float | None,
    config: Path | None,
    uri: str | None,
    app: str | None,
    node: str | None,
    status: str | None,
    ttl: float | None,
    description: str | None,
    fields: dict[str, Any],
    timeout: float,
) -> None:
    """Send one event, for shell scripts and cron jobs.

    Exits 1 if the event could not be delivered over a stream transport (tcp, unix,
    ws); over udp or statsd delivery cannot be known, so it exits 0 once sent.
    """
    from numbat import Emitter
    from numbat.config import Config, load
    from numbat.event import normalize

    settings = load(config).emitter if config else Config().emitter
    event: dict[str, Any] = {**fields, "name": name}
    for key, val in (
        ("value", value),
        ("status", status),
        ("ttl", ttl),
        ("description", description),
    ):
        if val is not None:
            event[key] = val
    normalize(event)  # report a bad event here, with its reason, rather than drop it
    emitter = Emitter(
        uri or settings.uri,
        app=settings.app if app is None else app,
        node=node or settings.node,
        max_retries=2,
        flush_at_exit=0,
    )
    emitter.metric(event)
    if not emitter.close(timeout):
        click.echo(f"numbat emit: could not deliver {name!r} to {emitter.shown_uri}", err=True)
        sys.exit(EXIT_UNDELIVERED)


_LOG_LEVEL = click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)


@cli.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The numbat.toml to run.",
)
@_LOG_LEVEL
def collector(config_path: Path, log_level: str) -> None:
    """Run the collector daemon: receive events, fan them out to the outputs.

    SIGTERM/SIGINT drain the outputs and exit 0; SIGHUP reopens log files and reloads
    CONFIG (a config that fails validation keeps the running one).
    """
    from numbat._loop import exit_now_if_stuck, run
    from numbat.collector.daemon import (
        Collector,
        OutputError,
        check_addresses,
        check_plugins,
        check_reload,
        run_worker,
    )
    from numbat.config import load

    config = load(config_path)
    check_plugins(config, str(config_path))
    _setup_logging(log_level, processes=config.collector.workers)
    _raise_fd_limit(config)
    workers = config.collector.workers
    if workers > 1:
        from numbat.server.supervisor import Supervisor, WorkerConfigError

        check_addresses(config)
        supervisor = Supervisor(
            functools.partial(run_worker, config_path),
            workers=workers,
            name="collector",
            check=functools.partial(check_reload, config_path, workers),
            stop_timeout=config.collector.drain_timeout + 10,
        )
        try:
            drained = supervisor.run()
        except WorkerConfigError as exc:  # the file's settings: say which file
            raise ConfigError(f"{config_path}: {exc}") from None
    else:
        try:
            drained = run(Collector(config).run(reload=lambda: load(config_path)))
        except OutputError as exc:  # the file's settings: say which file
            raise ConfigError(f"{config_path}: {exc}") from None
    if not drained:
        click.echo("numbat collector: stopped before every queued event was written", err=True)
    exit_now_if_stuck(0)


@cli.group(invoke_without_command=True)
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The numbat.toml to run (its [analyzer] section).",
)
@_LOG_LEVEL
@click.pass_context
def analyzer(ctx: click.Context, config_path: Path | None, log_level: str) -> None:
    """Run the analyzer daemon: rules, incidents, notifications, alerts written back.

    SIGTERM/SIGINT commit state and exit 0; SIGHUP reloads rules and notifiers from
    CONFIG (a config that fails validation keeps the running one). Subcommands act on
    a running analyzer or its rules.
    """
    if ctx.invoked_subcommand is not None:
        return
    if config_path is None:
        raise click.UsageError("give the config to run: numbat analyzer -c numbat.toml")
    from numbat._loop import exit_now_if_stuck, run
    from numbat.analyzer.daemon import Analyzer, check_analyzer
    from numbat.analyzer.state import StateError
    from numbat.config import load

    config = load(config_path)
    check_analyzer(config, str(config_path))
    _setup_logging(log_level)
    try:
        drained = run(Analyzer(config).run(reload=lambda: load(config_path), watch=config_path))
    except StateError as exc:  # the data_dir the file names cannot hold the state
        raise ConfigError(f"{config_path}: analyzer.data_dir: {exc}") from None
    if not drained:
        click.echo(
            "numbat analyzer: stopped with notifications or alert events unsent "
            "(kept in its state database for the next start)",
            err=True,
        )
    exit_now_if_stuck(0)


@analyzer.command()
@click.argument("key")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The analyzer's numbat.toml (for its API address and token).",
)
@click.option("--url", help="The analyzer's API [default: [analyzer] http].")
def forget(key: str, config_path: Path | None, url: str | None) -> None:
    """Decommission a heartbeat KEY (host.prefix, e.g. web-1.web): stop tracking it and
    resolve its open incident, on the running analyzer."""
    from numbat.analyzer.client import forget_key
    from numbat.config import Config, load

    config = load(config_path) if config_path else Config()
    found = forget_key(url or config.analyzer.http, key, token=config.analyzer.token)
    click.echo(f"{key}: {'forgotten' if found else 'not tracked (nothing to forget)'}")


@analyzer.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The numbat.toml whose rules to replay (and whose store to read).",
)
@click.option("--from", "start", required=True, help="ISO 8601, ms, or relative: -1h, -30m.")
@click.option("--to", "end", default="now", show_default=True, help="As --from.")
@click.option(
    "--store",
    "store_uri",
    help="sqlite:PATH or http://host:8086 [default: the config's sqlite or influxdb output].",
)
@click.option("--database", help="The InfluxDB database [default: the output's, or numbat].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.option(
    "--tick",
    type=click.FloatRange(min=0.001, max=86_400),
    help="Seconds of event time between ticks [default: tick_interval, coarser past a day].",
)
def replay(
    config_path: Path,
    start: str,
    end: str,
    store_uri: str | None,
    database: str | None,
    as_json: bool,
    tick: float | None,
) -> None:
    """Run the configured rules over stored events from --from to --to and print the
    incidents they would have raised, and when. Nothing is notified or saved."""
    import sqlite3

    from numbat._loop import run
    from numbat.analyzer.daemon import check_analyzer, configured_rules
    from numbat.analyzer.replay import (
        Simulation,
        heartbeat_rules,
        parse_time,
        replay,
        replay_tick,
        restore_numbers,
    )
    from numbat.config import load
    from numbat.event import now_ms

    config = load(config_path)
    check_analyzer(config, str(config_path))
    now = now_ms()
    try:
        low, high = parse_time(start, now), parse_time(end, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if high <= low:
        raise click.BadParameter("--to must be after --from")
    store = _replay_store(config, store_uri, database)
    rules = configured_rules(config.analyzer)
    from numbat.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore) and (beats := heartbeat_rules(rules)):
        # The embedded store keeps no heartbeats: these rules would see none and cry
        # wolf ("not seen at all") over data that was fine.
        for name in beats:
            del rules[name]
        click.echo(
            f"numbat: not replayed: {', '.join(beats)} (the embedded store keeps no "
            "heartbeats; replay them from InfluxDB with write_heartbeats = true)",
            err=True,
        )
    tick_ms = round(tick * 1000) if tick else replay_tick(config.analyzer, low, high)
    if tick is None and tick_ms > config.analyzer.tick_interval * 1000:
        click.echo(f"numbat: ticking every {tick_ms / 1000:g} s of event time (--tick)", err=True)
    simulation = Simulation(config.analyzer, rules, start=low, tick_ms=tick_ms)

    async def go() -> int:
        count = 0
        try:
            events = (restore_numbers(e) async for e in store.events(start=low, end=high))
            async for found in replay(simulation, events, high):
                count += 1
                click.echo(json.dumps(found.json()) if as_json else found.line())
        except sqlite3.Error as exc:  # not a numbat store, or a damaged one
            raise NumbatError(f"cannot read the store: {exc}") from None
        finally:
            await store.close()
        return count

    changes = run(go())
    still = len(simulation.open_incidents())
    click.echo(
        f"{simulation.events} events, {changes} incident changes, {still} open at the end",
        err=True,
    )


def _replay_store(config: Config, uri: str | None, database: str | None) -> Any:
    """The Store that --store names, else the config's first sqlite or influxdb output."""
    from numbat.config import InfluxDBOutputConfig, SQLiteOutputConfig
    from numbat.store.influx import InfluxStore
    from numbat.store.sqlite import SQLiteStore

    def sqlite(path: str, text_fields: Iterable[str] = ("description", "message")) -> Any:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such store file")
        return SQLiteStore(path, text_fields=text_fields)

    if uri is not None:
        if uri.startswith("sqlite:"):
            return sqlite(uri.removeprefix("sqlite:"))
        if uri.startswith(("http://", "https://")):
            return InfluxStore(uri, database or "numbat")
        raise click.BadParameter("--store: give sqlite:PATH or http://host:8086")
    for out in config.collector.outputs:
        if isinstance(out, SQLiteOutputConfig):
            return sqlite(out.path, out.text_fields)
        if isinstance(out, InfluxDBOutputConfig):
            return InfluxStore(
                out.urls[0],
                database or out.database,
                username=out.username,
                password=out.password,
                retention_policy=out.retention_policy,
                timeout=out.timeout,
                text_fields=out.text_fields,
            )
    raise click.UsageError(
        "no store to read: the config has no sqlite or influxdb output; give --store"
    )


_CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="numbat.toml (its store: the first sqlite or influxdb output).",
)
_STORE_OPTION = click.option(
    "--store",
    "store_uri",
    help="sqlite:PATH or http://host:8086 [default: the config's sqlite or influxdb output].",
)
_DATABASE_OPTION = click.option(
    "--database", help="The InfluxDB database [default: the output's, or numbat]."
)
QUERY_AGGREGATES = ("mean", "min", "max", "count", "last", "p50", "p90", "p99", "rate")


@cli.command()
@click.argument("name")
@click.option("--since", default="1h", show_default=True, help="How far back: 15m, 1h, 7d.")
@click.option("--by", help="One line (column) per value of this tag, e.g. host.")
@click.option(
    "--agg",
    "aggregate",
    type=click.Choice(QUERY_AGGREGATES),
    default="mean",
    show_default=True,
    help="Per bucket (rate: per second).",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    callback=_field,
    metavar="KEY=VALUE",
    help="Only series with this tag. Repeatable.",
)
@click.option(
    "--buckets",
    type=click.IntRange(1, 1000),
    default=30,
    show_default=True,
    help="How many buckets --since is cut into.",
)
@click.option("--spark", is_flag=True, help="A sparkline per line instead of a table.")
@click.option("--json", "as_json", is_flag=True, help="The buckets as JSON.")
@_CONFIG_OPTION
@_STORE_OPTION
@_DATABASE_OPTION
def query(
    name: str,
    since: str,
    by: str | None,
    aggregate: str,
    tags: dict[str, Any],
    buckets: int,
    spark: bool,
    as_json: bool,
    config_path: Path | None,
    store_uri: str | None,
    database: str | None,
) -> None:
    """Print the series NAME over the last --since, in buckets: a table (or sparklines),
    one column per value of the --by tag. Exit 1 when the store cannot be read."""
    from numbat.config import Config, load
    from numbat.event import now_ms

    try:
        span = _duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if span > MAX_QUERY_SPAN_MS:  # before 1970 otherwise, in one bucket of years
        raise click.BadParameter("at most 400 days", param_hint="--since")
    config = load(config_path) if config_path else Config()
    store = _replay_store(config, store_uri, database)
    end = now_ms()
    bucket = max(1, -(-span // buckets))
    start = end - bucket * buckets
    wanted = {key: str(val) for key, val in tags.items()}
    groups = _run_store(
        store, _query_groups(store, name, wanted, by, start, end, bucket, aggregate)
    )
    if as_json:
        click.echo(json.dumps({g: [list(b) for b in found] for g, found in groups.items()}))
        return
    from numbat import terminal

    if not groups:
        click.echo(f"{name}: no points in the last {since}", err=True)
        return
    title = f"{name} {aggregate} per {bucket / 1000:g} s, last {since}"
    render = terminal.spark_table if spark else terminal.series_table
    terminal.console().print(render(title, groups))


def _duration(text: str) -> int:
    from numbat.terminal import parse_duration

    return parse_duration(text)


async def _query_groups(
    store: Any,
    name: str,
    tags: dict[str, str],
    by: str | None,
    start: int,
    end: int,
    bucket: int,
    aggregate: str,
) -> dict[str, list[Any]]:
    """``{"all": buckets}``, or one bucket list per value of tag ``by`` (the store's
    query_by when it has one); empty when the measurement has no series."""
    series = [s for s in await store.series(name) if set(tags.items()) <= set(s.tags)]
    if not series:
        return {}
    args = {"start": start, "end": end, "bucket": bucket, "aggregate": aggregate}
    if by is None:
        return {"all": await store.query(name, tags, **args)}
    query_by = getattr(store, "query_by", None)
    if query_by is not None:
        return dict(await query_by(name, tags, by, **args))
    values = sorted({v for s in series for k, v in s.tags if k == by})
    return {v: await store.query(name, {**tags, by: v}, **args) for v in values}


def _run_store(store: Any, work: Any) -> Any:
    """Run ``work`` (a coroutine over ``store``), then close the store; a store that
    cannot be read is exit 1, an aggregate it does not know exit 2."""
    import sqlite3

    from numbat._loop import run

    async def go() -> Any:
        try:
            return await work
        except sqlite3.Error as exc:
            raise NumbatError(f"cannot read the store: {exc}") from None
        except ValueError as exc:  # an aggregate or range the store refuses
            raise click.UsageError(str(exc)) from None
        finally:
            await store.close()

    return run(go())


@cli.command()
@click.option("--url", help="The analyzer's API [default: [analyzer] http].")
@click.option("--json", "as_json", is_flag=True, help="The incidents as the API gives them.")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The analyzer's numbat.toml (for its API address and token).",
)
def incidents(url: str | None, as_json: bool, config_path: Path | None) -> None:
    """List the open incidents of the running analyzer, most severe first. Exit 1 when
    the analyzer cannot be reached."""
    from numbat import terminal
    from numbat.analyzer.client import call
    from numbat.config import Config, load
    from numbat.event import now_ms

    config = load(config_path) if config_path else Config()
    answer = call(
        url or config.analyzer.http, "GET", "/incidents?state=open", token=config.analyzer.token
    )
    found = answer.get("incidents", []) if isinstance(answer, dict) else []
    if as_json:
        click.echo(json.dumps(found))
        return
    terminal.console().print(terminal.incidents_table(found, now_ms()))


@cli.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the dashboard and provisioning files to.",
)
@_CONFIG_OPTION
@click.option(
    "--store",
    "store_uri",
    help="http://host:8086: the InfluxDB Grafana reads [default: the config's influxdb output].",
)
@_DATABASE_OPTION
@click.option(
    "--datasource",
    default="numbat",
    show_default=True,
    help="The Grafana datasource's name and uid.",
)
def grafana(
    out: Path,
    config_path: Path | None,
    store_uri: str | None,
    database: str | None,
    datasource: str,
) -> None:
    """Write a Grafana dashboard of every stored metric (OUT/numbat.json), a datasource
    provisioning file for the InfluxDB database (OUT/datasource.yaml, mode 0600: it holds
    the password) and a dashboard provider (OUT/dashboards.yaml)."""
    from numbat import grafana as gf
    from numbat.config import Config, load
    from numbat.event import now_ms

    config = load(config_path) if config_path else Config()
    source = _influx_source(config, store_uri, database)
    store = _replay_store(config, store_uri, database)
    hints = getattr(getattr(config, "dashboard", None), "hints", None) or {}
    metrics = _run_store(store, gf.metrics_of(store, now=now_ms(), overrides=hints))
    try:
        model = gf.dashboard_json(metrics, datasource=datasource)
        url, db, user, password = source
        provisioning = gf.datasource_yaml(
            url, db, name=datasource, username=user, password=password
        )
    except (ImportError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "numbat.json").write_text(json.dumps(model, indent=2) + "\n", encoding="utf-8")
    secret = out / "datasource.yaml"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(fd, 0o600)
        file.write(provisioning)
    provider = gf.provider_yaml(str(out.resolve()))
    (out / "dashboards.yaml").write_text(provider, encoding="utf-8")
    panels = sum(1 for p in model["panels"] if p.get("type") != "row")
    notes = len(model["annotations"]["list"])
    click.echo(f"{out / 'numbat.json'}: {panels} panels, {notes} annotation queries")
    click.echo(f"{secret}: datasource {datasource!r} (keep it private)")
    click.echo(f"{out / 'dashboards.yaml'}: dashboard provider")


def _influx_source(
    config: Config, uri: str | None, database: str | None
) -> tuple[str, str, str | None, str | None]:
    """(url, database, username, password) of the InfluxDB that Grafana reads: --store
    when it is one, else the config's first influxdb output."""
    from numbat.config import InfluxDBOutputConfig

    if uri is not None and uri.startswith(("http://", "https://")):
        return uri, database or "numbat", None, None
    for out in config.collector.outputs:
        if isinstance(out, InfluxDBOutputConfig):
            return out.urls[0], database or out.database, out.username, out.password
    raise click.UsageError(
        "Grafana reads InfluxDB: the config has no influxdb output; give --store http://host:8086"
    )


@analyzer.command("test")
@click.argument("rules_path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("tests_path", type=click.Path(dir_okay=False, path_type=Path))
def run_rule_tests(rules_path: Path, tests_path: Path) -> None:
    """Unit-test rules: run the events of TESTS (JSON lines) through the rules of RULES
    (a numbat.toml) and check the incidents expected open at given times. Exit 0 when
    all hold, 1 with a diff when some do not, 2 for a malformed file."""
    from numbat.analyzer.replay import format_time
    from numbat.analyzer.ruletest import TestFileError, load_tests, run_tests
    from numbat.config import from_dict, read

    raw = read(rules_path)
    section = raw.setdefault("analyzer", {})
    if isinstance(section, dict):
        section.setdefault("defaults", False)  # only the rules under test, unless asked
    config = from_dict(raw, source=str(rules_path))
    from numbat.analyzer.daemon import check_analyzer, configured_rules

    check_analyzer(config, str(rules_path))
    try:
        text = tests_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{tests_path}: cannot read: {exc}") from None
    try:
        tests = load_tests(text, str(tests_path))
    except TestFileError as exc:
        raise ConfigError(str(exc)) from None
    failures = run_tests(tests, config.analyzer, configured_rules(config.analyzer))
    for failure in failures:
        click.echo(failure.text(str(tests_path)))
    total = len(tests.expectations)
    if failures:
        click.echo(f"{len(failures)} of {total} expectations failed")
        sys.exit(EXIT_FAILED)
    last = format_time(tests.expectations[-1].at)
    click.echo(f"{tests_path}: {total} expectations hold (through {last})")


@cli.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The numbat.toml whose [dashboard] (and store) to use.",
)
@_LOG_LEVEL
def dashboard(config_path: Path, log_level: str) -> None:
    """Serve the dashboard: alert status (from the analyzer's API) and graphs (from the
    store) on one live page, at [dashboard] listen (http://127.0.0.1:3380)."""
    from numbat._loop import exit_now_if_stuck, run
    from numbat.config import load
    from numbat.dashboard.app import Dashboard
    from numbat.dashboard.sources import open_store
    from numbat.server.lifecycle import serve

    config = load(config_path)
    store = open_store(config, str(config_path))  # a missing store: exit 2 before binding
    _setup_logging(log_level)
    daemon = Dashboard(config, store=store, source=str(config_path))
    run(serve(daemon, ready=lambda: click.echo(f"numbat dashboard at {daemon.url}")))
    exit_now_if_stuck(0)


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("numbat-data"),
    show_default=True,
    help="Where the embedded store, the spool and the unix socket live.",
)
@click.option(
    "--influx",
    metavar="URL",
    envvar="NUMBAT_INFLUX",
    help="Store in InfluxDB at URL instead (http://host:8086); or set NUMBAT_INFLUX, which "
    "keeps a password out of the process list.",
)
@click.option("--database", default="numbat", show_default=True, help="InfluxDB database.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=3333, show_default=True, help="tcp and udp port.")
@click.option("--analyzer-port", default=3337, show_default=True, help="The analyzer's event port.")
@click.option("--api-port", default=3338, show_default=True, help="The analyzer's HTTP API port.")
@click.option("--dashboard-port", default=3380, show_default=True, help="The dashboard's port.")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A numbat.toml to start from (retention, more outputs, listeners); "
    "the options given here override it.",
)
@_LOG_LEVEL
@click.pass_context
def up(
    ctx: click.Context,
    data_dir: Path,
    influx: str | None,
    database: str,
    host: str,
    port: int,
    analyzer_port: int,
    api_port: int,
    dashboard_port: int,
    config_path: Path | None,
    log_level: str,
) -> None:
    """Run numbat on this machine: collector, storage, analyzer (default rules, alerts
    API), dashboard and self-monitoring, no setup."""
    from numbat._loop import exit_now_if_stuck, run
    from numbat.analyzer.daemon import Analyzer, check_analyzer
    from numbat.collector.daemon import Collector, OutputError, check_plugins
    from numbat.config import read
    from numbat.dashboard.app import Dashboard
    from numbat.server.lifecycle import Together, serve
    from numbat.up import UpSettings

    settings = UpSettings(
        data_dir=data_dir,
        host=host,
        port=port,
        influx=influx,
        database=database,
        analyzer_port=analyzer_port,
        api_port=api_port,
        dashboard_port=dashboard_port,
    )
    options = (
        "data_dir",
        "influx",
        "database",
        "host",
        "port",
        "analyzer_port",
        "api_port",
        "dashboard_port",
    )
    given = [
        name
        for name in options
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    ]
    if config_path is None:
        config = settings.config(given=given)
    else:
        config = settings.config(read(config_path), source=str(config_path), given=given)
        check_plugins(config, str(config_path))
    check_analyzer(config, str(config_path or "numbat up"))
    data_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(log_level)
    _raise_fd_limit(config)
    command = os.environ.get("NUMBAT_COMMAND", "numbat")
    banner = settings.banner(command, config)
    # The analyzer first: the collector's analyzer output feeds it, and at shutdown the
    # collector drains into it before it stops. The dashboard last: it reads the store
    # the collector's output has made by then.
    source = str(config_path or "numbat up")
    both = Together([Analyzer(config), Collector(config), Dashboard(config, source=source)])
    try:
        drained = run(serve(both, ready=lambda: click.echo(banner)))
    except OutputError as exc:  # the file's settings, or numbat up's own: say which
        raise ConfigError(f"{config_path or 'numbat up'}: {exc}") from None
    if not drained:
        click.echo("numbat up: stopped before every queued event was stored", err=True)
    exit_now_if_stuck(0)


FD_HEADROOM = 64
"""Open files a collector needs besides its connections: sockets it listens on, log and
spool files, output connections, the loop's own."""


def _raise_fd_limit(config: Config) -> None:
    """Open files: the soft limit up to the hard one (often 1024 -> 524288), so a daemon
    runs out of connections at its own caps, not at the kernel's default; a warning if
    even that is below what the listeners' ``max_connections`` allow together."""
    import logging
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    streams = [lc for lc in config.collector.listeners if lc.kind != "udp"]
    wanted = sum(lc.max_connections for lc in streams) + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and wanted > soft:
        logging.getLogger("numbat.cli").warning(
            "open-file limit %d is below the %d the listeners' max_connections allow "
            "(plus %d): past it new peers are refused (counted accept_failed); raise "
            "the limit (ulimit -n, LimitNOFILE=) or lower max_connections",
            soft,
            wanted,
            FD_HEADROOM,
        )


def _setup_logging(level: str, *, processes: int = 1) -> None:
    """Log lines to stderr; with several worker processes each line names its process
    (``numbat-collector-1``), or the supervisor's lines and N workers' look alike."""
    import logging

    who = " %(processName)s" if processes > 1 else ""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s{who} %(name)s: %(message)s",
    )


def main() -> None:
    """Console-script entry point."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (ConfigError, EventError, URIError) as exc:
        click.echo(f"numbat: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except NumbatError as exc:
        click.echo(f"numbat: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        os._exit(0)
