"""Structured header values: address lists, dates and Message-ID tokens, read leniently."""

from __future__ import annotations

import email.utils
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from .encoded_words import decode_header, recover_raw

logger = logging.getLogger(__name__)

_COMMENT = re.compile(r"\([^()]*\)")
_ANGLE_ID = re.compile(r"<([^<>]*)>")
# Both pick tokens out of free text; the look-behind starts them only at token boundaries,
# which keeps the scan linear on hostile input.
_BARE_ID = re.compile(r'(?<![^\s<>,;"()])[^\s<>,;"()@]+@[^\s<>,;"()]+')
_QUOTED_PAIR = re.compile(r'\\([\\"])')
_ADDR_TOKEN = re.compile(r'[^<>"\s,;:()\\\[\]]+')
_NAME_SPECIALS = re.compile(r'[<>",;:()\\@\[\]]')
_ADDR_ANYWHERE = re.compile(r'(?<![^<>"\s,;:()\\\[\]])[^<>"\s,;:()\\\[\]@]+@[^<>"\s,;:()\\\[\]]+')
_ADDR_SPEC = re.compile(r'[^<>"\s,;:()\\\[\]@]+@[^<>"\s,;:()\\\[\]]+')
# The common Date form, parsed without the stdlib's general (and slower) date parser.
_RFC5322_DATE = re.compile(
    r"\s*(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    r"\s+([+-])(\d{2})(\d{2})\s*(?:\([^()]*\)\s*)?\Z"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}


# The whole addr-spec is lower-cased, local part included: RFC 5321 lets a server treat local
# parts case-sensitively, but no mailbox provider does, and one spelling per mailbox keeps
# contact lookup, suppression lists and bounce matching to plain string equality.
@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: decoded display name and the addr-spec, lower-cased as a whole."""

    name: str
    addr: str


def normalize_message_id(value: str) -> str | None:
    """Return the first Message-ID token of a header value as `<...>`, or None."""
    ids = message_ids(value)
    return ids[0] if ids else None


def message_ids(value: str | None) -> list[str]:
    """Return the `<...>` tokens of a Message-ID style header, deduplicated in order."""
    if not value:
        return []
    if not value.isascii():
        raw = recover_raw(value)
        if raw is not None:
            value = raw.decode("utf-8", "replace")
    for _ in range(4):
        if "(" not in value:
            break
        value = _COMMENT.sub(" ", value)
    tokens = _ANGLE_ID.findall(value) if "<" in value else _BARE_ID.findall(value)
    ids: dict[str, None] = {}
    for token in tokens:
        token = "".join(token.split())
        if token and len(token) < 990 and token.isprintable():
            ids[f"<{token}>"] = None
    return list(ids)


def parse_addresses(
    value: str | None, defects: list[str], where: str, hint: str | None
) -> list[Address]:
    """Parse an address-list header, tolerating garbage; names decoded, addresses lower-cased."""
    if not value:
        return []
    value = value.replace("\r", " ").replace("\n", " ")
    simple = _simple_mailbox(value)
    pairs = [simple] if simple is not None else _getaddresses(value, defects, where)
    result: list[Address] = []
    for name, addr in pairs:
        if not addr:
            continue
        if not addr.isascii():
            raw = recover_raw(addr)
            addr = raw.decode("utf-8", "replace") if raw is not None else addr
        name = decode_header(name, defects, where, hint).strip() if name else ""
        result.append(Address(name=name, addr=addr.strip().lower()))
    return result


def _simple_mailbox(value: str) -> tuple[str, str] | None:
    """Read the common single `Name <addr>` or bare `addr@domain` form without the stdlib parser."""
    value = value.strip()
    match = _ADDR_SPEC.fullmatch(value)
    if match is not None:
        return "", value
    if not value.endswith(">") or value.count("<") != 1 or value.count(">") != 1:
        return None
    name, _, addr = value[:-1].partition("<")
    name, addr = name.strip(), addr.strip()
    if _ADDR_TOKEN.fullmatch(addr) is None:
        return None
    if len(name) >= 2 and name[0] == name[-1] == '"':
        inner = name[1:-1]
        if '"' in inner.replace('\\"', ""):
            return None
        return _QUOTED_PAIR.sub(r"\1", inner), addr
    if _NAME_SPECIALS.search(name):
        return None
    return " ".join(name.split()), addr


def _getaddresses(value: str, defects: list[str], where: str) -> list[tuple[str, str]]:
    """Parse a complex address list with the stdlib; on failure keep whatever looks like one."""
    if value.count(":") < 20:
        try:
            return email.utils.getaddresses([value])
        except Exception:  # the stdlib parser recurses and indexes on garbage; never let it escape
            logger.debug("%s: address parser failed", where, exc_info=True)
    defects.append(f"{where}: unparseable address list; addresses picked out")
    return [("", addr) for addr in _ADDR_ANYWHERE.findall(value)]


def parse_date(value: str | None) -> datetime | None:
    """Parse a Date header into an aware UTC datetime; None when absent or unreadable."""
    if not value:
        return None
    match = _RFC5322_DATE.match(value)
    if match is not None and match.group(2).lower() in _MONTHS:
        day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
        offset = (int(zone_h) * 60 + int(zone_m)) * (-1 if sign == "-" else 1)
        try:
            local = datetime(
                int(year), _MONTHS[month.lower()], int(day), int(hour), int(minute),
                int(second or 0), tzinfo=timezone(timedelta(minutes=offset)),
            )  # fmt: skip
            return local.astimezone(UTC)
        except (ValueError, OverflowError):
            pass
    try:
        parsed = email.utils.parsedate_to_datetime(value.encode("ascii", "replace").decode())
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
