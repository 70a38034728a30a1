"""SMTP submission port for agents' replies: AUTH always, 250 only once `accept` returned."""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any, Self

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

from .embedded import LoopThreadServer
from .errors import ConfigError, MailcareError
from .settings import Submission

log = logging.getLogger(__name__)


class _LegacyNotice(logging.Filter):
    """Drops aiosmtpd's notice about its legacy `login_data`, which it logs on every AUTH."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_LegacyNotice())

ACCEPTED = "250 2.0.0 Message accepted for delivery"
SENDER_OK = "250 2.1.0 Sender ok"
RECIPIENT_OK = "250 2.1.5 Recipient ok"
BAD_SENDER = "553 5.1.7 Sender address is not valid"
BAD_RECIPIENT = "553 5.1.3 Recipient address is not valid"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
STARTTLS_FIRST = "530 5.7.0 Must issue a STARTTLS command first"
TOO_BIG = "552 5.3.4 Message too big"
LINE_TOO_LONG = "500 5.5.2 Line too long"
TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, try again later"

MAX_RECIPIENTS = 100
# a client that keeps guessing passwords is disconnected after this many AUTH commands
AUTH_ATTEMPTS = 5
START_TIMEOUT = 10.0

# aiosmtpd's own refusals, by prefix, and the replies with enhanced status codes
_REWRITES = (
    ("552 Error: Too much mail data", TOO_BIG),
    ("552 Error: message size exceeds", TOO_BIG),
    ("500 Line too long", LINE_TOO_LONG),
    ("530 Must issue a STARTTLS", STARTTLS_FIRST),
)


class SubmissionRefused(MailcareError):
    """Raised by an Accept callback to refuse a message with an SMTP reply (e.g. 550, 451)."""

    def __init__(self, code: int, text: str) -> None:
        if not 400 <= code <= 599:
            raise ValueError(f"a refusal needs a 4xx or 5xx code, not {code}")
        clean = "".join(c if " " <= c <= "~" else " " for c in text).strip()
        super().__init__(f"{code} {clean}")
        self.code = code
        self.text = clean or "Message refused"

    @property
    def reply(self) -> str:
        """The SMTP reply line the client sees."""
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class Submitted:
    """One message an authenticated agent handed to the submission port."""

    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    username: str
    peer: str


Accept = Callable[[Submitted], None]


def _valid_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if not (at and local and domain):
        return False
    return not any(c.isspace() or ord(c) < 32 or c in "<>" for c in address)


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer)


def _message_id(raw: bytes) -> str:
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[: end + 2]
    value = BytesHeaderParser(policy=compat32).parsebytes(head).get("Message-ID")
    return str(value).strip() if value else "(no Message-ID)"


class _Handler:
    """aiosmtpd hooks: check the envelope, hand the message to `accept` in a worker thread."""

    def __init__(self, accept: Accept) -> None:
        self.accept = accept

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not _valid_address(address):
            return BAD_SENDER
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return SENDER_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not _valid_address(address):
            return BAD_RECIPIENT
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        username = session.auth_data
        if not session.authenticated or not isinstance(username, str):
            return AUTH_REQUIRED
        raw = bytes(envelope.original_content or b"")
        message = Submitted(
            mail_from=envelope.mail_from or "",
            recipients=tuple(envelope.rcpt_tos),
            raw=raw,
            username=username,
            peer=_peer(session),
        )
        message_id = _message_id(raw)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.accept, message)
        except SubmissionRefused as refusal:
            log.info("%s from %s refused: %s", message_id, username, refusal.reply)
            return refusal.reply
        except Exception:
            log.exception("%s from %s: accepting the submission failed", message_id, username)
            return TEMPORARY_FAILURE
        log.info(
            "%s submitted by %s from %s for %d recipient(s)",
            message_id,
            username,
            message.peer,
            len(message.recipients),
        )
        return ACCEPTED

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            log.warning("submission: TLS handshake failed: %r", error.__cause__)
        else:
            log.exception("submission listener error", exc_info=error)
        return TEMPORARY_FAILURE


class _SubmissionSMTP(SMTP):
    """SMTP that requires AUTH before MAIL, RCPT, DATA, VRFY and HELP, whatever the TLS mode."""

    # Lines keep RFC 5321's 1,000-octet limit (unlike intake): the relay would refuse longer
    # ones later, and the agent is better told now than by a bounce.

    async def check_auth_needed(self, caller_method: str) -> bool:
        if self.session is not None and self.session.authenticated:
            return False
        await self.push(AUTH_REQUIRED)
        return True

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            for prefix, replacement in _REWRITES:
                if status.startswith(prefix):
                    status = replacement
                    break
        await super().push(status)


class _Users:
    """The configured agents and their passwords, read once at start."""

    def __init__(self, settings: Submission) -> None:
        self.passwords = {u.username: u.password.reveal().encode("utf-8") for u in settings.users}
        if not self.passwords:
            raise ConfigError("submission: `users` is empty; AUTH is always required")

    def check(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        username = data.login.decode("utf-8", "replace")
        expected = self.passwords.get(username)
        # compare against something even for unknown users, so both take the same path
        matches = hmac.compare_digest(data.password, expected or b"\0" * 32)
        if expected is None or not matches:
            log.warning(
                "submission: failed %s login for %r from %s", mechanism, username, _peer(session)
            )
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=username)


def _tls_context(settings: Submission) -> ssl.SSLContext | None:
    if settings.tls == "none":
        return None
    if settings.cert_file is None or settings.key_file is None:
        raise ConfigError(f"submission: `cert_file` and `key_file` are required for {settings.tls}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"submission: cannot load {settings.cert_file} / {settings.key_file}: {exc}"
        ) from exc
    return context


class SubmissionServer(LoopThreadServer):
    """The submission listener, served by an asyncio loop in its own thread."""

    thread_name = "submission"

    def __init__(self, settings: Submission, accept: Accept) -> None:
        super().__init__(START_TIMEOUT)
        self.settings = settings
        self.host = settings.host
        self._handler = _Handler(accept)
        self._users: _Users | None = None
        self._context: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def start(self) -> Self:
        """Read passwords and certificates, bind, and serve; returns once the port listens.

        `port` is then the port listened on (the one picked when the settings say 0).
        """
        if self._thread is not None:
            raise RuntimeError("the submission server is already running")
        self._users = _Users(self.settings)
        self._context = _tls_context(self.settings)
        try:
            super().start()
        except BaseException:
            self.stop()
            raise
        log.info(
            "submission port listening on %s:%d (%s)",
            self.settings.host,
            self.port,
            self.settings.tls,
        )
        return self

    async def _listen(self, port: int) -> None:
        assert self._users is not None
        loop = asyncio.get_running_loop()
        starttls = self.settings.tls == "starttls"
        context, users = self._context, self._users

        def session() -> SMTP:
            smtp = _SubmissionSMTP(
                self._handler,
                data_size_limit=self.settings.max_size,
                hostname=self.settings.hostname,
                tls_context=context if starttls else None,
                require_starttls=starttls,
                # implicit TLS is encrypted from the first byte; tls: none exists on loopback only
                auth_require_tls=starttls,
                authenticator=users.check,
                command_call_limit={"AUTH": AUTH_ATTEMPTS, "*": 1_000_000},
                loop=loop,
            )
            self._sessions.add(smtp)
            return smtp

        implicit = context if self.settings.tls == "implicit" else None
        self._server = await loop.create_server(
            session, host=self.settings.host, port=port or self.settings.port, ssl=implicit
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for smtp in list(self._sessions):
            if isinstance(smtp.transport, asyncio.Transport):
                smtp.transport.abort()
        await server.wait_closed()
