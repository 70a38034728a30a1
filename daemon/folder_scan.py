"""Looking through the new mail of folders other than the one a worker reads (department,
Sent and resolved folders): a UID cursor per folder in the folder ledger, advanced in the
same transaction as what was learned from each chunk."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from sqlalchemy import Connection, update

from .database import Database
from .folders import FolderLedger
from .inbox import FOLDERS
from .interfaces import Clock

log = logging.getLogger(__name__)

# (transaction, FETCH response by UID, folder id, UIDVALIDITY): record what the chunk says
ChunkHandler = Callable[[Connection, dict[int, Any], int, int], None]


def header_of(data: dict[bytes, Any]) -> bytes:
    """The header fields a `BODY.PEEK[HEADER.FIELDS (...)]` FETCH returned."""
    for key, value in data.items():
        if key.startswith(b"BODY[HEADER.FIELDS") and value is not None:
            return bytes(value)
    return b""


class FolderScan:
    """Scans other folders of one mailbox for UIDs above their cursors."""

    def __init__(self, db: Database, clock: Clock, ledger: FolderLedger, mailbox: str) -> None:
        self.db = db
        self.clock = clock
        self.ledger = ledger
        self.mailbox = mailbox
        self._ids: dict[str, int] = {}
        # set once a scan selected a folder: the caller must select its own folder again
        self.selected = False

    def folder_id(self, folder: str) -> int:
        """The folder's ledger row (its cursor lives there like an intake folder's)."""
        if folder not in self._ids:
            self._ids[folder] = self.ledger.ensure(self.mailbox, folder)
        return self._ids[folder]

    def scan(
        self, client: Any, folder: str, items: Sequence[bytes], batch: int, handle: ChunkHandler
    ) -> None:
        """FETCH items of the folder's new UIDs chunk by chunk and hand each chunk to handle.

        A folder the server will not show (most likely not created yet) is skipped.
        """
        try:
            status = client.folder_status(folder, [b"UIDNEXT", b"UIDVALIDITY"])
        except IMAPClientError as exc:
            if isinstance(exc, IMAPClientAbortError):
                raise
            log.debug("imap:%s/%s: not scanned: %s", self.mailbox, folder, exc)
            return
        uidvalidity, uidnext = int(status[b"UIDVALIDITY"]), int(status[b"UIDNEXT"])
        folder_id = self.folder_id(folder)
        state = self.ledger.state(folder_id)
        cursor = state.last_uid if state.uidvalidity == uidvalidity else 0
        if state.uidvalidity == uidvalidity and uidnext - 1 <= cursor:
            return
        self.selected = True
        client.select_folder(folder, readonly=True)
        uids = sorted(u for u in client.search(["UID", f"{cursor + 1}:*"]) if u > cursor)
        for start in range(0, len(uids), batch):
            chunk = uids[start : start + batch]
            response = client.fetch(chunk, list(items))
            with self.db.transaction() as conn:
                handle(conn, response, folder_id, uidvalidity)
                self._advance(conn, folder_id, uidvalidity, chunk[-1])
        if not uids:  # UIDs below UIDNEXT that are not there now never will be
            with self.db.transaction() as conn:
                self._advance(conn, folder_id, uidvalidity, max(cursor, uidnext - 1))
        self.ledger.record_success(folder_id, None, uidnext)

    def _advance(self, conn: Connection, folder_id: int, uidvalidity: int, uid: int) -> None:
        conn.execute(
            update(FOLDERS)
            .where(FOLDERS.c.id == folder_id)
            .values(uidvalidity=uidvalidity, last_uid=uid, last_stored_at=self.clock.now())
        )
