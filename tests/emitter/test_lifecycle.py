"""The emitter across the process's life: interpreter exit and fork()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import numbat
from numbat import Emitter
from numbat.emitter.tcp import TCPTransport
from tests.helpers import StreamReceiver

# The src directory this numbat was imported from, so a child process imports the same one.
SRC = str(Path(numbat.__file__).resolve().parent.parent)

# Exits without close(). The transport connects 300 ms late, so when the interpreter
# exits the event is still queued: only the at-exit flush can deliver it.
EXIT_WITHOUT_CLOSE = textwrap.dedent(
    """
    import sys, time
    from urllib.parse import urlsplit
    from numbat import Emitter
    from numbat.emitter.tcp import TCPTransport

    class SlowConnect(TCPTransport):
        def connect(self, timeout):
            time.sleep(0.3)
            super().connect(timeout)

    uri = sys.argv[1]
    em = Emitter(uri, app="exit", flush_at_exit=5.0, transport=SlowConnect(uri, urlsplit(uri)))
    em.metric("bye", value=7)
    """
)


def test_queued_event_is_flushed_at_interpreter_exit(tcp_receiver: StreamReceiver) -> None:
    """A process that exits without close() still delivers what it queued (atexit flush)."""
    path = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    child = subprocess.run(
        [sys.executable, "-c", EXIT_WITHOUT_CLOSE, tcp_receiver.uri],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert child.returncode == 0, child.stderr.decode()
    (line,) = tcp_receiver.wait_for(1, timeout=5)
    event = json.loads(line)
    assert (event["name"], event["value"]) == ("exit.bye", 7)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_child_after_fork_gets_a_fresh_sender(tcp_receiver: StreamReceiver) -> None:
    """After fork() the child's events are sent (a new thread and connection), the parent's too."""
    em = Emitter(tcp_receiver.uri, app="fork")
    em.metric("before", value=1)
    tcp_receiver.wait_for(1)  # the sender thread and its connection exist before the fork
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            em.metric("child", value=os.getpid())
            status = 0 if em.close(5) else 2
        finally:
            os._exit(status)
    em.metric("parent", value=3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child could not deliver its event"
    tcp_receiver.wait_for(3, timeout=5)
    events = {e["name"]: e["value"] for e in tcp_receiver.events()}
    assert events == {"fork.before": 1, "fork.child": pid, "fork.parent": 3}
    assert em.close(1)


class _GatedTCP(TCPTransport):
    """Refuses to connect until ``gate`` exists: events wait in the backlog till then."""

    gate: Path

    def connect(self, timeout: float) -> None:
        if not self.gate.exists():
            raise ConnectionRefusedError("gate closed")
        super().connect(timeout)


def test_events_queued_before_fork_are_sent_by_the_parent_only(
    tcp_receiver: StreamReceiver, tmp_path: Path
) -> None:
    """An event still queued at fork() is sent once (by the parent), not once per process."""
    uri = tcp_receiver.uri
    transport = _GatedTCP(uri, urlsplit(uri))
    transport.gate = tmp_path / "open"
    em = Emitter(uri, app="fork", transport=transport, backoff=lambda retries: 0.02)
    em.metric("before", value=1)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            em.metric("child", value=2)
            status = 0 if em.close(5) else 2
        finally:
            os._exit(status)
    transport.gate.touch()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child could not deliver its event"
    assert em.close(5)
    lines = tcp_receiver.wait_for(2, timeout=5)
    assert sorted(json.loads(line)["name"] for line in lines) == ["fork.before", "fork.child"]
