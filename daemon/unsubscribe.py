"""Unsubscribing from campaign mail: signed tokens, List-Unsubscribe headers, the web endpoint.

A token names the subscriber, the list and the campaign run; it is HMAC-signed, never
expires (an old newsletter's link must still work) and does not show the address. The
https link follows RFC 8058: the mail provider's POST (`List-Unsubscribe=One-Click`)
unsubscribes at once; a GET, which mail scanners and link previews also make, only shows
a page whose buttons POST. The mailto link reaches the intake, where the `unsubscribe`
step reads the token from the subject.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import importlib.util
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from sqlalchemy import Connection, Table, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .audience import unsubscribe_member
from .database import Database
from .http import private_page
from .interfaces import Clock
from .suppressions import list_scope, suppress
from .tables import ListMember, Subscriber

log = logging.getLogger(__name__)

SUBSCRIBERS: Table = Subscriber.__table__  # type: ignore[assignment]
MEMBERS: Table = ListMember.__table__  # type: ignore[assignment]

PREFIX = "mcu-"
_MAC_BYTES = 10  # 80 bits: forging one needs ~2^79 guesses against the web endpoint
_DOMAIN = b"mailcare-unsubscribe\x00"
_LIST_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_TOKEN = re.compile(r"(?<![\w-])mcu-([a-z2-7]{16,160})(?![\w-])", re.I)
_MAX_BODY = 64 * 1024
# python-multipart is optional: without it a multipart POST is the one-click request itself
_MULTIPART = importlib.util.find_spec("python_multipart") is not None


@dataclass(frozen=True, slots=True)
class UnsubscribeToken:
    """What a verified token says: who, from which list, through which campaign run."""

    subscriber_id: int
    list_name: str
    run_id: int


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("token ids are never negative")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, start: int) -> tuple[int, int]:
    value = shift = 0
    for position in range(start, min(len(data), start + 10)):
        byte = data[position]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position + 1
        shift += 7
    raise ValueError("truncated number")


def make_token(key: bytes, subscriber_id: int, list_name: str, run_id: int) -> str:
    """The signed token of one recipient's unsubscribe links."""
    payload = _varint(subscriber_id) + _varint(run_id) + list_name.encode("ascii")
    mac = hmac.digest(key, _DOMAIN + payload, "sha256")[:_MAC_BYTES]
    return PREFIX + base64.b32encode(payload + mac).decode("ascii").rstrip("=").lower()


def read_token(key: bytes, token: str) -> UnsubscribeToken | None:
    """The token's content when its signature is right, else None."""
    body = token.strip()
    if body[: len(PREFIX)].lower() != PREFIX or len(body) > len(PREFIX) + 160:
        return None
    text = body[len(PREFIX) :].upper()
    try:
        data = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return None
    payload, mac = data[:-_MAC_BYTES], data[-_MAC_BYTES:]
    if len(payload) < 3:
        return None
    expected = hmac.digest(key, _DOMAIN + payload, "sha256")[:_MAC_BYTES]
    if not hmac.compare_digest(expected, mac):
        return None
    try:
        subscriber_id, position = _read_varint(payload, 0)
        run_id, position = _read_varint(payload, position)
        list_name = payload[position:].decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    if not _LIST_NAME.match(list_name):
        return None
    return UnsubscribeToken(subscriber_id, list_name, run_id)


def find_token(key: bytes, text: str) -> UnsubscribeToken | None:
    """The first valid token in text (a subject or a mail body)."""
    for match in _TOKEN.finditer(text):
        found = read_token(key, PREFIX + match.group(1))
        if found is not None:
            return found
    return None


def _ascii_host(host: str) -> str:
    """A host name as ASCII (IDNA A-labels for an internationalised name)."""
    return host if host.isascii() else host.encode("idna").decode("ascii")


def unsubscribe_url(public_url: str, token: str) -> str:
    """The https link as an ASCII URI without the characters List-Unsubscribe gives meaning."""
    parts = urlsplit(public_url.rstrip("/"))
    host = _ascii_host(parts.netloc)
    path = quote(parts.path, safe="/:@!$&'()*+;=-._~%")
    return urlunsplit((parts.scheme.lower(), host, f"{path}/unsubscribe/{token}", "", ""))


def list_unsubscribe_headers(
    token: str, public_url: str | None, mailto: str | None
) -> list[tuple[str, str]]:
    """RFC 2369 List-Unsubscribe (https and mailto) and, with https, RFC 8058 one-click."""
    uris: list[str] = []
    if public_url:
        uris.append(unsubscribe_url(public_url, token))
    if mailto:
        local, _, domain = mailto.strip().rpartition("@")
        local = quote(local, safe="!$'*+-._~")
        uris.append(f"mailto:{local}@{_ascii_host(domain)}?subject=unsubscribe%20{token}")
    if not uris:
        return []
    headers = [("List-Unsubscribe", ", ".join(f"<{uri}>" for uri in uris))]
    if uris[0].startswith("https://"):
        headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    return headers


def _leave(conn: Connection, address: str, list_name: str | None, when: datetime) -> int:
    """End the address's membership of list_name, or of every list with list_name None."""
    if list_name is not None:
        return int(unsubscribe_member(conn, address, list_name, when))
    lists = conn.execute(
        select(MEMBERS.c["list"])
        .select_from(MEMBERS.join(SUBSCRIBERS, MEMBERS.c.subscriber_id == SUBSCRIBERS.c.id))
        .where(SUBSCRIBERS.c.address == address, MEMBERS.c.status != "unsubscribed")
        .order_by(MEMBERS.c["list"])
    ).scalars()
    return sum(unsubscribe_member(conn, address, name, when) for name in list(lists))


def unsubscribe(
    conn: Connection,
    *,
    subscriber_id: int | None = None,
    address: str | None = None,
    list_name: str | None,
    scope: str,
    when: datetime,
    source: str,
    message_pk: int | None = None,
    detail: str | None = None,
) -> bool:
    """Unsubscribe one person (by subscriber id or address); True when anything changed.

    scope `list` (or `list:<name>`) leaves list_name and suppresses that list's campaigns;
    scope `marketing` leaves every list and suppresses all campaign mail.
    """
    if (subscriber_id is None) == (address is None):
        raise ValueError("give either subscriber_id or address")
    if scope.startswith("list:"):
        list_name = list_name or scope[len("list:") :]
        scope = "list"
    if scope not in ("list", "marketing") or (scope == "list" and not list_name):
        raise ValueError(f"unknown unsubscribe scope {scope!r} (list with a list name, marketing)")
    if subscriber_id is not None:
        found = conn.execute(
            select(SUBSCRIBERS.c.address).where(SUBSCRIBERS.c.id == subscriber_id)
        ).scalar()
        if found is None:
            return False  # the subscriber was deleted: nothing is sent to them any more
        address = str(found)
    assert address is not None
    address = address.strip().lower()
    where = "all marketing" if scope == "marketing" else f"list {list_name}"
    note = f"{source}: {where}" + (f" ({detail})" if detail else "")
    added = suppress(
        conn,
        [(address, "unsubscribe", note, message_pk)],
        when,
        scope="marketing" if scope == "marketing" else list_scope(str(list_name)),
    )
    left = _leave(conn, address, None if scope == "marketing" else list_name, when)
    return bool(added or left)


async def _wants_everything(request: Request) -> bool:
    """Whether the POST asks to leave all marketing (the second button: scope=marketing)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        if not _MULTIPART:
            return False  # RFC 8058: the POST itself is the request, whatever its form says
        async with request.form(max_files=0, max_fields=20) as form:
            return form.get("scope") == "marketing"
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > _MAX_BODY:
            return False
    if content_type != "application/x-www-form-urlencoded":
        return False
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=20)
    return "marketing" in fields.get("scope", [])


def unsubscribe_routes(db: Database, clock: Clock, key: bytes) -> list[Route]:
    """The /unsubscribe/{token} endpoint (GET: a page with two buttons; POST: unsubscribe)."""

    def record(token: UnsubscribeToken, everything: bool) -> bool:
        with db.transaction() as conn:
            return unsubscribe(
                conn,
                subscriber_id=token.subscriber_id,
                list_name=token.list_name,
                scope="marketing" if everything else "list",
                when=clock.now(),
                source="web",
                detail=f"run {token.run_id}",
            )

    async def endpoint(request: Request) -> Response:
        token = read_token(key, str(request.path_params["token"]))
        if token is None:
            return private_page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
        name = html.escape(token.list_name)
        if request.method != "POST":
            body = (
                f"<p>Stop receiving the <strong>{name}</strong> mailing?</p>"
                '<form method="post"><button type="submit">Unsubscribe from this list'
                "</button></form>"
                '<form method="post"><input type="hidden" name="scope" value="marketing">'
                '<button type="submit">Unsubscribe from all our marketing mail</button></form>'
            )
            return private_page("Unsubscribe", body)
        everything = await _wants_everything(request)
        changed = await run_in_threadpool(record, token, everything)
        log.info(
            "subscriber %d unsubscribed from %s (web, run %d)%s",
            token.subscriber_id,
            "all marketing" if everything else f"list {token.list_name}",
            token.run_id,
            "" if changed else ": already unsubscribed",
        )
        what = "any of our marketing mail" if everything else f"the <strong>{name}</strong> mailing"
        return private_page("Unsubscribed", f"<p>You will not receive {what} any more.</p>")

    return [Route("/unsubscribe/{token}", endpoint, methods=["GET", "POST"])]
