"""``email``: one mail per notification, through an SMTP server (stdlib ``smtplib``,
run in a thread so the event loop never waits on the server).

Connection: plain SMTP (port 25), ``ssl`` (SMTPS, port 465) or ``starttls`` (port 587;
a server that does not offer STARTTLS is an error, never a silent fallback to clear
text); certificates are checked against the system's or ``ca_file``. ``username`` and
``password``: SMTP AUTH. Each socket operation is bounded by the notifier's ``timeout``.

The mail: ``Subject: [numbat] 1 new, 1 resolved: name=web.heartbeat``, a plain-text
body with one section per kind of change, and the header ``X-Numbat-Notification``
(the notification id, the same on every retry). Errors: an answer in the 5xx range
(authentication refused, recipients refused) is not retried; 4xx, a dropped
connection or a timeout are. The password never appears in logs or errors.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from numbat._redact import MASK
from numbat.analyzer.model import Notification
from numbat.analyzer.notifiers import Notifier, NotifyError, expect
from numbat.analyzer.notifiers._text import HEADINGS, iso, line
from numbat.config.notifiers import EmailNotifierConfig, NotifierConfig

log = logging.getLogger(__name__)


def message(notification: Notification, options: EmailNotifierConfig) -> EmailMessage:
    """The mail for ``notification``."""
    mail = EmailMessage()
    mail["Subject"] = f"{options.subject_prefix} {notification.summary()}".strip()
    mail["From"] = options.from_
    mail["To"] = ", ".join(options.to)
    mail["Date"] = formatdate(notification.time / 1000, usegmt=True)
    mail["Message-ID"] = make_msgid("numbat")
    mail["X-Numbat-Notification"] = notification.id
    mail.set_content(body(notification))
    return mail


def body(notification: Notification) -> str:
    """The mail's text: a section per kind of change, one paragraph per incident."""
    sections: list[str] = []
    changes = notification.changes()
    for kind, heading in HEADINGS.items():
        incidents = [i for k, i in changes if k == kind]
        if not incidents:
            continue
        lines = [f"{heading} ({len(incidents)}):"]
        for incident in incidents:
            lines.append(f"  {line(kind, incident)}")
            times = f"fired {iso(incident.fired_at)}" if incident.fired_at else ""
            if incident.resolved_at:
                times += f", resolved {iso(incident.resolved_at)}"
            if incident.host or times:
                lines.append(f"    host {incident.host or '-'}{', ' + times if times else ''}")
        sections.append("\n".join(lines))
    if notification.still_firing and not notification.repeat:
        sections.append(f"Still firing: {len(notification.still_firing)}")
    return "\n\n".join(sections) + "\n"


class EmailNotifier(Notifier):
    """Sends :func:`message` through ``options.host``."""

    Options = EmailNotifierConfig

    def __init__(self, options: NotifierConfig) -> None:
        super().__init__(options)
        self.email = expect(options, EmailNotifierConfig)
        self.where = f"{self.email.host}:{self.email.smtp_port}"

    def redact(self, text: str) -> str:
        password = self.email.password
        return text.replace(password, MASK) if password else text

    async def send(self, notification: Notification) -> None:
        mail = message(notification, self.email)
        try:
            refused = await asyncio.to_thread(self._deliver, mail)
        except NotifyError:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise self._error(f"every recipient refused: {exc.recipients}", codes) from None
        except smtplib.SMTPResponseException as exc:
            raise self._error(
                f"{type(exc).__name__}: {exc.smtp_code} {exc.smtp_error!r}", [exc.smtp_code]
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise NotifyError(self.redact(f"{self.where}: {exc}"), retryable=False) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(self.redact(f"{self.where}: {type(exc).__name__}: {exc}")) from None
        if refused:
            # The others have it: a retry would mail them twice.
            log.warning("notifier %s: recipients refused: %s", self.options.label, refused)

    def _error(self, text: str, codes: list[int]) -> NotifyError:
        """A 5xx answer will not change on a retry; a 4xx one may."""
        retryable = any(400 <= code < 500 for code in codes)
        return NotifyError(self.redact(f"{self.where}: {text}"), retryable=retryable)

    def _deliver(self, mail: EmailMessage) -> dict[str, tuple[int, bytes]]:
        """One SMTP session (in a worker thread); the recipients refused, if some were."""
        options = self.email
        context = ssl.create_default_context(cafile=options.ca_file)
        smtp: smtplib.SMTP
        if options.ssl:
            smtp = smtplib.SMTP_SSL(
                options.host, options.smtp_port, timeout=options.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(options.host, options.smtp_port, timeout=options.timeout)
        with smtp:
            smtp.ehlo()
            if options.starttls:
                if not smtp.has_extn("starttls"):
                    raise NotifyError(
                        f"{self.where}: the server does not offer STARTTLS", retryable=False
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if options.username is not None and options.password is not None:
                smtp.login(options.username, options.password)
            return smtp.send_message(mail)
