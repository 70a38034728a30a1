"""Starting campaign runs: each due occurrence gets a run and a frozen audience.

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

from sqlalchemy import Connection, select, update

from .audience import Recipient, audience
from .campaign_config import CampaignDefinition, Schedule, occurrence_key, zone
from .campaign_ledger import CAMPAIGNS, RUNS, SENDS
from .compose import message_id, split_mailbox
from .database import Database
from .errors import MailcareError
from .inbox import insert_ignoring
from .interfaces import Clock
from .rules import Rules
from .suppressions import campaign_scopes, suppressed

log = logging.getLogger(__name__)

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


class CampaignRuns:
    """Reads campaign definitions and starts their runs (the campaign book's first half)."""

    def __init__(
        self, db: Database, clock: Clock, rules: Callable[[], Rules], mid_key: bytes
    ) -> None:
        self.db = db
        self.clock = clock
        self.rules = rules
        self.mid_key = mid_key

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
