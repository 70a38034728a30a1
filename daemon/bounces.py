"""Bounce parsing: RFC 3464 delivery reports and the common plain-text forms, read leniently.

Every failed recipient gets a reason token and a hard/soft class from bounce_reasons.
"""

from __future__ import annotations

import email.message
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

from .bounce_reasons import ADDRESS, HARD_REASONS, recipient_reason
from .header_values import normalize_message_id
from .message import ParsedMessage
from .mimetree import Part

__all__ = [
    "Bounce",
    "FailedRecipient",
    "delivery_status_fields",
    "parse_delivery_report",
    "parse_plain_bounce",
    "report_parts",
    "text_blocks",
]

_SUCCESS_ACTIONS = frozenset({"delivered", "relayed", "expanded", "deliverable"})
_MAX_PARTS = 200
_MAX_SCAN = 60_000
_MAX_DIAGNOSTIC = 500

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_QUOTE = re.compile(r"^(?:[ \t]*>)+ ?")
_FIELD_LINE = re.compile(r"^[ \t>]*([A-Za-z][\w-]*)[ \t]*:[ \t]*(.*)$")
_DSN_FIELDS = frozenset(
    {
        "reporting-mta", "received-from-mta", "arrival-date", "final-recipient",
        "original-recipient", "action", "status", "diagnostic-code", "remote-mta",
        "last-attempt-date", "will-retry-until", "original-envelope-id", "dsn-gateway",
    }
)  # fmt: skip
# A line that names a failed address first: "  user@host", "<user@host>:", "550 5.1.1
# <user@host>... User unknown", "RCPT TO:<user@host>", "user@host [User unknown]".
_RCPT_LINE = re.compile(
    rf"^[ \t>*•-]*(?:\d{{3}}[ -]+(?:#?[245]\.\d{{1,3}}\.\d{{1,3}}[ \t]+)?)?(?:rcpt to:?[ \t]*)?"
    rf"[<\"']?({ADDRESS})[>\"']?[ \t]*(?=$|[:.,;\[(<]|[ \t]+\S)(.*)$",
    re.I,
)
# "Unknown user: user@host", "Recipient address: user@host": a short label, then the address.
_RCPT_LABELLED = re.compile(
    rf"^[ \t>*-]*+(?!(?:from|sender|reply-to|return-path|cc|date|subject)\b)([^\s:][^:\n]{{0,59}}):"
    rf"[ \t]*<?({ADDRESS})>?[ \t.]*$",
    re.I,
)
_ADDR_PATTERN = re.compile(ADDRESS)
_RCPT_PHRASE = re.compile(
    rf"\b(?:rcpt to|recipient|deliver(?:ing|ed|y)?(?: your| the)?(?: mail| message| e-?mail)? to|"
    rf"sent (?:mail |a message )?to|could not be delivered to|address(?:ee)?|to)\s*:?\s*"
    rf"<?({ADDRESS})>?",
    re.I,
)
_CUT = re.compile(
    r"^[ \t>]*[-=*_~]*[ \t]*(?:this is a copy of the message|below this line is a copy|"
    r"-*[ \t]*original message[ \t]*-*[ \t]*$|original message (?:follows|headers?)|"
    r"returned message|unsent message|message headers? follows?|(?:the )?headers? of (?:the )?"
    r"original message|original message header|included is a copy|copy of the original|"
    r"start of returned message|message text follows|undelivered message (?:follows|headers)|"
    r"the original message headers)",
    re.I | re.M,
)
_SENDER_LINE = re.compile(r"^[ \t>]*(?:from|return-path|sender)[ \t]*:(.*)$", re.I | re.M)
_MESSAGE_ID_LINE = re.compile(
    r"^[ \t>]*message-id[ \t]*:[ \t]*(<?[^\s<>]+@[^\s<>]+>?)", re.I | re.M
)
_REPORTING_MTA = re.compile(
    r"(?:mail system at host|qmail-send program at|mail agent [\w.]+ at|mail server at|"
    r"reporting-mta:[ \t]*dns;)[ \t]*([\w.-]+\w)",
    re.I,
)
_DELAYED = re.compile(
    r"\bdelayed\b|\(delay\)|not yet been delivered|will (?:continue to |keep )?(?:re)?try|"
    r"still being retried|warning message only|delivery attempts will continue|"
    r"will be retried|is still queued|this is a warning|temporarily deferred",
    re.I,
)
_PERMANENT = re.compile(
    r"permanent|fatal|failed permanently|giving up|have given up|could not be delivered|"
    r"couldn'?t be delivered|undeliverable|returned to sender|delivery (?:has )?failed",
    re.I,
)
_FORMATS = (
    ("plain:exim", re.compile(r"created automatically by mail delivery software", re.I)),
    ("plain:qmail", re.compile(r"qmail-send program|below this line is a copy", re.I)),
    ("plain:sendmail", re.compile(r"transcript of session follows|had permanent fatal", re.I)),
    ("plain:postfix", re.compile(r"this is the mail system at host", re.I)),
    ("plain:gmail", re.compile(r"delivery to the following recipient", re.I)),
    ("plain:exchange", re.compile(r"delivery has failed to these recipients|did not reach", re.I)),
    ("plain:yahoo", re.compile(r"unable to deliver your message to the following", re.I)),
)


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One recipient of a delivery report with its RFC 3463 status and reason."""

    address: str | None
    status: str | None
    action: str | None
    diagnostic: str | None
    reason: str
    hard: bool


@dataclass(frozen=True, slots=True)
class Bounce:
    """A delivery report: the recipients it names and the message it returns."""

    recipients: tuple[FailedRecipient, ...]
    original_message_id: str | None
    reporting_mta: str | None
    format: str

    @property
    def severity(self) -> Literal["hard", "soft", "mixed"]:
        """Hard when every recipient failed hard, soft when none did, else mixed."""
        hard = sum(1 for recipient in self.recipients if recipient.hard)
        if hard == 0:
            return "soft"
        return "hard" if hard == len(self.recipients) else "mixed"

    @property
    def hard_addresses(self) -> tuple[str, ...]:
        """The addresses that failed hard (candidates for suppression)."""
        return tuple(r.address for r in self.recipients if r.hard and r.address)


def report_parts(tree: email.message.Message) -> Iterator[tuple[str, email.message.Message]]:
    """Yield (content type, node) for the parts of a message, not entering attached messages."""
    stack: list[email.message.Message] = [tree]
    seen = 0
    while stack and seen < _MAX_PARTS:
        node = stack.pop()
        seen += 1
        if isinstance(node, Part) and node.too_deep:
            continue
        ctype = node.get_content_type()
        yield ctype, node
        if ctype.startswith("multipart/"):
            children = node.get_payload()
            if isinstance(children, list):
                stack.extend(
                    child
                    for child in reversed(children)
                    if isinstance(child, email.message.Message)
                )


def delivery_status_fields(part: email.message.Message) -> list[list[tuple[str, str]]]:
    """Return the field blocks of a message/delivery-status part, however it was parsed."""
    payload = part.get_payload()
    blocks: list[list[tuple[str, str]]] = []
    if isinstance(payload, list):
        for child in payload:
            if not isinstance(child, email.message.Message):
                continue
            block = [(name.lower(), _unfold(str(value))) for name, value in child.raw_items()]
            if block:
                blocks.append(block)
            body = child.get_payload()
            if isinstance(body, str) and ":" in body:
                blocks.extend(text_blocks(body))
        return blocks
    data = part.get_payload(decode=True)
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload)
    return text_blocks(text)


def text_blocks(text: str) -> list[list[tuple[str, str]]]:
    """Read blank-line separated DSN field blocks out of text (quoted with '>' or not)."""
    blocks: list[list[tuple[str, str]]] = []
    block: list[tuple[str, str]] = []
    for line in text[:_MAX_SCAN].splitlines():
        stripped = line.lstrip(" \t>")
        if not stripped:
            if block:
                blocks.append(block)
                block = []
            continue
        unquoted = _QUOTE.sub("", line)
        if unquoted[:1] in (" ", "\t") and block and not _FIELD_LINE.match(line):
            name, value = block[-1]
            block[-1] = (name, f"{value} {stripped.strip()}")
            continue
        match = _FIELD_LINE.match(line)
        name = match.group(1).lower() if match is not None else ""
        if match is not None and name in _DSN_FIELDS:
            block.append((name, match.group(2).strip()))
        elif block and name.startswith("x-"):
            continue
        elif block:
            blocks.append(block)
            block = []
    if block:
        blocks.append(block)
    return blocks


def _unfold(value: str) -> str:
    """Join a folded header value into one line."""
    return " ".join(value.split()) if "\n" in value or "\r" in value else value.strip()


def _typed_address(value: str | None) -> str | None:
    """Return the address of an `rfc822; user@host` field, lower-cased."""
    if not value:
        return None
    kind, sep, rest = value.partition(";")
    text = rest if sep else kind
    match = _ADDR_PATTERN.search(text)
    if match is not None:
        return match.group(0).lower()
    text = text.strip().strip("<>").strip().rpartition(":")[2]
    local, at, domain = text.partition("@")
    return text.lower() if local and at and domain and " " not in text else None


def _typed_value(value: str) -> str | None:
    """Return the value of a `dns; host` field without its type, lower-cased."""
    kind, sep, rest = value.partition(";")
    return (rest if sep else kind).strip().strip("[]").lower() or None


def _status_code(*texts: str | None) -> str | None:
    """Return the first RFC 3463 failure code (4.x.x or 5.x.x) found in the texts."""
    for text in texts:
        if text:
            for match in _STATUS.finditer(text[:_MAX_SCAN]):
                if match.group(1) != "2":
                    return ".".join(match.groups())
    return None


def _field_status(value: str | None) -> str | None:
    """Return the RFC 3463 code of a DSN Status field (2.x.x included)."""
    match = _STATUS.search(value) if value else None
    return ".".join(match.groups()) if match else None


def _one_line(text: str | None) -> str | None:
    """Collapse whitespace, drop a leading `smtp;` type and cap the length."""
    if not text:
        return None
    kind, sep, rest = text.partition(";")
    if sep and kind.strip().lower() in ("smtp", "x-postfix", "x-unix", "x-local", "x-notes"):
        text = rest
    line = " ".join(text.split())
    return line[:_MAX_DIAGNOSTIC] or None


def _recipient(
    address: str | None,
    status: str | None,
    action: str | None,
    diagnostic: str | None,
    *context: str | None,
) -> FailedRecipient:
    """Build a FailedRecipient, classifying the diagnostic text, then the status code."""
    if action in _SUCCESS_ACTIONS:
        return FailedRecipient(address, status, action, _one_line(diagnostic), "delivered", False)
    reason = recipient_reason(status, diagnostic, *context)
    return FailedRecipient(
        address=address,
        status=status,
        action=action,
        diagnostic=_one_line(diagnostic),
        reason=reason,
        hard=reason in HARD_REASONS,
    )


def _original_message_id(message: ParsedMessage, returned_text: str | None) -> str | None:
    """Return the Message-ID of the returned message: attached part first, then quoted text."""
    for ctype, node in report_parts(message.tree):
        if ctype in ("message/rfc822", "message/global"):
            children = node.get_payload()
            if isinstance(children, list) and children:
                inner = children[0]
                if isinstance(inner, email.message.Message):
                    value = inner.get("message-id")
                    if value:
                        return normalize_message_id(str(value))
        elif ctype in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers"):
            data = node.get_payload(decode=True)
            if isinstance(data, bytes):
                match = _MESSAGE_ID_LINE.search(data.decode("utf-8", "replace"))
                if match is not None:
                    return normalize_message_id(match.group(1))
    if returned_text:
        match = _MESSAGE_ID_LINE.search(returned_text[:_MAX_SCAN])
        if match is not None:
            return normalize_message_id(match.group(1))
    return None


def _split_report(text: str) -> tuple[str, str]:
    """Split bounce text at the first "original message follows" marker."""
    marker = _CUT.search(text[:_MAX_SCAN])
    if marker is None:
        return text[:_MAX_SCAN], ""
    return text[: marker.start()], text[marker.start() : marker.start() + _MAX_SCAN]


def parse_delivery_report(
    message: ParsedMessage, blocks: list[list[tuple[str, str]]]
) -> Bounce | None:
    """Read RFC 3464 field blocks into a Bounce; None when no block names a recipient."""
    reporting_mta: str | None = None
    report, returned = _split_report(message.text)
    notes = _plain_recipients(report, _own_addresses(message)) if report.strip() else {}
    recipients: list[FailedRecipient] = []
    for block in blocks:
        fields: dict[str, str] = {}
        for name, value in block:
            fields.setdefault(name, value)
        if "reporting-mta" in fields and reporting_mta is None:
            reporting_mta = _typed_value(fields["reporting-mta"])
        if not ({"final-recipient", "original-recipient", "action"} & fields.keys()):
            continue
        address = _typed_address(fields.get("final-recipient") or fields.get("original-recipient"))
        diagnostic = fields.get("diagnostic-code")
        status = _field_status(fields.get("status"))
        if status is None or status.endswith(".0.0"):
            detailed = _status_code(diagnostic)
            if detailed and (status is None or detailed[0] == status[0]):
                status = detailed
        action = ((fields.get("action") or "").split() or [""])[0].lower().strip("();") or None
        if action is None:
            action = {"2": "delivered", "4": "delayed"}.get(status[0] if status else "", "failed")
        note = notes.get(address or "", "")
        recipients.append(_recipient(address, status, action, diagnostic or note, note, report))
    if not recipients:
        return None
    return Bounce(
        recipients=tuple(recipients),
        original_message_id=_original_message_id(message, returned),
        reporting_mta=reporting_mta,
        format="rfc3464",
    )


def _own_addresses(message: ParsedMessage) -> set[str]:
    """Addresses of the report itself (its sender and addressee), never failed recipients."""
    own = {address.addr for address in (*message.to, *message.reply_to)}
    if message.sender is not None:
        own.add(message.sender.addr)
    return own


def _plain_recipients(
    report: str, exclude: set[str], pattern: re.Pattern[str] = _RCPT_LINE
) -> dict[str, str]:
    """Map each address a report names at the start of a line to that line and those after it."""
    lines = report.splitlines()
    found: dict[str, str] = {}
    order: list[tuple[int, str, str]] = []
    group = 2 if pattern is _RCPT_LABELLED else 1
    for number, line in enumerate(lines[:2000]):
        match = pattern.match(line)
        if match is None:
            continue
        address = match.group(group).lower()
        if address in exclude:
            continue
        rest = line[: match.start(group)] + line[match.end(group) :]
        order.append((number, address, " ".join(rest.strip(" \t>:<\"'").split())))
    starts = {number for number, _, _ in order}
    for number, address, first in order:
        block = [first] if first else []
        blank = 0
        for index in range(number + 1, min(number + 16, len(lines))):
            line = lines[index].strip(" \t>")
            if index in starts or line.startswith("-----"):
                break
            if not line:
                blank += 1
                if block or blank > 2:
                    break
                continue
            block.append(line)
        text = " ".join(block)
        found[address] = f"{found[address]} {text}".strip() if address in found else text
    return found


def _named_recipients(report: str, own: set[str], senders: set[str]) -> dict[str, str]:
    """Failed addresses of a plain-text report, trying stricter readings first."""
    for pattern in (_RCPT_LINE, _RCPT_LABELLED):
        for exclude in (own | senders, own, set()):
            named = _plain_recipients(report, exclude, pattern)
            if named:
                return named
    return dict.fromkeys(_phrase_recipients(report, own), "")


def _returned_senders(returned: str) -> set[str]:
    """The sender addresses in the returned message's header lines (never failed recipients)."""
    senders: set[str] = set()
    for match in _SENDER_LINE.finditer(returned[:8000]):
        senders.update(address.lower() for address in _ADDR_PATTERN.findall(match.group(1)))
    return senders


def _phrase_recipients(report: str, exclude: set[str]) -> list[str]:
    """Addresses named after "to", "recipient", "RCPT TO" and the like in free text."""
    result: list[str] = []
    for match in _RCPT_PHRASE.finditer(report[:_MAX_SCAN]):
        address = match.group(1).lower()
        if address not in exclude and address not in result:
            result.append(address)
    return result


def parse_plain_bounce(message: ParsedMessage, text: str) -> tuple[Bounce, bool]:
    """Read a non-standard bounce from its text; also say whether it is only a delay warning."""
    report, returned = _split_report(text)
    exclude = _own_addresses(message)
    blocks = text_blocks(report) if "final-recipient" in report.lower() else []
    recipients: list[FailedRecipient] = []
    if blocks:
        parsed = parse_delivery_report(message, blocks)
        if parsed is not None:
            recipients.extend(parsed.recipients)
    if not recipients:
        named = _named_recipients(report, exclude, _returned_senders(returned))
        for address, block in named.items():
            status = _status_code(block) or _status_code(report)
            recipients.append(_recipient(address, status, "failed", block, report))
        if not recipients:
            recipients.append(_recipient(None, _status_code(report), "failed", None, report))
    head = f"{message.subject}\n{report[:2000]}"
    delayed = _DELAYED.search(head) is not None and _PERMANENT.search(head) is None
    if delayed:
        recipients = [_delayed(recipient) for recipient in recipients]
    mta = _REPORTING_MTA.search(report)
    fmt = next((name for name, pattern in _FORMATS if pattern.search(text[:20000])), "plain")
    bounce = Bounce(
        recipients=tuple(recipients),
        original_message_id=_original_message_id(message, returned or None),
        reporting_mta=mta.group(1).lower() if mta else None,
        format=fmt,
    )
    return bounce, delayed


def _delayed(recipient: FailedRecipient) -> FailedRecipient:
    """The same recipient marked as a transient delay."""
    return replace(recipient, action="delayed", hard=False)
