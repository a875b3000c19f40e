"""The numbat command: emit for scripts and cron jobs, and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import DatagramReceiver, StreamReceiver


def _numbat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "numbat", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=env,
    )


def test_emit_delivers_all_fields_over_tcp(tcp_receiver: StreamReceiver) -> None:
    """numbat emit sends name, value, status, ttl, description and typed extra fields."""
    result = _numbat(
        "emit",
        "backup.done",
        "42.5",
        "--uri",
        tcp_receiver.uri,
        "--app",
        "cron",
        "--status",
        "WARNING",
        "--ttl",
        "60000",
        "--description",
        "nightly",
        "--field",
        "disk=sda",
        "--field",
        "files=12",
        "--field",
        "full=true",
    )
    assert result.returncode == 0, result.stderr
    (line,) = tcp_receiver.wait_for(1)
    event = json.loads(line)
    assert event["name"] == "cron.backup.done" and event["value"] == 42.5
    assert event["status"] == "warning" and event["ttl"] == 60000
    assert event["description"] == "nightly"
    assert (event["disk"], event["files"], event["full"]) == ("sda", 12, True)


def test_emit_reads_uri_from_config_and_env(
    tcp_receiver: StreamReceiver, udp_receiver: DatagramReceiver, tmp_path: Path
) -> None:
    """--config supplies the [emitter] uri and app; NUMBAT_URI overrides the config."""
    config = tmp_path / "numbat.toml"
    config.write_text(f'[emitter]\nuri = "{tcp_receiver.uri}"\napp = "fromconf"\n')
    assert _numbat("emit", "a", "-c", str(config)).returncode == 0
    assert json.loads(tcp_receiver.wait_for(1)[0])["name"] == "fromconf.a"
    env = {"NUMBAT_URI": udp_receiver.uri(), "PATH": "/usr/bin:/bin"}
    assert _numbat("emit", "b", "-c", str(config), env=env).returncode == 0
    assert json.loads(udp_receiver.wait_for(1)[0])["name"] == "fromconf.b"


def test_emit_exits_1_when_stream_delivery_fails() -> None:
    """Nothing listening on a tcp destination: exit status 1 and a message naming it."""
    result = _numbat("emit", "lost", "--uri", "tcp://127.0.0.1:1", "--timeout", "2")
    assert result.returncode == 1
    assert "could not deliver 'lost' to tcp://127.0.0.1:1" in result.stderr


def test_emit_rejects_bad_input_with_exit_2() -> None:
    """A non-numeric value, a bad field or a bad uri exits 2 and says what is wrong."""
    bad_value = _numbat("emit", "x", "abc")
    assert bad_value.returncode == 2 and "'abc' is not a number" in bad_value.stderr
    bad_field = _numbat("emit", "x", "--field", "novalue")
    assert bad_field.returncode == 2 and "KEY=VALUE" in bad_field.stderr
    bad_uri = _numbat("emit", "x", "--uri", "http://example")
    assert bad_uri.returncode == 2 and "unsupported destination uri" in bad_uri.stderr
    bad_name = _numbat("emit", "a\tb")
    assert bad_name.returncode == 2 and "field 'name'" in bad_name.stderr


def test_version() -> None:
    """numbat --version names the program and version."""
    result = _numbat("--version")
    assert result.returncode == 0 and "numbat" in result.stdout


def _free_tcp_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_emit_never_shows_a_password_or_token_of_its_uri() -> None:
    """Undeliverable and malformed URIs with user:password@ or ?key=: the secrets are masked
    in every line numbat emit prints."""
    port = _free_tcp_port()
    for uri in (
        f"tcp://admin:pw-4e1b@127.0.0.1:{port}",
        f"ws://127.0.0.1:{port}/metrics?key=pw-4e1b",
        "bogus://u:pw-4e1b@h:1",
        "tcp://u:pw-4e1b@127.0.0.1",
        "tcp://u:pw-4e1b@127.0.0.1:99999",
        "unix://u:pw-4e1b@/tmp/none.sock",
        "tcp://u:pw-4e1b@[::1",
    ):
        result = _numbat("emit", "a", "--uri", uri, "--timeout", "0.5")
        assert result.returncode in (1, 2), result.stderr
        assert result.stderr, uri
        assert "pw-4e1b" not in result.stderr + result.stdout, result.stderr
        assert "Traceback" not in result.stderr, result.stderr


def test_collector_warns_when_the_open_file_limit_is_below_its_connection_caps(
    tmp_path: Path,
) -> None:
    """With a hard open-file limit of 256 and a tcp listener allowing 1,024 connections,
    the collector starts and says, naming both figures, that the limit is too low."""
    import resource
    import signal

    from tests.helpers import wait_until

    config = tmp_path / "numbat.toml"
    config.write_text(
        '[collector]\nlisten = ["tcp://127.0.0.1:0"]\n[[collector.outputs]]\ntype = "null"\n'
    )
    stderr = tmp_path / "stderr"

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "numbat", "collector", "-c", str(config)],
            stderr=err,
            preexec_fn=low_limit,  # noqa: PLW1509 - only setrlimit, before exec
        )
    try:
        wait_until(lambda: "collector listening" in stderr.read_text(), 15, "listening")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        proc.kill()
    assert "open-file limit 256 is below the 1088 the listeners' max_connections" in (
        stderr.read_text()
    )
