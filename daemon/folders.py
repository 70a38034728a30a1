"""The per-folder ledger: UID cursors, leases between processes, and folder health."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from .database import Database
from .inbox import FOLDERS, insert_ignoring
from .interfaces import Clock

log = logging.getLogger(__name__)


def new_owner_id() -> str:
    """An identity for this process: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def holder_is_dead(owner: str | None) -> bool:
    """True when owner names a process on this host that no longer exists."""
    if not owner:
        return False
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    return pid != os.getpid() and not process_alive(pid)


def process_alive(pid: int) -> bool:
    """True while a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class FolderState:
    """A snapshot of one folder row."""

    id: int
    mailbox: str
    folder: str
    uidvalidity: int | None
    last_uid: int
    lease_owner: str | None
    lease_until: datetime | None


class FolderLedger:
    """Cursor, lease and health bookkeeping for IMAP folders."""

    def __init__(self, db: Database, clock: Clock, owner: str, ttl: float) -> None:
        self.db = db
        self.clock = clock
        self.owner = owner
        self.ttl = timedelta(seconds=ttl)

    def ensure(self, mailbox: str, folder: str) -> int:
        """Return the id of the folder row, creating it on first sight."""
        with self.db.transaction() as conn:
            conn.execute(
                insert_ignoring(conn, FOLDERS, ["mailbox", "folder"]),
                [{"mailbox": mailbox, "folder": folder, "last_uid": 0, "resyncs": 0}],
            )
            found = conn.execute(
                select(FOLDERS.c.id).where(FOLDERS.c.mailbox == mailbox, FOLDERS.c.folder == folder)
            ).scalar_one()
        return int(found)

    def state(self, folder_id: int) -> FolderState:
        """Read the folder row."""
        with self.db.reading() as conn:
            row = conn.execute(select(FOLDERS).where(FOLDERS.c.id == folder_id)).one()
        return FolderState(
            row.id,
            row.mailbox,
            row.folder,
            row.uidvalidity,
            row.last_uid,
            row.lease_owner,
            row.lease_until,
        )

    def acquire(self, folder_id: int) -> bool:
        """Take or keep the folder lease; True when this process now holds it."""
        current = self.state(folder_id)
        now = self.clock.now()
        free = (
            current.lease_owner in (None, self.owner)
            or current.lease_until is None
            or current.lease_until < now
            or holder_is_dead(current.lease_owner)
        )
        if not free:
            return False
        holder = FOLDERS.c.lease_owner
        same_holder = (
            holder.is_(None) if current.lease_owner is None else holder == current.lease_owner
        )
        with self.db.transaction() as conn:
            taken = conn.execute(
                update(FOLDERS)
                .where(FOLDERS.c.id == folder_id, same_holder)
                .values(lease_owner=self.owner, lease_until=now + self.ttl)
            )
        if taken.rowcount == 1 and current.lease_owner not in (None, self.owner):
            log.info(
                "folder %s/%s: took over the lease from %s",
                current.mailbox,
                current.folder,
                current.lease_owner,
            )
        return taken.rowcount == 1

    def renew(self, folder_id: int) -> bool:
        """Extend the lease; False when another process has taken it."""
        with self.db.transaction(durable=False) as conn:
            done = conn.execute(
                update(FOLDERS)
                .where(FOLDERS.c.id == folder_id, FOLDERS.c.lease_owner == self.owner)
                .values(lease_until=self.clock.now() + self.ttl)
            )
        return done.rowcount == 1

    def release(self, folder_id: int) -> None:
        """Give the lease up so another process can take it at once."""
        with self.db.transaction() as conn:
            conn.execute(
                update(FOLDERS)
                .where(FOLDERS.c.id == folder_id, FOLDERS.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None)
            )

    def begin_sync(self, folder_id: int, uidvalidity: int) -> int:
        """Record the server's UIDVALIDITY; on a change reset the cursor. Returns the cursor."""
        with self.db.transaction() as conn:
            row = conn.execute(
                select(
                    FOLDERS.c.uidvalidity, FOLDERS.c.last_uid, FOLDERS.c.mailbox, FOLDERS.c.folder
                ).where(FOLDERS.c.id == folder_id)
            ).one()
            if row.uidvalidity == uidvalidity:
                return int(row.last_uid)
            if row.uidvalidity is not None:
                log.warning(
                    "folder %s/%s: UIDVALIDITY changed %s -> %s, re-syncing (stored messages "
                    "are deduplicated)",
                    row.mailbox,
                    row.folder,
                    row.uidvalidity,
                    uidvalidity,
                )
            conn.execute(
                update(FOLDERS)
                .where(FOLDERS.c.id == folder_id, FOLDERS.c.lease_owner == self.owner)
                .values(
                    uidvalidity=uidvalidity,
                    last_uid=0,
                    resyncs=FOLDERS.c.resyncs + (0 if row.uidvalidity is None else 1),
                )
            )
        return 0

    def record_success(self, folder_id: int, messages: int | None, uidnext: int | None) -> None:
        """Note a completed sync and what the server reported."""
        with self.db.transaction(durable=False) as conn:
            conn.execute(
                update(FOLDERS)
                .where(FOLDERS.c.id == folder_id)
                .values(
                    last_success_at=self.clock.now(),
                    server_messages=messages,
                    server_uidnext=uidnext,
                )
            )

    def record_error(self, folder_id: int, error: str) -> None:
        """Note the last error seen for the folder (shown by `mailcare status`)."""
        with self.db.transaction() as conn:
            conn.execute(
                update(FOLDERS)
                .where(FOLDERS.c.id == folder_id)
                .values(last_error=error[:2000], last_error_at=self.clock.now())
            )
