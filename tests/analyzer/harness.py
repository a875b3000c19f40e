"""Black-box helpers for analyzer tests: a webhook receiver, analyzer and collector
processes started from TOML, and a client of the analyzer's API."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


class WebhookReceiver:
    """A local HTTP server that keeps every JSON body POSTed to it, in order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with receiver._lock:
                    receiver.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def changes(self, kind: str, incident: str) -> list[dict[str, Any]]:
        """The incidents listed under ``kind`` (new, resolved, ...) with id ``incident``,
        across every message received so far."""
        with self._lock:
            bodies = list(self.bodies)
        return [i for body in bodies for i in body.get(kind, []) if i["id"] == incident]

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        wait_until(predicate, timeout, what)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def analyzer_toml(
    *,
    listen: int,
    http: int,
    data_dir: Path,
    webhook: str,
    writeback: int | None = None,
    extra: str = "",
) -> str:
    """An [analyzer] section: default rules, one webhook notifier, quick grouping."""
    uri = f"tcp://127.0.0.1:{writeback}" if writeback else ""
    return f"""
[analyzer]
listen = ["tcp://127.0.0.1:{listen}"]
http = "http://127.0.0.1:{http}"
data_dir = "{data_dir}"
tick_interval = 0.25
stats_interval = 1.0
{extra}
[analyzer.grouping]
group_interval = 0.5

[analyzer.writeback]
uri = "{uri}"

[[analyzer.notifiers]]
type = "webhook"
url = "{webhook}"
max_backoff = 1.0
"""


class Process:
    """``python -m numbat <args>`` in a subprocess, its stderr in a file."""

    def __init__(self, args: list[str], workdir: Path, name: str) -> None:
        self.stderr_path = workdir / f"{name}.stderr"
        with self.stderr_path.open("ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "numbat", *args],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: text in self.stderr() or self.proc.poll() is not None,
            timeout,
            f"{text!r} in the log",
        )
        assert text in self.stderr(), self.stderr()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def api(port: int, path: str, body: Any = None, method: str | None = None) -> Any:
    """Call the analyzer's API on ``port``; the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1{path}", data=data, method=method
    )
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())
