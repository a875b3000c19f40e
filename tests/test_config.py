"""Tests for numbat.config and the ``numbat check`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from numbat.config import Config, EmitterConfig, from_dict, load, loads
from numbat.emitter import DEFAULT_MAX_BACKLOG_BYTES
from numbat.errors import ConfigError


def config_error(text: str) -> str:
    """The message of the ConfigError that ``loads(text)`` raises."""
    with pytest.raises(ConfigError) as info:
        loads(text)
    return str(info.value)


# --- defaults and good files ------------------------------------------------------------


def test_empty_file_gives_defaults() -> None:
    """An empty file is valid and yields every default."""
    cfg = loads("")
    assert cfg == Config()
    emitter = cfg.emitter
    assert emitter.uri == "tcp://127.0.0.1:3333"
    assert emitter.app == "numbat"
    assert emitter.node is None
    assert emitter.max_backlog is None
    assert emitter.max_backlog_bytes == DEFAULT_MAX_BACKLOG_BYTES
    assert emitter.max_retries == 100


def test_empty_emitter_section_gives_defaults() -> None:
    """An empty [emitter] section is the same as none."""
    assert loads("[emitter]\n") == Config()


def test_all_emitter_keys() -> None:
    """Every [emitter] key is read with its type."""
    cfg = loads(
        "[emitter]\n"
        'uri = "udp://10.0.0.1:4444"\n'
        'app = "web"\n'
        'node = "web-1"\n'
        "max_backlog = 500\n"
        "max_backlog_bytes = 1024\n"
        "max_retries = 0\n"
    )
    assert cfg.emitter == EmitterConfig(
        uri="udp://10.0.0.1:4444",
        app="web",
        node="web-1",
        max_backlog=500,
        max_backlog_bytes=1024,
        max_retries=0,
    )


@pytest.mark.parametrize(
    "uri",
    [
        "tcp://h:1",
        "udp://h:1",
        "socket:/tmp/n.sock",
        "sock:/tmp/n.sock",
        "unix:/tmp/n.sock",
        "ws://h:1/p",
        "wss://h:1/p",
        "statsd://h:8125",
        "TCP://h:1",
    ],
)
def test_supported_uri_schemes(uri: str) -> None:
    """Every scheme the emitter handles is accepted, in any case."""
    assert from_dict({"emitter": {"uri": uri}}).emitter.uri == uri


def test_from_dict_defaults() -> None:
    """from_dict of an empty mapping gives the defaults."""
    assert from_dict({}) == Config()


# --- errors name the key path ------------------------------------------------------------


def test_unknown_key_names_path_and_lists_allowed() -> None:
    """An unknown key is named by its dotted path and the allowed keys are listed."""
    msg = config_error("[emitter]\nbogus = 1\n")
    assert msg.startswith("<config>: emitter.bogus: unknown key")
    assert "allowed keys: uri, app, node, max_backlog, max_backlog_bytes, max_retries" in msg


def test_unknown_top_level_section_named() -> None:
    """An unknown section is named and the known sections are listed."""
    msg = config_error("[nonsense]\nx = 1\n")
    assert msg.startswith("<config>: nonsense: unknown key")
    assert "allowed keys: emitter" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[emitter]\nmax_retries = "x"', "emitter.max_retries: expected an integer, got a string"),
        ("[emitter]\nmax_retries = true", "emitter.max_retries: expected an integer, got a bool"),
        ("[emitter]\nmax_retries = 1.5", "emitter.max_retries: expected an integer, got a number"),
        ("[emitter]\nuri = 5", "emitter.uri: expected a string, got an integer"),
        ("[emitter]\nnode = 3", "emitter.node: expected a string or nothing, got an integer"),
        ("emitter = 1", "emitter: expected a table, got an integer"),
    ],
)
def test_wrong_type_names_key(text: str, expected: str) -> None:
    """A wrong type names the key and says what was expected."""
    assert config_error(text).startswith(f"<config>: {expected}")


@pytest.mark.parametrize("uri", ["nsq://h:1", "http://h", "localhost:3333", "tcp", ""])
def test_unsupported_uri_scheme(uri: str) -> None:
    """A uri whose scheme no transport handles is rejected naming emitter.uri."""
    msg = config_error(f'[emitter]\nuri = "{uri}"\n')
    assert msg.startswith("<config>: emitter.uri: unsupported scheme")
    assert "allowed: tcp:, udp:" in msg


def test_malformed_uri_named() -> None:
    """A uri that cannot be parsed at all is also reported against emitter.uri."""
    assert config_error('[emitter]\nuri = "tcp://[::1"\n').startswith("<config>: emitter.uri: ")


@pytest.mark.parametrize("key", ["max_backlog", "max_backlog_bytes"])
@pytest.mark.parametrize("val", [0, -1])
def test_non_positive_backlog_rejected(key: str, val: int) -> None:
    """Backlog limits must be positive, and the error names the key."""
    msg = config_error(f"[emitter]\n{key} = {val}\n")
    assert msg.startswith(f"<config>: emitter.{key}: must be positive, got")


def test_negative_retries_rejected() -> None:
    """max_retries may be 0 but not negative."""
    assert config_error("[emitter]\nmax_retries = -1").startswith(
        "<config>: emitter.max_retries: must be 0 or more"
    )


def test_empty_app_rejected() -> None:
    """app must not be empty."""
    msg = config_error('[emitter]\napp = ""')
    assert msg.startswith("<config>: emitter.app: must not be empty")


def test_invalid_toml() -> None:
    """Text that is not TOML is reported as such."""
    assert config_error("[emitter\nuri = ").startswith("<config>: not valid TOML: ")


def test_from_dict_errors_use_source() -> None:
    """The source name prefixes every message."""
    with pytest.raises(ConfigError, match=r"^numbat\.toml: emitter\.bogus: unknown key"):
        from_dict({"emitter": {"bogus": 1}}, source="numbat.toml")


# --- files ------------------------------------------------------------------------------


def test_load_file(tmp_path: Path) -> None:
    """load reads a file, given as str or Path."""
    path = tmp_path / "numbat.toml"
    path.write_text('[emitter]\napp = "web"\n', encoding="utf-8")
    assert load(path).emitter.app == "web"
    assert load(str(path)).emitter.app == "web"


def test_load_errors_prefixed_with_path(tmp_path: Path) -> None:
    """Errors from a file start with the file's path, then the key path."""
    path = tmp_path / "numbat.toml"
    path.write_text("[emitter]\nmax_retries = 'x'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: emitter.max_retries: expected an integer, got a string"


def test_missing_file(tmp_path: Path) -> None:
    """A file that does not exist is a ConfigError saying it cannot be read."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="cannot read: No such file or directory"):
        load(path)


def test_directory_is_unreadable(tmp_path: Path) -> None:
    """A directory cannot be read as a config file."""
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path)


def test_non_utf8_file(tmp_path: Path) -> None:
    """A file that is not UTF-8 text is reported as such."""
    path = tmp_path / "numbat.toml"
    path.write_bytes(b'[emitter]\napp = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load(path)


# --- numbat check -----------------------------------------------------------------------


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "numbat", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_good_file(tmp_path: Path) -> None:
    """numbat check exits 0 and says ok for a valid file."""
    path = tmp_path / "numbat.toml"
    path.write_text('[emitter]\nuri = "udp://127.0.0.1:3333"\n', encoding="utf-8")
    result = run_check(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: ok"


def test_check_bad_file(tmp_path: Path) -> None:
    """numbat check exits 2 and names the offending key path on stderr."""
    path = tmp_path / "numbat.toml"
    path.write_text("[emitter]\nmax_retries = 'many'\n", encoding="utf-8")
    result = run_check(path)
    assert result.returncode == 2
    assert "emitter.max_retries: expected an integer" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["check", "collector"])
def test_a_plug_in_path_naming_no_plug_in_exits_2(tmp_path: Path, command: str) -> None:
    """An import path to something that is not a listener or an output: exit 2 naming
    the key, from numbat check and before the collector binds anything."""
    path = tmp_path / "numbat.toml"
    path.write_text(
        '[collector]\nlisten = [{uri = "tcp://127.0.0.1:0", type = "collections:OrderedDict"}]\n'
        '[[collector.outputs]]\ntype = "decimal:Decimal"\n',
        encoding="utf-8",
    )
    args = [sys.executable, "-m", "numbat", command, *(["-c"] if command == "collector" else [])]
    result = subprocess.run(
        [*args, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    listener = "'collections:OrderedDict' is not a numbat.server.listeners.Listener subclass"
    assert f"collector.listen[0].type: {listener}" in (result.stderr)
    assert "Traceback" not in result.stderr and "listening" not in result.stderr
    assert f"numbat: {path}: collector.listen[0].type" in result.stderr


def test_check_knows_a_collector_section_needs_an_output(tmp_path: Path) -> None:
    """numbat check: a [collector] with no output is an error; a file with no
    [collector] (for numbat emit, say) needs none."""
    path = tmp_path / "numbat.toml"
    path.write_text('[collector]\nlisten = ["tcp://127.0.0.1:3333"]\n', encoding="utf-8")
    result = run_check(path)
    assert result.returncode == 2
    assert f"{path}: collector.outputs: none" in result.stderr
    path.write_text('[emitter]\nuri = "udp://127.0.0.1:3333"\n', encoding="utf-8")
    assert run_check(path).returncode == 0


def test_check_missing_file(tmp_path: Path) -> None:
    """numbat check exits 2 for a file that does not exist."""
    result = run_check(tmp_path / "absent.toml")
    assert result.returncode == 2
    assert "cannot read" in result.stderr


# --- storage outputs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('type = "influxdb"\nurls = []\n', "collector.outputs[0].urls: give at least one"),
        (
            'type = "influxdb"\nurls = ["tcp://h:1"]\n',
            "collector.outputs[0].urls[0]: expected http",
        ),
        ('type = "influxdb"\nusername = "u"\n', "collector.outputs[0].password: username and"),
        ('type = "influxdb"\nmode = "both"\n', "collector.outputs[0].mode: got 'both'"),
        (
            'type = "influxdb"\nbatch_size = 0\n',
            "collector.outputs[0].batch_size: must be positive",
        ),
        (
            'type = "influxdb"\nbatch_bytes = 0\n',
            "collector.outputs[0].batch_bytes: must be positive",
        ),
        ('type = "influxdb"\non_cardinality = "x"\n', "collector.outputs[0].on_cardinality: got"),
        ('type = "sqlite"\nretention_days = 0\n', "collector.outputs[0].retention_days: must be"),
    ],
)
def test_storage_output_errors_name_the_key(body: str, message: str) -> None:
    """Bad influxdb and sqlite output settings are refused, naming the key."""
    assert message in config_error(f"[[collector.outputs]]\n{body}")


def test_sqlite_output_refuses_several_workers() -> None:
    """The embedded store has one writer: workers > 1 with a sqlite output is an error."""
    text = '[collector]\nworkers = 2\n[[collector.outputs]]\ntype = "sqlite"\n'
    assert "collector.workers: the sqlite output takes one writing process" in config_error(text)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('type = "logfile"\npath = "x"\nwhen_full = "wait"\n', "collector.outputs[0].when_full:"),
        ('type = "graphite"\nblock_timeout = -1\n', "collector.outputs[0].block_timeout: must"),
        ('type = "sqlite"\nblock_timeout = nan\n', "collector.outputs[0].block_timeout: must"),
    ],
)
def test_full_policy_errors_name_the_key(body: str, message: str) -> None:
    """A bad when_full or block_timeout is refused, naming the output's key."""
    assert message in config_error(f"[[collector.outputs]]\n{body}")


def test_durable_outputs_block_when_full_and_best_effort_ones_drop() -> None:
    """logfile, sqlite and influxdb default to block; analyzer, graphite, null to
    drop_newest; when_full set in the file wins."""
    types = ["logfile", "sqlite", "influxdb", "analyzer", "graphite", "null", "prettylog"]
    tables = "".join(
        f'[[collector.outputs]]\ntype = "{t}"\n' + ('path = "x"\n' if t == "logfile" else "")
        for t in types
    )
    tables += '[[collector.outputs]]\ntype = "analyzer"\nname = "a2"\nwhen_full = "block"\n'
    outputs = loads(tables).collector.outputs
    assert [o.full_policy for o in outputs] == ["block"] * 3 + ["drop_newest"] * 4 + ["block"]


def test_influxdb_output_defaults() -> None:
    """An influxdb output with no keys writes to localhost, spooling under numbat-data."""
    (out,) = loads('[[collector.outputs]]\ntype = "influxdb"\n').collector.outputs
    assert (out.urls, out.database, out.mode) == (["http://127.0.0.1:8086"], "numbat", "replicate")
    assert (out.spool_dir, out.fsync_interval, out.batch_size) == ("numbat-data/spool", 1.0, 5000)
    assert out.batch_bytes == 1_000_000


@pytest.mark.parametrize(
    "text",
    [
        '[emitter]\nuri = "nsq://u:pw-7c1e@h:1"\n',
        '[[collector.outputs]]\ntype = "influxdb"\nurls = ["ftp://a:pw-7c1e@h:1"]\n',
        '[[collector.outputs]]\ntype = "influxdb"\nurls = ["http://a:pw-7c1e@h:x"]\n',
        '[collector]\nlisten = ["ws://u:pw-7c1e@h:x/"]\n',
        '[collector]\nlisten = ["ftp://u:pw-7c1e@h:1/"]\n',
        '[[collector.outputs]]\ntype = "analyzer"\nuri = "udp://u:pw-7c1e@h:1"\n',
    ],
)
def test_a_password_in_a_bad_url_is_never_shown(text: str) -> None:
    """Errors about a URL name it with its password replaced by ***."""
    message = config_error(text)
    assert "pw-7c1e" not in message
    assert ":***@" in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[collector]\nlisten = [{uri = "tcp://h:1", type = 3}]\n',
            "listen[0].type: expected a string",
        ),
        ("[collector]\nlisten = [3]\n", "listen[0]: expected a URI, or a table with a uri"),
        (
            '[collector]\nlisten = [{uri = "ws://h:1/", ping_interval = 0}]\n',
            "listen[0].ping_interval",
        ),
        (
            '[collector]\nlisten = [{uri = "tcp://h:1", type = "nomodule"}]\n',
            "listen[0].uri: unsupported",
        ),
        (
            '[collector]\nlisten = [{uri = "tcp://h:1", type = "tests.plugins.jsonfile_output:'
            'JSONFileOutput"}]\n',
            "listen[0].type: tests.plugins.jsonfile_output:JSONFileOutput.Options must subclass "
            "numbat.config.ListenerConfig",
        ),
    ],
)
def test_listener_entries_are_checked_by_their_type(text: str, message: str) -> None:
    """A listener entry's type and its plug-in's own keys are validated, naming the key."""
    assert f"collector.{message}" in config_error(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[collector]\nstats_interval = nan\n", "collector.stats_interval: must be positive"),
        ("[collector]\ndrain_timeout = inf\n", "collector.drain_timeout: must be 0 or more"),
        (
            '[collector]\nlisten = [{uri = "ws://h:1/", idle_timeout = nan}]\n',
            "collector.listen[0].idle_timeout: must be 0 or more",
        ),
        (
            '[collector]\nlisten = ["tcp://admin:pw@127.0.0.1:1"]\n',
            "collector.listen[0].uri: 'tcp://admin:***@127.0.0.1:1': a listener takes no user",
        ),
        (
            '[collector]\nlisten = ["unix://admin:pw@/tmp/x.sock"]\n',
            "collector.listen[0].uri: 'unix://admin:***@/tmp/x.sock': a listener takes no user",
        ),
        (
            '[collector]\nlisten = [{uri = "unix:///x.sock", allow = ["10.0.0.0/8"]}]\n',
            "collector.listen[0].allow: a unix socket has no peer address",
        ),
        (
            '[[collector.outputs]]\ntype = "tests.plugins.boom_at_import:X"\n',
            "collector.outputs[0].type: importing 'tests.plugins.boom_at_import:X' failed: "
            "RuntimeError: boom at import",
        ),
        (
            '[[collector.outputs]]\ntype = "os:sep"\n',
            "collector.outputs[0].type: 'os:sep' is not a",
        ),
    ],
)
def test_values_a_daemon_cannot_run_with_are_refused(text: str, message: str) -> None:
    """NaN and infinite durations, credentials in a listener URI, allow on a unix socket
    and plug-ins that fail to import: each refused, naming the key, never a traceback."""
    assert message in config_error(text)
    assert ":pw@" not in config_error(text)


def test_a_plug_in_options_error_without_a_key_names_the_table() -> None:
    """A plug-in's own __post_init__ error with no key prefix reads 'outputs[0]: ...'."""
    text = '[[collector.outputs]]\ntype = "tests.plugins.strict:StrictOutput"\nevery = 0\n'
    assert "collector.outputs[0]: KeyError: 'zero'" in config_error(text)
    text = text.replace("every = 0", "every = -1")
    assert "collector.outputs[0]: must not be negative" in config_error(text)


@pytest.mark.parametrize(
    "url",
    [
        "http://admin:pw-9a1f@127.0.0.1:8086?u=admin&p=pw-9a1f",
        "http://127.0.0.1:8086/write",
        "http://127.0.0.1:8086/#x",
    ],
)
def test_an_influxdb_url_with_a_path_or_query_is_refused(url: str) -> None:
    """A url with a path or query (every write would 404) is refused, naming the key,
    masking the password and pointing at the username and password keys."""
    message = config_error(f'[[collector.outputs]]\ntype = "influxdb"\nurls = ["{url}"]\n')
    assert message.startswith("<config>: collector.outputs[0].urls[0]: ")
    assert "pw-9a1f" not in message
    assert "username and password" in message


def test_an_influxdb_base_url_with_a_slash_is_accepted() -> None:
    """http://host:8086/ is the base URL: accepted like http://host:8086."""
    text = '[[collector.outputs]]\ntype = "influxdb"\nurls = ["http://h:8086/"]\n'
    assert loads(text).collector.outputs[0].urls == ["http://h:8086/"]


def test_a_password_with_a_slash_is_refused_without_showing_it() -> None:
    """A password with an unencoded / : the error says to percent-encode, quoting none of it."""
    text = '[[collector.outputs]]\ntype = "influxdb"\nurls = ["http://admin:ab/cdPW@h:1"]\n'
    message = config_error(text)
    assert "collector.outputs[0].urls[0]: 'http://admin:***@h:1'" in message
    assert "percent-encoded" in message
    assert "ab" not in message.replace("numbat", "") and "cdPW" not in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[collector]\nworkers = 100000\n", "collector.workers: at most 256, got 100000"),
        ("[collector]\nworkers = 0\n", "collector.workers: must be positive"),
        (
            "[collector]\nudp_buffer_bytes = 2147483648\n",
            "collector.udp_buffer_bytes: at most 2,147,483,647",
        ),
        ("[collector]\nudp_buffer_bytes = -1\n", "collector.udp_buffer_bytes: must be positive"),
        ("[collector]\nstats_interval = 1e17\n", "collector.stats_interval: must be positive, at"),
        (
            "[collector]\ndrain_timeout = 1e17\n",
            "collector.drain_timeout: must be 0 or more seconds, at most 2,592,000",
        ),
        (
            '[collector]\nlisten = [{uri = "tcp://h:1", idle_timeout = 1e10}]\n',
            "collector.listen[0].idle_timeout: must be 0 or more seconds, at most 2,592,000",
        ),
        (
            '[collector]\nlisten = [{uri = "ws://h:1/", ping_interval = 1e10}]\n',
            "collector.listen[0].ping_interval: must be positive, at most 2,592,000",
        ),
        (
            '[[collector.outputs]]\ntype = "influxdb"\nflush_interval = 1e17\n',
            "collector.outputs[0].flush_interval: must be positive, at most",
        ),
        (
            '[[collector.outputs]]\ntype = "influxdb"\ntimeout = 2592001\n',
            "collector.outputs[0].timeout: must be positive, at most 2,592,000 seconds",
        ),
        (
            '[[collector.outputs]]\ntype = "null"\nblock_timeout = 1e17\n',
            "collector.outputs[0].block_timeout: must be 0 or more seconds, at most 2,592,000",
        ),
    ],
)
def test_counts_sizes_and_durations_are_capped(text: str, message: str) -> None:
    """workers, udp_buffer_bytes and every interval or timeout have a maximum, named."""
    assert f"<config>: {message}" in config_error(text)


def test_the_caps_themselves_are_accepted() -> None:
    """workers = 256, udp_buffer_bytes = 2**31-1 and a 30-day interval pass."""
    text = (
        "[collector]\nworkers = 256\nudp_buffer_bytes = 2147483647\n"
        "stats_interval = 2592000\ndrain_timeout = 2592000\n"
    )
    collector = loads(text).collector
    assert (collector.workers, collector.udp_buffer_bytes) == (256, 2**31 - 1)
    assert collector.stats_interval == 2592000


@pytest.mark.parametrize("kind", ["logfile", "sqlite"])
def test_check_refuses_a_store_path_under_a_regular_file(tmp_path: Path, kind: str) -> None:
    """numbat check: a logfile or sqlite path under a regular file is an error naming the
    key and the file in the way, not "ok"."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = tmp_path / "numbat.toml"
    path.write_text(
        '[collector]\nlisten = ["tcp://127.0.0.1:0"]\n'
        f'[[collector.outputs]]\ntype = "{kind}"\npath = "{blocker}/x.db"\n'
    )
    result = run_check(path)
    assert result.returncode == 2, result.stdout
    message = f"collector.outputs[0].path: {blocker}/x.db: {blocker} is not a directory"
    assert message in result.stderr
