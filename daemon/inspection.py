"""`mailcare inspect`: everything the daemon concludes about one message, without acting.

The JSON keys are a stable interface (documented in README.md, "Inspecting a message"):
message, automated, bounce, feedback, classification, auto_reply.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from .app import own_addresses
from .automated import detect
from .clock import SystemClock
from .database import Database
from .errors import MailcareError
from .faq import FaqIndex
from .interfaces import Clock
from .message import parse_message
from .pipeline import Work
from .render import TemplateStore
from .replies import Replier
from .rules import RulesFile
from .screening import Identity
from .settings import Settings
from .suppressions import suppressed

log = logging.getLogger(__name__)


def _classify(settings: Settings, subject: str, text: str) -> dict[str, Any] | None:
    """The default model's prediction, when a model is installed."""
    model_path = settings.paths.models / "default"
    if not model_path.with_suffix(".skops").exists():
        return None
    try:
        from classifiers.model import load_model

        p = load_model(model_path).predict(subject, text)
    except Exception as exc:  # a broken model must not hide the rest of the report
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "model": str(model_path),
        "department": p.department,
        "department_confidence": round(p.department_confidence, 4),
        "department_abstained": p.abstained_department,
        "urgency": p.urgency,
        "urgency_confidence": round(p.urgency_confidence, 4),
        "urgency_abstained": p.abstained_urgency,
    }


def inspect_message(
    raw: bytes,
    settings: Settings,
    *,
    db: Database | None = None,
    clock: Clock | None = None,
    mailbox: str | None = None,
) -> dict[str, Any]:
    """Parse, screen, classify and decide the auto-reply for raw, reporting every step."""
    clock = clock or SystemClock()
    rules_file = RulesFile(settings.paths.rules)
    rules = rules_file.current
    addresses, domains = own_addresses(settings, rules)
    identity = Identity(addresses, domains, "", rules.identity.loop_header)
    message = parse_message(raw)
    verdict = detect(
        message,
        own_addresses=addresses,
        loop_token=None,
        loop_header=rules.identity.loop_header,
    )
    item = Work(0, raw, mailbox, clock.now(), "file", None, 1, parsed=message)
    item.facts["verdict"] = verdict
    classification = _classify(settings, message.subject, message.text)
    classifying = "classify" in settings.runner.steps
    if classifying and classification and "department" in classification:
        item.facts["department"] = classification.get("department")
        item.facts["urgency"] = classification.get("urgency")
    faq_dir = settings.paths.templates / "faq"
    faq = FaqIndex.load(faq_dir) if faq_dir.is_dir() else None
    templates = TemplateStore(settings.paths.templates)
    replier = Replier(rules_file, templates, faq, identity, None, b"inspect", clock)
    replier.prepare(item)
    decision = item.facts["decision"]
    reply: dict[str, Any] = {
        "would_send": decision.replies,
        "reason": decision.reason,
        "rule": decision.rule.name if decision.rule else None,
        "recipient": decision.recipient,
        "faq": [
            {"id": m.entry.id, "question": m.entry.question, "score": round(m.score, 4)}
            for m in decision.faq
        ],
        "template": None,
        "subject": None,
        "checked_database": False,
    }
    if decision.replies and decision.rule is not None:
        try:
            rendered = templates.render(
                "replies",
                decision.rule.template,
                replier.context(item, decision, None, clock.now()),
                department=item.facts.get("department"),
                urgency=item.facts.get("urgency"),
                language=message.language,
            )
            reply["template"] = rendered.variant
            reply["subject"] = rendered.subject
        except MailcareError as exc:
            reply["would_send"] = False
            reply["reason"] = f"template error: {exc}"
    if decision.replies and db is not None and decision.recipient:
        with db.reading() as conn:
            blocked = suppressed(conn, [decision.recipient])
        reply["checked_database"] = True
        if blocked:
            reply["would_send"] = False
            reply["reason"] = f"{decision.recipient} is suppressed ({blocked[decision.recipient]})"
    return {
        "message": {
            "message_id": message.message_id,
            "from": message.sender.addr if message.sender else None,
            "subject": message.subject,
            "date": message.date.isoformat() if isinstance(message.date, datetime) else None,
            "language": message.language,
            "defects": message.defects,
        },
        "automated": {
            "kind": verdict.kind,
            "automated": verdict.automated,
            "reason": verdict.reason,
        },
        "bounce": (
            {
                "severity": verdict.bounce.severity,
                "format": verdict.bounce.format,
                "original_message_id": verdict.bounce.original_message_id,
                "recipients": [asdict(r) for r in verdict.bounce.recipients],
            }
            if verdict.bounce
            else None
        ),
        "feedback": asdict(verdict.feedback) if verdict.feedback else None,
        "classification": classification,
        "auto_reply": reply,
    }


def render_text(report: dict[str, Any]) -> str:
    """The human-readable form of an inspect report."""
    lines: list[str] = []
    msg = report["message"]
    lines.append(f"message      {msg['message_id'] or '-'} from {msg['from'] or '-'}")
    lines.append(f"subject      {msg['subject']}")
    lines.append(f"language     {msg['language']}")
    auto = report["automated"]
    lines.append(f"automated    {auto['kind']}: {auto['reason']}")
    if report["bounce"]:
        bounce = report["bounce"]
        lines.append(f"bounce       {bounce['severity']} ({bounce['format']})")
        for r in bounce["recipients"]:
            lines.append(
                f"  recipient  {r['address'] or '?'} {r['status'] or '-'} {r['reason']}"
                f" {'hard' if r['hard'] else 'soft'}"
            )
    if report["feedback"]:
        fb = report["feedback"]
        lines.append(f"complaint    {fb['feedback_type']} by {fb['complainant'] or '?'}")
    cls = report["classification"]
    if cls is None:
        lines.append("classifier   no model installed")
    elif "error" in cls:
        lines.append(f"classifier   error: {cls['error']}")
    else:
        lines.append(
            f"department   {cls.get('department') or 'triage'} "
            f"({cls.get('department_confidence', 0):.2f})"
        )
        urgency = cls.get("urgency") or "triage"
        lines.append(f"urgency      {urgency} ({cls.get('urgency_confidence', 0):.2f})")
    reply = report["auto_reply"]
    lines.append(f"auto-reply   {'yes' if reply['would_send'] else 'no'}: {reply['reason']}")
    if reply["template"]:
        lines.append(f"  template   {reply['template']}")
        lines.append(f"  subject    {reply['subject']}")
    for entry in reply["faq"]:
        lines.append(f"  faq        {entry['id']} ({entry['score']:.2f}) {entry['question']}")
    return "\n".join(lines)


def read_eml(path: str) -> bytes:
    """The bytes of an .eml file, or stdin for "-"."""
    import sys

    from .errors import ConfigError

    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
