"""The send ledger of campaigns: one row per recipient and run, claimed with a lease.

States: queued -> claimed -> sending -> sent | failed | uncertain, or back to queued (a 4xx
deferral, a withdrawn or unreachable send). `claimed` means nothing was handed over yet: a
dead claimer's rows simply go back to the queue. `sending` is written, durably, after the
relay's 354 and before the message text: a dead sender's `sending` row may or may not
have been delivered and becomes `uncertain` (not sent again unless the campaign allows it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, or_, select, update

from .campaign_config import CampaignDefinition
from .campaign_mark import Marker
from .campaign_mime import Person
from .database import Database
from .folders import holder_is_dead
from .interfaces import Clock
from .marketing_config import Throttle as ThrottleConfig
from .suppressions import suppress
from .tables import Campaign, CampaignRun, CampaignSend, Subscriber
from .throttle import TokenBucket

log = logging.getLogger(__name__)

SENDS: Table = CampaignSend.__table__  # type: ignore[assignment]
RUNS: Table = CampaignRun.__table__  # type: ignore[assignment]
CAMPAIGNS: Table = Campaign.__table__  # type: ignore[assignment]
SUBSCRIBERS: Table = Subscriber.__table__  # type: ignore[assignment]
ACTIVE = ("queued", "claimed", "sending")
UNCERTAIN_NOTE = (
    "the sending process stopped while this message was being handed to the relay; "
    "it may or may not have been delivered"
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed recipient, with what its message needs."""

    id: int
    run_id: int
    address: str
    message_id: str
    attempts: int
    person: Person


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one claimed row.

    state: sent, failed, uncertain, queued (retry at `retry_in`) or released (not handed
    over: back to the queue as if never claimed). deferred: the relay said 4xx (slow down);
    hard: a permanent failure of the mailbox (5.1.x), which suppresses the address.
    """

    id: int
    address: str
    state: str
    detail: str = ""
    retry_in: float = 0.0
    deferred: bool = False
    hard: bool = False


def _json_definition(text: str) -> CampaignDefinition:
    return CampaignDefinition.from_json(text)


class SendLedger:
    """Claims, marks and settles campaign sends for one process (its `owner`).

    With only_run, it claims the rows of that run alone (`mailcare campaign send`).
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        owner: str,
        bucket: TokenBucket,
        only_run: int | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.owner = owner
        self.bucket = bucket
        self._marker = Marker(db, owner)
        due = (
            select(SENDS.c.id)
            .join(RUNS, RUNS.c.id == SENDS.c.run_id)
            .where(
                SENDS.c.state == "queued",
                SENDS.c.due_at <= bindparam("c_now", type_=SENDS.c.due_at.type),
                RUNS.c.status == "running",
            )
            .order_by(SENDS.c.due_at, SENDS.c.id)
            .limit(bindparam("c_limit"))
        )
        if only_run is not None:
            due = due.where(SENDS.c.run_id == only_run)
        self._probe = due
        if db.is_postgresql:
            due = due.with_for_update(skip_locked=True, of=SENDS)
        self._due = due
        self._take = (
            update(SENDS)
            .where(SENDS.c.id.in_(bindparam("c_ids", expanding=True)), SENDS.c.state == "queued")
            .values(
                state="claimed",
                claimed_by=bindparam("c_owner"),
                lease_until=bindparam("c_lease", type_=SENDS.c.lease_until.type),
                attempts=SENDS.c.attempts + 1,
            )
        )
        self._taken = (
            select(
                SENDS.c.id,
                SENDS.c.run_id,
                SENDS.c.address,
                SENDS.c.message_id,
                SENDS.c.attempts,
                SENDS.c.subscriber_id,
                SUBSCRIBERS.c.name,
                SUBSCRIBERS.c.language,
                SUBSCRIBERS.c.tier,
                SUBSCRIBERS.c.lifecycle,
                SUBSCRIBERS.c.tags,
                SUBSCRIBERS.c.attributes,
            )
            .select_from(SENDS.outerjoin(SUBSCRIBERS, SUBSCRIBERS.c.id == SENDS.c.subscriber_id))
            .where(
                SENDS.c.id.in_(bindparam("c_ids", expanding=True)),
                SENDS.c.claimed_by == bindparam("c_owner"),
            )
            .order_by(SENDS.c.id)
        )
        # built once: constructing a statement costs more than running it on SQLite
        self._settle_statement = (
            update(SENDS)
            .where(
                SENDS.c.id == bindparam("r_id"),
                SENDS.c.claimed_by == bindparam("r_mine"),
                # not IN (...): an expanding parameter cannot be used with executemany
                or_(
                    SENDS.c.state == "claimed",
                    SENDS.c.state == "sending",
                    SENDS.c.state == "uncertain",
                ),
            )
            .values(
                state=bindparam("r_state"),
                claimed_by=bindparam("r_owner"),
                due_at=func.coalesce(bindparam("r_due", type_=SENDS.c.due_at.type), SENDS.c.due_at),
                sent_at=bindparam("r_sent", type_=SENDS.c.sent_at.type),
                last_error=bindparam("r_error"),
                attempts=SENDS.c.attempts - bindparam("r_undo"),
            )
        )

    def exchange(
        self, results: Sequence[Result], limit: int, lease: float, throttle: ThrottleConfig
    ) -> tuple[list[Claimed], float]:
        """Settle results and claim up to limit rows in one transaction; (rows, wait)."""
        if not results and limit <= 0:
            return [], 0.0
        if not results:
            # an idle sender looks without taking SQLite's write lock or a token
            with self.db.reading() as conn:
                probe = {"c_now": self.clock.now(), "c_limit": 1}
                if conn.execute(self._probe, probe).first() is None:
                    return [], 0.0
        with self.db.transaction(durable=False) as conn:
            self._settle(conn, results, throttle)
            if limit <= 0:
                return [], 0.0
            return self._claim(conn, limit, lease, throttle)

    def mark(self, send_id: int, results: Sequence[Result]) -> bool:
        """Durably record that send_id is being handed over, and the rows of results.

        Only the rows change here; what results imply beyond their row (a deferral slows
        the throttle, a dead mailbox is suppressed) waits for the next `exchange`, which
        must be given them again. False when the row is no longer ours to send (lease
        taken over, run paused or cancelled: each takes the claim back): the caller
        withdraws the message.
        """
        return self._marker.mark(
            send_id, [row_values(r, self.owner, self.clock.now()) for r in results]
        )

    def _claim(
        self, conn: Connection, limit: int, lease: float, throttle: ThrottleConfig
    ) -> tuple[list[Claimed], float]:
        now = self.clock.now()
        grant = self.bucket.take(conn, limit, throttle, now)
        if grant.count == 0:
            return [], grant.wait
        ids = list(conn.execute(self._due, {"c_now": now, "c_limit": grant.count}).scalars())
        if len(ids) < grant.count:
            self.bucket.give_back(conn, grant.count - len(ids), throttle)
        if not ids:
            return [], 0.0
        conn.execute(
            self._take,
            {
                "c_ids": ids,
                "c_owner": self.owner,
                "c_lease": now + timedelta(seconds=lease),
            },
        )
        rows = conn.execute(self._taken, {"c_ids": ids, "c_owner": self.owner}).all()
        return [_claimed(r) for r in rows], 0.0

    def _settle(
        self, conn: Connection, results: Sequence[Result], throttle: ThrottleConfig
    ) -> None:
        if not results:
            return
        now = self.clock.now()
        conn.execute(self._settle_statement, [row_values(r, self.owner, now) for r in results])
        if any(result.deferred for result in results):
            rate = self.bucket.deferred(conn, throttle, now)
            log.warning("the relay deferred campaign mail (4xx); slowing to %.2f msgs/s", rate)
        hard = [(r.address, "hard-bounce", r.detail, None) for r in results if r.hard]
        if hard:
            suppress(conn, hard, now)

    def close(self) -> None:
        """Give back the connection the marks use."""
        self._marker.close()

    def recover(self) -> tuple[int, int]:
        """Rows a dead or expired claimer left: claimed back to the queue, sending uncertain.

        Returns (requeued, uncertain). A run whose campaign allows resending uncertain
        mail gets those rows queued again instead.
        """
        now = self.clock.now()
        with self.db.reading() as conn:
            holders = conn.execute(
                select(SENDS.c.claimed_by, func.min(SENDS.c.lease_until))
                .where(SENDS.c.state.in_(["claimed", "sending"]))
                .group_by(SENDS.c.claimed_by)
            ).all()
        dead = [o for o, _ in holders if o and o != self.owner and holder_is_dead(o)]
        expired = any(until is not None and until < now for o, until in holders if o != self.owner)
        if not dead and not expired:
            return 0, 0
        gone = or_(
            SENDS.c.claimed_by.in_(dead),
            (SENDS.c.lease_until < now) & (SENDS.c.claimed_by != self.owner),
        )
        with self.db.transaction() as conn:
            requeued = conn.execute(
                update(SENDS)
                .where(SENDS.c.state == "claimed", gone)
                .values(
                    state="queued",
                    claimed_by=None,
                    lease_until=None,
                    attempts=SENDS.c.attempts - 1,
                )
            ).rowcount
            resend_runs = self._resending_runs(conn)
            again = 0
            if resend_runs:
                again = conn.execute(
                    update(SENDS)
                    .where(SENDS.c.state == "sending", gone, SENDS.c.run_id.in_(resend_runs))
                    .values(state="queued", claimed_by=None, lease_until=None)
                ).rowcount
            uncertain = conn.execute(
                update(SENDS)
                .where(SENDS.c.state == "sending", gone)
                .values(state="uncertain", lease_until=None, last_error=UNCERTAIN_NOTE)
            ).rowcount
        if uncertain:
            log.warning(
                "%d campaign messages are uncertain: their sender stopped during the hand-over "
                "(see mailcare campaign status)",
                uncertain,
            )
        return int(requeued) + int(again), int(uncertain)

    def _resending_runs(self, conn: Connection) -> list[int]:
        rows = conn.execute(
            select(RUNS.c.id, CAMPAIGNS.c.definition)
            .join(CAMPAIGNS, CAMPAIGNS.c.id == RUNS.c.campaign_id)
            .where(RUNS.c.status.in_(["running", "paused"]))
        ).all()
        return [run for run, text in rows if _json_definition(text).resend_uncertain]

    def finish_runs(self) -> list[tuple[int, str]]:
        """Close running runs with no recipient left to send: finished, or with failures."""
        with self.db.reading() as conn:
            running = list(
                conn.execute(select(RUNS.c.id).where(RUNS.c.status == "running")).scalars()
            )
            if not running:
                return []
            counts = conn.execute(
                select(SENDS.c.run_id, SENDS.c.state, func.count())
                .where(SENDS.c.run_id.in_(running))
                .group_by(SENDS.c.run_id, SENDS.c.state)
            ).all()
        states: dict[int, dict[str, int]] = {run: {} for run in running}
        for run, state, count in counts:
            states[run][state] = int(count)
        done: list[tuple[int, str]] = []
        for run, by_state in states.items():
            if any(by_state.get(state) for state in ACTIVE):
                continue
            failures = by_state.get("failed", 0) + by_state.get("uncertain", 0)
            done.append((run, "finished_with_failures" if failures else "finished"))
        if not done:
            return []
        now = self.clock.now()
        closed: list[tuple[int, str]] = []
        with self.db.transaction() as conn:
            for run, status in done:
                active = conn.execute(
                    select(func.count())
                    .select_from(SENDS)
                    .where(SENDS.c.run_id == run, SENDS.c.state.in_(list(ACTIVE)))
                ).scalar_one()
                if active:
                    continue
                changed = conn.execute(
                    update(RUNS)
                    .where(RUNS.c.id == run, RUNS.c.status == "running")
                    .values(status=status, finished_at=now)
                ).rowcount
                if changed:
                    closed.append((run, status))
        for run, status in closed:
            log.info("campaign run %d %s", run, status.replace("_", " "))
        return closed


def row_values(result: Result, owner: str, now: datetime) -> dict[str, Any]:
    """The new values of a result's row (bind parameters of the settle statement)."""
    final = result.state in ("sent", "failed", "uncertain")
    return {
        "r_id": result.id,
        "r_mine": owner,
        "r_state": "queued" if result.state == "released" else result.state,
        "r_owner": owner if final else None,
        "r_due": now + timedelta(seconds=result.retry_in) if result.state == "queued" else None,
        "r_sent": now if result.state == "sent" else None,
        "r_error": (result.detail or None) if result.state != "sent" else None,
        "r_undo": 1 if result.state == "released" else 0,
    }


def _claimed(row: Any) -> Claimed:
    try:
        tags = frozenset(json.loads(row.tags or "[]"))
        attributes = json.loads(row.attributes or "{}")
    except ValueError:
        tags, attributes = frozenset(), {}
    return Claimed(
        id=row.id,
        run_id=row.run_id,
        address=row.address,
        message_id=row.message_id,
        attempts=row.attempts,
        person=Person(
            subscriber_id=row.subscriber_id,
            address=row.address,
            name=row.name,
            language=row.language,
            tier=row.tier,
            lifecycle=row.lifecycle,
            tags=tags,
            attributes=attributes,
        ),
    )
