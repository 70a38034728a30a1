"""pymap (pure-Python IMAP, in-memory dict backend) in a thread, for machines without Dovecot.

Compared with the Dovecot fixture it lacks: custom keywords set by STORE (answered OK,
then silently dropped, as PERMANENTFLAGS has no \\*; keywords given at APPEND are kept),
SPECIAL-USE, NAMESPACE, CONDSTORE/QRESYNC, SORT/THREAD, TLS (no IMAPS port, no STARTTLS),
LMTP delivery and kick(). It relies on pymap internals, hence the exact pin pymap==0.36.7.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from argparse import Namespace
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from .imap import Account, ImapHelpers, close_client
from .net import LOOPBACK

logger = logging.getLogger(__name__)

DEFAULT_USERS = 3


class PymapServer(ImapHelpers):
    """pymap's dict backend on 127.0.0.1, port chosen by the OS, served by a daemon thread."""

    name = "pymap"
    keywords = False
    special_use = False
    tls = False
    lmtp = False

    def __init__(self, *, users: int = DEFAULT_USERS, start_timeout: float = 10.0) -> None:
        self.host = LOOPBACK
        self.imap_port = 0
        self.capabilities: frozenset[str] = frozenset()
        self.start_seconds = 0.0
        self.start_timeout = start_timeout
        self._initial_users = users
        self._accounts: list[Account] = []
        self._handed_out = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._backend: Any = None
        self._config: Any = None

    @staticmethod
    def missing() -> str | None:
        """Say why pymap cannot run here, or None when it can."""
        try:
            import pymap.backend.dict  # noqa: F401
        except ImportError as exc:
            return f"pymap is not importable ({exc}); pip install pymap==0.36.7"
        return None

    # -- life cycle ------------------------------------------------------------------

    def __enter__(self) -> PymapServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> PymapServer:
        """Start the event-loop thread and return once the port accepts connections."""
        began = time.perf_counter()
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="pymap-test-server", daemon=True
        )
        self._thread.start()
        ready.result(timeout=self.start_timeout)
        for _ in range(self._initial_users):
            self._new_account()
        client = self.open_client(self._accounts[0])
        try:
            self.capabilities = frozenset(cap.decode() for cap in client.capabilities())
        finally:
            close_client(client)
        self.start_seconds = time.perf_counter() - began
        logger.info("pymap up in %.0f ms on port %d", self.start_seconds * 1000, self.imap_port)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread; all mail is gone."""
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is None or stopping is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        if thread.is_alive():
            logger.warning("pymap thread did not stop within 10 s")
        self._loop = self._stopping = self._thread = None

    def restart(self) -> None:
        """Drop every connection and listen again on the same port; mailboxes are kept."""
        self._call(self._relisten())

    def _run(self, ready: Future[None]) -> None:
        # asyncio.Runner cancels leftover connection tasks and closes the loop on exit.
        with asyncio.Runner() as runner:
            self._loop = runner.get_loop()
            try:
                runner.run(self._serve(ready))
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                else:
                    logger.exception("pymap server thread failed")

    async def _serve(self, ready: Future[None]) -> None:
        self._stopping = asyncio.Event()
        self._backend, self._config = _build_backend()
        await self._listen(0)
        ready.set_result(None)
        try:
            await self._stopping.wait()
        finally:
            await self._close_listener()

    async def _listen(self, port: int) -> None:
        from proxyprotocol.reader import ProxyProtocolReader
        from pymap.imap import IMAPServer

        imap = IMAPServer(self._backend.login, self._config)

        async def track(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock_info: Any
        ) -> None:
            # Remember live connections so restart() and stop() can drop them.
            self._writers.add(writer)
            try:
                await imap(reader, writer, sock_info)
            finally:
                self._writers.discard(writer)

        handler = ProxyProtocolReader(self._config.proxy_protocol).get_callback(track)
        self._server = await asyncio.start_server(handler, host=LOOPBACK, port=port)
        self.imap_port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            await server.wait_closed()

    async def _relisten(self) -> None:
        await self._close_listener()
        await self._listen(self.imap_port)

    def _call(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        if self._loop is None:
            raise RuntimeError("pymap is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # -- accounts ----------------------------------------------------------------------

    def _new_account(self) -> Account:
        with self._lock:
            account = Account(
                f"user{len(self._accounts) + 1:03d}", f"secret-user{len(self._accounts) + 1:03d}"
            )
            self._accounts.append(account)
        self._call(_add_user(self._backend, self._config, account))
        return account

    def account(self) -> Account:
        """Hand out a fresh account; pymap learns new users at once, so there is no pool limit."""
        with self._lock:
            self._handed_out += 1
            index = self._handed_out
            if index < len(self._accounts):
                return self._accounts[index]
        return self._new_account()

    def lmtp_deliver(
        self, rcpt: str | Account, raw: bytes, mail_from: str = "sender@example.test"
    ) -> None:
        """pymap has no LMTP server."""
        raise NotImplementedError("pymap has no LMTP; use append() or Dovecot")

    def kick(self, account: Account | str) -> bool:
        """pymap cannot drop one user's connections."""
        raise NotImplementedError("pymap cannot kick a user; use restart() or Dovecot")


def _build_backend() -> tuple[Any, Any]:
    """Create a dict backend whose users have cleartext passwords and log in instantly."""
    from pymap.backend.dict import Config, DictBackend, Login
    from pymap.concurrent import Subsystem
    from pysasl.hashing import Cleartext

    class TestConfig(Config):
        """Fixed greeting: the default one resolves the host's FQDN on every connection."""

        @property
        def greeting(self) -> bytes:
            return b"Server ready pymap.test"

    # The attributes pymap reads from parsed command-line arguments.
    args = Namespace(passlib_cfg=None, proxy_protocol=None, inherited_sockets=None)
    config = TestConfig(
        args,
        host=LOOPBACK,
        port=0,
        demo_data=False,
        demo_user="",
        demo_password="",
        tls_enabled=False,  # no certificate: do not advertise STARTTLS
        # pymap hashes passwords with 500,000 PBKDF2 rounds by default (~0.13 s per
        # LOGIN); stored cleartext they compare in microseconds.
        hash_context=Cleartext(),
        invalid_user_sleep=0.0,
        cpu_subsystem=Subsystem.for_asyncio(),
    )
    config.apply_context()
    return DictBackend(Login(config), config), config


async def _add_user(backend: Any, config: Any, account: Account) -> None:
    from pymap.backend.dict import Identity
    from pymap.user import UserMetadata

    identity = Identity(account.username, backend.login, None, frozenset({"admin"}))
    await identity.set(UserMetadata(config, account.username, password=account.password))
