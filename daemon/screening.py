"""The screen step: recognise automated mail, record bounces, suppress dead addresses."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Table

from .automated import Verdict, detect
from .inbox import insert_ignoring
from .pipeline import Work, register
from .suppressions import suppress
from .tables import Bounce as BounceRow

log = logging.getLogger(__name__)

BOUNCES: Table = BounceRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Identity:
    """What the screen needs to know about us: our addresses and our loop token."""

    addresses: frozenset[str]
    domains: frozenset[str]
    loop_token: str
    loop_header: str

    def is_ours(self, address: str | None) -> bool:
        """An address that belongs to this installation (plus-tags ignored)."""
        if not address or "@" not in address:
            return False
        local, _, domain = address.strip().lower().rpartition("@")
        base = local.split("+", 1)[0] + "@" + domain
        return base in self.addresses or domain in self.domains


@register("screen")
class ScreenStep:
    """Detect bounces, complaints, auto-replies, lists and our own mail before anything answers."""

    name = "screen"
    description = (
        "recognise automated mail (bounce, ARF, auto-reply, list, our own); record bounces"
    )
    needs: tuple[str, ...] = ("identity",)

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    def prepare(self, item: Work) -> None:
        verdict = detect(
            item.message(),
            envelope_from=item.envelope_from,
            own_addresses=self.identity.addresses,
            loop_token=self.identity.loop_token,
            loop_header=self.identity.loop_header,
        )
        item.facts["verdict"] = verdict

    def apply(self, items: Sequence[Work], conn: Connection) -> None:
        bounces: list[dict[str, object]] = []
        suppressions: list[tuple[str, str | None, str | None, int | None]] = []
        for item in items:
            verdict: Verdict = item.facts["verdict"]
            item.record.update(automated=verdict.kind, automated_reason=verdict.reason[:2000])
            if verdict.bounce is not None:
                report = verdict.bounce
                for position, rcpt in enumerate(report.recipients):
                    bounces.append(
                        {
                            "message_pk": item.pk,
                            "position": position,
                            "recipient": rcpt.address[:320] if rcpt.address else None,
                            "status": rcpt.status[:16] if rcpt.status else None,
                            "action": rcpt.action[:16] if rcpt.action else None,
                            "reason": rcpt.reason[:32],
                            "hard": rcpt.hard,
                            "diagnostic": rcpt.diagnostic,
                            "original_message_id": (report.original_message_id or "")[:998] or None,
                            "reported_at": item.received_at,
                        }
                    )
                    if verdict.kind == "bounce" and rcpt.hard and rcpt.address:
                        detail = f"{rcpt.status or ''} {rcpt.reason}: {rcpt.diagnostic or ''}"
                        suppressions.append(("hard-bounce", rcpt.address, detail.strip(), item.pk))
            if verdict.feedback is not None and verdict.feedback.complainant:
                feedback = verdict.feedback
                suppressions.append(
                    (
                        "complaint",
                        feedback.complainant,
                        f"{feedback.format}: {feedback.feedback_type}",
                        item.pk,
                    )
                )
        if bounces:
            conn.execute(insert_ignoring(conn, BOUNCES, ["message_pk", "position"]), bounces)
        if suppressions:
            added = suppress(
                conn,
                [(a, reason, detail, pk) for reason, a, detail, pk in suppressions if a],
                max(item.received_at for item in items),
            )
            if added:
                log.info("%d addresses suppressed (hard bounces, complaints)", added)
