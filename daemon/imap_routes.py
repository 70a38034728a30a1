"""Routes decided by the classify step, carried out on the IMAP server: keywords, then a move."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from sqlalchemy import select, update

from .corrections import MoveSweep
from .database import Database
from .errors import MailSourceError
from .folders import FolderLedger
from .inbox import DELIVERIES, MESSAGES
from .interfaces import Clock
from .rules import Routing
from .settings import Mailbox

if TYPE_CHECKING:
    from .routing import Forwarder
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


class Change(NamedTuple):
    """What a route does to its messages: a folder to move into, keywords to set and drop."""

    folder: str | None
    keywords: tuple[str, ...]
    drop: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    """One delivery's pending route."""

    delivery_id: int
    uid: int
    uidvalidity: int | None
    folder: str | None
    keywords: tuple[str, ...]
    message_id: str | None
    source: str | None = None  # the folder the message is in, when not its delivery's own
    drop: tuple[str, ...] = ()  # keywords of an earlier route to take off
    # the route's columns as read: a route a correction changed since is not settled
    stamp: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None)

    def relocated(self, own: str) -> bool:
        """True when the message is found by Message-ID in another folder, not by UID here."""
        return self.source is not None and self.source != own


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
                DELIVERIES.c.route_from,
                DELIVERIES.c.route_drop,
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
                row.route_from or None,
                tuple(dict.fromkeys((row.route_drop or "").split())),
                (row.route_folder, row.route_keywords, row.route_from, row.route_drop),
            )
            for row in rows
        ]

    def finish(self, routes: Sequence[Route], state: str, change: Change | None = None) -> None:
        """Set the routes' state ('done' or 'failed') unless something else settled them.

        A route that a correction replaced while this one was carried out stays pending.
        When `change` was carried out, the replacement learns where the message went and
        which keywords it got.
        """
        stamps = {route.delivery_id: route.stamp for route in routes}
        ids = sorted(stamps)
        with self.db.transaction() as conn:
            for start in range(0, len(ids), 500):
                query = select(
                    DELIVERIES.c.id,
                    DELIVERIES.c.route_folder,
                    DELIVERIES.c.route_keywords,
                    DELIVERIES.c.route_from,
                    DELIVERIES.c.route_drop,
                ).where(
                    DELIVERIES.c.id.in_(ids[start : start + 500]),
                    DELIVERIES.c.route_state == "pending",
                )
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update()
                rows = conn.execute(query).all()
                same = [row.id for row in rows if tuple(row[1:]) == stamps[row.id]]
                if same:
                    conn.execute(
                        update(DELIVERIES)
                        .where(DELIVERIES.c.id.in_(same))
                        .values(route_state=state)
                    )
                if change is not None and state == "done":
                    for row in rows:
                        if tuple(row[1:]) != stamps[row.id]:
                            self._replaced(conn, row, change)

    @staticmethod
    def _replaced(conn: Any, row: Any, change: Change) -> None:
        """Tell a replacing route what the route it replaced did to the message."""
        wanted = (row.route_keywords or "").split()
        drop = dict.fromkeys([*(row.route_drop or "").split(), *change.keywords])
        conn.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id == row.id)
            .values(
                route_from=change.folder if change.folder is not None else row.route_from,
                route_drop=" ".join(k for k in drop if k not in wanted) or None,
            )
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
        forwarder: Forwarder | None = None,
    ) -> None:
        self.name = f"imap:{mailbox.name}/{folder}"
        self.mailbox = mailbox
        self.folder = folder
        self.clock = clock
        self.book = RouteBook(db, folder_id)
        self.renew = renew  # raises LeaseLostError: nothing changes on the server without it
        # one worker per mailbox (its first folder's) learns corrections from moves
        self.routing = routing if folder == mailbox.folders[0] else None
        self.sweep = (
            MoveSweep(db, clock, ledger, mailbox, forwarder) if self.routing is not None else None
        )
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
            if routing.learn_from_moves:
                selected_other |= self.sweep.run(client, routing)
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
        elsewhere = [r for r in routes if r.relocated(self.folder)]
        if elsewhere:
            self._carry_out_elsewhere(client, elsewhere, capabilities)
            self._select_again(client, uidvalidity)
            routes = [r for r in routes if not r.relocated(self.folder)]
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
            return len(routes) + len(elsewhere)
        groups: dict[Change, list[Route]] = {}
        for route in current:
            groups.setdefault(self._change(route, self.folder, permanent_flags), []).append(route)
        for change, members in groups.items():
            for start in range(0, len(members), ROUTE_BATCH):
                batch = members[start : start + ROUTE_BATCH]
                self.renew()
                self._carry_out(client, batch, [r.uid for r in batch], change, capabilities)
        return len(routes) + len(elsewhere)

    def _change(self, route: Route, where: str, permanent_flags: Sequence[bytes] | None) -> Change:
        """What to do to a route's message in folder `where`."""
        return Change(
            None if route.folder in (None, where) else route.folder,
            self._keywords(route.keywords, permanent_flags),
            tuple(kept_keywords(permanent_flags, route.drop)[0]),
        )

    def _carry_out_elsewhere(
        self, client: Any, routes: Sequence[Route], capabilities: set[bytes]
    ) -> None:
        """Routes made again after a correction: find each message by Message-ID where it is."""
        by_folder: dict[str, list[Route]] = {}
        for route in routes:
            by_folder.setdefault(str(route.source), []).append(route)
        for source, members in by_folder.items():
            try:
                selected = client.select_folder(source)
            except IMAPClientError as exc:
                if _is_abort(exc):
                    raise
                log.warning(
                    "%s: cannot open %s to route messages again: %s", self.name, source, exc
                )
                self.book.finish(members, "failed")
                continue
            flags = selected.get(b"PERMANENTFLAGS")
            for route in members:
                self.renew()  # one message at a time: corrections come at a person's pace
                uids = self._find(client, route, source)
                if uids:
                    self._carry_out(
                        client,
                        [route],
                        uids,
                        self._change(route, source, flags),
                        capabilities,
                        refused="failed",
                    )

    def _find(self, client: Any, route: Route, source: str) -> list[int]:
        """The UIDs of the route's message in the selected folder; a miss fails the route."""
        found: list[int] = []
        if route.message_id:
            try:
                found = list(
                    client.search(["NOT", "DELETED", "HEADER", "Message-ID", route.message_id])
                )
            except IMAPClientError as exc:
                if _is_abort(exc):
                    raise
                log.warning("%s: search in %s failed: %s", self.name, source, exc)
        if not found:
            log.warning(
                "%s: %s is no longer in %s: its keywords and folder were not changed",
                self.name,
                route.message_id or "a message without Message-ID",
                source,
            )
            self.book.finish([route], "failed")
        return found

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
        uids: list[int],
        change: Change,
        capabilities: set[bytes],
        refused: str | None = None,
    ) -> None:
        """Take keywords off, set keywords, then move; settle the routes as done or failed.

        When the server refuses, `refused` is the routes' state; without it, routes whose
        message has left the folder count as done and the others as failed.
        """
        folder, keywords, drop = change
        try:
            if drop:
                client.remove_flags(uids, list(drop), silent=True)
            if keywords:
                client.add_flags(uids, list(keywords), silent=True)
            if folder is not None:
                self._move(client, uids, folder, capabilities)
        except IMAPClientError as exc:
            if _is_abort(exc):
                raise  # the connection is gone: the routes stay pending for the next session
            if refused is None:
                self._refused(client, routes, folder, str(exc))
            else:
                log.warning("%s: route to %s failed: %s", self.name, folder or "-", exc)
                self.book.finish(routes, refused)
            return
        self.book.finish(routes, "done", change)
        self.carried_out += len(routes)
        log.debug("%s: %d route(s) done (%s)", self.name, len(routes), change)

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
