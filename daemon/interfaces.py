"""Every seam of mailcare as a typing.Protocol."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from .message import ParsedMessage


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


@runtime_checkable
class WorkItem(Protocol):
    """What a pipeline step sees of one message being processed."""

    pk: int
    raw: bytes
    mailbox: str | None
    received_at: datetime
    parsed: ParsedMessage | None
    facts: dict[str, Any]


class Step(Protocol):
    """One named pipeline step: a pure `prepare` and a transactional `apply`."""

    name: str
    description: str

    def prepare(self, item: WorkItem) -> None:
        """Compute without touching the database (runs outside any transaction)."""
        ...

    def apply(self, item: WorkItem, conn: Connection) -> None:
        """Record results in the database; raising quarantines the message."""
        ...
