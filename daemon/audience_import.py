"""Adding people to the audience: subscribers created or updated, list memberships, consent.

Rules: every new member needs a consent source (where and how they agreed). On a list with
double opt-in a new member is `pending` and gets the confirmation mail, unless the consent on
record was itself a confirmed opt-in (`confirmed`). An import never subscribes an
`unsubscribed` member again (it is reported as skipped); only an explicit new consent
(`subscribe_member`) does. A member already pending is not mailed again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, bindparam, func, select, update

from .audience import (
    CHUNK,
    CONTACTS,
    MEMBERS,
    NO_TAGS,
    SUBSCRIBERS,
    among,
    lift_unsubscribes,
)
from .compose import valid_address
from .errors import ConfigError
from .inbox import insert_ignoring
from .marketing_config import LIFECYCLES, MailingList

_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$")
# the subscriber columns an import may set; the rest are the row's own bookkeeping
_DATA = ("name", "language", "timezone", "tier", "lifecycle", "contact_id")
_COLUMNS = (*_DATA, "tags", "attributes", "last_contact_at")
_LIMITS = {"name": 300, "tier": 32, "consent_source": 200}


@dataclass(frozen=True)
class NewSubscriber:
    """A person to create or update; None leaves a stored value as it is."""

    address: str
    name: str | None = None
    language: str | None = None
    timezone: str | None = None
    tier: str | None = None
    lifecycle: str | None = None
    tags: frozenset[str] | None = None
    attributes: Mapping[str, Any] | None = None
    contact_id: int | None = None
    last_contact_at: datetime | None = None
    consent_source: str | None = None
    consent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Upserted:
    """Subscriber ids by address, and which addresses were created or changed."""

    ids: dict[str, int]
    created: frozenset[str]
    changed: frozenset[str]


@dataclass
class Enrolment:
    """What adding people to a list did, address by address."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    confirmations: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


class Confirmer(Protocol):
    """Queues the double opt-in mail for pending members (daemon.optin.Confirmations)."""

    def request(
        self, conn: Connection, list_name: str, subscriber_ids: Sequence[int], now: datetime
    ) -> int: ...


@lru_cache(maxsize=512)
def _known_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def checked(person: NewSubscriber) -> NewSubscriber:
    """The person with a lower-cased address and tidied values; ValueError says what is wrong."""
    address = person.address.strip().lower()
    if not valid_address(address):
        raise ValueError(f"not a usable e-mail address: {person.address!r}")
    values: dict[str, Any] = {"address": address}
    for name in ("name", "language", "timezone", "tier", "lifecycle", "consent_source"):
        value = getattr(person, name)
        value = (value.strip() or None) if isinstance(value, str) else None
        limit = _LIMITS.get(name)
        if value is not None and limit is not None and len(value) > limit:
            raise ValueError(f"{name} is longer than {limit} characters")
        values[name] = value
    if values["language"] is not None:
        values["language"] = values["language"].replace("_", "-")
        if not _LANGUAGE.match(values["language"]) or len(values["language"]) > 16:
            raise ValueError(f"not a language tag (en, zh-CN): {person.language!r}")
    if values["timezone"] is not None and not _known_timezone(values["timezone"]):
        raise ValueError(f"unknown timezone {person.timezone!r} (use names like Europe/Berlin)")
    if values["lifecycle"] is not None:
        values["lifecycle"] = values["lifecycle"].lower()
        if values["lifecycle"] not in LIFECYCLES:
            known = ", ".join(LIFECYCLES)
            raise ValueError(f"unknown lifecycle {person.lifecycle!r} ({known})")
    if person.tags is not None:
        values["tags"] = frozenset(tag.strip() for tag in person.tags if tag.strip())
    return replace(person, **values)


def _tags_json(tags: frozenset[str]) -> str:
    return json.dumps(sorted(tags), ensure_ascii=False)


def _by_address(conn: Connection, addresses: Sequence[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    columns = [SUBSCRIBERS.c.id, SUBSCRIBERS.c.address, *(SUBSCRIBERS.c[c] for c in _COLUMNS)]
    for start in range(0, len(addresses), CHUNK):
        chunk = list(addresses[start : start + CHUNK])
        for row in conn.execute(select(*columns).where(among(SUBSCRIBERS.c.address, chunk))):
            found[row.address] = row
    return found


def _merged(row: Any, person: NewSubscriber) -> dict[str, Any] | None:
    current = {name: getattr(row, name) for name in _COLUMNS}
    values = dict(current)
    for name in _DATA:
        if getattr(person, name) is not None:
            values[name] = getattr(person, name)
    if person.tags is not None:
        values["tags"] = _tags_json(person.tags)
    if person.attributes:
        merged = {**json.loads(row.attributes or "{}"), **person.attributes}
        values["attributes"] = json.dumps(merged, ensure_ascii=False, sort_keys=True)
    last = person.last_contact_at
    if last is not None and (row.last_contact_at is None or last > row.last_contact_at):
        values["last_contact_at"] = last
    return None if values == current else values


def upsert_subscribers(
    conn: Connection, people: Sequence[NewSubscriber], now: datetime
) -> Upserted:
    """Create or update subscribers (given values replace stored ones; attributes merge)."""
    return upsert_checked(conn, [checked(person) for person in people], now)


def upsert_checked(conn: Connection, people: Sequence[NewSubscriber], now: datetime) -> Upserted:
    """upsert_subscribers for people that already passed `checked`."""
    wanted = {person.address: person for person in people}
    stored = _by_address(conn, sorted(wanted))
    fresh = [
        {
            **{name: getattr(person, name) for name in (*_DATA, "last_contact_at")},
            "address": address,
            "tags": _tags_json(person.tags or NO_TAGS),
            "attributes": json.dumps(
                dict(person.attributes or {}), ensure_ascii=False, sort_keys=True
            ),
            "created_at": now,
            "updated_at": now,
        }
        for address, person in sorted(wanted.items())
        if address not in stored
    ]
    if fresh:
        # no RETURNING: batches of inserts with RETURNING are several times slower here
        conn.execute(insert_ignoring(conn, SUBSCRIBERS, ["address"]), fresh)
    changes: list[dict[str, Any]] = []
    changed: set[str] = set()
    for address, row in stored.items():
        values = _merged(row, wanted[address])
        if values is not None:
            changed.add(address)
            changes.append(
                {f"k_{name}": value for name, value in values.items()} | {"k_id": row.id}
            )
    if changes:
        conn.execute(
            update(SUBSCRIBERS)
            .where(SUBSCRIBERS.c.id == bindparam("k_id"))
            .values({name: bindparam(f"k_{name}") for name in _COLUMNS} | {"updated_at": now}),
            changes,
        )
    created = _by_address(conn, [row["address"] for row in fresh])
    ids = {address: int(row.id) for address, row in (stored | created).items()}
    return Upserted(ids, frozenset(created), frozenset(changed))


def _statuses(conn: Connection, list_name: str, addresses: Sequence[str]) -> dict[str, str]:
    ids: dict[int, str] = {}
    for start in range(0, len(addresses), CHUNK):
        chunk = list(addresses[start : start + CHUNK])
        query = select(SUBSCRIBERS.c.id, SUBSCRIBERS.c.address)
        for pk, address in conn.execute(query.where(among(SUBSCRIBERS.c.address, chunk))):
            ids[int(pk)] = address
    # two lookups by unique keys rather than a join, whose plan PostgreSQL may choose from
    # statistics made before a large import (a nested loop over the whole list)
    found: dict[str, str] = {}
    keys = sorted(ids)
    for start in range(0, len(keys), CHUNK):
        chunk_ids = keys[start : start + CHUNK]
        for pk, status in conn.execute(
            select(MEMBERS.c.subscriber_id, MEMBERS.c.status).where(
                MEMBERS.c["list"] == list_name, among(MEMBERS.c.subscriber_id, chunk_ids)
            )
        ):
            found[ids[pk]] = status
    return found


def _enrol(
    conn: Connection,
    list_name: str,
    mailing_list: MailingList,
    people: Sequence[NewSubscriber],
    now: datetime,
    confirmer: Confirmer | None,
    confirmed: bool,
    explicit: bool,
) -> Enrolment:
    report = Enrolment()
    valid: dict[str, NewSubscriber] = {}
    for person in people:
        try:
            tidy = checked(person)
        except ValueError as exc:
            report.skipped.append((person.address, str(exc)))
            continue
        valid[tidy.address] = tidy
    known = _statuses(conn, list_name, sorted(valid))
    accepted: list[NewSubscriber] = []
    for address, person in sorted(valid.items()):
        status = known.get(address)
        if status == "unsubscribed" and not explicit:
            reason = f"unsubscribed from {list_name} (only `audience subscribe` adds them again)"
            report.skipped.append((address, reason))
        elif status in (None, "unsubscribed") and not person.consent_source:
            report.skipped.append((address, "no consent source (where and how they agreed)"))
        else:
            accepted.append(person)
    upserted = upsert_checked(conn, accepted, now)
    confirm = mailing_list.double_opt_in and not confirmed
    fresh: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    pending: list[int] = []
    returned: list[int] = []
    for person in accepted:
        sid, status = upserted.ids[person.address], known.get(person.address)
        if status in (None, "unsubscribed"):
            consent_at = person.consent_at or now
            values = {
                "status": "pending" if confirm else "subscribed",
                "consent_source": person.consent_source,
                "consent_at": consent_at,
                "confirmed_at": consent_at if confirmed else None,
            }
            report.added.append(person.address)
            if confirm:
                pending.append(sid)
                report.pending.append(person.address)
            if status is None:
                fresh.append({**values, "list": list_name, "subscriber_id": sid, "created_at": now})
            else:
                changes.append(
                    {f"k_{name}": value for name, value in values.items()} | {"k_id": sid}
                )
                if not confirm:
                    returned.append(sid)
        elif status == "pending" and not confirm:
            changes.append(
                {
                    "k_id": sid,
                    "k_status": "subscribed",
                    "k_consent_source": person.consent_source,
                    "k_consent_at": person.consent_at,
                    "k_confirmed_at": (person.consent_at or now) if confirmed else None,
                }
            )
            returned.append(sid)
            report.updated.append(person.address)
        elif person.address in upserted.changed:
            report.updated.append(person.address)
        else:
            report.unchanged.append(person.address)
    if fresh:
        conn.execute(insert_ignoring(conn, MEMBERS, ["list", "subscriber_id"]), fresh)
    if changes:
        columns = ("status", "consent_source", "consent_at", "confirmed_at")
        conn.execute(
            update(MEMBERS)
            .where(MEMBERS.c["list"] == list_name, MEMBERS.c.subscriber_id == bindparam("k_id"))
            .values(
                {
                    name: (
                        bindparam(f"k_{name}")
                        if name in ("status", "confirmed_at")
                        else func.coalesce(bindparam(f"k_{name}"), MEMBERS.c[name])
                    )
                    for name in columns
                }
            ),
            changes,
        )
    if returned:
        lift_unsubscribes(conn, list_name, returned)
    if pending:
        if confirmer is None:
            raise ConfigError(f"list {list_name} has double opt-in but no confirmation mailer")
        report.confirmations = confirmer.request(conn, list_name, pending, now)
    return report


def add_members(
    conn: Connection,
    list_name: str,
    mailing_list: MailingList,
    people: Sequence[NewSubscriber],
    now: datetime,
    confirmer: Confirmer | None,
    *,
    confirmed: bool = False,
) -> Enrolment:
    """Create or update subscribers and add them to a list under the rules above (an import)."""
    return _enrol(conn, list_name, mailing_list, people, now, confirmer, confirmed, False)


def subscribe_member(
    conn: Connection,
    list_name: str,
    mailing_list: MailingList,
    person: NewSubscriber,
    now: datetime,
    confirmer: Confirmer | None,
    *,
    confirmed: bool = False,
) -> Enrolment:
    """Add one person on an explicit new consent; it re-subscribes an unsubscribed member."""
    return _enrol(conn, list_name, mailing_list, [person], now, confirmer, confirmed, True)


def from_contacts(
    conn: Connection, tiers: Sequence[str] | None, consent_source: str, now: datetime
) -> list[NewSubscriber]:
    """The archive's contacts (of some tiers) as people for a list, linked to their contact."""
    # name, tier and last contact stay in the contact, so later changes in the archive count
    query = select(CONTACTS.c.id, CONTACTS.c.address).order_by(CONTACTS.c.address)
    if tiers:
        query = query.where(CONTACTS.c.tier.in_(list(tiers)))
    return [
        NewSubscriber(
            address=address,
            contact_id=int(pk),
            consent_source=consent_source,
            consent_at=now,
        )
        for pk, address in conn.execute(query)
    ]
