"""The email notifier against a local SMTP server (aiosmtpd): plain, AUTH, STARTTLS, SMTPS."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from numbat.analyzer.notifiers import Dispatcher, NotifyError
from numbat.analyzer.notifiers.email import EmailNotifier
from numbat.config import loads
from numbat.errors import ConfigError
from numbat.server.stats import Stats
from tests.analyzer.notifiers.helpers import T0, FakeLog, incident, notification, options
from tests.store.conftest import free_port

# aiosmtpd warns of its own deprecated attribute when a login succeeds (not our code),
# and of AUTH without TLS on every connection (the plain AUTH server, on purpose).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Session.login_data is deprecated"),
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
]

PASSWORD = "pa55-w0rd-xyz"


@dataclass
class Inbox:
    """What the SMTP server accepted; ``refuse``: an SMTP answer for every RCPT."""

    mails: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    refuse: str | None = None

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        mail = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(mail, EmailMessage)
        self.mails.append((str(envelope.mail_from), list(envelope.rcpt_tos), mail))
        return "250 OK"


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        b"numbat",
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (key, cert)."""
    root = tmp_path_factory.mktemp("tls")
    key, cert = root / "key.pem", root / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


@dataclass
class Server:
    inbox: Inbox
    port: int


def smtp_server(**settings: Any) -> Iterator[Server]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **settings)
    controller.start()
    try:
        yield Server(inbox, port)
    finally:
        controller.stop()


@pytest.fixture
def plain() -> Iterator[Server]:
    yield from smtp_server()


@pytest.fixture
def with_auth() -> Iterator[Server]:
    yield from smtp_server(authenticator=authenticate, auth_required=True, auth_require_tls=False)


@pytest.fixture
def with_starttls(certificate: tuple[Path, Path]) -> Iterator[Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate[1]), str(certificate[0]))
    yield from smtp_server(
        tls_context=context, require_starttls=True, authenticator=authenticate, auth_required=True
    )


@pytest.fixture
def smtps(certificate: tuple[Path, Path]) -> Iterator[Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate[1]), str(certificate[0]))
    yield from smtp_server(ssl_context=context)


def send(**table: Any) -> None:
    notifier = EmailNotifier(options(type="email", host="127.0.0.1", timeout=5, **table))
    n = notification(
        id="n-1",
        new=[incident(value=2.0)],
        resolved=[incident("db.disk", "db-1", status="ok", message="", resolved_at=T0 + 5000)],
        still_firing=[incident("x")] * 3,
    )
    asyncio.run(notifier.send(n))


def test_a_mail_says_what_changed(plain: Server) -> None:
    """One mail: from, to, subject with the summary, a section per change, the id header."""
    send(port=plain.port, to=["ops@example.com", "dev@example.com"], **{"from": "nb@example.com"})
    [(sender, recipients, mail)] = plain.inbox.mails
    assert sender == "nb@example.com"
    assert recipients == ["ops@example.com", "dev@example.com"]
    assert mail["Subject"] == "[numbat] 1 new, 1 resolved, 3 still firing: name=web.heartbeat"
    assert mail["To"] == "ops@example.com, dev@example.com"
    assert mail["X-Numbat-Notification"] == "n-1"
    assert mail.get_content().replace("\r\n", "\n") == (
        "New (1):\n"
        "  critical web-1.web.heartbeat (new): web-1.web heartbeat not heard for 2 beats"
        " [value 2]\n"
        "    host web-1, fired 2023-11-14T22:13:21.000Z\n"
        "\n"
        "Resolved (1):\n"
        "  ok db-1.db.disk (resolved)\n"
        "    host db-1, fired 2023-11-14T22:13:21.000Z, resolved 2023-11-14T22:13:25.000Z\n"
        "\n"
        "Still firing: 3\n"
    )


def test_smtp_auth_logs_in(with_auth: Server) -> None:
    """username/password: the server's AUTH accepts it and the mail is taken."""
    send(port=with_auth.port, to=["ops@example.com"], username="numbat", password=PASSWORD)
    assert len(with_auth.inbox.mails) == 1


def test_a_wrong_password_is_not_retried_and_never_shown(with_auth: Server) -> None:
    """A refused login (535) is not retryable; the password is not in the error."""
    with pytest.raises(NotifyError) as caught:
        send(port=with_auth.port, to=["o@example.com"], username="numbat", password="bad-pw-1")
    assert not caught.value.retryable
    assert "535" in str(caught.value) and "bad-pw-1" not in str(caught.value)


def test_starttls_upgrades_before_auth(
    with_starttls: Server, certificate: tuple[Path, Path]
) -> None:
    """starttls = true with the server's certificate trusted: TLS, AUTH, the mail."""
    send(
        port=with_starttls.port,
        to=["ops@example.com"],
        starttls=True,
        ca_file=str(certificate[1]),
        username="numbat",
        password=PASSWORD,
    )
    assert len(with_starttls.inbox.mails) == 1


def test_ssl_speaks_tls_from_the_start(smtps: Server, certificate: tuple[Path, Path]) -> None:
    """ssl = true (SMTPS) with the server's certificate trusted: the mail is taken."""
    send(port=smtps.port, to=["ops@example.com"], ssl=True, ca_file=str(certificate[1]))
    assert len(smtps.inbox.mails) == 1


def test_starttls_with_an_untrusted_certificate_is_refused(with_starttls: Server) -> None:
    """A certificate not trusted fails the attempt (not retried): no clear-text fallback."""
    with pytest.raises(NotifyError) as caught:
        send(port=with_starttls.port, to=["o@example.com"], starttls=True,
             username="numbat", password=PASSWORD)  # fmt: skip
    assert not caught.value.retryable
    assert with_starttls.inbox.mails == []


def test_starttls_required_but_not_offered_is_an_error(plain: Server) -> None:
    """starttls = true against a server without STARTTLS fails rather than send in clear."""
    with pytest.raises(NotifyError, match="does not offer STARTTLS") as caught:
        send(port=plain.port, to=["o@example.com"], starttls=True)
    assert not caught.value.retryable
    assert plain.inbox.mails == []


@pytest.mark.parametrize(("answer", "retryable"), [("550 no such user", False),
                                                    ("450 mailbox busy", True)])  # fmt: skip
def test_refused_recipients_are_retried_only_for_a_temporary_answer(
    plain: Server, answer: str, retryable: bool
) -> None:
    """Every recipient refused: 5xx is final, 4xx is retried."""
    plain.inbox.refuse = answer
    with pytest.raises(NotifyError) as caught:
        send(port=plain.port, to=["o@example.com"])
    assert caught.value.retryable is retryable


def test_no_server_is_retryable() -> None:
    """A refused connection is a retryable error naming host:port."""
    port = free_port()
    with pytest.raises(NotifyError, match=f"127.0.0.1:{port}") as caught:
        send(port=port, to=["o@example.com"])
    assert caught.value.retryable


def test_through_the_dispatcher_the_password_stays_out_of_logs(
    with_auth: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed login then logged by the dispatcher never shows the password."""
    config = options(type="email", host="127.0.0.1", port=with_auth.port, to=["o@example.com"],
                     username="numbat", password=f"x{PASSWORD}")  # fmt: skip

    async def main() -> FakeLog:
        log = FakeLog()
        dispatcher = Dispatcher([config], log, Stats(host="h", prefix="numbat.analyzer"))
        await dispatcher.start()
        n = notification(new=[incident()])
        row = log.add("email", n)
        dispatcher.enqueue([(row, "email", n)])
        await log.wait_done([row])
        await dispatcher.close(1.0)
        return log

    with caplog.at_level(logging.DEBUG):
        log = asyncio.run(main())
    assert log.done[1][0] == "dropped"
    assert PASSWORD not in caplog.text and PASSWORD not in log.done[1][1]


def test_config_errors_name_the_key() -> None:
    """Bad email tables are refused naming the key, never quoting the password."""
    head = '[[analyzer.notifiers]]\ntype = "email"\n'
    cases = [
        (head, "to: required"),
        (head + 'to = ["nobody"]\n', "to: give one or more addresses"),
        (head + 'to = ["a@b"]\nfrom = "me"\n', "from: expected an address"),
        (head + 'to = ["a@b"]\nssl = true\nstarttls = true\n', "starttls: cannot be used with ssl"),
        (head + 'to = ["a@b"]\nport = 70000\n', "port: must be 1-65535"),
        (head + f'to = ["a@b"]\npassword = "{PASSWORD}"\n', "password: username and password"),
    ]
    for text, expected in cases:
        with pytest.raises(ConfigError) as caught:
            loads(text)
        assert f"analyzer.notifiers[0].{expected}" in str(caught.value)
        assert PASSWORD not in str(caught.value)
    config = loads(head + 'to = ["a@b"]\nstarttls = true\n').analyzer
    assert config is not None
    assert config.notifier_configs[0].smtp_port == 587  # type: ignore[attr-defined]
