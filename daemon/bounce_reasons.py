"""Bounce reasons: a failed recipient's status code and diagnostic text read as a reason token.

Hard means the address itself is dead (userunknown, hostunknown, hasmoved, notaccept: Sisimai's
definition); all else, 5.7.x policy and spam blocks included, is soft: the address may work
another day. The diagnostic text decides before the RFC 3463 code, because servers put 5.1.1 on
quota errors and 5.7.1 on unknown users; the code decides when the text says nothing known.
"""

from __future__ import annotations

import re

__all__ = ["ADDRESS", "HARD_REASONS", "classify", "recipient_reason"]

HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"})
_MAX_SCAN = 60_000

# An e-mail address as regex source: bounce parsing finds failed recipients with it, and
# reason texts are read with every address masked.
ADDRESS = r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+"
_ADDRESS_PATTERN = re.compile(ADDRESS)

# A relayed reply inside a gateway's own wording ("5.1.0 - Unknown address error 550-'5.7.1
# Access denied'"): the remote server's words describe the failure, the gateway's do not.
_REMOTE_REPLY = re.compile(r"(?<=\S)\s+['\"(]?[245]\d\d[ -]['\"]?(?:[245]\.\d{1,3}\.\d{1,3}\s)?")
_AFTER_DATA = re.compile(
    r"(?:in reply to|after) (?:end of )?data\b|smtp command\s*:?\s*data\b|final data|"
    r">>>+[ \t]*data[ \t]*\n[ \t>]*<<<",
    re.I,
)
_AFTER_MAIL_FROM = re.compile(r"(?:in reply to|after) mail from\b", re.I)

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
    sample = _ADDRESS_PATTERN.sub("<address>", text[:_MAX_SCAN])
    for name, pattern in _REASON_PATTERNS:
        if pattern.search(sample):
            return name
    return None


def recipient_reason(status: str | None, diagnostic: str | None, *context: str | None) -> str:
    """Return the reason a recipient failed: its diagnostic first, then the report around it."""
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
    return reason
