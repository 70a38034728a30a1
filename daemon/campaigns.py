"""Campaigns and their runs: define, schedule, start (freeze the audience), pause, cancel.

Starting a run freezes its audience: one `campaign_sends` row per recipient, with the
Message-ID it will carry, written in the same transaction as the run row. The run row is
unique per (campaign, occurrence), so two processes (or a restart) can never start the
same occurrence twice; a crash before the commit leaves nothing, and the next start tick
simply tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select, update

from .audience import Recipient, audience
from .campaign_config import CampaignDefinition, Schedule, occurrence_key, zone
from .campaign_ledger import ACTIVE, CAMPAIGNS, RUNS, SENDS
from .compose import message_id, split_mailbox
from .database import Database
from .errors import MailcareError
from .inbox import insert_ignoring
from .interfaces import Clock
from .rules import Rules
from .suppressions import campaign_scopes, suppressed

log = logging.getLogger(__name__)

RUN_STATES = ("running", "paused", "finished", "finished_with_failures", "cancelled", "skipped")
_CHUNK = 1000


class CampaignError(MailcareError):
    """Raised for a campaign operation that cannot be done (unknown name, wrong state)."""


@dataclass(frozen=True, slots=True)
class Started:
    """A run that was started (or skipped) by `start_due`."""

    campaign: str
    run_id: int
    status: str
    recipients: int
    excluded: int


def sender_of(definition: CampaignDefinition, rules: Rules) -> str:
    """The campaign's From: its own, else marketing.from; a CampaignError without either."""
    sender = definition.sender or rules.marketing.sender
    if sender is None:
        raise CampaignError(
            f"campaign {definition.name}: no sender (set `from` in the campaign or "
            "marketing.from in rules.yaml)"
        )
    return sender


def check_definition(definition: CampaignDefinition, rules: Rules) -> None:
    """Refuse a campaign whose list, segment or sender the rules do not provide."""
    try:
        rules.marketing.list_of(definition.list)
        if definition.segment is not None:
            rules.marketing.segment_of(definition.segment)
    except ValueError as exc:
        raise CampaignError(f"campaign {definition.name}: {exc}") from None
    sender_of(definition, rules)


class CampaignBook:
    """The campaigns table and the runs it starts."""

    def __init__(
        self, db: Database, clock: Clock, rules: Callable[[], Rules], mid_key: bytes
    ) -> None:
        self.db = db
        self.clock = clock
        self.rules = rules
        self.mid_key = mid_key

    # -- definitions ---------------------------------------------------------------------

    def save(self, definition: CampaignDefinition, schedule: bool) -> int:
        """Store (or replace) a campaign; with schedule, its first occurrence is planned."""
        check_definition(definition, self.rules())
        now = self.clock.now()
        values: dict[str, Any] = {
            "name": definition.name,
            "kind": definition.kind,
            "definition": definition.to_json(),
            "state": "draft",
            "next_run_at": None,
            "next_occurrence": None,
            "updated_at": now,
        }
        if schedule:
            values.update(self._planned(definition.schedule, definition.schedule.first(now)))
        with self.db.transaction() as conn:
            row = conn.execute(
                select(CAMPAIGNS.c.id, CAMPAIGNS.c.state).where(CAMPAIGNS.c.name == definition.name)
            ).first()
            if row is None:
                return int(
                    conn.execute(
                        CAMPAIGNS.insert()
                        .values(created_at=now, **values)
                        .returning(CAMPAIGNS.c.id)
                    ).scalar_one()
                )
            if self._active_runs(conn, row.id):
                raise CampaignError(
                    f"campaign {definition.name} is sending; pause or cancel it before changing it"
                )
            conn.execute(update(CAMPAIGNS).where(CAMPAIGNS.c.id == row.id).values(**values))
            return int(row.id)

    def _planned(self, schedule: Schedule, occurrence: datetime | None) -> dict[str, Any]:
        if occurrence is None:
            return {"state": "done", "next_run_at": None, "next_occurrence": None}
        return {
            "state": "scheduled",
            "next_run_at": schedule.start_at(occurrence),
            "next_occurrence": occurrence_key(occurrence),
        }

    def definition(self, name: str) -> tuple[int, CampaignDefinition, str]:
        """(id, definition, state) of a campaign by name."""
        with self.db.reading() as conn:
            row = conn.execute(select(CAMPAIGNS).where(CAMPAIGNS.c.name == name)).first()
        if row is None:
            raise CampaignError(f"no campaign named {name!r} (see mailcare campaign status)")
        return int(row.id), CampaignDefinition.from_json(row.definition), str(row.state)

    def schedule(self, name: str) -> datetime | None:
        """Plan a stored (draft or done) campaign's next occurrence; returns when it starts."""
        campaign_id, definition, state = self.definition(name)
        if state == "cancelled":
            raise CampaignError(f"campaign {name} was cancelled; save it again to reuse it")
        planned = self._planned(definition.schedule, definition.schedule.first(self.clock.now()))
        with self.db.transaction() as conn:
            conn.execute(
                update(CAMPAIGNS)
                .where(CAMPAIGNS.c.id == campaign_id)
                .values(updated_at=self.clock.now(), **planned)
            )
        start: datetime | None = planned["next_run_at"]
        return start

    # -- starting runs -------------------------------------------------------------------

    def start_due(self) -> list[Started]:
        """Start every campaign occurrence that is due; each in its own transaction."""
        now = self.clock.now()
        with self.db.reading() as conn:
            due = conn.execute(
                select(CAMPAIGNS.c.id)
                .where(CAMPAIGNS.c.state == "scheduled", CAMPAIGNS.c.next_run_at <= now)
                .order_by(CAMPAIGNS.c.next_run_at)
            ).scalars()
            ids = list(due)
        started: list[Started] = []
        for campaign_id in ids:
            try:
                result = self._start(campaign_id)
            except MailcareError as exc:
                log.error("campaign %d not started: %s", campaign_id, exc)
                continue
            if result is not None:
                started.append(result)
        return started

    def _start(self, campaign_id: int) -> Started | None:
        with self.db.transaction() as conn:
            query = select(CAMPAIGNS).where(CAMPAIGNS.c.id == campaign_id)
            if self.db.is_postgresql:
                query = query.with_for_update(skip_locked=True)
            row = conn.execute(query).first()
            now = self.clock.now()
            if (
                row is None
                or row.state != "scheduled"
                or row.next_run_at is None
                or row.next_run_at > now
                or row.next_occurrence is None
            ):
                return None
            definition = CampaignDefinition.from_json(row.definition)
            schedule = definition.schedule
            tz = zone(schedule.timezone)
            occurrence = datetime.fromisoformat(row.next_occurrence).replace(tzinfo=tz)
            late = (now - occurrence).total_seconds()
            status = "running"
            detail = None
            if (
                not schedule.local_time
                and schedule.late_start is not None
                and late > schedule.late_start
            ):
                status = "skipped"
                detail = (
                    f"not started: {late / 3600:.1f} h late (late_start is "
                    f"{schedule.late_start / 3600:.1f} h)"
                )
            run_id, recipients, excluded = self._open_run(
                conn, campaign_id, definition, occurrence, now, status, detail
            )
            following = schedule.after(occurrence)
            while (
                following is not None
                and schedule.late_start is not None
                and not schedule.local_time
                and (now - following).total_seconds() > schedule.late_start
            ):
                following = schedule.after(following)  # occurrences missed while down
            conn.execute(
                update(CAMPAIGNS)
                .where(CAMPAIGNS.c.id == campaign_id)
                .values(updated_at=now, **self._planned(schedule, following))
            )
        if run_id is None:
            return None
        if status == "skipped":
            log.warning(
                "campaign %s occurrence %s skipped: %s", row.name, row.next_occurrence, detail
            )
        else:
            log.info(
                "campaign %s run %d started: %d recipients (%d suppressed)",
                row.name,
                run_id,
                recipients,
                excluded,
            )
        return Started(row.name, int(run_id), status, recipients, excluded)

    def _open_run(
        self,
        conn: Connection,
        campaign_id: int,
        definition: CampaignDefinition,
        occurrence: datetime,
        now: datetime,
        status: str,
        detail: str | None,
    ) -> tuple[int | None, int, int]:
        """The run row of one occurrence and, when it runs, its frozen audience.

        Returns (run id or None when the occurrence has a run already, recipients,
        suppressed).
        """
        run_id = conn.execute(
            insert_ignoring(conn, RUNS, ["campaign_id", "occurrence"]).returning(RUNS.c.id),
            [
                {
                    "campaign_id": campaign_id,
                    "occurrence": occurrence_key(occurrence),
                    "status": status,
                    "scheduled_for": occurrence,
                    "started_at": now,
                    "finished_at": now if status == "skipped" else None,
                    "recipients": 0,
                    "excluded": 0,
                    "detail": detail,
                }
            ],
        ).scalar()
        if run_id is None or status != "running":
            return run_id, 0, 0
        rules = self.rules()
        check_definition(definition, rules)
        recipients, excluded = self._freeze(conn, int(run_id), definition, rules, now, occurrence)
        conn.execute(
            update(RUNS).where(RUNS.c.id == run_id).values(recipients=recipients, excluded=excluded)
        )
        return int(run_id), recipients, excluded

    def start_now(self, name: str) -> Started:
        """Start an extra occurrence of a campaign now; its schedule stays as it is."""
        campaign_id, definition, state = self.definition(name)
        if state == "cancelled":
            raise CampaignError(f"campaign {name} was cancelled")
        now = self.clock.now()
        occurrence = definition.schedule.local(now).replace(second=0, microsecond=0)
        with self.db.transaction() as conn:
            run_id, recipients, excluded = self._open_run(
                conn, campaign_id, definition, occurrence, now, "running", None
            )
        if run_id is None:
            raise CampaignError(
                f"campaign {name} already has a run for {occurrence_key(occurrence)}"
            )
        log.info("campaign %s run %d started by hand: %d recipients", name, run_id, recipients)
        return Started(name, run_id, "running", recipients, excluded)

    def _freeze(
        self,
        conn: Connection,
        run_id: int,
        definition: CampaignDefinition,
        rules: Rules,
        now: datetime,
        occurrence: datetime,
    ) -> tuple[int, int]:
        segment = rules.marketing.segment_of(definition.segment) if definition.segment else None
        people = audience(conn, definition.list, segment, now)
        blocked = suppressed(conn, [p.address for p in people], campaign_scopes(definition.list))
        domain = split_mailbox(sender_of(definition, rules))[1].rpartition("@")[2]
        schedule = definition.schedule
        rows: list[dict[str, Any]] = []
        for person in people:
            if person.address in blocked:
                continue
            due, state = self._due(person, schedule, occurrence, now)
            rows.append(
                {
                    "run_id": run_id,
                    "subscriber_id": person.subscriber_id,
                    "address": person.address,
                    "state": state,
                    "due_at": due,
                    "message_id": message_id(
                        self.mid_key, f"campaign:{run_id}:{person.address}", domain
                    ),
                    "attempts": 0,
                    "last_error": (
                        "not sent: its local time had passed by more than late_start"
                        if state == "skipped"
                        else None
                    ),
                }
            )
        statement = insert_ignoring(conn, SENDS, ["run_id", "address"])
        for start in range(0, len(rows), _CHUNK):
            conn.execute(statement, rows[start : start + _CHUNK])
        return len(rows), len(people) - len(rows)

    def _due(
        self, person: Recipient, schedule: Schedule, occurrence: datetime, now: datetime
    ) -> tuple[datetime, str]:
        """When one recipient's mail is due (at their local time, if asked) and its state."""
        if not schedule.local_time:
            return now, "queued"
        try:
            tz: ZoneInfo = zone(person.timezone) if person.timezone else zone(schedule.timezone)
        except ValueError:
            tz = zone(schedule.timezone)
        due = occurrence.replace(tzinfo=None).replace(tzinfo=tz)
        if schedule.late_start is not None and (now - due).total_seconds() > schedule.late_start:
            return due, "skipped"
        return due, "queued"

    # -- operations ----------------------------------------------------------------------

    def _active_runs(self, conn: Connection, campaign_id: int) -> list[int]:
        return list(
            conn.execute(
                select(RUNS.c.id).where(
                    RUNS.c.campaign_id == campaign_id, RUNS.c.status.in_(["running", "paused"])
                )
            ).scalars()
        )

    def pause(self, name: str) -> int:
        """Stop sending: running runs pause, and no new occurrence starts; returns runs paused.

        Claimed rows go back to the queue, so a sender holding them withdraws each one
        before its final "." (only a message already past that point still goes out).
        """
        campaign_id, _, state = self.definition(name)
        with self.db.transaction() as conn:
            runs = self._active_runs(conn, campaign_id)
            changed = conn.execute(
                update(RUNS)
                .where(RUNS.c.campaign_id == campaign_id, RUNS.c.status == "running")
                .values(status="paused")
            ).rowcount
            if runs:
                conn.execute(
                    update(SENDS)
                    .where(SENDS.c.run_id.in_(runs), SENDS.c.state == "claimed")
                    .values(
                        state="queued",
                        claimed_by=None,
                        lease_until=None,
                        attempts=SENDS.c.attempts - 1,
                    )
                )
            if state == "scheduled":
                conn.execute(
                    update(CAMPAIGNS).where(CAMPAIGNS.c.id == campaign_id).values(state="paused")
                )
        return int(changed)

    def resume(self, name: str) -> int:
        """Continue a paused campaign where it stopped (nothing is sent twice)."""
        campaign_id, _, state = self.definition(name)
        with self.db.transaction() as conn:
            changed = conn.execute(
                update(RUNS)
                .where(RUNS.c.campaign_id == campaign_id, RUNS.c.status == "paused")
                .values(status="running")
            ).rowcount
            if state == "paused":
                conn.execute(
                    update(CAMPAIGNS).where(CAMPAIGNS.c.id == campaign_id).values(state="scheduled")
                )
        return int(changed)

    def cancel(self, name: str) -> int:
        """Stop for good: unsent recipients are cancelled; returns how many."""
        campaign_id, _, _ = self.definition(name)
        now = self.clock.now()
        with self.db.transaction() as conn:
            runs = self._active_runs(conn, campaign_id)
            cancelled = 0
            if runs:
                cancelled = conn.execute(
                    update(SENDS)
                    .where(SENDS.c.run_id.in_(runs), SENDS.c.state.in_(["queued", "claimed"]))
                    .values(state="cancelled", claimed_by=None, lease_until=None)
                ).rowcount
                conn.execute(
                    update(RUNS)
                    .where(RUNS.c.id.in_(runs))
                    .values(status="cancelled", finished_at=now)
                )
            conn.execute(
                update(CAMPAIGNS)
                .where(CAMPAIGNS.c.id == campaign_id)
                .values(state="cancelled", next_run_at=None, updated_at=now)
            )
        return int(cancelled)

    def retry_failed(self, name: str, uncertain: bool = False) -> int:
        """Queue the failed (and, if asked, uncertain) recipients of the latest run again.

        Addresses suppressed since (a dead mailbox, an unsubscribe) stay as they are.
        """
        campaign_id, definition, _ = self.definition(name)
        states = ["failed", "uncertain"] if uncertain else ["failed"]
        with self.db.transaction() as conn:
            run = conn.execute(
                select(RUNS.c.id)
                .where(RUNS.c.campaign_id == campaign_id, RUNS.c.status != "skipped")
                .order_by(RUNS.c.id.desc())
                .limit(1)
            ).scalar()
            if run is None:
                raise CampaignError(f"campaign {name} has not run yet")
            candidates = conn.execute(
                select(SENDS.c.id, SENDS.c.address).where(
                    SENDS.c.run_id == run, SENDS.c.state.in_(states)
                )
            ).all()
            blocked = suppressed(
                conn, [address for _, address in candidates], campaign_scopes(definition.list)
            )
            ids = [pk for pk, address in candidates if address not in blocked]
            if not ids:
                return 0
            changed = conn.execute(
                update(SENDS)
                .where(SENDS.c.id.in_(ids), SENDS.c.state.in_(states))
                .values(
                    state="queued",
                    claimed_by=None,
                    attempts=0,
                    due_at=self.clock.now(),
                    last_error=None,
                )
            ).rowcount
            if changed:
                conn.execute(
                    update(RUNS).where(RUNS.c.id == run).values(status="running", finished_at=None)
                )
        return int(changed)

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """Campaigns with their runs and per-state counts (the latest runs first)."""
        with self.db.reading() as conn:
            query = select(CAMPAIGNS).order_by(CAMPAIGNS.c.name)
            if name is not None:
                query = query.where(CAMPAIGNS.c.name == name)
            campaigns = conn.execute(query).all()
            if name is not None and not campaigns:
                raise CampaignError(f"no campaign named {name!r}")
            out: list[dict[str, Any]] = []
            for campaign in campaigns:
                runs = conn.execute(
                    select(RUNS)
                    .where(RUNS.c.campaign_id == campaign.id)
                    .order_by(RUNS.c.id.desc())
                    .limit(10)
                ).all()
                run_ids = [r.id for r in runs]
                counts: dict[int, dict[str, int]] = {r: {} for r in run_ids}
                if run_ids:
                    for run, state, count in conn.execute(
                        select(SENDS.c.run_id, SENDS.c.state, func.count())
                        .where(SENDS.c.run_id.in_(run_ids))
                        .group_by(SENDS.c.run_id, SENDS.c.state)
                    ):
                        counts[run][state] = int(count)
                out.append(
                    {
                        "name": campaign.name,
                        "kind": campaign.kind,
                        "state": campaign.state,
                        "next_run_at": _iso(campaign.next_run_at),
                        "next_occurrence": campaign.next_occurrence,
                        "runs": [
                            {
                                "id": r.id,
                                "occurrence": r.occurrence,
                                "status": r.status,
                                "started_at": _iso(r.started_at),
                                "finished_at": _iso(r.finished_at),
                                "recipients": r.recipients,
                                "excluded": r.excluded,
                                "detail": r.detail,
                                "sends": counts[r.id],
                                "left": sum(counts[r.id].get(s, 0) for s in ACTIVE),
                            }
                            for r in runs
                        ],
                    }
                )
        return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
