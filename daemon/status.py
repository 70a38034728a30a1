"""What `mailcare status` reports: per-folder cursor, lag and health, the queues, SLA clocks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, func, or_, select

from .database import Database
from .inbox import FOLDERS, MESSAGES
from .interfaces import Clock
from .outbox import OUTBOX
from .sla import CLOCKS
from .tables import CampaignRun, CampaignSend

RUNS: Table = CampaignRun.__table__  # type: ignore[assignment]
SENDS: Table = CampaignSend.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class FolderStatus:
    """One folder as the ledger knows it."""

    mailbox: str
    folder: str
    uidvalidity: int | None
    last_uid: int
    server_messages: int | None
    lag_seconds: float | None
    last_success_at: datetime | None
    last_stored_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    resyncs: int


@dataclass(frozen=True)
class Status:
    """The whole report."""

    folders: list[FolderStatus]
    queue: dict[str, int]
    outbox: dict[str, int] = field(default_factory=dict)
    sla: dict[str, int] = field(default_factory=dict)
    # recipients of campaign runs still under way (running or paused), by state
    campaigns: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return value.isoformat() if isinstance(value, datetime) else value

        return {
            "folders": [{k: plain(v) for k, v in asdict(f).items()} for f in self.folders],
            "queue": self.queue,
            "outbox": self.outbox,
            "sla": self.sla,
            "campaigns": self.campaigns,
        }


def collect(db: Database, clock: Clock) -> Status:
    """Read the folder ledger and the inbox queue depths."""
    now = clock.now()
    with db.reading() as conn:
        rows = conn.execute(select(FOLDERS).order_by(FOLDERS.c.mailbox, FOLDERS.c.folder)).all()
        counts: dict[str, int] = dict(
            conn.execute(select(MESSAGES.c.state, func.count()).group_by(MESSAGES.c.state)).all()
        )
        outgoing: dict[str, int] = dict(
            conn.execute(select(OUTBOX.c.state, func.count()).group_by(OUTBOX.c.state)).all()
        )
        clocks: dict[str, int] = dict(
            conn.execute(
                select(CLOCKS.c.status, func.count())
                .where(CLOCKS.c.status != "resolved")
                .group_by(CLOCKS.c.status)
            ).all()
        )
        overdue = conn.execute(
            select(func.count()).select_from(CLOCKS).where(_overdue(now))
        ).scalar()
        active = select(RUNS.c.id).where(RUNS.c.status.in_(["running", "paused"]))
        sending: dict[str, int] = dict(
            conn.execute(
                select(SENDS.c.state, func.count())
                .where(SENDS.c.run_id.in_(active.scalar_subquery()))
                .group_by(SENDS.c.state)
            ).all()
        )
    folders = [
        FolderStatus(
            mailbox=r.mailbox,
            folder=r.folder,
            uidvalidity=r.uidvalidity,
            last_uid=r.last_uid,
            server_messages=r.server_messages,
            lag_seconds=(now - r.last_success_at).total_seconds() if r.last_success_at else None,
            last_success_at=r.last_success_at,
            last_stored_at=r.last_stored_at,
            last_error=r.last_error,
            last_error_at=r.last_error_at,
            lease_owner=r.lease_owner if r.lease_until and r.lease_until > now else None,
            lease_until=r.lease_until,
            resyncs=r.resyncs,
        )
        for r in rows
    ]
    queue = {
        state: int(counts.get(state, 0)) for state in ("new", "processing", "done", "quarantined")
    }
    outbox = {
        state: int(outgoing.get(state, 0))
        for state in ("queued", "sending", "sent", "failed", "uncertain")
    }
    sla = {
        "open": int(clocks.get("open", 0)),
        "paused": int(clocks.get("paused", 0)),
        "overdue": int(overdue or 0),
    }
    campaigns = {
        state: int(sending.get(state, 0))
        for state in ("queued", "claimed", "sending", "sent", "failed", "uncertain")
    }
    return Status(folders, queue, outbox, sla, campaigns)


def _overdue(now: datetime) -> ColumnElement[bool]:
    """An open clock with a response or the resolution past its due time."""
    return and_(
        CLOCKS.c.status == "open",
        or_(
            and_(CLOCKS.c.first_response_at.is_(None), CLOCKS.c.first_response_due <= now),
            and_(CLOCKS.c.waiting_since.is_not(None), CLOCKS.c.next_response_due <= now),
            CLOCKS.c.resolution_due <= now,
        ),
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def render(status: Status) -> str:
    """The human-readable table."""
    lines = []
    header = ("MAILBOX/FOLDER", "UIDVALIDITY:UID", "LAST SYNC", "LEASE", "LAST ERROR")
    table = [header]
    for f in status.folders:
        error = "-"
        if f.last_error and (
            f.last_success_at is None or (f.last_error_at and f.last_error_at > f.last_success_at)
        ):
            error = f.last_error.splitlines()[0][:60]
        table.append(
            (
                f"{f.mailbox}/{f.folder}",
                f"{f.uidvalidity if f.uidvalidity is not None else '-'}:{f.last_uid}",
                _age(f.lag_seconds),
                ":".join(f.lease_owner.split(":")[:2]) if f.lease_owner else "free",
                error,
            )
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    if not status.folders:
        lines.append("(no IMAP folders seen yet)")
    q = status.queue
    lines.append("")
    lines.append(
        f"queue: {q['new']} new, {q['processing']} processing, {q['done']} done, "
        f"{q['quarantined']} quarantined"
    )
    o = status.outbox
    if any(o.values()):
        lines.append(
            f"outbox: {o['queued']} queued, {o['sending']} sending, {o['sent']} sent, "
            f"{o['failed']} failed, {o['uncertain']} uncertain"
            + ("  (see: mailcare outbox list --state uncertain)" if o["uncertain"] else "")
        )
    c = status.sla
    if any(c.values()):
        lines.append(
            f"sla: {c['open']} open, {c['paused']} paused, {c['overdue']} overdue"
            + ("  (see: mailcare sla report)" if c["overdue"] else "")
        )
    m = status.campaigns
    if any(m.values()):
        lines.append(
            f"campaigns under way: {m['queued'] + m['claimed']} to send, {m['sending']} sending, "
            f"{m['sent']} sent, {m['failed']} failed, {m['uncertain']} uncertain"
            "  (see: mailcare campaign status)"
        )
    return "\n".join(lines)
