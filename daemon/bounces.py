"""Bounce parsing: RFC 3464 delivery reports and the common plain-text forms, read leniently.

Every failed recipient gets a reason token and a hard/soft class. Hard means the address
itself is dead (userunknown, hostunknown, hasmoved, notaccept: Sisimai's definition); all
else, 5.7.x policy and spam blocks included, is soft: the address may work another day.
The diagnostic text decides before the RFC 3463 code, because servers put 5.1.1 on quota
errors and 5.7.1 on unknown users; the code decides when the text says nothing known.
"""

from __future__ import annotations

import email.message
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

from .header_values import normalize_message_id
from .message import ParsedMessage
from .mimetree import Part

__all__ = [
    "HARD_REASONS",
    "Bounce",
    "FailedRecipient",
    "classify",
    "delivery_status_fields",
    "parse_delivery_report",
    "parse_plain_bounce",
    "report_parts",
    "text_blocks",
]

HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"})
_SUCCESS_ACTIONS = frozenset({"delivered", "relayed", "expanded", "deliverable"})
_MAX_PARTS = 200
_MAX_SCAN = 60_000
_MAX_DIAGNOSTIC = 500

_ADDR = r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+"
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
    rf"[<\"']?({_ADDR})[>\"']?[ \t]*(?=$|[:.,;\[(<]|[ \t]+\S)(.*)$",
    re.I,
)
# "Unknown user: user@host", "Recipient address: user@host": a short label, then the address.
_RCPT_LABELLED = re.compile(
    rf"^[ \t>*-]*+(?!(?:from|sender|reply-to|return-path|cc|date|subject)\b)([^\s:][^:\n]{{0,59}}):"
    rf"[ \t]*<?({_ADDR})>?[ \t.]*$",
    re.I,
)
_ADDR_PATTERN = re.compile(_ADDR)
_RCPT_PHRASE = re.compile(
    rf"\b(?:rcpt to|recipient|deliver(?:ing|ed|y)?(?: your| the)?(?: mail| message| e-?mail)? to|"
    rf"sent (?:mail |a message )?to|could not be delivered to|address(?:ee)?|to)\s*:?\s*"
    rf"<?({_ADDR})>?",
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
# A relayed reply inside a gateway's own wording ("5.1.0 - Unknown address error 550-'5.7.1
# Access denied'"): the remote server's words describe the failure, the gateway's do not.
_REMOTE_REPLY = re.compile(r"(?<=\S)\s+['\"(]?[245]\d\d[ -]['\"]?(?:[245]\.\d{1,3}\.\d{1,3}\s)?")
_AFTER_DATA = re.compile(
    r"(?:in reply to|after) (?:end of )?data\b|smtp command\s*:?\s*data\b|final data|"
    r">>>+[ \t]*data[ \t]*\n[ \t>]*<<<",
    re.I,
)
_AFTER_MAIL_FROM = re.compile(r"(?:in reply to|after) mail from\b", re.I)
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

# Ordered: the first reason whose text matches wins. Recipient-side facts that servers
# word unambiguously come first; "user unknown" beats the blocking and spam vocabulary
# that often decorates it; transport trouble comes last. Addresses are masked first, so a
# mailbox named "blocked@..." says nothing.
_REASON_TEXT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mailboxfull", (
        r"mail ?box (?:is |was )?(?:full|over ?(?:quota|limit)|exceeded)",
        r"(?:over|exceed(?:ed|s)?|reached|surpass(?:ed)?)(?: the| their| his| her| its| disk"
        r"| mailbox| storage| user'?s?| allowed)* quota",
        r"quota (?:exceeded|exceeds|full|violation)", r"over ?quota",
        r"insufficient (?:disk |storage )?space", r"not enough (?:storage|space)",
        r"storage (?:limit|space|allocation) exceeded", r"exceeded storage",
        r"(?:folder|inbox) is full", r"box (?:is )?full", r"mail ?box exceeds",
        r"number of messages in .{0,40}mailbox exceeded", r"mailbox size limit",
        r"too many messages in (?:this|the) mailbox", r"out of (?:disk )?space",
        r"一杯|いっぱい|容量(?:超過|オーバー|が不足)|переполнен",
    )),
    ("toobig", (
        r"(?:message|mail|e-?mail)(?: size| length)? (?:is |was )?too (?:big|large|long)",
        r"(?:message|mail) size (?:limit )?(?:exceeded|too)", r"max(?:imum)? (?:message )?size",
        r"(?:message|mail) (?:size|length) (?:exceeds|is over|limit)",
        r"exceeds? (?:the )?(?:maximum|max|size|allowed|message size|administrative)(?! number)",
        r"size (?:limit|exceeds)", r"too large",
        r"exceeded (?:the )?(?:maximum )?(?:message )?size",
    )),
    ("suspended", (
        r"(?:account|mail ?box|user|recipient|address)(?: is| has been| was)? (?:disabled"
        r"|suspended|inactive|deactivated|locked|frozen|expired|not active|on hold|blocked)",
        r"(?<!delivery temporarily )\bsuspended\b", r"temporarily (?:disabled|unavailable)",
        r"account (?:is )?unavailable", r"inactive (?:account|user|mailbox)",
        r"has been (?:disabled|deactivated)",
    )),
    ("hasmoved", (
        r"has (?:been )?moved", r"has been replaced by", r"address (?:has )?changed",
        r"no longer (?:uses|at|with|in use|valid)",
    )),
    ("norelaying", (
        r"relay(?:ing)? (?:access )?(?:denied|not (?:permitted|allowed)|prohibited|disallowed)",
        r"(?:not permitted|unable|not allowed|cannot|can't) (?:to )?relay", r"we do not relay",
        r"no relaying", r"open relay", r"not a gateway", r"allowed rcpthosts",
    )),
    ("authfailure", (
        r"authentication information", r"\bspf\b", r"\bdkim\b", r"\bdmarc\b",
        r"sender policy framework", r"unauthenticated", r"not authorized to send",
        r"authenticat(?:ion|e)(?: \w+)? (?:failed|failure|required|error)",
    )),
    ("rejected", (
        r"sender (?:address |domain )?(?:rejected|refused|denied|verify|unknown|invalid"
        r"|not allowed|blocked)",
        r"(?:mail from|envelope sender|from address|sender address|domain of sender)[^\n]{0,60}"
        r"(?:rejected|invalid|not (?:found|exist|resolve)|does not (?:exist|resolve))",
        r"(?:invalid|bad|unroutable|unknown) sender", r"sender verification",
        r"your address is not", r"senderid", r"(?:not have|no|without) permission to (?:post|send)",
        r"権限がない",
    )),
    ("notaccept", (
        r"does not accept (?:any )?(?:e-?)?mail", r"not accepting (?:any )?(?:e-?)?mail",
        r"accepts no (?:e-?)?mail", r"null mx",
    )),
    ("mailererror", (
        r"procmail", r"maildrop", r"command died", r"exit (?:status|code) \d", r"pipe to \|",
        r"mail\.local", r"mailer error",
    )),
    ("hostunknown", (
        r"(?:host|domain)(?: name)? (?:not found|unknown|does not exist|doesn'?t exist"
        r"|lookup fail|not resolv|is invalid|is not reachable)",
        r"unknown (?:host|domain|mail domain)", r"no such (?:host|domain)",
        r"host (?:name )?lookup fail", r"name or service not known", r"unrouteable|unroutable",
        r"no mx", r"mx (?:record )?(?:not found|lookup)", r"nxdomain", r"illegal host",
        r"non-?existent (?:host|domain)", r"no (?:valid )?(?:mail exchanger|dns)",
        r"dns (?:lookup )?(?:error|failure)", r"can'?t (?:find|resolve) (?:host|domain)",
        r"(?<![@\w.-])[\w-]+(?:\.[\w-]+)+\.? does not exist",
    )),
    ("userunknown", (
        r"user (?:unknown|not found|does not exist|doesn'?t exist|not exist|is unknown"
        r"|not local|invalid)",
        r"unknown (?:user|recipient|local[- ]?part|mailbox|address|account|alias)",
        r"no such (?:user|mailbox|recipient|account|address|local user|person|e-?mail|alias"
        r"|local)",
        r"(?:recipient|addressee|mailbox|account|address|user|destination)(?: address| name"
        r"| mailbox)? (?:is |was )?(?:unknown|not found|does not exist|doesn'?t exist"
        r"|not valid|invalid|unavailable|not listed|not recognized|disabled or does not)",
        r"(?:invalid|bad|unknown|illegal)[ _-](?:recipient|mail-?box|user|destination|address"
        r"|account)",
        r"invalid [\w ]{0,24}user ?id", r"no valid recipient", r"mail-box not found",
        r"not an? (?:active|valid|known) (?:address|user|mailbox|account|recipient)",
        r"no mailbox", r"mailbox (?:not found|unavailable|does not exist)",
        r"(?:does|do|did) not exist|doesn'?t exist|no longer exists|not exist",
        r"(?:could not|couldn'?t|can'?t|cannot) be found", r"not our customer", r"badrcptto",
        r"undeliverable address", r"(?:doesn'?t|does not) have an? [\w. ]{0,30}account",
        r"no account by that name", r"not listed in", r"is not a known", r"bad destination",
        r"is not a valid", r"recipient (?:rejected|not found)",
        r"存在しない|存在しません|宛先不明|不明なユーザ|не существует",
    )),
    ("blocked", (
        r"block(?:ed|list|ing)?\b", r"black ?list", r"deny ?list", r"\brbl\b", r"dnsbl",
        r"spamhaus", r"spamcop", r"sorbs", r"listed (?:at|in|on|by)", r"reputation",
        r"access denied", r"denied access", r"banned", r"reverse (?:dns|lookup|mapping)",
        r"\bptr\b", r"\brdns\b", r"cannot find your hostname", r"client host (?:\[[^\]]*\] )?"
        r"rejected", r"not allowed", r"invalid ip",
    )),
    ("virus", (r"(?<!anti)(?<!anti-)virus", r"malware", r"infected", r"trojan")),
    ("spam", (
        r"spam", r"junk", r"unsolicited", r"bulk (?:e-?)?mail", r"\bube\b", r"phish",
        r"suspicious", r"scored too high", r"content (?:was )?(?:rejected|refused)",
        r"message (?:was )?(?:rejected|refused|classified|identified|considered|determined"
        r"|marked) (?:as|because|due)",
    )),
    ("filtered", (r"filter(?:ed|ing)?\b", r"only accepts? mail from")),
    ("ratelimited", (
        r"receiving mail at a rate", r"too many (?:connections|messages|recipients|sessions"
        r"|concurrent|connection)",
        r"rate.?limit", r"throttl", r"sending (?:rate|limit)", r"slow down",
        r"exceeded (?:the )?(?:rate|connection)", r"try again later", r"too fast",
    )),
    ("policy", (r"polic(?:y|ies)", r"not permitted", r"prohibited", r"administratively",
                r"rejected")),
    ("expired", (
        r"cannot send message for", r"could not (?:be )?(?:send|sent|deliver(?:ed)?) .{0,40}"
        r"(?:for|in) (?:the )?(?:past |last )?\d+ (?:day|hour)",
        r"retry time(?:out)? (?:exceeded|not reached)", r"delivery (?:time|period) (?:has )?"
        r"expired", r"message expired", r"expired after", r"too long in (?:the )?queue",
        r"queue (?:life|time)", r"in the queue too long", r"giving up on",
        r"(?:unable to deliver|not delivered) within", r"ha(?:s|ve) been failing",
        r"exceeded retry", r"retry period", r"\bexpired\b", r"timed? ?out (?:after|while)",
        r"no response .{0,20}for \d+", r"delayed \d+ (?:day|hour)",
    )),
    ("networkerror", (
        r"too many hops", r"mail loop", r"loops? back", r"routing loop",
        r"loop(?:ing)? detected", r"connection (?:timed out|refused|reset|closed|lost|dropped)",
        r"timed out", r"timeout", r"network (?:is )?unreachable", r"no route to host",
        r"(?:could not|couldn'?t|unable to) connect", r"lost connection",
        r"(?:host|server)(?: is)? (?:not reachable|unreachable)", r"unable to reach",
        r"did not accept our requests to connect", r"\btls\b", r"\bssl\b", r"handshake",
        r"server (?:is )?(?:busy|down)",
    )),
    ("syntaxerror", (
        r"syntax", r"malformed", r"invalid command", r"unrecognized command",
        r"illegal address", r"not implemented", r"command parameter", r"bad address",
    )),
    ("mailererror", (r"program failed", r"local delivery failed", r"exit (?:status|code)")),
    ("systemerror", (
        r"system error", r"internal (?:server )?error", r"configuration error", r"server error",
        r"i/o error", r"out of memory", r"resources? (?:temporarily )?unavailable",
        r"service (?:not available|unavailable)",
        r"temporar(?:y|ily) (?:local )?(?:failure|problem|error)",
        r"system (?:is )?(?:not available|unavailable|busy)", r"local error",
    )),
)  # fmt: skip
_REASON_PATTERNS = tuple((name, re.compile("|".join(texts), re.I)) for name, texts in _REASON_TEXT)

# RFC 3463 subject.detail -> reason, used when the text names no reason.
_STATUS_REASONS = {
    "1.1": "userunknown", "1.0": "userunknown", "1.2": "hostunknown", "1.3": "syntaxerror",
    "1.4": "userunknown", "1.6": "hasmoved", "1.7": "rejected", "1.8": "rejected",
    "1.10": "notaccept", "2.0": "undefined", "2.1": "suspended", "2.2": "mailboxfull",
    "2.3": "toobig", "2.4": "systemerror", "3.0": "systemerror", "3.1": "systemerror",
    "3.2": "systemerror", "3.3": "systemerror", "3.4": "toobig", "3.5": "systemerror",
    "4.0": "networkerror", "4.1": "networkerror", "4.2": "networkerror", "4.3": "systemerror",
    "4.4": "hostunknown", "4.5": "networkerror", "4.6": "networkerror", "4.7": "expired",
    "5.0": "systemerror", "5.1": "syntaxerror", "5.2": "syntaxerror", "5.3": "ratelimited",
    "5.4": "syntaxerror", "5.5": "systemerror", "6.0": "contenterror", "7.0": "policy",
    "7.1": "blocked", "7.2": "policy", "7.4": "authfailure", "7.7": "contenterror",
    "7.8": "authfailure", "7.9": "policy", "7.13": "suspended", "7.20": "authfailure",
    "7.21": "authfailure", "7.22": "authfailure", "7.23": "authfailure", "7.24": "authfailure",
    "7.25": "blocked", "7.26": "authfailure", "7.27": "notaccept",
}  # fmt: skip
# RFC 3463 subject alone, for details the table above does not know.
_SUBJECT_REASONS = {
    "1": "undefined", "2": "undefined", "3": "systemerror", "4": "networkerror",
    "5": "systemerror", "6": "contenterror", "7": "policy",
}  # fmt: skip


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


def classify(status: str | None, *texts: str | None) -> str:
    """Return the reason token for a status code and diagnostic texts, texts first in order."""
    for text in texts:
        if text:
            reason = _text_reason(text)
            if reason is not None:
                return reason
    if status:
        detail = status.partition(".")[2]
        subject = detail.partition(".")[0]
        return _STATUS_REASONS.get(detail) or _SUBJECT_REASONS.get(subject, "undefined")
    return "undefined"


def _text_reason(text: str) -> str | None:
    """Return the first reason whose pattern matches text (addresses masked), or None."""
    sample = _ADDR_PATTERN.sub("<address>", text[:_MAX_SCAN])
    for name, pattern in _REASON_PATTERNS:
        if pattern.search(sample):
            return name
    return None


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
    remote = _REMOTE_REPLY.search(diagnostic[:_MAX_SCAN]) if diagnostic else None
    texts = (diagnostic[remote.start() :], diagnostic) if diagnostic and remote else (diagnostic,)
    reason = classify(status, *texts)
    if reason == "undefined" or (status is None and reason in ("systemerror", "networkerror")):
        reason = classify(status, *texts, *context)
    phase_texts = [text[:_MAX_SCAN] for text in (diagnostic, *context) if text]
    if reason in HARD_REASONS and any(_AFTER_MAIL_FROM.search(text) for text in phase_texts):
        reason = "rejected"  # refused at MAIL FROM: our sender was refused, not the recipient
    elif (
        reason == "userunknown"
        and not (status or "").startswith(("5.1.", "4.1."))
        and any(_AFTER_DATA.search(text) for text in phase_texts)
    ):
        reason = "filtered"  # refused after the recipient was accepted: a filter, not a dead box
    elif reason == "hostunknown" and status and status.startswith("4"):
        reason = "networkerror"  # a transient DNS failure says nothing about the domain
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
