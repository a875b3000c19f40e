"""Tests for numbat._redact: no password or query secret of a URI reaches any output."""

from __future__ import annotations

import json
import logging
import string
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numbat import Emitter
from numbat._redact import redact_url
from numbat.config import loads
from numbat.errors import NumbatError
from numbat.up import UpSettings

SENTINEL = "S3cr"
# Pieces a parser might split a password at, and words each holding the sentinel: a
# leaked piece of the password, however cut, shows the sentinel.
_DELIMITERS = st.sampled_from([*"/#?@:%&;=!'\"[]\\ ", "%2F", "@h:1", "://", "?p="])
_WORDS = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation, max_size=3)
PASSWORDS = st.lists(
    st.one_of(_DELIMITERS, _WORDS.map(lambda w: SENTINEL + w)), min_size=1, max_size=8
).map("".join)

# Every config option that takes a URI, as TOML with {} for the URI (a JSON string is a
# TOML basic string).
CONFIG_OPTIONS = [
    "[emitter]\nuri = {}\n",
    '[[collector.outputs]]\ntype = "influxdb"\nurls = [{}]\n',
    '[[collector.outputs]]\ntype = "graphite"\nuri = {}\n',
    '[[collector.outputs]]\ntype = "analyzer"\nuri = {}\n',
    "[collector]\nlisten = [{}]\n",
]
SCHEMES = ["http", "https", "tcp", "udp", "ws", "wss", "unix", "statsd"]


def _uris(password: str) -> list[str]:
    return [
        f"{scheme}://admin:{password}@127.0.0.1:{port}{tail}"
        for scheme in SCHEMES
        for port in ("1", "x")
        for tail in ("", "/p?u=admin&p=" + password.replace("&", "").replace(";", ""))
    ]


@settings(max_examples=150, deadline=None)
@given(PASSWORDS)
def test_redact_url_never_shows_a_password(password: str) -> None:
    """Whatever characters a password holds, redact_url masks all of it."""
    for uri in _uris(password):
        assert SENTINEL not in redact_url(uri), uri


@settings(max_examples=60, deadline=None)
@given(PASSWORDS)
def test_no_config_option_error_shows_a_password(password: str) -> None:
    """For every URI-taking config option, a validation error never quotes the password."""
    for template in CONFIG_OPTIONS:
        for uri in _uris(password):
            try:
                loads(template.format(json.dumps(uri)))
            except NumbatError as exc:
                assert SENTINEL not in str(exc), (uri, str(exc))


@settings(max_examples=60, deadline=None)
@given(PASSWORDS)
def test_up_influx_never_shows_a_password(password: str) -> None:
    """numbat up --influx URL: the banner and any config error mask the password."""
    for uri in _uris(password):
        up = UpSettings(influx=uri)
        try:
            text = up.banner(config=up.config({}))
        except NumbatError as exc:
            text = str(exc)
        assert SENTINEL not in text, (uri, text)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(password=PASSWORDS)
def test_an_emitter_never_logs_or_raises_a_password(
    password: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Emitter(uri): the error it raises, or every line it logs failing to send, masks it."""
    caplog.clear()
    for uri in _uris(password):
        with caplog.at_level(logging.DEBUG):
            try:
                emitter = Emitter(uri, max_retries=0, flush_at_exit=0)
            except NumbatError as exc:
                assert SENTINEL not in str(exc), (uri, str(exc))
                continue
            emitter.metric({"name": "a"})
            emitter.close(0.2)
    assert SENTINEL not in caplog.text


@pytest.mark.parametrize("password", ["ab/cdS3cr", "Em/S3crPW", "a?S3cr#b", "a@S3cr/b", "%zzS3cr"])
@pytest.mark.parametrize("scheme", ["ws", "tcp"])
def test_numbat_emit_prints_no_password(scheme: str, password: str) -> None:
    """numbat emit --uri with a password holding / ? # @ %: its output masks the password."""
    uri = f"{scheme}://u:{password}@127.0.0.1:1"
    result = subprocess.run(
        [sys.executable, "-m", "numbat", "emit", "--uri", uri, "--timeout", "0.3", "a"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and result.stderr
    assert SENTINEL not in result.stdout + result.stderr, result.stderr
