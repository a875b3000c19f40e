"""The dashboard's server without a browser: its config, its refusals, its guards."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from numbat.config import from_dict
from numbat.dashboard.app import Dashboard, DashboardError
from numbat.errors import ConfigError
from numbat.store.sqlite import SQLiteStore
from tests.store.conftest import free_port


def test_config_defaults_and_errors_name_the_key() -> None:
    """[dashboard] defaults to loopback:3380; a bad value is refused naming its key."""
    cfg = from_dict({})
    assert (cfg.dashboard.listen, cfg.dashboard.analyzer) == (
        "http://127.0.0.1:3380",
        "http://127.0.0.1:3338",
    )
    bad = {
        "listen": ("http://0.0.0.0:3380", "token: required when listen is not on"),
        "hints": ({"web.*": "pie"}, "hints.web.*: expected one of counter"),
        "store": ("ftp://x", "store: expected sqlite:PATH or http://host:8086"),
        "refresh": (0.0, "refresh: must be 0.2 to 3600 seconds"),
        "analyzer": ("tcp://h:1", "analyzer: expected http://host:port"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(ConfigError) as err:
            from_dict({"dashboard": {key: value}})
        assert message in str(err.value), (key, str(err.value))
    with pytest.raises(ConfigError, match="give no user:password@") as err:
        from_dict({"dashboard": {"analyzer": "http://admin:pw@127.0.0.1:1"}})
    assert "pw" not in str(err.value)
    with pytest.raises(ConfigError, match=r"dashboard\.lisen: unknown key"):
        from_dict({"dashboard": {"lisen": "http://127.0.0.1:1"}})
    beyond = from_dict({"dashboard": {"listen": "http://0.0.0.0:3380", "token": "t"}})
    assert beyond.dashboard.token == "t"


def test_it_refuses_to_start_without_its_front_end_files(tmp_path: Path) -> None:
    """With uPlot not built into static/vendor, the dashboard says what to run."""
    (tmp_path / "index.html").write_text("")
    with pytest.raises(DashboardError, match="dev/dashboard-assets"):
        Dashboard(from_dict({}), static=tmp_path)


def test_numbat_dashboard_without_a_store_exits_2(tmp_path: Path) -> None:
    """`numbat dashboard -c` whose store file does not exist: exit 2 naming the key."""
    import subprocess
    import sys

    conf = tmp_path / "numbat.toml"
    conf.write_text(f'[dashboard]\nstore = "sqlite:{tmp_path / "none.db"}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "numbat", "dashboard", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "dashboard.store:" in result.stderr and "no such store file" in result.stderr


class Running:
    """A Dashboard on a free port in a thread-free loop, reached with urllib."""

    def __init__(self, tmp_path: Path, backend: Any = None, **dashboard: Any) -> None:
        self.api = free_port()  # nothing listens there: the analyzer is down
        port = free_port()
        config = from_dict(
            {
                "dashboard": {
                    "listen": f"http://127.0.0.1:{port}",
                    "analyzer": f"http://127.0.0.1:{self.api}",
                    **dashboard,
                }
            }
        )
        self.url = f"http://127.0.0.1:{port}"
        self.loop = asyncio.new_event_loop()
        store = backend or SQLiteStore(tmp_path / "n.db")
        self.daemon = Dashboard(config, store=store)
        self.loop.run_until_complete(self.daemon.start())

    def call(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, dict[str, Any]]:
        import threading

        result: dict[str, Any] = {}

        def go() -> None:
            request = urllib.request.Request(
                self.url + path, data=body, method=method, headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    result["answer"] = (resp.status, json.loads(resp.read()))
            except urllib.error.HTTPError as exc:
                result["answer"] = (exc.code, json.loads(exc.read()))

        thread = threading.Thread(target=go)
        thread.start()
        while thread.is_alive():
            self.loop.run_until_complete(asyncio.sleep(0.01))
        status, data = result["answer"]
        return int(status), data

    def close(self) -> None:
        self.loop.run_until_complete(self.daemon.stop())
        self.loop.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    dash = Running(tmp_path, token="page-tok-1")
    yield dash
    dash.close()


JSON = {"Content-Type": "application/json"}


def test_mutations_need_this_origin_json_and_the_token(running: Running) -> None:
    """An ack from another origin is 403, one not sent as JSON 415, one without the
    token 401; with all three it reaches the analyzer (down here: 502)."""
    body = json.dumps({"incident": "h1.x"}).encode()
    auth = {"Authorization": "Bearer page-tok-1"}
    foreign = {**JSON, **auth, "Origin": "http://evil.example"}
    assert running.call("POST", "/api/ack", body, **foreign)[0] == 403
    plain = {"Content-Type": "text/plain", **auth}
    assert running.call("POST", "/api/ack", body, **plain)[0] == 415
    status, answer = running.call("POST", "/api/ack", body, **JSON)
    assert status == 401 and "token" in answer["error"]
    wrong = {**JSON, "Authorization": "Bearer nope"}
    assert running.call("POST", "/api/ack", body, **wrong)[0] == 401
    same = {**JSON, **auth, "Origin": running.url}
    status, answer = running.call("POST", "/api/ack", body, **same)
    assert status == 502 and "not reachable" in answer["error"]
    assert "page-tok-1" not in json.dumps(answer)


def test_a_rebound_host_name_is_refused(running: Running) -> None:
    """DNS rebinding: a request whose Host names another site (its name now resolving
    to 127.0.0.1) is refused, a read as well as an ack."""
    port = running.url.rsplit(":", 1)[1].split("/")[0]
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    status, answer = running.call("GET", "/api/status", None, **evil)
    assert status == 403 and "evil.example" in answer["error"]
    body = json.dumps({"incident": "h1.x"}).encode()
    auth = {"Authorization": "Bearer page-tok-1"}
    assert running.call("POST", "/api/ack", body, **JSON, **auth, **evil)[0] == 403


def test_a_silence_of_everything_is_refused(running: Running) -> None:
    """A silence needs a name or a host, and a duration within 30 days."""
    auth = {**JSON, "Authorization": "Bearer page-tok-1"}
    status, answer = running.call("POST", "/api/silence", b'{"duration": 60}', **auth)
    assert status == 400 and "name or host" in answer["error"]
    body = b'{"host": "h1", "duration": 0}'
    assert running.call("POST", "/api/silence", body, **auth)[0] == 400
    assert running.call("POST", "/api/silence", b'{"hots": "h1"}', **auth)[0] == 400


def test_an_unreachable_analyzer_is_said_not_all_is_well(running: Running) -> None:
    """With the analyzer down the status carries the error (the page then never says
    all is well); the page config says a token is needed and holds no secret."""
    status, answer = running.call("GET", "/api/status")
    assert status == 200 and "not reachable" in answer["error"]
    status, config = running.call("GET", "/api/config")
    assert config["token_required"] is True and "page-tok-1" not in json.dumps(config)


def test_a_bad_graph_request_is_a_400_naming_the_parameter(running: Running) -> None:
    """No measurement, a bad tag, a reversed range: 400 saying which."""
    assert "measurement" in running.call("GET", "/api/graph")[1]["error"]
    assert "tag" in running.call("GET", "/api/graph?measurement=a&tag=x")[1]["error"]
    status, answer = running.call("GET", "/api/graph?measurement=a&start=10&end=5")
    assert status == 400 and "end must be after start" in answer["error"]


def test_numbat_dashboard_serves_the_page_and_stops_on_sigint(tmp_path: Path) -> None:
    """`numbat dashboard -c` on an existing store: says its URL, serves the page with
    its CSP, and exits 0 on SIGINT."""
    import signal

    from tests.dashboard.conftest import Standalone

    dash = Standalone(tmp_path)
    try:
        assert dash.url in dash.log.read_text(), dash.log.read_text()
        with urllib.request.urlopen(dash.url, timeout=10) as resp:
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            assert b"/static/app.js" in resp.read()
        dash.proc.send_signal(signal.SIGINT)
        assert dash.proc.wait(30) == 0, dash.log.read_text()
    finally:
        dash.kill()


def test_a_store_that_is_down_is_a_502_saying_so(tmp_path: Path) -> None:
    """InfluxDB down: the series list and a graph answer 502 with why (never a bare
    500), and the store's password is in neither the answer nor the log."""
    from numbat.store.influx import InfluxStore

    url = f"http://127.0.0.1:{free_port()}"
    store = InfluxStore(url, "numbat", username="admin", password="s3cret-pw", timeout=2.0)
    dash = Running(tmp_path, backend=store, store=f"http://admin:s3cret-pw@{url[7:]}")
    try:
        for path in ("/api/series", "/api/graph?measurement=web.latency"):
            status, answer = dash.call("GET", path)
            assert status == 502 and "the store cannot be read" in answer["error"], answer
            assert "s3cret-pw" not in json.dumps(answer)
    finally:
        dash.close()
