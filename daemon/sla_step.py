"""The `sla` pipeline step: a customer's message starts or moves its conversation's clock."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Connection

from .automated import Verdict
from .pipeline import Work, register
from .sla import NewEvent, SlaBook
from .survey import Rating, find_rating, record_rating

log = logging.getLogger(__name__)

_SCAN = 4000  # survey tokens are looked for in the subject and the start of the body


@register("sla")
class SlaStep:
    """Record customer messages as SLA events; recognise satisfaction survey answers."""

    name = "sla"
    description = "open, move or reopen the conversation's SLA clock; record survey answers"
    needs: tuple[str, ...] = ("sla_book", "survey_key")

    def __init__(self, sla_book: SlaBook | None, survey_key: bytes | None) -> None:
        self.book = sla_book
        self.survey_key = survey_key

    def prepare(self, item: Work) -> None:
        item.facts["survey_answer"] = None
        if self.survey_key is None or self.book is None:
            return
        verdict: Verdict | None = item.facts.get("verdict")
        if verdict is not None and verdict.automated:
            return
        parsed = item.message()
        text = f"{parsed.subject}\n{parsed.text[:_SCAN]}"
        if "mcs-" not in text:
            return
        valid_for = self.book.rules().sla.survey.valid_for
        item.facts["survey_answer"] = find_rating(
            self.survey_key, text, item.received_at, valid_for
        )

    def apply(self, items: Sequence[Work], conn: Connection) -> None:
        if self.book is None or not self.book.rules().sla.enabled:
            return
        customers: list[Work] = []
        for item in items:
            answer: Rating | None = item.facts.get("survey_answer")
            if answer is not None:
                record_rating(conn, answer, item.received_at, item.pk, "mail")
                log.info(
                    "%s: survey answer %d for conversation %d",
                    item.pk,
                    answer.rating,
                    answer.conversation_id,
                )
                continue
            verdict: Verdict | None = item.facts.get("verdict")
            if verdict is not None and verdict.automated:
                continue  # machines and our own mail never move a clock
            if item.facts.get("no_reply"):
                continue  # handled without anyone answering (an unsubscribe request)
            if item.facts.get("conversation_id") is None:
                continue
            customers.append(item)
        if not customers:
            return
        status = self.book.status(conn, [int(i.facts["conversation_id"]) for i in customers])
        events = []
        labels: dict[int, tuple[str | None, str | None]] = {}
        for item in customers:
            conv = int(item.facts["conversation_id"])
            if item.facts.get("conversation_new"):
                kind = "opened"
            elif status.get(conv) == "resolved":
                kind = "reopened"
                status[conv] = "open"
            else:
                kind = "customer"
            events.append(
                NewEvent(f"message:{item.pk}", conv, kind, item.received_at, item.source, item.pk)
            )
            # the classify step's decision is written with the message after this step
            labels.setdefault(conv, (item.facts.get("department"), item.facts.get("urgency")))
        self.book.record(conn, events, labels)
