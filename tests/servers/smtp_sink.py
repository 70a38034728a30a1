"""An aiosmtpd SMTP sink on a free loopback port, in a thread, that keeps what it receives."""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from .net import LOOPBACK

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
        return reply or OK

    async def handle_exception(self, error: Exception) -> str:
        logger.error("SMTP sink handler failed: %r", error)
        return "451 4.3.0 Internal error in the test sink"


class SmtpSink:
    """Accepts any mail on 127.0.0.1; keeps (from, recipients, bytes) of every message."""

    def __init__(self, *, hostname: str = "sink.test", start_timeout: float = 10.0) -> None:
        self.host = LOOPBACK
        self.port = 0
        self.hostname = hostname
        self.start_timeout = start_timeout
        self._cond = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._refused: list[ReceivedMessage] = []
        self._failures: list[_Failure] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- life cycle ------------------------------------------------------------------

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> SmtpSink:
        """Start the loop thread; returns once the port is bound."""
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="smtp-sink", daemon=True
        )
        self._thread.start()
        ready.result(timeout=self.start_timeout)
        logger.debug("SMTP sink listening on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        """Close every connection, stop the loop and join the thread."""
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is None or stopping is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        if thread.is_alive():
            logger.warning("SMTP sink thread did not stop within 10 s")
        self._loop = self._stopping = self._thread = None

    def down(self) -> None:
        """Stop listening and drop open connections, as a dead relay would."""
        self._call(self._close_listener)

    def up(self) -> None:
        """Listen again on the same port after down()."""
        self._call(lambda: self._listen(self.port))

    @property
    def is_up(self) -> bool:
        """True while the sink accepts connections."""
        return self._server is not None

    def _run(self, ready: Future[None]) -> None:
        with asyncio.Runner() as runner:
            self._loop = runner.get_loop()
            try:
                runner.run(self._serve(ready))
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                else:
                    logger.exception("SMTP sink thread failed")

    async def _serve(self, ready: Future[None]) -> None:
        self._stopping = asyncio.Event()
        await self._listen(0)
        ready.set_result(None)
        try:
            await self._stopping.wait()
        finally:
            await self._close_listener()

    async def _listen(self, port: int) -> None:
        from aiosmtpd.smtp import SMTP

        if self._server is not None:
            return
        handler = _Handler(self)

        def factory() -> SMTP:
            session = SMTP(handler, hostname=self.hostname, enable_SMTPUTF8=True)
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

    def _call(self, make: Callable[[], Any]) -> None:
        if self._loop is None:
            raise RuntimeError("the SMTP sink is not running")

        async def run() -> None:
            await make()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    # -- scripted failures -----------------------------------------------------------

    def fail_next(self, count: int = 1, reply: int | str = 451, stage: Stage = "DATA") -> None:
        """Answer the next count transactions at stage with reply (e.g. 451, 550 or a full line)."""
        if isinstance(reply, int):
            reply = f"{reply} {DEFAULT_TEXT.get(reply // 100, 'Scripted reply')}"
        with self._cond:
            self._failures.append(_Failure(reply, stage, count))

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

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least count messages were accepted; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(
                    f"SMTP sink got {len(self._messages)} of {count} messages in {timeout} s"
                )
            return list(self._messages)
