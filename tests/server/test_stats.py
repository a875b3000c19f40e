"""Self-monitoring figures: deltas for counters, gauges as read, peers as tags."""

from __future__ import annotations

from numbat.server.stats import Stats


def _values(stats: Stats, metric: str) -> list[tuple[object, dict[str, object]]]:
    out: list[tuple[object, dict[str, object]]] = []
    for event in stats.report(interval=10.0):
        if event["name"] == f"{stats.prefix}.{metric}":
            tags: dict[str, object] = {
                k: v for k, v in event.items() if k not in ("name", "value", "time", "host")
            }
            out.append((event["value"], tags))
    return out


def test_counters_are_reported_as_deltas_since_the_previous_report() -> None:
    """A counter reports what happened since the last report, and nothing when idle."""
    stats = Stats("h", "numbat.test", clock=lambda: 1000)
    stats.count("received", 5, listener="tcp")
    assert _values(stats, "received") == [(5, {"listener": "tcp"})]
    stats.count("received", 2, listener="tcp")
    stats.count("received", 1, listener="tcp")
    assert _values(stats, "received") == [(3, {"listener": "tcp"})]
    assert _values(stats, "received") == []  # nothing new: no event
    assert stats.get("received", listener="tcp") == 8  # the running total stays


def test_the_prefix_names_every_figure_and_the_heartbeat() -> None:
    """Every event is named <prefix>.<metric>; the heartbeat's ttl spans two intervals."""
    stats = Stats("h", "numbat.analyzer", clock=lambda: 1000, tags={"worker": "1"})
    stats.count("rules.errors")
    events = stats.report(interval=4.0)
    assert [e["name"] for e in events] == [
        "numbat.analyzer.rules.errors",
        "numbat.analyzer.heartbeat",
    ]
    assert all(e["worker"] == "1" and e["host"] == "h" for e in events)
    assert events[-1]["ttl"] == 10_000


def test_per_server_figures_carry_the_server_as_a_tag_not_in_the_name() -> None:
    """gauges_by reports {server: {figure: value}} as one measurement per figure, tagged."""
    stats = Stats("h", "numbat.collector", clock=lambda: 1000)
    servers = {"127.0.0.1:8086": {"written": 7.0}, "10.0.0.2:8086": {"written": 3.0}}
    stats.gauges_by("output.", "server", lambda: servers, output="influxdb")
    found = sorted(
        (v, t["server"]) for v, t in _values(stats, "output.written") if t["output"] == "influxdb"
    )
    assert found == [(3.0, "10.0.0.2:8086"), (7.0, "127.0.0.1:8086")]
    names = {e["name"] for e in stats.report(interval=1.0)}
    assert not any("8086" in str(name) for name in names)
    stats.forget(output="influxdb")
    assert _values(stats, "output.written") == []


def test_a_followed_counter_reports_its_growth_and_a_last_reading_when_forgotten() -> None:
    """follow() turns an outside running total (the kernel's drops) into deltas: what it
    held at the start is not counted, an unreadable moment reports nothing, a reset
    counts afresh, and forget() folds in a last reading before it stops."""
    stats = Stats("h", "numbat.collector", clock=lambda: 1000)
    total: int | None = 7  # already there when followed: not ours to report
    stats.follow("kernel_drops", lambda: total, listener="udp")
    assert _values(stats, "kernel_drops") == []
    total = 10
    assert _values(stats, "kernel_drops") == [(3, {"listener": "udp"})]
    total = None  # e.g. /proc could not be read this time
    assert _values(stats, "kernel_drops") == []
    total = 12
    assert _values(stats, "kernel_drops") == [(2, {"listener": "udp"})]
    total = 4  # went down: a new socket; counted from there
    assert _values(stats, "kernel_drops") == []
    total = 5
    stats.forget(listener="udp")
    total = 50  # no longer followed
    assert _values(stats, "kernel_drops") == [(1, {"listener": "udp"})]
    assert _values(stats, "kernel_drops") == []
