"""The Dispatcher: routing, one queue and worker per notifier, retries, drops, the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from numbat.analyzer.model import Notification
from numbat.analyzer.notifiers import Dispatcher, Notifier, NotifyError, notifier_class
from numbat.analyzer.notifiers.log import LogNotifier
from numbat.config.notifiers import NotifierConfig
from numbat.server.stats import Stats
from tests.analyzer.notifiers import fakes
from tests.analyzer.notifiers.helpers import FakeLog, incident, notification, options, recorder

SCRIPTED = "tests.analyzer.notifiers.fakes:Scripted"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    fakes.reset()
    yield
    fakes.reset()


def scripted(name: str, **extra: Any) -> NotifierConfig:
    return options(type=SCRIPTED, name=name, **extra)


class Sleeps:
    """An injected sleep that records delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def stats() -> Stats:
    return Stats(host="h", prefix="numbat.analyzer")


def run_rows(dispatcher: Dispatcher, log: FakeLog, label: str, count: int = 1) -> list[int]:
    rows = []
    for _ in range(count):
        n = notification(new=[incident()])
        row = log.add(label, n)
        dispatcher.enqueue([(row, label, n)])
        rows.append(row)
    return rows


def test_notifier_class_takes_a_registered_name_or_an_import_path() -> None:
    """notifier_class finds built-ins by name and others by path; a non-notifier is refused."""
    assert notifier_class("log") is LogNotifier
    assert notifier_class("console") is LogNotifier
    assert notifier_class(SCRIPTED) is fakes.Scripted
    with pytest.raises(TypeError, match=r"not a numbat\.analyzer\.notifiers\.Notifier"):
        notifier_class("collections:OrderedDict")


def test_route_gives_each_notifier_only_the_incidents_it_takes() -> None:
    """match and min_status restrict each notifier's copy; one left with no news gets none."""
    pager = scripted("pager", min_status="critical", match={"name": "web.*"})
    chat = scripted("chat", min_status="warning", match={"tags": {"team": "db"}})
    dispatcher = Dispatcher([pager, chat], FakeLog(), stats())
    web = incident("web.heartbeat", status="critical")
    db = incident("db.disk", status="warning", tags={"team": "db"})
    routed = dict(dispatcher.route(notification(new=[web, db])))
    assert [i.id for i in routed["pager"].new] == [web.id]
    assert [i.id for i in routed["chat"].new] == [db.id]
    assert dispatcher.route(notification(new=[incident("db.load", status="unknown")])) == []


def test_route_sends_a_resolve_where_its_problem_went() -> None:
    """A resolved incident is routed by the status last notified, not by its ok."""
    pager = scripted("pager", min_status="critical")
    dispatcher = Dispatcher([pager], FakeLog(), stats())
    was_critical = incident(status="ok", notified="critical", resolved_at=5)
    was_warning = incident("db.disk", status="ok", notified="warning", resolved_at=5)
    never_told = incident("db.load", status="ok", notified=None, resolved_at=5)
    routed = dispatcher.route(notification(resolved=[was_critical, was_warning, never_told]))
    assert [(label, [i.id for i in n.resolved]) for label, n in routed] == [
        ("pager", [was_critical.id])
    ]


def test_route_counts_still_firing_as_news_only_in_a_repeat() -> None:
    """Still-firing incidents alone are sent only when the notification is a repeat."""
    dispatcher = Dispatcher([scripted("a")], FakeLog(), stats())
    assert dispatcher.route(notification(still_firing=[incident()])) == []
    routed = dispatcher.route(notification(still_firing=[incident()], repeat=True))
    assert [label for label, _ in routed] == ["a"]


def test_a_sent_notification_is_counted_and_marked_sent() -> None:
    """A successful send marks the log row sent and counts outcome=sent."""
    counts = stats()

    async def main() -> None:
        log = FakeLog()
        dispatcher = Dispatcher([scripted("a")], log, counts)
        await dispatcher.start()
        rows = run_rows(dispatcher, log, "a", 2)
        await log.wait_done(rows)
        await dispatcher.close(1.0)
        assert [log.done[r][0] for r in rows] == ["sent", "sent"]

    asyncio.run(main())
    assert counts.get("notifications", notifier="a", outcome="sent") == 2
    assert len(fakes.SENT["a"]) == 2


def test_failed_attempts_are_retried_with_capped_backoff() -> None:
    """Retryable failures are retried after backoff (capped at max_backoff), then sent."""
    counts, sleeps = stats(), Sleeps()
    fakes.SCRIPTS["a"] = ["fail", "crash", "ok"]

    async def main() -> None:
        log = FakeLog()
        dispatcher = Dispatcher(
            [scripted("a", max_backoff=2.5)], log, counts, backoff=lambda n: n * 1.0, sleep=sleeps
        )
        await dispatcher.start()
        rows = run_rows(dispatcher, log, "a")
        await log.wait_done(rows)
        await dispatcher.close(1.0)
        assert log.done[rows[0]][0] == "sent"

    asyncio.run(main())
    assert sleeps.delays == [1.0, 2.0]
    assert counts.get("notifications", notifier="a", outcome="retried") == 2
    assert counts.get("notifications", notifier="a", outcome="sent") == 1


def test_default_backoff_is_full_jitter_capped_by_max_backoff() -> None:
    """Without an injected backoff, each delay is within [0, max_backoff]."""
    sleeps = Sleeps()
    fakes.SCRIPTS["a"] = ["fail"] * 8 + ["ok"]

    async def main() -> None:
        log = FakeLog()
        dispatcher = Dispatcher([scripted("a", max_backoff=0.5)], log, stats(), sleep=sleeps)
        await dispatcher.start()
        await log.wait_done(run_rows(dispatcher, log, "a"))
        await dispatcher.close(1.0)

    asyncio.run(main())
    assert len(sleeps.delays) == 8
    assert all(0 <= d <= 0.5 for d in sleeps.delays)
    assert max(sleeps.delays) > 0


def test_a_notification_failing_max_attempts_times_is_dropped_and_counted() -> None:
    """After max_attempts failures the row is marked dropped (reason=failed)."""
    counts = stats()
    fakes.SCRIPTS["a"] = ["fail"]

    async def main() -> None:
        log = FakeLog()
        dispatcher = Dispatcher([scripted("a", max_attempts=3)], log, counts, sleep=Sleeps())
        await dispatcher.start()
        rows = run_rows(dispatcher, log, "a")
        await log.wait_done(rows)
        await dispatcher.close(1.0)
        assert log.done[rows[0]] == ("dropped", "server said 503")

    asyncio.run(main())
    assert fakes.ATTEMPTS["a"] == 3
    assert counts.get("dropped", notifier="a", reason="failed") == 1
    assert counts.get("notifications", notifier="a", outcome="failed") == 1
    assert counts.get("notifications", notifier="a", outcome="retried") == 2


def test_a_rejected_notification_is_not_retried() -> None:
    """A non-retryable error drops the notification at once (reason=rejected)."""
    counts = stats()
    fakes.SCRIPTS["a"] = ["reject"]

    async def main() -> None:
        log = FakeLog()
        dispatcher = Dispatcher([scripted("a")], log, counts, sleep=Sleeps())
        await dispatcher.start()
        rows = run_rows(dispatcher, log, "a")
        await log.wait_done(rows)
        await dispatcher.close(1.0)
        assert log.done[rows[0]][0] == "dropped"

    asyncio.run(main())
    assert fakes.ATTEMPTS["a"] == 1
    assert counts.get("dropped", notifier="a", reason="rejected") == 1


def test_an_attempt_that_takes_too_long_is_timed_out_and_retried() -> None:
    """An attempt past timeout fails (retryable); the next attempt goes through."""
    counts = stats()
    fakes.SCRIPTS["a"] = ["hang", "ok"]

    async def main() -> None:
        log = FakeLog()
        dispatcher = Dispatcher([scripted("a", timeout=0.05)], log, counts, sleep=Sleeps())
        await dispatcher.start()
        rows = run_rows(dispatcher, log, "a")
        await log.wait_done(rows)
        await dispatcher.close(1.0)
        assert log.done[rows[0]][0] == "sent"

    asyncio.run(main())
    assert counts.get("notifications", notifier="a", outcome="retried") == 1


def test_a_full_queue_drops_its_oldest_notification() -> None:
    """Past queue_size the oldest waiting notification is dropped, marked and counted."""
    counts = stats()
    fakes.GATES["a"] = asyncio.Event()

    async def main() -> None:
        log = FakeLog()
        dispatcher = Dispatcher([scripted("a", queue_size=2)], log, counts)
        await dispatcher.start()
        first = run_rows(dispatcher, log, "a")
        while fakes.ATTEMPTS.get("a") != 1:  # the worker holds the first, in flight
            await asyncio.sleep(0.001)
        rows = run_rows(dispatcher, log, "a", 3)  # the queue holds 2: the oldest goes
        await log.wait_done(rows[:1])
        assert log.done[rows[0]] == ("dropped", "queue full")
        fakes.GATES["a"].set()
        await log.wait_done(first + rows)
        await dispatcher.close(1.0)
        assert [log.done[r][0] for r in first + rows] == ["sent", "dropped", "sent", "sent"]

    asyncio.run(main())
    assert counts.get("dropped", notifier="a", reason="queue_full") == 1


def test_enqueue_never_blocks_and_a_stuck_notifier_does_not_delay_another() -> None:
    """One notifier stuck on a send leaves another's notifications flowing promptly."""

    async def main() -> None:
        fakes.SCRIPTS["stuck"] = ["hang"]
        log = FakeLog()
        configs = [scripted("stuck", timeout=60), scripted("fine")]
        dispatcher = Dispatcher(configs, log, stats())
        await dispatcher.start()
        run_rows(dispatcher, log, "stuck", 5)
        rows = run_rows(dispatcher, log, "fine", 5)
        await log.wait_done(rows, timeout=2.0)
        await dispatcher.close(0.0)

    asyncio.run(main())
    assert len(fakes.SENT["fine"]) == 5


def test_a_hanging_webhook_server_does_not_delay_another_notifier() -> None:
    """Two webhooks: one server never answers, the other gets its message promptly."""

    async def main() -> None:
        async with recorder(hang=True) as slow, recorder() as fast:
            log = FakeLog()
            configs = [
                options(type="webhook", name="slow", url=slow.url + "/hook", timeout=30),
                options(type="webhook", name="fast", url=fast.url + "/hook"),
            ]
            dispatcher = Dispatcher(configs, log, stats())
            await dispatcher.start()
            for label in ("slow", "fast"):
                n = notification(new=[incident()])
                dispatcher.enqueue([(log.add(label, n), label, n)])
            await slow.wait_for(1)
            async with asyncio.timeout(2.0):
                await fast.wait_for(1)
            await dispatcher.close(0.0)

    asyncio.run(main())


def test_start_sends_the_rows_left_pending_by_a_previous_run() -> None:
    """Rows pending in the log at start are queued and sent, oldest first."""

    async def main() -> None:
        log = FakeLog()
        old = [log.add("a", notification(new=[incident()])) for _ in range(3)]
        log.add("gone", notification(new=[incident()]))
        dispatcher = Dispatcher([scripted("a")], log, stats())
        await dispatcher.start()
        await log.wait_done(old)
        await dispatcher.close(1.0)
        assert [n.id for n in fakes.SENT["a"]] == [log.rows[r][1].id for r in old]

    asyncio.run(main())


def test_close_leaves_unsent_rows_pending() -> None:
    """At close a send in flight gets its timeout; what is queued stays pending."""

    async def main() -> None:
        fakes.GATES["a"] = asyncio.Event()
        log = FakeLog()
        dispatcher = Dispatcher([scripted("a")], log, stats())
        await dispatcher.start()
        rows = run_rows(dispatcher, log, "a", 3)
        while fakes.ATTEMPTS.get("a") != 1:
            await asyncio.sleep(0.001)
        asyncio.get_running_loop().call_later(0.05, fakes.GATES["a"].set)
        await dispatcher.close(5.0)
        assert log.done == {rows[0]: ("sent", "")}
        assert [r for r, _ in await log.pending_notifications("a")] == rows[1:]

    asyncio.run(main())
    assert fakes.CLOSED == ["a"]


def test_close_does_not_wait_past_its_timeout_for_a_stuck_send() -> None:
    """A send still stuck after close's timeout is cancelled and stays pending."""

    async def main() -> None:
        fakes.SCRIPTS["a"] = ["hang"]
        log = FakeLog()
        dispatcher = Dispatcher([scripted("a", timeout=60)], log, stats())
        await dispatcher.start()
        rows = run_rows(dispatcher, log, "a")
        while fakes.ATTEMPTS.get("a") != 1:
            await asyncio.sleep(0.001)
        async with asyncio.timeout(2.0):
            await dispatcher.close(0.1)
        assert [r for r, _ in await log.pending_notifications("a")] == rows

    asyncio.run(main())


def test_reload_rebuilds_changed_notifiers_keeps_queues_and_drops_removed_ones() -> None:
    """reload: a changed notifier is rebuilt with its queue, a removed one's rows are dropped."""
    counts = stats()

    async def main() -> None:
        fakes.GATES["a"] = asyncio.Event()
        fakes.GATES["b"] = asyncio.Event()
        log = FakeLog()
        dispatcher = Dispatcher([scripted("a"), scripted("b")], log, counts)
        await dispatcher.start()
        a_rows = run_rows(dispatcher, log, "a", 2)
        b_rows = run_rows(dispatcher, log, "b", 2)
        while fakes.ATTEMPTS.get("a") != 1:
            await asyncio.sleep(0.001)
        fakes.GATES.clear()  # the rebuilt one sends at once
        await dispatcher.reload([scripted("a", timeout=5.0), scripted("c")])
        assert "a" in fakes.CLOSED and "b" in fakes.CLOSED
        await log.wait_done(a_rows + b_rows)
        c_rows = run_rows(dispatcher, log, "c")
        await log.wait_done(c_rows)
        await dispatcher.close(1.0)
        assert [log.done[r][0] for r in a_rows] == ["sent", "sent"]
        assert [log.done[r][0] for r in b_rows] == ["dropped", "dropped"]
        assert dispatcher.route(notification(new=[incident()]))[0][0] == "a"

    asyncio.run(main())
    assert counts.get("dropped", notifier="b", reason="removed") == 2
    assert len(fakes.SENT["a"]) == 2


def test_reload_with_a_notifier_that_cannot_be_built_changes_nothing() -> None:
    """A reload whose new notifier fails to build raises before touching the old ones."""

    async def main() -> None:
        log = FakeLog()
        dispatcher = Dispatcher([scripted("a")], log, stats())
        await dispatcher.start()
        bad = options(type="tests.analyzer.notifiers.fakes:Scripted", name="x")
        bad.type = "collections:OrderedDict"
        with pytest.raises(TypeError):
            await dispatcher.reload([scripted("b"), bad])
        await log.wait_done(run_rows(dispatcher, log, "a"))
        await dispatcher.close(1.0)

    asyncio.run(main())
    assert fakes.CLOSED == ["a"]


def test_queue_depth_is_reported_per_notifier() -> None:
    """notifier.queued is a gauge per notifier, reported with the stats."""
    counts = stats()

    async def main() -> None:
        fakes.GATES["a"] = asyncio.Event()
        log = FakeLog()
        dispatcher = Dispatcher([scripted("a")], log, counts)
        await dispatcher.start()
        run_rows(dispatcher, log, "a", 3)
        while fakes.ATTEMPTS.get("a") != 1:
            await asyncio.sleep(0.001)
        queued = [e for e in counts.report(10.0) if e["name"] == "numbat.analyzer.notifier.queued"]
        assert [(e["notifier"], e["value"]) for e in queued] == [("a", 2)]
        await dispatcher.close(0.0)

    asyncio.run(main())


class Leaky(Notifier):
    """Raises errors that quote its secret, as a careless library might."""

    async def send(self, notification: Notification) -> None:
        raise NotifyError("refused key s3cr3t-key")

    def redact(self, text: str) -> str:
        return text.replace("s3cr3t-key", "***")


def test_errors_pass_through_the_notifiers_redaction_before_logs_and_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a notifier's redact masks never reaches a log line or the notification log."""

    async def main() -> FakeLog:
        log = FakeLog()
        config = options(type=f"{__name__}:Leaky", name="leaky", max_attempts=2)
        dispatcher = Dispatcher([config], log, stats(), sleep=Sleeps())
        await dispatcher.start()
        await log.wait_done(run_rows(dispatcher, log, "leaky"))
        await dispatcher.close(1.0)
        return log

    with caplog.at_level(logging.DEBUG):
        log = asyncio.run(main())
    assert "s3cr3t-key" not in caplog.text
    assert "refused key ***" in caplog.text
    assert all("s3cr3t" not in detail for _, detail in log.done.values())


def test_every_registered_kind_is_a_notifier_taking_its_registered_options() -> None:
    """Each NOTIFIERS entry imports to a Notifier subclass whose Options is the entry's."""
    from numbat.config.notifiers import NOTIFIERS

    for kind, plugin in NOTIFIERS.items():
        cls = notifier_class(kind)
        assert cls.Options is plugin.options, kind


class SlowLog(FakeLog):
    """A log whose pending_notifications waits for ``release`` (a slow state thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def pending_notifications(self, notifier: str) -> list[tuple[int, Notification]]:
        self.reading.set()
        await self.release.wait()
        return await super().pending_notifications(notifier)


def test_a_row_enqueued_while_start_reads_the_log_is_sent_once() -> None:
    """A row both pending in the log and enqueued during start() is sent once, in order."""

    async def main() -> None:
        log = SlowLog()
        old = log.add("a", notification(new=[incident()]))
        dispatcher = Dispatcher([scripted("a")], log, stats())
        starting = asyncio.create_task(dispatcher.start())
        await log.reading.wait()
        new = notification(new=[incident()])
        row = log.add("a", new)  # committed, then handed over, while start() reads
        dispatcher.enqueue([(row, "a", new)])
        log.release.set()
        await starting
        await log.wait_done([old, row])
        await dispatcher.close(1.0)
        assert [n.id for n in fakes.SENT["a"]] == [log.rows[old][1].id, new.id]

    asyncio.run(main())


def test_a_notifier_told_of_a_critical_hears_it_lowered_and_resolved() -> None:
    """Through the real incident manager: a critical-only pager gets the critical, the
    lowering to warning and the resolve; an incident that only ever was a warning never
    reaches it."""
    from tests.analyzer.incidents_helpers import Clock, alert, manager, step

    clock = Clock()
    m = manager(clock, group_interval=1.0)
    dispatcher = Dispatcher([scripted("pager", min_status="critical")], FakeLog(), stats())
    heard: list[tuple[str, str, str]] = []
    for status in ("critical", "warning", "ok"):
        effects = step(
            m, clock, alert("disk", status), alert("load", status.replace("critical", "warning"))
        )
        for _, sent in (r for n in effects.notifications for r in dispatcher.route(n)):
            heard += [(kind, i.id, i.status) for kind, i in sent.changes()]
        clock.advance(2)
    assert heard == [
        ("new", "h1.disk", "critical"),
        ("changed", "h1.disk", "warning"),
        ("resolved", "h1.disk", "ok"),
    ]


def test_a_receiver_down_for_long_still_gets_the_page_until_give_up_after() -> None:
    """With the defaults a notification is retried far past ten attempts (a receiver
    down for an hour still gets it); only give_up_after (from the first attempt) ends it,
    counted reason=failed."""
    counts = stats()
    now = [1_700_000_000_000]

    class Clocked(Sleeps):
        async def __call__(self, delay: float) -> None:
            now[0] += int(delay * 1000)
            await super().__call__(delay)

    async def run(script: list[str], give_up_after: float) -> str:
        fakes.SCRIPTS["a"] = script
        log = FakeLog()
        dispatcher = Dispatcher(
            [scripted("a", give_up_after=give_up_after)],
            log,
            counts,
            sleep=Clocked(),
            clock=lambda: now[0],
        )
        await dispatcher.start()
        rows = run_rows(dispatcher, log, "a")
        await log.wait_done(rows)
        await dispatcher.close(1.0)
        return log.done[rows[0]][0]

    # Down for 40 attempts (about an hour of backoff capped at 300 s): then it goes.
    assert asyncio.run(run(["fail"] * 40 + ["ok"], 86_400)) == "sent"
    assert fakes.ATTEMPTS["a"] == 41
    fakes.reset()
    assert asyncio.run(run(["fail"], 3_600)) == "dropped"
    assert counts.get("dropped", notifier="a", reason="failed") == 1
