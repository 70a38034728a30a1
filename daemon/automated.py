"""Automated-mail detection: the loop guard that keeps the daemon from answering machines.

`detect` checks, in this order, and the first match wins:

1. loop: our own loop header carries our loop token;
2. own-address: the sender (From, or the envelope sender our listener saw) is ours;
3. reports, before any auto-reply header because many bounces carry
   `Auto-Submitted: auto-replied`: challenge-response mail dressed as a DSN (auto-reply),
   ARF and provider complaints (feedback), RFC 3464 DSNs (bounce when a recipient failed,
   else delay when one is `delayed`, else delivery-report), MDN read receipts (auto-reply),
   then plain-text bounces and delay warnings (daemon senders, bounce subjects, null return
   path, each with bounce wording);
4. auto-reply: RFC 3834 `Auto-Submitted` other than `no`, `X-Auto-Response-Suppress`
   All/AutoReply/OOF, `Precedence: auto_reply`, vendor autoresponder headers, auto-reply
   subjects, challenge-response systems;
5. list: RFC 2369/2919 `List-*` headers, list-manager headers and senders, `Precedence: list`,
   digest subjects;
6. bulk: `Precedence: bulk|junk`, ESP campaign markers (`Feedback-ID`, `X-CSA-Complaints`...);
7. no-reply-sender: null envelope sender or a noreply/mailer-daemon style local part;
8. otherwise human.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from .bounces import (
    Bounce,
    FailedRecipient,
    delivery_status_fields,
    parse_delivery_report,
    parse_plain_bounce,
    report_parts,
)
from .feedback import Feedback, parse_feedback
from .message import ParsedMessage

__all__ = ["Bounce", "FailedRecipient", "Feedback", "Kind", "Verdict", "detect"]

logger = logging.getLogger(__name__)

Kind = Literal[
    "human", "bounce", "delay", "delivery-report", "feedback", "auto-reply", "list", "bulk",
    "no-reply-sender", "own-address", "loop",
]  # fmt: skip

_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_MDN_TYPES = frozenset(
    {"message/disposition-notification", "message/global-disposition-notification"}
)
_NOT_FAILED = frozenset({"delivered", "relayed", "expanded", "deliverable", "delayed"})
_TOKEN = re.compile(r"[^\s;()]+")
_COMMENT = re.compile(r"\([^()]*\)")
_REPORT_TYPE = re.compile(r"report-type\s*=\s*\"?([\w-]+)", re.I)
_ADDR = re.compile(r"[^\s<>\"]+@[^\s<>\"]+")
_DAEMON_LOCAL = re.compile(
    r"(?:mailer[-_.]?daemon|postmaster|post[-_.]?master|mail[-_.]?delivery[-_.]?(?:system|"
    r"subsystem)?|mail[-_.]?administrator|maildaemon|mdaemon|smtp[-_.]?gateway|"
    r"double[-_.]?bounce|mail[-_.]?router)",
    re.I,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status notification|failure|failed|has failed|"
    r"notification|problem|report|error|incomplete)|returned mail|returning message|"
    r"mail delivery (?:failed|failure|system|subsystem|problem|error)|failure notice|"
    r"non-?deliver|delivery status|could not be delivered|couldn'?t be delivered|"
    r"mail failure|delivery failure|permanent (?:delivery )?(?:failure|error)|"
    r"returned to sender|message not delivered|not delivered|error sending your mail|"
    r"delayed mail|could not send message|message .{0,40}delayed|mail could not|"
    r"\bbounced?\b|unable to deliver|mail returned|not deliverable|недоставленн|"
    r"unzustellbar|nicht zustellbar|non recapitabile|no se (?:pudo|puede) entregar|"
    r"non remis|impossible de remettre|niedostarczon|не доставлено|недоставлено|"
    r"配信できません|メールエラー|配信エラー|送信エラー|未送達|退信|投递失败|无法投递|"
    r"전달 실패|반송",
    re.I,
)
_BOUNCE_BODY = re.compile(
    r"could not be delivered|couldn'?t be delivered|was not delivered|undeliverable|"
    r"delivery (?:has )?failed|delivery to the following recipient|permanent (?:fatal )?error|"
    r"following addresses? (?:had|failed)|unable to deliver|wasn'?t able to deliver|"
    r"(?:not a valid|unknown) (?:user|recipient|mailbox)|user unknown|no such (?:user|mailbox)|"
    r"error (?:delivering|sending) your (?:mail|message)|returned to (?:the )?sender|"
    r"did not reach|has not yet been delivered|message could not|delivery status notification|"
    r"mailbox (?:is )?(?:full|unavailable)",
    re.I,
)
_SUCCESS = re.compile(
    r"\((?:success|relayed?)\)|successfully delivered|delivery (?:was )?(?:successful|succeeded)|"
    r"has been delivered to|was delivered to",
    re.I,
)
_MTA_WORDING = re.compile(
    r"^[ \t>]*(?:final-recipient|reporting-mta|diagnostic-code)\s*:|transcript of session|"
    r"created automatically by mail delivery software|qmail-send program|"
    r"this is the mail system at host|delivery to the following recipient|"
    r"delivery has failed to these recipients|following addresses had",
    re.I | re.M,
)
# Prefixes mail software puts on automatic replies, followed by a colon or bracket so that a
# person's "Out of office supplies" or "Autoreply not working" stays human.
_AUTO_SUBJECT = re.compile(
    r"^(?:(?:re|aw|sv|antw|r|rif|wg|fw|fwd|tr)\s*:\s*)*[\[(]?(?:auto(?:matic)?[ _-]?(?:reply|"
    r"response|answer|antwort|svar)|auto|out of (?:the )?office(?: auto-?reply)?|ooo|"
    r"abwesenheit(?:snotiz)?|r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica|"
    r"automatisch antwoord|automatische antwort|resposta autom[áa]tica|"
    r"odpowied[źz] automatyczna|autosvar|automaattinen vastaus|automatick[áa] odpov[ěe]ď|"
    r"автоответ|автоматический ответ|自动回复|自動回覆|自動応答|自動返信|자동 응답|"
    r"vacation (?:auto-?)?reply)\s*(?:[:：\])]|$)"
    r"|\((?:automatic (?:reply|response)|auto[- ]?reply|auto[- ]?response|out of office)\)\s*$",
    re.I,
)
_CHALLENGE_SUBJECT = re.compile(
    r"(?:sender|e-?mail|message) verification (?:request|required|needed)|please confirm your "
    r"(?:e-?mail )?message\b|your (?:e-?mail|message) (?:is )?(?:held|awaiting|pending) (?:for )?"
    r"(?:verification|confirmation)",
    re.I,
)
_CHALLENGE_DOMAINS = ("boxbe.com", "bluebottle.com", "mailblocks.com", "spamarrest.com")
_AUTO_HEADERS = (
    "x-autoreply", "x-autorespond", "x-auto-reply", "x-autoreply-from", "x-mail-autoreply",
    "x-autoresponder", "x-autoresponse", "x-ms-exchange-inbox-rules-loop",
    "x-fc-machinegenerated", "x-cron-env", "x-loop",
)  # fmt: skip
_SUPPRESS_TOKENS = frozenset({"all", "autoreply", "oof"})
_LIST_HEADERS = (
    "list-id", "list-post", "list-unsubscribe", "list-help", "list-subscribe", "list-owner",
    "list-archive", "mailing-list", "x-mailing-list", "x-beenthere", "x-mailman-version",
    "x-ml-name", "x-list",
)  # fmt: skip
_BULK_HEADERS = (
    "feedback-id", "x-csa-complaints", "x-campaign", "x-campaignid", "x-campaign-id",
    "x-ebay-mailtracker", "x-mailchimp-campaign", "x-mc-user", "x-sg-eid", "x-mandrill-user",
)  # fmt: skip
_LIST_SENDER = re.compile(r"^(?:owner-.+|.+-(?:owner|request|bounces?)(?:\+.*)?)@", re.I)
_DIGEST_SUBJECT = re.compile(r"\bdigest,? vol(?:ume)? \d+,? (?:issue|no\.?) \d+", re.I)
_NO_REPLY_LOCAL = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|dont[-_.]?reply|no[-_.]?response|"
    r"mailer[-_.]?daemon|postmaster|bounces?|bounce[-+._].*|.*[-+._]bounces?|"
    r"no[-_.]?reply[-+._].*|.*[-_.]no[-_.]?reply)(?:\+.*)?@",
    re.I,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a message is, the signal that said so, and the parsed report when there is one."""

    kind: Kind
    reason: str
    bounce: Bounce | None = None
    feedback: Feedback | None = None

    @property
    def automated(self) -> bool:
        """True for everything but mail written by a person."""
        return self.kind != "human"


def detect(
    message: ParsedMessage,
    *,
    envelope_from: str | None = None,
    own_addresses: Collection[str] = (),
    loop_token: str | None = None,
    loop_header: str = "X-Mailcare-Loop",
) -> Verdict:
    """Decide whether a message was written by a person; never raises on malformed input."""
    try:
        return _detect(message, envelope_from, own_addresses, loop_token, loop_header)
    except Exception as exc:  # a broken tree must not stop the pipeline; say so and move on
        logger.warning("%s: automated-mail detection failed", message.message_id, exc_info=True)
        return Verdict("human", f"detection failed ({type(exc).__name__}); treated as human")


def _detect(
    message: ParsedMessage,
    envelope_from: str | None,
    own_addresses: Collection[str],
    loop_token: str | None,
    loop_header: str,
) -> Verdict:
    """The checks of `detect`, in the documented order."""
    headers: dict[str, list[str]] = {}
    for name, value in message.headers:
        headers.setdefault(name.lower(), []).append(value)
    if loop_token:
        for value in headers.get(loop_header.lower(), ()):
            if loop_token in value:
                return Verdict("loop", f"{loop_header}: carries our loop token")
    sender = message.sender.addr if message.sender is not None else ""
    envelope = _envelope(envelope_from, headers)
    own = {address.lower() for address in own_addresses}
    if own:
        # the Return-Path header is not trusted here: test fixtures and some forwarders
        # put the recipient there; only an envelope sender from our own listener counts
        given = _envelope(envelope_from, {}) if envelope_from is not None else None
        for address in (sender.lower(), given):
            if address and address in own:
                return Verdict("own-address", f"sender {address} is one of our addresses")
    verdict = _report(message, headers, sender, envelope)
    if verdict is not None:
        return verdict
    return (
        _auto_reply(message, headers)
        or _mailing_list(message.subject, headers, sender)
        or _no_reply(sender, envelope)
        or Verdict("human", "no automated-mail signal")
    )


def _envelope(envelope_from: str | None, headers: dict[str, list[str]]) -> str | None:
    """Return the envelope sender, lower-cased; "" for the null sender, None when unknown."""
    value = envelope_from
    if value is None:
        paths = headers.get("return-path")
        if not paths:
            return None
        value = paths[0]
    value = value.strip()
    if value.strip("<> ").lower() in ("", "mailer-daemon"):
        return ""
    match = _ADDR.search(value)
    return match.group(0).strip("<>").lower() if match else value.strip("<> ").lower()


def _first(headers: dict[str, list[str]], name: str) -> str:
    """Return the first value of a header field, stripped, or ""."""
    values = headers.get(name)
    return values[0].strip() if values else ""


def _report(
    message: ParsedMessage, headers: dict[str, list[str]], sender: str, envelope: str | None
) -> Verdict | None:
    """Recognise delivery reports, complaints, read receipts and plain-text bounces."""
    report_type = ""
    if message.content_type == "multipart/report":
        match = _REPORT_TYPE.search(_first(headers, "content-type"))
        report_type = match.group(1).lower() if match else ""
    kinds: set[str] = set()
    dsn_parts = []
    if message.content_type.startswith("multipart/"):
        for ctype, node in report_parts(message.tree):
            kinds.add(ctype)
            if ctype in _DSN_TYPES:
                dsn_parts.append(node)
    if _challenge(headers, sender, message.subject):
        return Verdict("auto-reply", "challenge-response sender verification")
    if report_type == "feedback-report" or "message/feedback-report" in kinds:
        feedback = parse_feedback(message)
        return Verdict(
            "feedback",
            "multipart/report; report-type=feedback-report (ARF, RFC 5965)",
            feedback=feedback,
        )
    if dsn_parts:
        blocks = [block for part in dsn_parts for block in delivery_status_fields(part)]
        bounce = parse_delivery_report(message, blocks)
        if bounce is not None:
            return _dsn_verdict(bounce)
    if report_type == "disposition-notification" or kinds & _MDN_TYPES:
        return Verdict("auto-reply", "read receipt (MDN, report-type=disposition-notification)")
    feedback = parse_feedback(message) if _maybe_complaint(message, kinds) else None
    if feedback is not None:
        return Verdict("feedback", f"complaint notification ({feedback.format})", feedback=feedback)
    return _plain_bounce(message, sender, envelope, report_type == "delivery-status")


def _dsn_verdict(bounce: Bounce) -> Verdict:
    """Turn a parsed RFC 3464 report into a bounce, delay or delivery-report verdict."""
    failed = [r for r in bounce.recipients if r.action not in _NOT_FAILED]
    if failed:
        only = Bounce(
            tuple(failed), bounce.original_message_id, bounce.reporting_mta, bounce.format
        )
        return Verdict(
            "bounce", "multipart/report; report-type=delivery-status (RFC 3464)", bounce=only
        )
    if any(recipient.action == "delayed" for recipient in bounce.recipients):
        return Verdict("delay", "delivery-status report, Action: delayed", bounce=bounce)
    return Verdict(
        "delivery-report", "delivery-status report, Action: delivered/relayed", bounce=bounce
    )


def _challenge(headers: dict[str, list[str]], sender: str, subject: str) -> bool:
    """Challenge-response systems (Boxbe, Bluebottle, ...) asking the sender to confirm."""
    if any(name.startswith("x-boxbe") for name in headers) or "x-bluebottle-request" in headers:
        return True
    domain = sender.rpartition("@")[2]
    if domain and any(domain == d or domain.endswith("." + d) for d in _CHALLENGE_DOMAINS):
        return True
    return bool(subject) and _CHALLENGE_SUBJECT.search(subject) is not None


def _maybe_complaint(message: ParsedMessage, kinds: set[str]) -> bool:
    """Cheap pre-check for provider complaint formats (JMRP attachment, SES JSON)."""
    if "message/rfc822" in kinds and "complaint" in message.subject.lower():
        return True
    return "notificationType" in message.text[:4000]


def _plain_bounce(
    message: ParsedMessage, sender: str, envelope: str | None, report: bool
) -> Verdict | None:
    """Recognise a non-standard bounce from its sender, subject and wording."""
    local = sender.partition("@")[0]
    daemon = bool(local) and _DAEMON_LOCAL.fullmatch(local) is not None
    machine = daemon or envelope == "" or not sender
    no_reply = _NO_REPLY_LOCAL.match(sender) is not None
    subject_hit = bool(message.subject) and _BOUNCE_SUBJECT.search(message.subject) is not None
    if not (report or machine or subject_hit):
        return None
    text = message.text
    body_hit = _BOUNCE_BODY.search(text[:6000]) is not None
    mta_wording = _MTA_WORDING.search(text[:20000]) is not None
    if not report:
        if machine and not (subject_hit or body_hit or mta_wording):
            return None
        if no_reply and not machine and not (subject_hit and (body_hit or mta_wording)):
            return None
        if not (machine or no_reply or (subject_hit and body_hit and mta_wording)):
            return None
    if _SUCCESS.search(f"{message.subject}\n{text[:2000]}") and not body_hit:
        return Verdict("delivery-report", "delivery notification reports success")
    bounce, delayed = parse_plain_bounce(message, text)
    if delayed:
        return Verdict("delay", f"delay warning ({bounce.format})", bounce=bounce)
    signal = "Subject" if subject_hit else "sender" if daemon else "null return path"
    return Verdict("bounce", f"non-standard bounce ({bounce.format}; {signal})", bounce=bounce)


def _auto_reply(message: ParsedMessage, headers: dict[str, list[str]]) -> Verdict | None:
    """RFC 3834 and vendor auto-reply signals."""
    for value in headers.get("auto-submitted", ()):
        match = _TOKEN.search(_COMMENT.sub(" ", value))
        token = match.group(0).lower() if match else ""
        if token and token != "no":
            return Verdict("auto-reply", f"Auto-Submitted: {value.strip()[:80]}")
    for value in headers.get("x-auto-response-suppress", ()):
        tokens = {token.strip().lower() for token in re.split(r"[,;\s]+", value)}
        if tokens & _SUPPRESS_TOKENS:
            return Verdict(
                "auto-reply",
                f"X-Auto-Response-Suppress: {value.strip()[:60]} (sender asks for no auto-reply)",
            )
    precedence = _first(headers, "precedence").lower()
    if precedence in ("auto_reply", "auto-reply"):
        return Verdict("auto-reply", f"Precedence: {precedence}")
    for name in _AUTO_HEADERS:
        if name in headers:
            return Verdict("auto-reply", f"{_display(name)} header present")
    autogenerated = _first(headers, "x-autogenerated").lower()
    if autogenerated == "reply":
        return Verdict("auto-reply", "X-Autogenerated: Reply")
    if message.subject and _AUTO_SUBJECT.search(message.subject):
        return Verdict("auto-reply", f"auto-reply subject {message.subject[:60]!r}")
    return None


def _mailing_list(subject: str, headers: dict[str, list[str]], sender: str) -> Verdict | None:
    """List and bulk signals (RFC 2369/2919 headers, list senders, Precedence, ESP markers)."""
    for name in _LIST_HEADERS:
        if name in headers:
            return Verdict("list", f"{_display(name)}: {headers[name][0].strip()[:60]}")
    precedence = _first(headers, "precedence").lower()
    list_sender = next(
        (
            address
            for address in (_first(headers, "sender").lower(), sender)
            if address and _LIST_SENDER.search(_bare(address))
        ),
        None,
    )
    if precedence == "list":
        return Verdict("list", "Precedence: list")
    if list_sender is not None:
        return Verdict("list", f"list sender {list_sender[:60]}")
    if _DIGEST_SUBJECT.search(subject):
        return Verdict("list", "list digest subject")
    if precedence in ("bulk", "junk"):
        return Verdict("bulk", f"Precedence: {precedence}")
    for name in _BULK_HEADERS:
        if name in headers:
            return Verdict("bulk", f"{_display(name)} header present (bulk sender)")
    if _first(headers, "x-post-messageclass").startswith("9"):
        return Verdict("bulk", "X-POST-MessageClass: 9")
    return None


def _display(name: str) -> str:
    """Return a lower-cased header name in its usual spelling (List-Id, X-Loop)."""
    return "-".join(part.capitalize() for part in name.split("-"))


def _bare(value: str) -> str:
    """Return the addr-spec in a header value, or the value itself."""
    match = _ADDR.search(value)
    return match.group(0).strip("<>") if match else value


def _no_reply(sender: str, envelope: str | None) -> Verdict | None:
    """Null envelope sender or a sender whose local part says nobody reads replies."""
    if envelope == "":
        return Verdict("no-reply-sender", "null envelope sender <>")
    for address in (sender, envelope):
        if address and _NO_REPLY_LOCAL.match(address):
            return Verdict("no-reply-sender", f"no-reply sender {address[:80]}")
    return None
