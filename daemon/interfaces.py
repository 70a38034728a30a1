"""Every seam of mailcare as a typing.Protocol."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy import Connection


class Clock(Protocol):
    """Where the time comes from (SystemClock in production, FrozenClock in tests)."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Return seconds on a clock that never goes backwards."""
        ...


class IMAPConnection(Protocol):
    """The part of imapclient.IMAPClient that the IMAP source uses."""

    def login(self, username: str, password: str) -> Any: ...
    def capabilities(self) -> tuple[bytes, ...]: ...
    def select_folder(self, folder: str, readonly: bool = False) -> dict[bytes, Any]: ...
    def search(self, criteria: Any = "ALL", charset: str | None = None) -> list[int]: ...
    def fetch(self, messages: Any, data: Any, modifiers: Any = None) -> dict[int, Any]: ...
    def add_flags(self, messages: Any, flags: Any, silent: bool = False) -> Any: ...
    def move(self, messages: Any, folder: str) -> Any: ...
    def idle(self) -> Any: ...
    def idle_check(self, timeout: float | None = None) -> list[Any]: ...
    def idle_done(self) -> Any: ...
    def noop(self) -> Any: ...
    def logout(self) -> Any: ...
    def shutdown(self) -> None: ...


class Step(Protocol):
    """One named pipeline step: a pure per-message `prepare` and a batched `apply`."""

    name: str
    description: str

    def prepare(self, item: Any) -> None:
        """Compute without touching the database (runs outside any transaction)."""
        ...

    def apply(self, items: Sequence[Any], conn: Connection) -> None:
        """Record results for the items, in order, in the caller's transaction.

        Raising makes the runner redo the batch one message at a time, so that only
        the message that fails is quarantined.
        """
        ...
