"""An IMAP server that needs nothing beyond `pip install`: pymap's in-memory backend.

Used by `mailcare demo` and by the test suite on machines without Dovecot. pymap's
in-memory backend lacks custom keywords, SPECIAL-USE and TLS; it relies on pymap
internals, hence the exact version pin in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from argparse import Namespace
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Self, TypeVar

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
T = TypeVar("T")


class LoopThreadServer:
    """A TCP server (on 127.0.0.1 unless a subclass binds elsewhere) served by an asyncio
    loop in a daemon thread.

    Subclasses implement `_listen(port)` (bind, then set `self.port`; the first call gets 0)
    and `_close_listener()` (stop listening and drop open connections).
    """

    thread_name = "embedded-server"

    def __init__(self, start_timeout: float = 10.0) -> None:
        self.host = LOOPBACK
        self.port = 0
        self.start_timeout = start_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start serving; returns once the port accepts connections."""
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=self.thread_name, daemon=True
        )
        self._thread.start()
        ready.result(timeout=self.start_timeout)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is None or stopping is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        if thread.is_alive():
            log.warning("%s thread did not stop within 10 s", self.thread_name)
        self._loop = self._stopping = self._thread = None

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        if self._loop is None:
            coro.close()
            raise RuntimeError(f"{self.thread_name} is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def restart(self) -> None:
        """Drop every connection and listen again on the same port."""
        self.call(self._relisten())

    async def _setup(self) -> None:
        """Prepare state on the loop before the first listen."""

    async def _listen(self, port: int) -> None:
        raise NotImplementedError

    async def _close_listener(self) -> None:
        raise NotImplementedError

    async def _relisten(self) -> None:
        await self._close_listener()
        await self._listen(self.port)

    def _run(self, ready: Future[None]) -> None:
        with asyncio.Runner() as runner:
            self._loop = runner.get_loop()
            try:
                runner.run(self._serve(ready))
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                else:
                    log.exception("%s failed", self.thread_name)

    async def _serve(self, ready: Future[None]) -> None:
        self._stopping = asyncio.Event()
        await self._setup()
        await self._listen(0)
        ready.set_result(None)
        try:
            await self._stopping.wait()
        finally:
            await self._close_listener()


class EmbeddedImapServer(LoopThreadServer):
    """pymap's dict backend on 127.0.0.1 (port chosen by the OS)."""

    thread_name = "embedded-imap"

    def __init__(self, start_timeout: float = 10.0) -> None:
        super().__init__(start_timeout)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._backend: Any = None
        self._config: Any = None

    def add_user(self, username: str, password: str) -> None:
        """Create a user (usable at once)."""
        self.call(_add_user(self._backend, self._config, username, password))

    async def _setup(self) -> None:
        self._backend, self._config = _build_backend()

    async def _listen(self, port: int) -> None:
        from proxyprotocol.reader import ProxyProtocolReader
        from pymap.imap import IMAPServer

        imap = IMAPServer(self._backend.login, self._config)

        async def track(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock_info: Any
        ) -> None:
            self._writers.add(writer)
            try:
                await imap(reader, writer, sock_info)
            finally:
                self._writers.discard(writer)

        handler = ProxyProtocolReader(self._config.proxy_protocol).get_callback(track)
        self._server = await asyncio.start_server(handler, host=LOOPBACK, port=port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            await server.wait_closed()


def _build_backend() -> tuple[Any, Any]:
    """A dict backend whose users have cleartext passwords and log in instantly."""
    from pymap.backend.dict import Config, DictBackend, Login
    from pymap.concurrent import Subsystem
    from pysasl.hashing import Cleartext

    class LocalConfig(Config):
        """Fixed greeting: the default one resolves the host's FQDN on every connection."""

        @property
        def greeting(self) -> bytes:
            return b"Server ready (mailcare embedded IMAP)"

    # the attributes pymap reads from its parsed command line
    args = Namespace(passlib_cfg=None, proxy_protocol=None, inherited_sockets=None)
    config = LocalConfig(
        args,
        host=LOOPBACK,
        port=0,
        demo_data=False,
        demo_user="",
        demo_password="",
        tls_enabled=False,
        # the default PBKDF2 hashing costs ~0.13 s per LOGIN; cleartext is fine in memory
        hash_context=Cleartext(),
        invalid_user_sleep=0.0,
        cpu_subsystem=Subsystem.for_asyncio(),
    )
    config.apply_context()
    return DictBackend(Login(config), config), config


async def _add_user(backend: Any, config: Any, username: str, password: str) -> None:
    from pymap.backend.dict import Identity
    from pymap.user import UserMetadata

    identity = Identity(username, backend.login, None, frozenset({"admin"}))
    await identity.set(UserMetadata(config, username, password=password))
