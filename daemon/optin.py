"""Double opt-in: the confirmation mail with a signed link, and the page that link opens.

The token names the subscriber, the list and the day the mail was made, signed with the
installation's `optin` key: `mco-<subscriber>-<list>-<day>-<signature>`. It is accepted for
marketing.confirmation.valid_for counted from the end of that day, so never for less. Like
every link in our mail, a GET only shows the page (mail scanners and link previews fetch
links); the POST of its button confirms.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .audience import Member, confirm_member, member_status, members
from .compose import automatic, mailbox
from .database import Database
from .errors import ConfigError
from .interfaces import Clock
from .outbox import Outbox, OutgoingMail
from .render import TemplateStore
from .rules import Rules
from .screening import Identity
from .suppressions import suppressed

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"^mco-(\d{1,18})-([A-Za-z0-9_][A-Za-z0-9_.-]{0,63})-(\d{1,6})-([a-z2-7]{16})$")
_DAY = 86400


@dataclass(frozen=True, slots=True)
class Invitation:
    """A verified confirmation token: who may confirm which list."""

    subscriber_id: int
    list_name: str


def _signature(key: bytes, subscriber_id: int, list_name: str, day: int) -> str:
    payload = f"optin:{subscriber_id}:{list_name}:{day}".encode()
    digest = hmac.new(key, payload, hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode("ascii").lower()


def token(key: bytes, subscriber_id: int, list_name: str, sent: datetime) -> str:
    """The signed token of one confirmation link."""
    day = int(sent.timestamp()) // _DAY
    return f"mco-{subscriber_id}-{list_name}-{day}-{_signature(key, subscriber_id, list_name, day)}"


def verify(key: bytes, text: str, now: datetime, valid_for: float) -> Invitation | None:
    """The invitation of a token whose signature is right and which has not expired."""
    match = _TOKEN.match(text)
    if match is None:
        return None
    subscriber_id, list_name, day = int(match.group(1)), match.group(2), int(match.group(3))
    expected = _signature(key, subscriber_id, list_name, day)
    if not hmac.compare_digest(expected, match.group(4)):
        return None
    today = int(now.timestamp()) // _DAY
    if day > today or (today - day) * _DAY > valid_for:
        return None
    return Invitation(subscriber_id, list_name)


def _title(rules: Rules, list_name: str) -> str:
    mailing_list = rules.marketing.lists.get(list_name)
    return (mailing_list.title if mailing_list is not None else None) or list_name


def _sender(rules: Rules, list_name: str) -> str:
    if rules.marketing.sender is None:
        raise ConfigError(
            f"list {list_name} has double opt-in: set marketing.from in rules.yaml "
            "(the sender of the confirmation mail)"
        )
    return rules.marketing.sender


class Confirmations:
    """Queues the confirmation mail of pending members (an audience_import.Confirmer)."""

    def __init__(
        self,
        templates: TemplateStore,
        outbox: Outbox,
        identity: Identity,
        key: bytes,
        mid_key: bytes,
        public_url: str | None,
        rules: Callable[[], Rules],
    ) -> None:
        self.templates = templates
        self.outbox = outbox
        self.identity = identity
        self.key = key
        self.mid_key = mid_key
        self.public_url = public_url.rstrip("/") if public_url else None
        self.rules = rules

    def request(
        self, conn: Connection, list_name: str, subscriber_ids: Sequence[int], now: datetime
    ) -> int:
        """Queue the mail for those of subscriber_ids pending on the list; returns mails queued."""
        if not subscriber_ids:
            return 0
        rules = self.rules()
        if self.public_url is None:
            raise ConfigError(
                f"list {list_name} has double opt-in, whose confirmation link needs the web "
                "endpoint: set http.enabled and http.public_url in the settings"
            )
        _sender(rules, list_name)
        pending = members(conn, list_name, now, ("pending",), subscriber_ids=subscriber_ids)
        blocked = suppressed(conn, [member.recipient.address for member in pending])
        mails = []
        for member in pending:
            if member.recipient.address in blocked:
                log.info(
                    "no confirmation mail to suppressed %s (%s)",
                    member.recipient.address,
                    blocked[member.recipient.address],
                )
                continue
            mails.append(self.compose(rules, list_name, member, now))
        return self.outbox.enqueue(conn, mails)

    def compose(self, rules: Rules, list_name: str, member: Member, now: datetime) -> OutgoingMail:
        """The confirmation mail of one pending member."""
        person = member.recipient
        confirmation = rules.marketing.confirmation
        signed = token(self.key, person.subscriber_id, list_name, now)
        context = {
            "subscriber": {"name": person.name, "address": person.address},
            "list": {"name": list_name, "title": _title(rules, list_name)},
            "list_name": list_name,
            "list_title": _title(rules, list_name),
            "confirm_url": f"{self.public_url}/confirm/{signed}",
            "valid_days": max(1, math.ceil(confirmation.valid_for / _DAY)),
            "company": {
                "name": rules.identity.company.name,
                "signature": rules.identity.company.signature,
            },
        }
        rendered = self.templates.render(
            "campaigns", confirmation.template, context, language=person.language
        )
        key = f"optin:{list_name}:{person.subscriber_id}"
        if member.unsubscribed_at is not None:
            # subscribing again after an unsubscribe is a new consent that needs its own mail
            key += f":{int(member.unsubscribed_at.timestamp())}"
        return automatic(
            key,
            "optin",
            _sender(rules, list_name),
            (mailbox(person.name, person.address), person.address),
            rendered,
            self.mid_key,
            (self.identity.loop_header, self.identity.loop_token),
            now.astimezone(UTC),
        )


def optin_routes(db: Database, clock: Clock, key: bytes, rules: Callable[[], Rules]) -> list[Route]:
    """`/confirm/{token}`: GET shows the confirmation button, its POST confirms."""
    from .http import private_page as page

    invalid = "<p>This link is not valid, or it has expired.</p>"

    def confirm(request: Request) -> Response:
        current = rules()
        found = verify(
            key,
            str(request.path_params["token"]),
            clock.now(),
            current.marketing.confirmation.valid_for,
        )
        if found is None:
            return page("Link not valid", invalid, status=404)
        title = html.escape(_title(current, found.list_name))
        if request.method == "POST":
            with db.transaction() as conn:
                status = confirm_member(conn, found.subscriber_id, found.list_name, clock.now())
            if status == "confirmed":
                log.info("subscriber %d confirmed list %s", found.subscriber_id, found.list_name)
        else:
            with db.reading() as conn:
                status = member_status(conn, found.subscriber_id, found.list_name)
            if status == "pending":
                body = (
                    f"<p>Please confirm that you want to receive <strong>{title}</strong>.</p>"
                    '<form method="post"><button type="submit">Yes, subscribe me</button></form>'
                )
                return page("Confirm your subscription", body)
        if status is None:
            return page("Link not valid", invalid, status=404)
        if status == "unsubscribed":
            body = (
                f"<p>You have unsubscribed from <strong>{title}</strong>; this link does not "
                "subscribe you again.</p>"
            )
            return page("Not subscribed", body)
        return page(
            "Thank you", f"<p>Your subscription to <strong>{title}</strong> is confirmed.</p>"
        )

    return [Route("/confirm/{token}", confirm, methods=["GET", "POST"])]
