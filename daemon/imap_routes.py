"""Routes decided by the classify step, carried out on the IMAP server: keywords, then a move."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from sqlalchemy import select, update

from .corrections import MoveSweep, department_folders
from .database import Database
from .errors import MailSourceError
from .folders import FolderLedger
from .inbox import DELIVERIES, MESSAGES
from .interfaces import Clock
from .rules import Routing
from .settings import Mailbox

if TYPE_CHECKING:
    from .sla_imap import SlaFolders

log = logging.getLogger(__name__)

RoutingSource = Callable[[], Routing]
ROUTE_BATCH = 500  # UIDs per STORE/MOVE command
ANY_KEYWORD = b"\\*"
SWEEP_EVERY = 10.0  # seconds between two looks into the department folders


def move_uids(client: Any, uids: Sequence[int], folder: str, capabilities: set[bytes]) -> None:
    """MOVE, or COPY + \\Deleted (+ UID EXPUNGE with UIDPLUS) where the server lacks MOVE."""
    if b"MOVE" in capabilities:
        client.move(list(uids), folder)
        return
    client.copy(list(uids), folder)
    client.add_flags(list(uids), [b"\\Deleted"], silent=True)
    if b"UIDPLUS" in capabilities:
        client.uid_expunge(list(uids))  # without UIDPLUS, EXPUNGE would hit others' \Deleted


def kept_keywords(
    permanent_flags: Sequence[bytes] | None, keywords: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(keywords the server keeps, keywords it would drop), as its PERMANENTFLAGS say."""
    if permanent_flags is None:  # RFC 3501: without PERMANENTFLAGS every flag is permanent
        return list(keywords), []
    allowed = {bytes(flag).lower() for flag in permanent_flags}
    if ANY_KEYWORD in allowed:
        return list(keywords), []
    kept = [k for k in keywords if k.encode().lower() in allowed]
    return kept, [k for k in keywords if k not in kept]


def _is_abort(exc: BaseException) -> bool:
    return isinstance(exc, IMAPClientAbortError)


def folder_exists(client: Any, folder: str) -> bool:
    """True when folder exists (LIST, compared exactly: % and * in names are LIST wildcards)."""
    return any(name == folder for _flags, _sep, name in client.list_folders("", folder))


@dataclass(frozen=True)
class Route:
    """One delivery's pending route."""

    delivery_id: int
    uid: int
    uidvalidity: int | None
    folder: str | None
    keywords: tuple[str, ...]
    message_id: str | None


class RouteBook:
    """The routes of one folder as the deliveries table holds them."""

    def __init__(self, db: Database, folder_id: int) -> None:
        self.db = db
        self.folder_id = folder_id

    def pending(self) -> list[Route]:
        """Every pending route of this folder, by UID."""
        query = (
            select(
                DELIVERIES.c.id,
                DELIVERIES.c.uid,
                DELIVERIES.c.uidvalidity,
                DELIVERIES.c.route_folder,
                DELIVERIES.c.route_keywords,
                MESSAGES.c.message_id,
            )
            .join(MESSAGES, MESSAGES.c.id == DELIVERIES.c.message_pk)
            .where(DELIVERIES.c.folder_id == self.folder_id, DELIVERIES.c.route_state == "pending")
            .order_by(DELIVERIES.c.uid)
        )
        with self.db.reading() as conn:
            rows = conn.execute(query).all()
        return [
            Route(
                int(row.id),
                int(row.uid or 0),
                row.uidvalidity,
                row.route_folder or None,
                tuple(dict.fromkeys((row.route_keywords or "").split())),
                row.message_id,
            )
            for row in rows
        ]

    def finish(self, routes: Sequence[Route], state: str) -> None:
        """Set the routes' state ('done' or 'failed') unless something else settled them."""
        ids = [route.delivery_id for route in routes]
        with self.db.transaction() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(
                    update(DELIVERIES)
                    .where(
                        DELIVERIES.c.id.in_(ids[start : start + 500]),
                        DELIVERIES.c.route_state == "pending",
                    )
                    .values(route_state=state)
                )


class FolderRoutes:
    """Carries out the pending routes of one intake folder, then sweeps for corrections."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        ledger: FolderLedger,
        mailbox: Mailbox,
        folder: str,
        folder_id: int,
        renew: Callable[[], None],
        routing: RoutingSource | None = None,
        sla: SlaFolders | None = None,
    ) -> None:
        self.name = f"imap:{mailbox.name}/{folder}"
        self.mailbox = mailbox
        self.folder = folder
        self.clock = clock
        self.book = RouteBook(db, folder_id)
        self.renew = renew  # raises LeaseLostError: nothing changes on the server without it
        # one worker per mailbox (its first folder's) learns corrections from moves
        self.routing = routing if folder == mailbox.folders[0] else None
        self.sweep = MoveSweep(db, clock, ledger, mailbox) if self.routing is not None else None
        # ... and watches the Sent and resolved folders for the SLA clocks
        self.sla = sla if folder == mailbox.folders[0] else None
        self.folder_id = folder_id
        self.sweep_every = SWEEP_EVERY
        self.carried_out = 0
        self._last_sweep: float | None = None
        self._existing: set[str] = set()
        self._warned_keywords = False

    def run(
        self, client: Any, uidvalidity: int, capabilities: set[bytes], selected: dict[bytes, Any]
    ) -> bool:
        """One cycle: the pending routes, then (now and then) the sweeps of other folders.

        True when IMAP commands were sent: imapclient drops the untagged EXISTS they may
        have carried, so the caller must look for new mail again before it IDLEs.
        """
        settled = self.execute(client, uidvalidity, capabilities, selected.get(b"PERMANENTFLAGS"))
        now = self.clock.monotonic()
        if (self.sweep is None and self.sla is None) or (
            self._last_sweep is not None and now - self._last_sweep < self.sweep_every
        ):
            return settled > 0
        self._last_sweep = now
        selected_other = False
        if self.sweep is not None and self.routing is not None:
            routing = self.routing()
            folders = department_folders(routing, self.mailbox)
            if routing.learn_from_moves and folders:
                selected_other |= self.sweep.run(client, folders)
        if self.sla is not None:
            if selected_other:
                self._select_again(client, uidvalidity)
                selected_other = False
            selected_other |= self.sla.run(client, self.folder_id, uidvalidity)
        if selected_other:
            # the sweeps examined other folders: select ours again before IDLE or the next FETCH
            self._select_again(client, uidvalidity)
        return True

    def _select_again(self, client: Any, uidvalidity: int) -> None:
        again = client.select_folder(self.folder)
        if int(again[b"UIDVALIDITY"]) != uidvalidity:
            raise MailSourceError(f"{self.name}: UIDVALIDITY changed; reconnecting")

    def execute(
        self,
        client: Any,
        uidvalidity: int,
        capabilities: set[bytes],
        permanent_flags: Sequence[bytes] | None,
    ) -> int:
        """Carry out this folder's pending routes; return how many are settled."""
        routes = self.book.pending()
        if not routes:
            return 0
        stale = [r for r in routes if r.uidvalidity != uidvalidity]
        if stale:
            log.warning(
                "%s: %d route(s) failed: UIDVALIDITY changed since they were stored (%s)",
                self.name,
                len(stale),
                ", ".join(r.message_id or f"UID {r.uid}" for r in stale[:5]),
            )
            self.book.finish(stale, "failed")
        current = [r for r in routes if r.uidvalidity == uidvalidity]
        if current and self.mailbox.disposition.action == "move":
            # the message left this folder when it was stored; routes need leave or flag
            log.warning(
                "%s: %d route(s) failed: disposition `move` already took the messages to %s; "
                "routes need disposition leave or flag",
                self.name,
                len(current),
                self.mailbox.disposition.folder,
            )
            self.book.finish(current, "failed")
            return len(routes)
        groups: dict[tuple[str | None, tuple[str, ...]], list[Route]] = {}
        for route in current:
            folder = None if route.folder == self.folder else route.folder
            keywords = self._keywords(route.keywords, permanent_flags)
            groups.setdefault((folder, keywords), []).append(route)
        for (folder, keywords), members in groups.items():
            for start in range(0, len(members), ROUTE_BATCH):
                batch = members[start : start + ROUTE_BATCH]
                self.renew()
                self._carry_out(client, batch, folder, keywords, capabilities)
        return len(routes)

    def _keywords(
        self, keywords: tuple[str, ...], permanent_flags: Sequence[bytes] | None
    ) -> tuple[str, ...]:
        kept, dropped = kept_keywords(permanent_flags, keywords)
        if dropped and not self._warned_keywords:
            self._warned_keywords = True
            log.warning(
                "%s: the server does not keep custom keywords (PERMANENTFLAGS has no \\*); "
                "routes set no keywords such as %s",
                self.name,
                " ".join(dropped),
            )
        return tuple(kept)

    def _carry_out(
        self,
        client: Any,
        routes: list[Route],
        folder: str | None,
        keywords: tuple[str, ...],
        capabilities: set[bytes],
    ) -> None:
        """Set keywords, then move; settle the routes as done or failed."""
        uids = [route.uid for route in routes]
        try:
            if keywords:
                client.add_flags(uids, list(keywords), silent=True)
            if folder is not None:
                self._move(client, uids, folder, capabilities)
        except IMAPClientError as exc:
            if _is_abort(exc):
                raise  # the connection is gone: the routes stay pending for the next session
            self._refused(client, routes, folder, str(exc))
            return
        self.book.finish(routes, "done")
        self.carried_out += len(routes)
        log.debug("%s: %d route(s) done (%s, %s)", self.name, len(routes), folder, keywords)

    def _move(self, client: Any, uids: list[int], folder: str, capabilities: set[bytes]) -> None:
        """Move into folder, creating it first when it does not exist."""
        if folder not in self._existing:
            if not folder_exists(client, folder):
                self._create(client, folder)
            self._existing.add(folder)
        try:
            move_uids(client, uids, folder, capabilities)
        except IMAPClientError as exc:
            if _is_abort(exc) or "[TRYCREATE]" not in str(exc).upper():
                raise
            self._create(client, folder)  # deleted since we looked: create, try once more
            move_uids(client, uids, folder, capabilities)

    def _create(self, client: Any, folder: str) -> None:
        try:
            client.create_folder(folder)
        except IMAPClientError as exc:
            if _is_abort(exc) or not folder_exists(client, folder):
                raise  # else another process created it meanwhile
        log.info("%s: created folder %s for routed messages", self.name, folder)
        try:
            client.subscribe_folder(folder)  # most mail clients show subscribed folders only
        except IMAPClientError as exc:
            if _is_abort(exc):
                raise
            log.warning("%s: cannot subscribe to %s: %s", self.name, folder, exc)

    def _refused(self, client: Any, routes: list[Route], folder: str | None, why: str) -> None:
        """The server said NO: routes of messages gone from the folder count as done."""
        try:
            uid_set = ",".join(str(route.uid) for route in routes)
            still_here = set(client.search(["UID", uid_set]))
        except IMAPClientError as exc:
            if _is_abort(exc):
                raise
            still_here = {route.uid for route in routes}
        gone = [route for route in routes if route.uid not in still_here]
        failed = [route for route in routes if route.uid in still_here]
        if gone:
            self.book.finish(gone, "done")
        if failed:
            for route in failed:
                log.warning(
                    "%s: route of UID %s to %s failed: %s",
                    route.message_id or "(no Message-ID)",
                    route.uid,
                    folder or "(keywords only)",
                    why,
                )
            self.book.finish(failed, "failed")
