"""The runner: claims stored messages in batches and runs the pipeline steps on them."""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from .database import Database
from .errors import StorageError
from .folders import holder_is_dead
from .inbox import MESSAGES
from .interfaces import Clock, Step
from .pipeline import Work

log = logging.getLogger(__name__)


def describe_failure(step: str, exc: BaseException) -> str:
    """A quarantine reason: the step, the error, and where it happened."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in frames)
    text = str(exc).splitlines()[0][:500] if str(exc) else ""
    return f"{step}: {type(exc).__name__}: {text} [{where}]"


class Runner:
    """Processes the durable inbox; safe to run in several processes at once."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        steps: Sequence[Step],
        owner: str,
        batch_size: int = 200,
        claim_ttl: float = 60.0,
        max_attempts: int = 3,
        idle_wait: float = 0.2,
    ) -> None:
        self.db = db
        self.clock = clock
        self.steps = list(steps)
        self.owner = owner
        self.batch_size = batch_size
        self.claim_ttl = timedelta(seconds=claim_ttl)
        self.max_attempts = max_attempts
        self.idle_wait = idle_wait
        self._wake = threading.Event()
        self.processed = 0
        self.quarantined = 0
        self._before: list[Callable[[], object]] = []
        self._after: list[Callable[[], object]] = []

    def before_batch(self, hook: Callable[[], object]) -> None:
        """Call hook before each batch (e.g. to pick up edited rules)."""
        self._before.append(hook)

    def after_commit(self, hook: Callable[[], object]) -> None:
        """Call hook after each committed batch (e.g. to wake the sender)."""
        self._after.append(hook)

    def wake(self) -> None:
        """Tell the runner that new messages were stored."""
        self._wake.set()

    def release_dead_claims(self) -> int:
        """Hand back messages claimed by processes on this host that died mid-batch."""
        with self.db.reading() as conn:
            owners = [
                row[0]
                for row in conn.execute(
                    select(MESSAGES.c.claimed_by).where(MESSAGES.c.state == "processing").distinct()
                )
            ]
        dead = [owner for owner in owners if holder_is_dead(owner)]
        if not dead:
            return 0
        with self.db.transaction() as conn:
            released = conn.execute(
                update(MESSAGES)
                .where(MESSAGES.c.state == "processing", MESSAGES.c.claimed_by.in_(dead))
                .values(state="new", claimed_by=None, claim_until=None)
            ).rowcount
        log.info("released %d messages claimed by stopped processes", released)
        return int(released)

    def claim(self) -> list[Work]:
        """Atomically take the next batch of new (or abandoned) messages."""
        now = self.clock.now()
        with self.db.transaction(durable=False) as conn:
            query = (
                select(MESSAGES.c.id)
                .where(
                    or_(
                        MESSAGES.c.state == "new",
                        and_(MESSAGES.c.state == "processing", MESSAGES.c.claim_until < now),
                    )
                )
                .order_by(MESSAGES.c.id)
                .limit(self.batch_size)
            )
            if self.db.is_postgresql:
                query = query.with_for_update(skip_locked=True)
            ids = list(conn.execute(query).scalars())
            if not ids:
                return []
            conn.execute(
                update(MESSAGES)
                .where(MESSAGES.c.id.in_(ids))
                .values(
                    state="processing",
                    claimed_by=self.owner,
                    claim_until=now + self.claim_ttl,
                    attempts=MESSAGES.c.attempts + 1,
                )
            )
            rows = conn.execute(
                select(
                    MESSAGES.c.id,
                    MESSAGES.c.raw,
                    MESSAGES.c.mailbox,
                    MESSAGES.c.received_at,
                    MESSAGES.c.source,
                    MESSAGES.c.envelope_from,
                    MESSAGES.c.attempts,
                )
                .where(MESSAGES.c.id.in_(ids))
                .order_by(MESSAGES.c.id)
            ).all()
        return [
            Work(
                r.id, bytes(r.raw), r.mailbox, r.received_at, r.source, r.envelope_from, r.attempts
            )
            for r in rows
        ]

    def run_once(self) -> int:
        """Claim and process one batch; return how many messages it held."""
        for hook in self._before:
            hook()
        batch = self.claim()
        if batch:
            self.process(batch)
            for hook in self._after:
                hook()
        return len(batch)

    def process(self, batch: Sequence[Work]) -> None:
        """Run every step on the batch; failures are quarantined, the rest committed together."""
        failures: dict[int, str] = {}
        for item in batch:
            if item.attempts > self.max_attempts:
                failures[item.pk] = (
                    f"runner: gave up after {item.attempts - 1} attempts that never finished "
                    "(the process stopped or crashed while handling this message)"
                )
                continue
            for step in self.steps:
                try:
                    step.prepare(item)
                except Exception as exc:
                    failures[item.pk] = describe_failure(step.name, exc)
                    log.warning("message %s quarantined: %s", item.pk, failures[item.pk])
                    break
        healthy = [item for item in batch if item.pk not in failures]
        try:
            self._commit(healthy, failures, isolate=False)
        except _StepFailed:
            self._commit(healthy, failures, isolate=True)
        self.processed += len(batch)
        self.quarantined += len(failures)

    def _commit(self, items: Sequence[Work], failures: dict[int, str], isolate: bool) -> None:
        failed = dict(failures)
        retry: list[int] = []
        # a batch lost to a power cut is claimed and processed again: no sync needed
        with self.db.transaction(durable=False) as conn:
            done: list[Work] = []
            for item in items if isolate else ():
                outcome = self._apply_isolated(conn, item)
                if outcome is None:
                    done.append(item)
                elif outcome.startswith("storage:"):
                    retry.append(item.pk)
                else:
                    failed[item.pk] = outcome
            if not isolate and items:
                for item in items:
                    item.record.clear()
                for step in self.steps:
                    try:
                        step.apply(items, conn)
                    except Exception as exc:
                        raise _StepFailed from exc
                done = list(items)
            self._finish(conn, done, failed, retry)

    def _apply_isolated(self, conn: Connection, item: Work) -> str | None:
        item.record.clear()
        savepoint = conn.begin_nested()
        for step in self.steps:
            try:
                step.apply([item], conn)
            except SQLAlchemyError as exc:
                savepoint.rollback()
                log.warning(
                    "message %s: database error in %s, will retry: %s", item.pk, step.name, exc
                )
                return f"storage: {exc}"
            except Exception as exc:
                savepoint.rollback()
                reason = describe_failure(step.name, exc)
                log.warning("message %s quarantined: %s", item.pk, reason)
                return reason
        savepoint.commit()
        return None

    def _finish(
        self, conn: Connection, done: list[Work], failed: dict[int, str], retry: list[int]
    ) -> None:
        now = self.clock.now()
        mine = MESSAGES.c.claimed_by == self.owner
        # one UPDATE per message row: what the steps recorded, and the final state
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for item in done:
            row = {f"r_{key}": value for key, value in item.record.items()}
            shapes.setdefault(tuple(sorted(item.record)), []).append({"r_pk": item.pk, **row})
        changed = 0
        for columns, rows in shapes.items():
            statement = (
                update(MESSAGES)
                .where(MESSAGES.c.id == bindparam("r_pk"), mine, MESSAGES.c.state == "processing")
                .values(
                    state="done",
                    processed_at=now,
                    claimed_by=None,
                    claim_until=None,
                    **{column: bindparam(f"r_{column}") for column in columns},
                )
            )
            changed += conn.execute(statement, rows).rowcount
        if changed != len(done):
            # another runner reclaimed part of this batch: undo everything, it redoes them
            raise StorageError("claim lost during processing; batch rolled back")
        for pk, reason in failed.items():
            conn.execute(
                update(MESSAGES)
                .where(MESSAGES.c.id == pk, mine)
                .values(
                    state="quarantined",
                    quarantine_reason=reason[:4000],
                    quarantined_at=now,
                    claimed_by=None,
                    claim_until=None,
                )
            )
        if retry:
            conn.execute(
                update(MESSAGES)
                .where(MESSAGES.c.id.in_(retry), mine)
                .values(state="new", claimed_by=None, claim_until=None)
            )

    def run_forever(self, stop: threading.Event) -> None:
        """Process until stop is set; sleep only while there is nothing to do."""
        try:
            self.release_dead_claims()
        except StorageError as exc:
            log.error("cannot release dead claims: %s", exc)
        while not stop.is_set():
            self._wake.clear()  # before looking: a wake-up from now on is not lost
            try:
                count = self.run_once()
            except StorageError as exc:
                log.error("runner: %s", exc)
                stop.wait(self.idle_wait)
                continue
            if count == 0:
                # other processes store without waking us: look again after idle_wait
                self._wake.wait(self.idle_wait)


class _StepFailed(Exception):
    """A step failed in the fast path; the batch is redone one message at a time."""
