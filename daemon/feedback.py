"""Feedback-loop complaints: RFC 5965 ARF reports and provider-specific complaint formats."""

from __future__ import annotations

import email.message
import json
import re
from dataclasses import dataclass
from typing import Any

from .bounces import report_parts
from .header_values import normalize_message_id
from .message import ParsedMessage

__all__ = ["Feedback", "parse_feedback"]

_ADDR = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_FIELD = re.compile(r"^([A-Za-z][\w-]*)[ \t]*:[ \t]*(.*)$", re.M)
_EMBEDDED = frozenset({"message/rfc822", "message/global", "text/rfc822-headers"})
_HEADERS_TYPES = frozenset({"text/rfc822-headers", "message/rfc822-headers"})
_SES_MARKER = re.compile(r'"notificationType"\s*:\s*"Complaint"|\\"notificationType\\"')
_MAX_JSON = 200_000


@dataclass(frozen=True, slots=True)
class Feedback:
    """A complaint about a message we sent: who complained, about which message, and how."""

    feedback_type: str
    complainant: str | None
    original_message_id: str | None
    format: str


def parse_feedback(message: ParsedMessage) -> Feedback | None:
    """Return the complaint a message carries (ARF or a provider format), or None."""
    report: dict[str, str] | None = None
    embedded: dict[str, str] = {}
    for ctype, node in report_parts(message.tree):
        if ctype == "message/feedback-report" and report is None:
            report = _node_fields(node)
        elif ctype in _EMBEDDED and not embedded:
            embedded = _embedded_fields(node, ctype)
    if report is not None:
        complainant = _address(report.get("original-rcpt-to") or report.get("removal-recipient"))
        return Feedback(
            feedback_type=(report.get("feedback-type") or "other").split(";")[0].strip().lower(),
            complainant=complainant or _address(embedded.get("to")),
            original_message_id=normalize_message_id(embedded.get("message-id", "")),
            format="arf",
        )
    if "x-hmxmroriginalrecipient" in embedded:
        return Feedback(
            feedback_type="abuse",
            complainant=_address(embedded["x-hmxmroriginalrecipient"]),
            original_message_id=normalize_message_id(embedded.get("message-id", "")),
            format="hotmail-jmrp",
        )
    if "notificationType" in message.text[:_MAX_JSON] and _SES_MARKER.search(message.text):
        return _ses_complaint(message.text)
    return None


def _node_fields(node: email.message.Message) -> dict[str, str]:
    """Return the fields of a message/feedback-report part, lower-cased names, first wins."""
    fields: dict[str, str] = {}
    payload = node.get_payload()
    if isinstance(payload, list):
        for child in payload:
            if isinstance(child, email.message.Message):
                for name, value in child.raw_items():
                    fields.setdefault(name.lower(), " ".join(str(value).split()))
                body = child.get_payload()
                if isinstance(body, str):
                    _text_fields(body, fields)
        return fields
    data = node.get_payload(decode=True)
    _text_fields(data.decode("utf-8", "replace") if isinstance(data, bytes) else "", fields)
    return fields


def _text_fields(text: str, fields: dict[str, str]) -> None:
    """Add the `Name: value` lines of text to fields (first occurrence wins)."""
    for match in _FIELD.finditer(text[:_MAX_JSON]):
        fields.setdefault(match.group(1).lower(), match.group(2).strip())


def _embedded_fields(node: email.message.Message, ctype: str) -> dict[str, str]:
    """Return the header fields of the complained-about message (attached or headers only)."""
    fields: dict[str, str] = {}
    if ctype in _HEADERS_TYPES:
        data = node.get_payload(decode=True)
        if isinstance(data, bytes):
            header_text = re.sub(r"\r?\n[ \t]+", " ", data.decode("utf-8", "replace"))
            _text_fields(header_text, fields)
        return fields
    children = node.get_payload()
    if isinstance(children, list) and children and isinstance(children[0], email.message.Message):
        for name, value in children[0].raw_items():
            fields.setdefault(name.lower(), " ".join(str(value).split()))
    return fields


def _address(value: str | None) -> str | None:
    """Return the first addr-spec in value, lower-cased."""
    if not value:
        return None
    match = _ADDR.search(value)
    return match.group(0).lower() if match else None


def _ses_complaint(text: str) -> Feedback | None:
    """Read an Amazon SES complaint notification (bare or wrapped in an SNS envelope)."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        data: Any = json.loads(text[start : text.rfind("}") + 1][:_MAX_JSON])
        if isinstance(data, dict) and isinstance(data.get("Message"), str):
            data = json.loads(data["Message"])
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("notificationType") != "Complaint":
        return None
    complaint = _object(data, "complaint")
    recipients = complaint.get("complainedRecipients")
    first: Any = recipients[0] if isinstance(recipients, list) and recipients else {}
    address = first.get("emailAddress") if isinstance(first, dict) else None
    message_id = _object(_object(data, "mail"), "commonHeaders").get("messageId")
    return Feedback(
        feedback_type=str(complaint.get("complaintFeedbackType") or "abuse").lower(),
        complainant=_address(str(address or "")),
        original_message_id=normalize_message_id(str(message_id or "")),
        format="amazon-ses",
    )


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    """Return data[key] when it is a JSON object, else an empty one."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}
