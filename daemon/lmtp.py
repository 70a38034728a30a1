"""LMTP/SMTP intake for mail servers that deliver directly; 250 only after the commit."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from .errors import MailcareError
from .inbox import Inbox
from .settings import Intake

log = logging.getLogger(__name__)

OK = "250 2.0.0 Ok: stored"
UNKNOWN_RECIPIENT = "550 5.1.1 Recipient address rejected: not handled here"
TEMPORARY_FAILURE = "451 4.3.0 Temporary storage failure, try again later"
TOO_BIG = "552 5.3.4 Message too big"
LINE_TOO_LONG = "500 5.5.2 Line too long"
INTERNAL_ERROR = "451 4.3.0 Internal error, try again later"


class RecipientPolicy:
    """Which recipients this listener accepts: exact addresses and @domains."""

    def __init__(self, patterns: list[str]) -> None:
        self.addresses = {p for p in patterns if not p.startswith("@")}
        self.domains = {p[1:] for p in patterns if p.startswith("@")}

    def accepts(self, address: str) -> bool:
        address = address.strip().lower()
        if address in self.addresses:
            return True
        local, _, domain = address.rpartition("@")
        if not local:
            return False
        if "+" in local and f"{local.split('+', 1)[0]}@{domain}" in self.addresses:
            return True
        return domain in self.domains


class IntakeHandler:
    """aiosmtpd hooks: validate recipients and size, persist, answer per recipient."""

    def __init__(self, inbox: Inbox, policy: RecipientPolicy, protocol: str) -> None:
        self.inbox = inbox
        self.policy = policy
        self.protocol = protocol

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self.policy.accepts(address):
            log.info("rejected recipient %s from %s", address, session.peer)
            return UNKNOWN_RECIPIENT
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = bytes(envelope.original_content or b"")
        recipients = [r.strip().lower() for r in envelope.rcpt_tos]
        sender = envelope.mail_from or ""
        try:
            await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: self.inbox.store_delivered(
                    raw,
                    channel=self.protocol,
                    envelope_from=sender or None,
                    recipients=recipients,
                ),
            )
        except MailcareError as exc:
            log.error("storage failed for a message from <%s>: %s", sender, exc)
            return self._each(TEMPORARY_FAILURE, len(recipients))
        return self._each(OK, len(recipients))

    async def handle_exception(self, error: Exception) -> str:
        log.exception("intake listener error", exc_info=error)
        return INTERNAL_ERROR

    def _each(self, status: str, count: int) -> str:
        """LMTP answers once per accepted recipient after DATA; SMTP once."""
        if self.protocol == "lmtp":
            return "\r\n".join([status] * max(1, count))
        return status


# Real mail carries lines far longer than RFC 5321's 1,000 octets; refusing them would
# bounce a customer's mail, so lines are limited only to keep memory bounded.
LINE_LIMIT = 1 << 20


def _rewrite(status: Any) -> Any:
    """Standard enhanced status codes for aiosmtpd's own refusals after DATA."""
    if isinstance(status, str):
        if status.startswith("552 Error: Too much mail data"):
            return TOO_BIG
        if status.startswith("500 Line too long"):
            return LINE_TOO_LONG
    return status


class _LMTPServer(LMTP):
    """LMTP whose refusals after DATA come once per recipient, as LMTP requires."""

    line_length_limit = LINE_LIMIT

    async def push(self, status: Any) -> None:
        rewritten = _rewrite(status)
        if rewritten is not status and self.envelope is not None:
            count = max(1, len(self.envelope.rcpt_tos))
            await super().push("\r\n".join([rewritten] * count))
            return
        await super().push(status)


class _SMTPServer(SMTP):
    """SMTP with standard enhanced status codes on refusals after DATA."""

    line_length_limit = LINE_LIMIT

    async def push(self, status: Any) -> None:
        await super().push(_rewrite(status))


class IntakeListener(Controller):
    """The LMTP or SMTP listener, served from its own thread."""

    def __init__(self, settings: Intake, inbox: Inbox) -> None:
        self.settings = settings
        handler = IntakeHandler(inbox, RecipientPolicy(settings.recipients), settings.protocol)
        super().__init__(
            handler,
            hostname=settings.host,
            port=settings.port,
            ready_timeout=10.0,
            server_hostname=settings.hostname,
            data_size_limit=settings.max_message_size,
        )

    def factory(self) -> SMTP:
        server_class = _LMTPServer if self.settings.protocol == "lmtp" else _SMTPServer
        return server_class(self.handler, **self.SMTP_kwargs)
