"""Template checks: render every variant with sample data, report errors and writing advice."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from .errors import TemplateError
from .html_text import html_to_text
from .render import FAMILIES, PLAIN_NAME, VARIANT_NAME, Rendered, TemplateStore

__all__ = ["Finding", "SampleContext", "check", "sample_context"]

SUBJECT_ADVISED_CHARS = 78
BODY_ADVISED_WORDS = 200
# Mostly-a-copy: this share of the body's words already stands in the subject.
SUBJECT_COPY_SHARE = 0.7

_LANGUAGE_PART = re.compile(r"[a-z]{2,3}\Z")
_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")

SampleContext = Callable[[str | None], Mapping[str, object]] | Mapping[str, object]


@dataclass(frozen=True)
class Finding:
    """A problem `check` found in a template variant (path relative to the template root)."""

    path: str
    level: Literal["error", "warning"]
    message: str


def sample_context(language: str | None = "en") -> dict[str, object]:
    """Return realistic template variables for previews and `check` (Chinese for `zh`)."""
    values = _reply_sample(language)
    values.update(_notice_sample(language))
    values.update(_campaign_sample(language))
    return values


def _campaign_sample(language: str | None) -> dict[str, object]:
    """The variables of campaign mail and of the subscription confirmation."""
    chinese = language == "zh"
    return {
        "subscriber": {
            "address": "wang.fang@example.cn" if chinese else "anna@example.com",
            "name": "王芳" if chinese else "Anna Schmidt",
            "language": language or "en",
            "tier": "vip",
            "lifecycle": "active",
            "tags": ["newsletter"],
            "attributes": {"city": "上海" if chinese else "Berlin"},
        },
        "campaign": {"name": "december", "kind": "newsletter"},
        "list": {"name": "news", "title": "示例新闻" if chinese else "Example News"},
        "list_title": "示例新闻" if chinese else "Example News",
        "unsubscribe_url": "https://example.com/mc/unsubscribe/mcu-sample",
        "unsubscribe_address": "unsubscribe@example.com",
        "confirm_url": "https://example.com/mc/confirm/mco-sample",
        "valid_days": 7,
    }


def _notice_sample(language: str | None) -> dict[str, object]:
    """The variables of SLA notifications and satisfaction surveys."""
    from .survey import LABELS

    labels = LABELS["zh" if language == "zh" else "en"]
    return {
        "kind": "warning",
        "target": "first_response",
        "target_label": "first response",
        "round": 0,
        "policy": "standard",
        "due": "Monday 5 January, 14:00 (Europe/Berlin)",
        "opened": "Monday 5 January, 10:00 (Europe/Berlin)",
        "waiting_since": "Monday 5 January, 10:00 (Europe/Berlin)",
        "minutes_left": 48,
        "ratings": [
            {
                "value": value,
                "label": labels[value - 1],
                "token": f"mcs-1042-{value}-20458-abcdefghijklmnop",
                "url": f"mailto:support@example.com?subject=%5BMC%231042%5D%20rating%20{value}",
            }
            for value in range(1, 6)
        ],
    }


def _reply_sample(language: str | None) -> dict[str, object]:
    """The variables of auto-replies."""
    if language == "zh":
        return {
            "ticket": "[MC#1042]",
            "ticket_id": 1042,
            "customer": {"name": "王芳", "address": "wang.fang@example.cn", "tier": "ordinary"},
            "subject": "发票金额不对",
            "department": "billing",
            "urgency": "normal",
            "language": "zh",
            "expected_answer": {
                "at": "2026-01-05T10:00:00+08:00",
                "text": "周一 10:00 之前（Asia/Shanghai）",
                "business_minutes": 480,
            },
            "faq": [
                {
                    "id": "fapiao",
                    "question": "如何申请发票？",
                    "answer": "请在“我的订单”中选择订单，点击“申请发票”即可。",
                    "url": "https://example.com/zh/faq/fapiao",
                }
            ],
            "company": {"name": "示例科技", "signature": "示例科技客服团队"},
        }
    return {
        "ticket": "[MC#1042]",
        "ticket_id": 1042,
        "customer": {"name": "Anna Schmidt", "address": "anna@example.com", "tier": "ordinary"},
        "subject": "My invoice shows the wrong amount",
        "department": "billing",
        "urgency": "normal",
        "language": language or "en",
        "expected_answer": {
            "at": "2026-01-05T10:00:00+01:00",
            "text": "by Monday 10:00 (Europe/Berlin)",
            "business_minutes": 480,
        },
        "faq": [
            {
                "id": "invoice-copy",
                "question": "How do I get a copy of my invoice?",
                "answer": "Open Orders in your account and choose Download invoice.",
                "url": "https://example.com/faq/invoice-copy",
            },
            {
                "id": "refund-policy",
                "question": "How long does a refund take?",
                "answer": "Refunds reach your account within 5 business days.",
                "url": None,
            },
        ],
        "company": {"name": "Example Ltd", "signature": "The Example support team"},
    }


def _word_count(text: str) -> float:
    """Return the words of a text; a Chinese character counts as half a word."""
    return len(_WORD.findall(text)) + len(_CJK_CHAR.findall(text)) / 2


def _tokens(text: str) -> list[str]:
    """Return lower-cased words and single CJK characters, for comparing texts."""
    return [*(w.lower() for w in _WORD.findall(text)), *_CJK_CHAR.findall(text)]


def _contexts(sample: SampleContext, language: str | None) -> list[dict[str, object]]:
    """Return the sample, then the same without FAQ entries and without a customer name."""
    base = dict(sample(language) if callable(sample) else sample)
    contexts = [base, {**base, "faq": []}]
    customer = base.get("customer")
    if isinstance(customer, Mapping):
        contexts.append({**base, "customer": {**customer, "name": None}})
    return contexts


def _advice(family: str, path: str, rendered: Rendered, ticket: object) -> list[Finding]:
    """Return the writing-advice warnings for one rendered variant."""
    warnings: list[str] = []
    subject, body = rendered.subject, rendered.text
    if not subject:
        warnings.append("the subject is empty")
    elif len(subject) > SUBJECT_ADVISED_CHARS:
        warnings.append(
            f"the subject has {len(subject)} characters with sample data; keep it under "
            f"{SUBJECT_ADVISED_CHARS} so that mail clients show it whole"
        )
    if family == "replies" and isinstance(ticket, str) and ticket not in subject:
        warnings.append(f"the subject lacks the ticket tag {ticket}; customer replies lose it")
    words = _word_count(body)
    if not body.strip():
        warnings.append("the plain-text body is empty; text-only mail clients show nothing")
    elif words > BODY_ADVISED_WORDS:
        warnings.append(
            f"the plain-text body has about {words:.0f} words with sample data; keep it short "
            f"(under {BODY_ADVISED_WORDS})"
        )
    body_tokens, subject_tokens = _tokens(body), set(_tokens(subject))
    if body_tokens and subject_tokens:
        copied = sum(token in subject_tokens for token in body_tokens) / len(body_tokens)
        if copied >= SUBJECT_COPY_SHARE:
            warnings.append("the body mostly repeats the subject; say what the subject cannot")
    if rendered.html is not None and not html_to_text(rendered.html).strip():
        warnings.append("the HTML alternative shows no text")
    return [Finding(path, "warning", message) for message in warnings]


def _check_variant(
    store: TemplateStore, family: str, name: str, variant: str, sample: SampleContext
) -> list[Finding]:
    """Render one variant with every sample context and collect errors and advice."""
    path = f"{family}/{name}/{variant}.txt"
    language = next((p for p in variant.split(".") if _LANGUAGE_PART.match(p)), None)
    contexts = _contexts(sample, language)
    if family == "campaigns":
        # a campaign's own `variables` (a coupon, a landing page) are unknown here
        try:
            wanted = store.variables(family, name, variant)
        except TemplateError as exc:
            return [Finding(path, "error", str(exc))]
        contexts = [{**{v: f"[{v}]" for v in wanted}, **c} for c in contexts]
    rendered = []
    for context in contexts:
        try:
            rendered.append(store.render_variant(family, name, variant, context))
        except TemplateError as exc:
            return [Finding(path, "error", str(exc))]
    findings = _advice(family, path, rendered[0], contexts[0].get("ticket"))
    if family == "replies" and "ticket" not in store.variables(family, name, variant):
        findings.append(Finding(path, "warning", "the reply never uses {{ ticket }}"))
    return findings


def _check_template(
    store: TemplateStore, family: str, name: str, sample: SampleContext
) -> list[Finding]:
    """Check every variant and stray file of one template directory."""
    findings: list[Finding] = []
    files = store.files(family, name)
    base = f"{family}/{name}"
    if "default.txt" not in files:
        findings.append(
            Finding(base, "warning", "no default.txt: mail matching no variant gets none")
        )
    for file in sorted(files):
        stem, dot, suffix = file.rpartition(".")
        if file.startswith((".", "_")):
            continue
        if not dot or suffix not in ("txt", "html"):
            message = "ignored: only <variant>.txt and <variant>.html files are templates"
            findings.append(Finding(f"{base}/{file}", "warning", message))
        elif not VARIANT_NAME.match(stem):
            message = "never selected: a variant is lower-case parts joined by dots, e.g. sales.en"
            findings.append(Finding(f"{base}/{file}", "warning", message))
        elif suffix == "html" and f"{stem}.txt" not in files:
            message = f"never used: HTML needs {stem}.txt (subject and text) beside it"
            findings.append(Finding(f"{base}/{file}", "warning", message))
        elif suffix == "txt":
            findings.extend(_check_variant(store, family, name, stem, sample))
    return findings


def check(store: TemplateStore, sample: SampleContext = sample_context) -> list[Finding]:
    """Render every variant of every template with sample data; return errors and advice."""
    findings: list[Finding] = []
    for family in FAMILIES:
        directory = store.root / family
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir(), key=lambda p: p.name):
            if entry.name.startswith((".", "_")):
                continue
            relative = f"{family}/{entry.name}"
            if not entry.is_dir():
                message = "ignored: templates live in <family>/<name>/<variant>.txt"
                findings.append(Finding(relative, "warning", message))
            elif not PLAIN_NAME.match(entry.name):
                message = "never used: a template name is lower-case letters, digits, - and _"
                findings.append(Finding(relative, "warning", message))
            else:
                findings.extend(_check_template(store, family, entry.name, sample))
    return findings
