"""A real ``numbat up`` (collector, analyzer, store, dashboard) on free ports, and
Debian's chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.helpers import wait_until
from tests.store.conftest import InfluxServer, free_port, influxd  # noqa: F401

CHROMIUM = "/usr/bin/chromium"
SRC = Path(__file__).resolve().parents[2] / "src"


class Up:
    """One running ``numbat up``: send events to it, read its dashboard's JSON."""

    def __init__(self, data: Path, extra: list[str] | None = None) -> None:
        self.port, self.analyzer, self.api, self.dash = (free_port() for _ in range(4))
        self.log = data.parent / f"{data.name}.log"
        args = [sys.executable, "-m", "numbat", "up", "--data-dir", str(data)]
        for flag, port in (
            ("--port", self.port),
            ("--analyzer-port", self.analyzer),
            ("--api-port", self.api),
            ("--dashboard-port", self.dash),
        ):
            args += [flag, str(port)]
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [*args, *(extra or [])], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        wait_until(
            lambda: "numbat is up." in self.log.read_text() or self.proc.poll() is not None,
            30.0,
            "numbat up's banner",
        )
        assert self.proc.poll() is None, self.log.read_text()
        self.url = f"http://127.0.0.1:{self.dash}/"

    def send(self, *events: dict[str, Any]) -> None:
        """Events as NDJSON over TCP to the collector (no app prefix added)."""
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.sendall(b"".join(json.dumps(e).encode() + b"\n" for e in events))

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=10) as resp:
            return json.loads(resp.read())

    def has_series(self, measurement: str) -> bool:
        return any(s["measurement"] == measurement for s in self.get("api/series")["series"])

    def wait_series(self, *measurements: str) -> None:
        def stored() -> bool:
            return all(self.has_series(name) for name in measurements)

        wait_until(stored, 30.0, f"{', '.join(measurements)} in the store")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """``numbat up`` on the embedded store, shared by a module's tests (each its own names)."""
    running = Up(tmp_path_factory.mktemp("up") / "data")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless. Module-scoped: while Playwright's sync API runs, the
    main thread counts as inside an event loop, so asyncio.run() in later tests would
    fail; it ends with the module that used it."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


class Watched:
    """A page with what it did that it should not: dialogs opened, console errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on(
            "console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None
        )

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, url: str) -> Page:
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready]")
        return self.page


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    yield Watched(context.new_page())
    context.close()


class Standalone:
    """``numbat dashboard -c`` alone, on a free port, over an embedded store holding one
    point; ``toml`` adds [dashboard] keys. Stop it with :meth:`kill` (or a signal)."""

    def __init__(self, tmp_path: Path, toml: str = "") -> None:
        import asyncio
        import threading

        from numbat.store.sqlite import SQLiteStore

        async def make() -> None:
            store = SQLiteStore(tmp_path / "n.db")
            await store.write([{"name": "a.b", "value": 1.0, "time": now_ms()}])
            await store.close()

        # In a thread of its own: Playwright's sync API may hold this thread's loop.
        maker = threading.Thread(target=lambda: asyncio.run(make()))
        maker.start()
        maker.join(30)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        conf = tmp_path / "numbat.toml"
        conf.write_text(
            f'[dashboard]\nlisten = "http://127.0.0.1:{self.port}"\n'
            f'store = "sqlite:{tmp_path / "n.db"}"\n{toml}'
        )
        self.log = tmp_path / "out.txt"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "numbat", "dashboard", "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: "numbat dashboard at" in self.log.read_text() or self.proc.poll() is not None,
            30.0,
            "the dashboard",
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
