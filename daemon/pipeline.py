"""Named pipeline steps, looked up by name, and the parse step that starts every pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table

from .errors import ConfigError
from .inbox import insert_ignoring
from .interfaces import Step
from .message import ParsedMessage, parse_message
from .tables import Attachment

log = logging.getLogger(__name__)

ATTACHMENTS: Table = Attachment.__table__  # type: ignore[assignment]


@dataclass
class Work:
    """One claimed message on its way through the pipeline."""

    pk: int
    raw: bytes
    mailbox: str | None
    received_at: datetime
    source: str
    envelope_from: str | None
    attempts: int
    parsed: ParsedMessage | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    # columns of the message row that steps decided; the runner writes them once, with
    # the message's final state, so each row is updated a single time per batch
    record: dict[str, Any] = field(default_factory=dict)

    def message(self) -> ParsedMessage:
        """The parsed message; steps after `parse` may rely on it."""
        if self.parsed is None:
            raise RuntimeError("the parse step must run before this step")
        return self.parsed


StepFactory = Callable[..., Step]
REGISTRY: dict[str, StepFactory] = {}


def register(name: str) -> Callable[[StepFactory], StepFactory]:
    """Class decorator: make a step available to `runner.steps` under `name`."""

    def add(factory: StepFactory) -> StepFactory:
        REGISTRY[name] = factory
        return factory

    return add


def build_steps(names: Sequence[str], **dependencies: Any) -> list[Step]:
    """Instantiate the named steps in order; each takes the dependencies it declares."""
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"runner.steps: unknown step(s) {', '.join(unknown)} (known: {known})")
    if not names or names[0] != "parse":
        raise ConfigError("runner.steps: the first step must be `parse`")
    steps = []
    for name in names:
        factory = REGISTRY[name]
        wanted = getattr(factory, "needs", ())
        steps.append(factory(**{key: dependencies[key] for key in wanted}))
    return steps


MAX_TEXT = 1_000_000


@register("parse")
class ParseStep:
    """Decode headers, body text and attachments, and record them with the message."""

    name = "parse"
    description = "decode the raw message (headers, text, HTML, attachments)"
    needs: tuple[str, ...] = ()

    def prepare(self, item: Work) -> None:
        item.parsed = parse_message(item.raw)

    def apply(self, items: Sequence[Work], conn: Connection) -> None:
        attachments: list[dict[str, object]] = []
        for item in items:
            parsed = item.message()
            sender = parsed.sender
            item.record.update(
                subject=parsed.subject,
                from_addr=sender.addr[:320] if sender else None,
                from_name=sender.name[:300] if sender and sender.name else None,
                sent_at=parsed.date,
                language=parsed.language,
                body_text=parsed.text[:MAX_TEXT],
                body_from_html=parsed.text_from_html,
                in_reply_to=" ".join(parsed.in_reply_to) or None,
                references=" ".join(parsed.references) or None,
                defects="\n".join(parsed.defects) or None,
            )
            attachments.extend(
                {
                    "message_pk": item.pk,
                    "position": position,
                    "filename": att.filename,
                    "content_type": att.content_type[:255],
                    "size": att.size,
                    "sha256": att.sha256,
                    "inline": att.inline,
                }
                for position, att in enumerate(parsed.attachments)
            )
        if attachments:
            conn.execute(
                insert_ignoring(conn, ATTACHMENTS, ["message_pk", "position"]), attachments
            )
