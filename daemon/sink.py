"""An SMTP server on a free loopback port that keeps what it receives (demo and tests)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Literal

from .embedded import LOOPBACK, LoopThreadServer

logger = logging.getLogger(__name__)

Stage = Literal["MAIL", "RCPT", "DATA"]
OK = "250 2.0.0 OK"
DEFAULT_TEXT = {4: "4.3.0 Temporary failure, try again later", 5: "5.7.1 Rejected"}


@dataclass(frozen=True)
class ReceivedMessage:
    """One SMTP transaction as the sink saw it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


@dataclass
class _Failure:
    reply: str
    stage: Stage
    remaining: int


class _Handler:
    """aiosmtpd hooks: accept everything unless a failure is scheduled for the stage."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_MAIL(  # aiosmtpd finds hooks by name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self._sink._take_failure("MAIL")
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return OK

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        # Every RCPT of a failing transaction gets the same reply; the transaction counts once.
        reply = getattr(envelope, "sink_failure", None) or self._sink._take_failure("RCPT")
        if reply is not None:
            envelope.sink_failure = reply
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return OK

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
        )
        reply = self._sink._take_failure("DATA")
        self._sink._record(message, reply)
        hang = self._sink._take_hang()
        if hang:
            # the message is kept, but the reply comes too late for the client
            await asyncio.sleep(hang)
        return reply or OK

    async def handle_exception(self, error: Exception) -> str:
        logger.error("SMTP sink handler failed: %r", error)
        return "451 4.3.0 Internal error in the test sink"


class SmtpSink(LoopThreadServer):
    """Accepts any mail on 127.0.0.1; keeps (from, recipients, bytes) of every message."""

    thread_name = "smtp-sink"

    def __init__(
        self,
        *,
        hostname: str = "sink.test",
        start_timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(start_timeout)
        self.hostname = hostname
        # with tls_context, STARTTLS is required; with credentials, AUTH (after TLS)
        self.tls_context = tls_context
        self.credentials = credentials
        self._cond = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._refused: list[ReceivedMessage] = []
        self._failures: list[_Failure] = []
        self._hangs: list[float] = []
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()

    def down(self) -> None:
        """Stop listening and drop open connections, as a dead relay would."""
        self.call(self._close_listener())

    def up(self) -> None:
        """Listen again on the same port after down()."""
        self.call(self._listen(self.port))

    @property
    def is_up(self) -> bool:
        """True while the sink accepts connections."""
        return self._server is not None

    async def _listen(self, port: int) -> None:
        from aiosmtpd.smtp import SMTP

        if self._server is not None:
            return
        handler = _Handler(self)
        options: dict[str, Any] = {}
        if self.tls_context is not None:
            options.update(tls_context=self.tls_context, require_starttls=True)
        if self.credentials is not None:
            user, password = self.credentials

            def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
                from aiosmtpd.smtp import AuthResult, LoginPassword

                ok = isinstance(data, LoginPassword) and (
                    data.login.decode(),
                    data.password.decode(),
                ) == (user, password)
                return AuthResult(success=ok)

            options.update(authenticator=check, auth_required=True)

        def factory() -> SMTP:
            session = SMTP(handler, hostname=self.hostname, enable_SMTPUTF8=True, **options)
            self._sessions.add(session)
            return session

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, host=LOOPBACK, port=port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for session in list(self._sessions):
            transport = getattr(session, "transport", None)
            if transport is not None:
                transport.abort()
        await server.wait_closed()

    # -- scripted failures -----------------------------------------------------------

    def fail_next(self, count: int = 1, reply: int | str = 451, stage: Stage = "DATA") -> None:
        """Answer the next count transactions at stage with reply (e.g. 451, 550 or a full line)."""
        if isinstance(reply, int):
            reply = f"{reply} {DEFAULT_TEXT.get(reply // 100, 'Scripted reply')}"
        with self._cond:
            self._failures.append(_Failure(reply, stage, count))

    def hang_next(self, count: int = 1, seconds: float = 10.0) -> None:
        """Keep the next count messages but delay the reply to their DATA by seconds."""
        with self._cond:
            self._hangs.extend([seconds] * count)

    def _take_hang(self) -> float:
        with self._cond:
            return self._hangs.pop(0) if self._hangs else 0.0

    def _take_failure(self, stage: Stage) -> str | None:
        with self._cond:
            for failure in self._failures:
                if failure.stage == stage and failure.remaining > 0:
                    failure.remaining -= 1
                    if failure.remaining == 0:
                        self._failures.remove(failure)
                    return failure.reply
        return None

    # -- what arrived ----------------------------------------------------------------

    def _record(self, message: ReceivedMessage, refused_with: str | None) -> None:
        with self._cond:
            (self._refused if refused_with else self._messages).append(message)
            self._cond.notify_all()

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of the accepted messages, oldest first."""
        with self._cond:
            return list(self._messages)

    @property
    def refused(self) -> list[ReceivedMessage]:
        """Messages whose DATA got a scripted failure reply."""
        with self._cond:
            return list(self._refused)

    @property
    def count(self) -> int:
        """How many messages were accepted."""
        with self._cond:
            return len(self._messages)

    def clear(self) -> None:
        """Forget received messages and scheduled failures."""
        with self._cond:
            self._messages.clear()
            self._refused.clear()
            self._failures.clear()
            self._hangs.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least count messages were accepted; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(
                    f"SMTP sink got {len(self._messages)} of {count} messages in {timeout} s"
                )
            return list(self._messages)
