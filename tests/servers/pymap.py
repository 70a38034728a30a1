"""pymap (pure-Python IMAP, in-memory dict backend) in a thread, for machines without Dovecot.

Compared with the Dovecot fixture it lacks: custom keywords set by STORE (answered OK,
then silently dropped, as PERMANENTFLAGS has no \\*; keywords given at APPEND are kept),
SPECIAL-USE, NAMESPACE, CONDSTORE/QRESYNC, SORT/THREAD, TLS (no IMAPS port, no STARTTLS),
LMTP delivery and kick(). It relies on pymap internals, hence the exact pin pymap==0.36.7.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from daemon.embedded import EmbeddedImapServer

from .imap import Account, ImapHelpers, close_client
from .net import LOOPBACK

logger = logging.getLogger(__name__)

DEFAULT_USERS = 3


class PymapServer(ImapHelpers):
    """mailcare's embedded pymap server with the test helpers and an account pool."""

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
        self._server = EmbeddedImapServer(start_timeout=start_timeout)
        self._initial_users = users
        self._accounts: list[Account] = []
        self._handed_out = 0
        self._lock = threading.Lock()

    @staticmethod
    def missing() -> str | None:
        """Say why pymap cannot run here, or None when it can."""
        try:
            import pymap.backend.dict  # noqa: F401
        except ImportError as exc:
            return f"pymap is not importable ({exc}); pip install pymap==0.36.7"
        return None

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
        """Start the server thread and return once the port accepts connections."""
        began = time.perf_counter()
        self._server.start()
        self.imap_port = self._server.port
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
        """Stop serving; all mail is gone."""
        self._server.stop()

    def restart(self) -> None:
        """Drop every connection and listen again on the same port; mailboxes are kept."""
        self._server.restart()

    def _new_account(self) -> Account:
        with self._lock:
            number = len(self._accounts) + 1
            account = Account(f"user{number:03d}", f"secret-user{number:03d}")
            self._accounts.append(account)
        self._server.add_user(account.username, account.password)
        return account

    def account(self) -> Account:
        """Hand out a fresh account; pymap learns new users at once, so there is no pool limit."""
        with self._lock:
            self._handed_out += 1
            index = self._handed_out
            if index < len(self._accounts):
                return self._accounts[index]
        return self._new_account()

    def lmtp_deliver(self, rcpt: str | Account, raw: bytes) -> None:
        """pymap has no LMTP server."""
        raise NotImplementedError("pymap has no LMTP; use append() or Dovecot")

    def kick(self, account: Account | str) -> bool:
        """pymap cannot drop one user's connections."""
        raise NotImplementedError("pymap cannot kick a user; use restart() or Dovecot")
