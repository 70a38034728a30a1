"""The classify step: department and urgency from the model, overridden by rules.yaml.

The decision and its reason are stored with the message; where agents work it becomes
visible as IMAP keywords and a move into the department's folder (executed by the folder
worker) and, if rules.yaml says so, as a forward to the department's address (an outbox
row, sent once).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, bindparam, select, update

from .compose import bare_id, clean, message_id
from .contacts import tiers_of
from .errors import ConfigError
from .outbox import Outbox, OutgoingMail
from .pipeline import Work, register
from .rules import Override, Routing, Rules, RulesFile
from .screening import Identity
from .tables import Correction, Delivery, Message

if TYPE_CHECKING:
    from classifiers.handle import ModelHandle
    from classifiers.model import Prediction

log = logging.getLogger(__name__)

DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
CORRECTIONS: Table = Correction.__table__  # type: ignore[assignment]
MESSAGES: Table = Message.__table__  # type: ignore[assignment]


@dataclass
class Route:
    """What the classify step decided for one message, and why."""

    department: str | None
    urgency: str | None
    department_confidence: float | None
    urgency_confidence: float | None
    triage: bool
    reason: str


def _override_matches(override: Override, item: Work, tier: str | None) -> str | None:
    """Why the override applies to this message, or None."""
    when = override.when
    message = item.message()
    sender = (message.sender.addr if message.sender else "").strip().lower()
    why: list[str] = []
    if when.senders is not None:
        if sender not in {s.lower() for s in when.senders}:
            return None
        why.append(f"sender {sender}")
    if when.sender_domains is not None:
        domain = sender.rpartition("@")[2]
        wanted = {d.lower().lstrip("@") for d in when.sender_domains}
        if not any(domain == d or domain.endswith("." + d) for d in wanted):
            return None
        why.append(f"sender domain {domain}")
    if when.subject is not None:
        if not re.search(when.subject, message.subject, re.IGNORECASE):
            return None
        why.append(f"subject matches {when.subject!r}")
    if when.body is not None:
        if not re.search(when.body, message.text[:20000], re.IGNORECASE):
            return None
        why.append(f"body matches {when.body!r}")
    if when.tiers is not None:
        if (tier or "ordinary") not in when.tiers:
            return None
        why.append(f"tier {tier or 'ordinary'}")
    return ", ".join(why) or "always"


def decide(rules: Rules, item: Work, prediction: Prediction | None, tier: str | None) -> Route:
    """The department and urgency of one message: overrides first, then the model."""
    routing = rules.routing
    labels = rules.labels
    department = urgency = None
    dep_conf = urg_conf = None
    reasons: list[str] = []
    dep_triage = urg_triage = prediction is None
    if prediction is not None:
        dep_conf, urg_conf = prediction.department_confidence, prediction.urgency_confidence
        if not prediction.abstained_department and prediction.department:
            department = labels.department.get(prediction.department, prediction.department)
            reasons.append(f"model: department {department} ({dep_conf:.2f})")
            dep_triage = False
        else:
            reasons.append(f"model unsure of the department ({dep_conf:.2f})")
            dep_triage = True
        if not prediction.abstained_urgency and prediction.urgency:
            urgency = labels.urgency.get(prediction.urgency, prediction.urgency)
            reasons.append(f"urgency {urgency} ({urg_conf:.2f})")
            urg_triage = False
        else:
            reasons.append(f"model unsure of the urgency ({urg_conf:.2f})")
            urg_triage = True
    else:
        reasons.append("no model loaded")
    for override in routing.overrides:
        why = _override_matches(override, item, tier)
        if why is None:
            continue
        if override.department is not None:
            department, dep_triage = override.department, False
        if override.urgency is not None:
            urgency, urg_triage = override.urgency, False
        reasons.insert(0, f"override {override.name} ({why})")
        break
    if department is None:
        department = routing.triage_department
        reasons.append(f"to triage department {department}")
    return Route(
        department,
        urgency,
        dep_conf,
        urg_conf,
        dep_triage or urg_triage,
        "; ".join(reasons),
    )


def corrections_of(conn: Connection, items: Sequence[Work]) -> dict[int, dict[str, str]]:
    """Labels people gave these messages before the classify step ran: pk -> head -> label."""
    pks = [item.pk for item in items if not item.facts.get("skip_classify")]
    if not pks:
        return {}
    query = (
        select(CORRECTIONS.c.message_pk, CORRECTIONS.c.head, CORRECTIONS.c.label)
        .where(CORRECTIONS.c.message_pk.in_(pks))
        .order_by(CORRECTIONS.c.id)
    )
    found: dict[int, dict[str, str]] = {}
    for pk, head, label in conn.execute(query):
        found.setdefault(int(pk), {})[head] = label  # the newest correction of a head wins
    return found


def corrected_route(route: Route, labels: dict[str, str]) -> Route:
    """The route with a person's labels in place of the decided ones; no triage after that."""
    heads = ", ".join(f"{head} {label}" for head, label in sorted(labels.items()))
    return replace(
        route,
        department=labels.get("department", route.department),
        urgency=labels.get("urgency", route.urgency),
        triage=False,
        reason=f"corrected by a person before classification ({heads}); {route.reason}",
    )


@register("classify")
class ClassifyStep:
    """Classify human mail by department and urgency; record routes and forwards."""

    name = "classify"
    description = "department and urgency (model + rules.yaml overrides), routes and forwards"
    needs: tuple[str, ...] = ("classifier",)

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    def prepare(self, item: Work) -> None:
        verdict = item.facts.get("verdict")
        if verdict is not None and verdict.automated:
            item.facts["prediction"] = None
            item.facts["skip_classify"] = True
            return
        message = item.message()
        prediction = self.classifier.predict(message.subject, message.text)
        item.facts["prediction"] = prediction
        # known now for the reply step's template choice; tiers may change it at commit
        route = decide(self.classifier.rules.current, item, prediction, None)
        item.facts["route"] = route
        item.facts["department"], item.facts["urgency"] = route.department, route.urgency

    def apply(self, items: Sequence[Work], conn: Connection) -> None:
        self.classifier.apply(items, conn)


class Classifier:
    """The model handle, the rules and the outbox the classify step works with."""

    def __init__(
        self,
        models: Path,
        rules: RulesFile,
        outbox: Outbox | None,
        identity: Identity,
        key: bytes,
    ) -> None:
        self.models = models
        self.rules = rules
        self.outbox = outbox
        self.identity = identity
        self.key = key
        self.handle: ModelHandle | None = None
        try:
            self.handle = self._open(rules.current.routing.model)
        except ConfigError as exc:
            # intake must not stop for a missing model: mail goes to triage until it appears
            log.error("%s; every message goes to triage until the model is there", exc)

    def _open(self, name: str) -> ModelHandle:
        from classifiers.errors import ClassifierError
        from classifiers.handle import ModelHandle

        try:
            return ModelHandle(self.models / name)
        except (ClassifierError, OSError) as exc:
            raise ConfigError(f"routing.model: cannot load {self.models / name}: {exc}") from exc

    def refresh(self) -> None:
        """Swap in a retrained model file, or another model named in edited rules.yaml."""
        wanted = self.models / self.rules.current.routing.model
        if self.handle is None:
            if wanted.with_suffix(".json").exists():
                try:
                    self.handle = self._open(self.rules.current.routing.model)
                    log.info("classifier model loaded from %s", wanted)
                except ConfigError as exc:
                    log.error("%s", exc)
            return
        if wanted != self.handle.path:
            try:
                self.handle = self._open(self.rules.current.routing.model)
                log.info("classifier model switched to %s", wanted)
            except ConfigError as exc:
                log.error("keeping model %s: %s", self.handle.path, exc)
        elif self.handle.reload_if_changed():
            log.info("classifier model reloaded from %s", wanted)

    def predict(self, subject: str, text: str) -> Prediction | None:
        """The current model's prediction (None while no model could be loaded)."""
        return self.handle.predict(subject, text) if self.handle is not None else None

    def apply(self, items: Sequence[Work], conn: Connection) -> None:
        rules = self.rules.current
        uses_tiers = any(o.when.tiers is not None for o in rules.routing.overrides)
        tiers = tiers_of(conn, items) if uses_tiers else {}
        corrected = corrections_of(conn, items)
        routes: list[dict[str, Any]] = []
        forwards: list[OutgoingMail] = []
        for item in items:
            if item.facts.get("skip_classify"):
                item.record["route_reason"] = "automated mail: not classified"
                continue
            tier = tiers.get(int(item.facts.get("contact_id") or 0))
            # only an override on the customer tier can change what prepare decided
            route = (
                decide(rules, item, item.facts["prediction"], tier)
                if uses_tiers
                else item.facts["route"]
            )
            if item.pk in corrected:
                route = corrected_route(route, corrected[item.pk])
            item.facts["department"] = route.department
            item.facts["urgency"] = route.urgency
            item.record.update(
                department=route.department,
                urgency=route.urgency,
                department_confidence=route.department_confidence,
                urgency_confidence=route.urgency_confidence,
                triage=route.triage,
                route_reason=route.reason[:2000],
            )
            folder, keywords = rules.routing.visible(route.department, route.urgency, route.triage)
            if folder or keywords:
                routes.append(
                    {"k_pk": item.pk, "v_folder": folder, "v_keywords": " ".join(keywords) or None}
                )
            department = rules.routing.departments.get(route.department or "")
            if department is not None and department.forward:
                forwards.append(self._forward(item, route, department.forward))
        if routes:
            conn.execute(
                update(DELIVERIES)
                .where(
                    DELIVERIES.c.message_pk == bindparam("k_pk"),
                    DELIVERIES.c.channel == "imap",
                    DELIVERIES.c.route_state == "none",
                )
                .values(
                    route_state="pending",
                    route_folder=bindparam("v_folder"),
                    route_keywords=bindparam("v_keywords"),
                ),
                routes,
            )
        if forwards:
            if self.outbox is None:
                log.warning("%d forwards not queued: no relay is enabled", len(forwards))
            else:
                self.outbox.enqueue(conn, forwards)

    def _forward(self, item: Work, route: Route, to: str) -> OutgoingMail:
        return forward_mail(
            self.identity,
            self.key,
            Forwarded(item.pk, item.raw, item.received_at, item.facts.get("conversation_id")),
            route.department or "",
            route.urgency,
            to,
        )


@dataclass(frozen=True)
class Forwarded:
    """The stored message a forward carries."""

    pk: int
    raw: bytes
    received_at: datetime
    conversation_id: int | None


def forward_mail(
    identity: Identity,
    key: bytes,
    message: Forwarded,
    department: str,
    urgency: str | None,
    to: str,
) -> OutgoingMail:
    """The original message, unchanged, with Resent-* fields on top (RFC 5322 3.6.6).

    Its outbox key names the message and the department: each department gets it once.
    """
    outbox_key = f"forward:{message.pk}:{department}"
    sender = next(iter(sorted(identity.addresses)), "mailcare@localhost")
    mid = message_id(key, outbox_key, sender.rpartition("@")[2])
    head = (
        f"Resent-From: {sender}\r\n"
        f"Resent-To: {to}\r\n"
        f"Resent-Date: {format_datetime(message.received_at)}\r\n"
        f"Resent-Message-ID: <{bare_id(mid)}>\r\n"
        f"X-Mailcare-Department: {clean(department, 64)}\r\n"
        f"X-Mailcare-Urgency: {clean(urgency or 'unknown', 32)}\r\n"
        f"{identity.loop_header}: {identity.loop_token}\r\n"
    ).encode("ascii", "replace")
    raw = message.raw
    raw = raw if b"\r\n" in raw[:2000] else raw.replace(b"\n", b"\r\n")
    return OutgoingMail(
        key=outbox_key,
        kind="forward",
        message_id=mid,
        mail_from="",
        recipients=(to,),
        raw=head + raw,
        message_pk=message.pk,
        conversation_id=message.conversation_id,
        rule=None,
    )


@dataclass(frozen=True)
class Forwarder:
    """Forwards a corrected message to its new department's address (an outbox row)."""

    outbox: Outbox
    identity: Identity
    key: bytes

    def after_correction(self, conn: Connection, pk: int, routing: Routing) -> str | None:
        """Queue the forward the message's department asks for; its address when queued now."""
        row = conn.execute(
            select(
                MESSAGES.c.raw,
                MESSAGES.c.received_at,
                MESSAGES.c.conversation_id,
                MESSAGES.c.department,
                MESSAGES.c.urgency,
            ).where(MESSAGES.c.id == pk)
        ).one()
        department = routing.departments.get(row.department or "")
        if department is None or department.forward is None:
            return None
        message = Forwarded(pk, bytes(row.raw), row.received_at, row.conversation_id)
        mail = forward_mail(
            self.identity, self.key, message, row.department, row.urgency, department.forward
        )
        return department.forward if self.outbox.enqueue(conn, [mail]) else None
