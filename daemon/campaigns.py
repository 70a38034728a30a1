"""Campaigns: define and schedule them, pause, resume, cancel, retry, report their runs.

Starting runs (and freezing their audience) is the job of daemon/campaign_start.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from .campaign_config import CampaignDefinition
from .campaign_ledger import ACTIVE, CAMPAIGNS, RUNS, SENDS
from .campaign_start import (
    CampaignError,
    CampaignRuns,
    Started,
    check_definition,
    sender_of,
)
from .suppressions import campaign_scopes, suppressed

__all__ = ["CampaignBook", "CampaignError", "Started", "check_definition", "sender_of"]

RUN_STATES = ("running", "paused", "finished", "finished_with_failures", "cancelled", "skipped")


class CampaignBook(CampaignRuns):
    """The campaigns table: definitions, schedules, and what marketers do with their runs."""

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
