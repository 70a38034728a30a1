"""The `unsubscribe` pipeline step: mail to the unsubscribe address and "unsubscribe me" replies.

Mail written by a person (never bounces or auto-replies) unsubscribes its sender when

- it is addressed to `marketing.unsubscribe_address` (To, Cc, Delivered-To/X-Original-To or
  the delivery recipient): a valid token in the subject or body leaves that token's list,
  otherwise the sender leaves all marketing; or
- it is a short request to stop marketing mail sent to any support mailbox, by this rule:
  the part the sender wrote (quoted lines, the quoted original after "On ... wrote:" or
  "-----Original Message-----" and the signature cut off) has at most 8 non-empty lines and
  400 characters (a CJK character counts 3); the subject or one of its first 3 lines holds a
  sentence that is a request (EN: "unsubscribe" alone, "unsubscribe me", "please
  unsubscribe", "remove me from your (mailing) list", "stop sending me", "opt out"; ZH: "退订",
  "取消订阅" alone or with 邮件/推送/广告..., "不要再发(了)", "停止发送邮件"), not a
  question (no "?", no "how/can/why...", no 怎么/如何/吗) and not about someone else
  ("unsubscribe my colleague"); and nothing in it speaks of orders, refunds, payments,
  accounts or plans (cancelling a paid subscription is for a person to handle).
  The sender leaves all marketing.

Such a message is marked for the reply step (the fact `no_reply`, a reason to keep as the
reply decision) but stays a conversation people see.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Table, func, select

from .automated import Verdict
from .compose import valid_address
from .message import ParsedMessage
from .pipeline import Work, register
from .tables import Delivery
from .unsubscribe import UnsubscribeToken, find_token, unsubscribe

if TYPE_CHECKING:
    from .rules import Rules

log = logging.getLogger(__name__)

DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]

_SCAN = 4000  # tokens are looked for in the subject and the start of the body
_WRITTEN_SCAN = 20_000  # a request hidden below more quoted text than this is left to people
MAX_LINES = 8
MAX_LENGTH = 400
FIRST_LINES = 3
_ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to")
_ADDRESS = re.compile(r"[^\s<>,;\"]+@[^\s<>,;\"]+")

_SUBJECT_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|sv|antw|fw|fwd|wg|tr|回复|答复|回覆|转发|轉寄)\s*[:：]\s*)+", re.I
)
_CUT = re.compile(
    r"^\s*(?:--\s*$|-{2,}\s*(?:original message|forwarded message|原始邮件|原始郵件)|_{8,}\s*$|"
    r"on\s.{1,200}\swrote:\s*$|(?:from|发件人|寄件者)\s*[:：]|在.{1,100}写道[:：]?\s*$|"
    r"sent from my\s)",
    re.I,
)
_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_SENTENCE = re.compile(r"[^.!?。！？;；\n]+[.!?。！？;；]*")
_OBJECT = (
    r"(?:marketing\s+|promotional\s+|newsletter\s+)?(?:e-?mails?|mails?|newsletters?|"
    r"mailings?|mailing\s+lists?|marketing|promotions?|lists?)"
)
_REQUEST = re.compile(
    r"^\W*(?:please\s+)?unsubscribe(?:\s+(?:me|us))?(?:\s+(?:please|now|asap|immediately))?\W*$"
    r"|\bunsubscribe\s+(?:me|us)\b"
    r"|\b(?:please|want\s+to|wish\s+to|like\s+to|need\s+to)\s+unsubscribe\b"
    r"(?!\s+(?!me\b|us\b|from\b|please\b)\w)"
    r"|\b(?:remove|delete|take)\s+(?:me|us|my\s+(?:e-?mail\s+)?(?:address|e-?mail))\s+"
    r"(?:from|off)\s+(?:of\s+)?(?:your|the|this|these|all|any)\b[\w\s-]{0,30}?\blists?\b"
    r"|\bstop\s+(?:sending|e-?mailing|mailing|spamming)\s+(?:me|us)\b"
    r"|\b(?:do\s+not|don'?t|never)\s+(?:send|e-?mail|mail)\s+(?:me|us)\s+(?:any\s*more|again)\b"
    rf"|\bopt(?:\s*-\s*|\s+)(?:me\s+|us\s+)?out\b(?:\s+of\s+(?:your|these|the|all|any)\s+"
    rf"{_OBJECT})?\W*$"
    r"|^\W*(?:请|麻烦|我要|我想|帮我)*(?:退订|取消订阅)(?:[，,\s]*(?:谢谢|多谢|谢了))?\W*$"
    r"|(?:退订|取消订阅)(?:你们|贵公司|贵司|您)?的?(?:所有|全部)?(?:营销|促销|广告)?"
    r"(?:邮件|电子邮件|邮件列表|推送|广告|资讯|简报|通讯|newsletter)"
    r"|(?:不要|别|请勿|请不要)再(?:给我)?(?:发|寄)(?:送)?(?:给我)?"
    r"(?:邮件|广告|推送|营销邮件|这类邮件|此类邮件|这种邮件)?了?\W*$"
    r"|停止(?:给我)?(?:发送|发)(?:邮件|广告|推送|营销邮件)",
    re.I,
)
_QUESTION = re.compile(
    r"[?？]|^\W*(?:how|what|why|where|when|who|which|can|could|would|will|is|are|do|does|did|"
    r"should|may|might|shall)\b|怎么|怎样|如何|为什么|为何|能否|能不能|可不可以|是否|吗|呢",
    re.I,
)
_OTHER_BUSINESS = re.compile(
    r"\b(?:refunds?|invoices?|billing|bills?|payments?|charged?|charges|orders?|accounts?|"
    r"plans?|premium|licen[cs]es?|renewals?|trial)\b|退款|订单|发票|付款|扣费|扣款|续费|会员|"
    r"套餐|账户|账号|帐户|帐号|退货",
    re.I,
)


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    """What the step decided for one message."""

    address: str
    via: str  # mailto (sent to the unsubscribe address) or reply (a plain request)
    token: UnsubscribeToken | None = None

    @property
    def reason(self) -> str:
        """Why the message gets no auto-reply (kept as its reply decision)."""
        if self.token is not None:
            return f"an unsubscribe request: {self.address} left list {self.token.list_name}"
        return f"an unsubscribe request: {self.address} left all marketing mail"


def written_part(text: str, limit: int = MAX_LINES + 1) -> list[str]:
    """The first non-empty lines the sender wrote: not quoted, before the original and signature."""
    lines: list[str] = []
    for line in text[:_WRITTEN_SCAN].splitlines():
        if _CUT.match(line):
            break
        stripped = line.strip()
        if stripped and not stripped.startswith(">"):
            lines.append(stripped)
            if len(lines) >= limit:
                break
    return lines


def _length(lines: Sequence[str]) -> int:
    return sum(len(line) + 2 * len(_CJK.findall(line)) for line in lines)


def asks_to_unsubscribe(subject: str, text: str) -> bool:
    """Whether a message is a short request to stop marketing mail (see the module's rule)."""
    lines = written_part(text)
    if len(lines) > MAX_LINES or _length(lines) > MAX_LENGTH:
        return False
    subject = _SUBJECT_PREFIX.sub("", subject).strip()
    if _OTHER_BUSINESS.search(subject) or any(_OTHER_BUSINESS.search(line) for line in lines):
        return False
    for place in (subject, *lines[:FIRST_LINES]):
        for sentence in _SENTENCE.findall(place):
            if _REQUEST.search(sentence.strip()) and not _QUESTION.search(sentence):
                return True
    return False


def addressed_to(message: ParsedMessage, address: str) -> bool:
    """Whether address is among the message's visible or envelope recipients."""
    wanted = address.strip().lower()
    if any(a.addr.strip().lower() == wanted for a in [*message.to, *message.cc]):
        return True
    return any(
        wanted in _ADDRESS.findall(value.lower())
        for name in _ENVELOPE_HEADERS
        for value in message.headers_all(name)
    )


@register("unsubscribe")
class UnsubscribeStep:
    """Unsubscribe the senders of mail to the unsubscribe address and of plain requests."""

    name = "unsubscribe"
    description = (
        "mail to the unsubscribe address and short 'unsubscribe me' requests leave marketing"
    )
    needs: tuple[str, ...] = ("unsubscribe_key", "rules")

    def __init__(
        self, unsubscribe_key: bytes | None = None, rules: Callable[[], Rules] | None = None
    ) -> None:
        self.key = unsubscribe_key
        self.rules = rules

    def _address(self) -> str | None:
        if self.rules is None:
            return None
        address = self.rules().marketing.unsubscribe_address
        return address.strip().lower() if address else None

    def prepare(self, item: Work) -> None:
        item.facts["unsubscribe"] = item.facts["unsubscribe_sender"] = None
        verdict: Verdict | None = item.facts.get("verdict")
        if verdict is None or verdict.kind != "human":
            return  # bounces, auto-replies and our own mail never unsubscribe anyone
        message = item.message()
        sender = message.sender.addr.strip().lower() if message.sender else ""
        if not valid_address(sender):
            return
        item.facts["unsubscribe_sender"] = sender
        target = self._address()
        if target is not None and addressed_to(message, target):
            self._decide(item, self._mailto(message, sender))
        elif asks_to_unsubscribe(message.subject, message.text):
            self._decide(item, UnsubscribeRequest(sender, "reply"))

    @staticmethod
    def _decide(item: Work, request: UnsubscribeRequest) -> None:
        item.facts["unsubscribe"] = request
        item.facts["no_reply"] = request.reason

    def _mailto(self, message: ParsedMessage, sender: str) -> UnsubscribeRequest:
        token = None
        if self.key is not None:
            token = find_token(self.key, f"{message.subject}\n{message.text[:_SCAN]}")
        return UnsubscribeRequest(sender, "mailto", token)

    def _delivered_to_target(self, items: Sequence[Work], conn: Connection) -> None:
        """Mail that reached the unsubscribe address only through the envelope (Bcc)."""
        target = self._address()
        if target is None:
            return
        waiting = {
            item.pk: item
            for item in items
            if item.facts.get("unsubscribe") is None and item.facts.get("unsubscribe_sender")
        }
        if not waiting:
            return
        found = conn.execute(
            select(DELIVERIES.c.message_pk).where(
                DELIVERIES.c.message_pk.in_(sorted(waiting)),
                func.lower(DELIVERIES.c.recipient) == target,
            )
        ).scalars()
        for pk in sorted(set(found)):
            item = waiting[pk]
            self._decide(item, self._mailto(item.message(), item.facts["unsubscribe_sender"]))

    def apply(self, items: Sequence[Work], conn: Connection) -> None:
        self._delivered_to_target(items, conn)
        for item in items:
            request: UnsubscribeRequest | None = item.facts.get("unsubscribe")
            if request is None:
                continue
            token = request.token
            if token is not None:
                changed = unsubscribe(
                    conn,
                    subscriber_id=token.subscriber_id,
                    list_name=token.list_name,
                    scope="list",
                    when=item.received_at,
                    source="mail",
                    message_pk=item.pk,
                    detail=f"run {token.run_id}",
                )
                where = f"list {token.list_name} (subscriber {token.subscriber_id})"
            else:
                changed = unsubscribe(
                    conn,
                    address=request.address,
                    list_name=None,
                    scope="marketing",
                    when=item.received_at,
                    source="mail" if request.via == "mailto" else "reply",
                    message_pk=item.pk,
                )
                where = "all marketing"
            log.info(
                "%s: %s unsubscribed from %s (%s)%s",
                item.message().message_id or item.pk,
                request.address,
                where,
                request.via,
                "" if changed else ": already unsubscribed",
            )
