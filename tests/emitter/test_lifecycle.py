"""The emitter across the process's life: interpreter exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numbat
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
