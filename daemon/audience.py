"""The audience of campaign mail: who is on a list, in what state, and who a segment selects.

A membership is `pending` (double opt-in not yet confirmed), `subscribed` or `unsubscribed`.
Adding people (subscribers, memberships and the consent rules) is daemon/audience_import.py,
CSV files daemon/audience_csv.py, the double opt-in mail and link daemon/optin.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, Table, bindparam, case, delete, func, select, update

from .marketing_config import Segment
from .suppressions import SUPPRESSIONS, list_scope
from .tables import Contact, ListMember, Subscriber

SUBSCRIBERS: Table = Subscriber.__table__  # type: ignore[assignment]
MEMBERS: Table = ListMember.__table__  # type: ignore[assignment]
CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
STATUSES = ("pending", "subscribed", "unsubscribed")
NEW_FOR = timedelta(days=30)
ACTIVE_FOR = timedelta(days=180)
NO_TAGS: frozenset[str] = frozenset()
# addresses or ids per IN list: few round trips, well under SQLite's 32766 variables
CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Recipient:
    """One subscriber as campaigns see it (satisfies marketing_config.Audience)."""

    subscriber_id: int
    address: str
    name: str | None
    language: str | None
    timezone: str | None
    tier: str | None
    lifecycle: str | None
    tags: frozenset[str]
    attributes: dict[str, Any]
    last_contact_at: datetime | None


@dataclass(frozen=True, slots=True)
class Member:
    """A recipient with the state and consent of one list membership."""

    recipient: Recipient
    status: str
    consent_source: str | None
    consent_at: datetime | None
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None


def among(column: Any, values: Sequence[Any]) -> Any:
    """`column IN values` with the values written into the statement's text."""
    # as bound parameters the statement text repeats, psycopg prepares it, and PostgreSQL
    # may keep a generic plan made while the table was still empty; for thousands of
    # parameters that plan compares every row with every value (minutes, not milliseconds)
    return column.in_(
        bindparam("among", list(values), expanding=True, literal_execute=True, unique=True)
    )


def derived_lifecycle(
    first_contact: datetime | None, last_contact: datetime | None, now: datetime
) -> str:
    """potential (no contact), new (first within 30 days), active (last within 180), else lapsed."""
    if first_contact is None and last_contact is None:
        return "potential"
    if first_contact is not None and now - first_contact <= NEW_FOR:
        return "new"
    if last_contact is not None and now - last_contact <= ACTIVE_FOR:
        return "active"
    return "lapsed"


def _query(listed: bool, details: bool = False) -> Select[Any]:
    """Subscribers (joined to their memberships when listed) with the archive's facts."""
    linked = CONTACTS.alias("linked")
    same = CONTACTS.alias("same_address")
    s = SUBSCRIBERS.c
    seen = func.coalesce(linked.c.last_seen_at, same.c.last_seen_at)
    last = case(
        (s.last_contact_at.is_(None), seen),
        (seen.is_(None) | (s.last_contact_at > seen), s.last_contact_at),
        else_=seen,
    )
    columns: list[Any] = [
        s.id,
        s.address,
        func.coalesce(s.name, linked.c.name, same.c.name).label("name"),
        s.language,
        s.timezone,
        func.coalesce(s.tier, linked.c.tier, same.c.tier).label("tier"),
        s.lifecycle,
        s.tags,
        s.attributes,
        last.label("last_contact_at"),
        func.coalesce(linked.c.first_seen_at, same.c.first_seen_at).label("first_seen_at"),
    ]
    source: Any = SUBSCRIBERS
    if listed:
        m = MEMBERS.c
        source = MEMBERS.join(SUBSCRIBERS, s.id == m.subscriber_id)
        if details:
            columns += [m.status, m.consent_source, m.consent_at, m.confirmed_at]
            columns.append(m.unsubscribed_at)
    source = source.outerjoin(linked, linked.c.id == s.contact_id).outerjoin(
        same, same.c.address == s.address
    )
    return select(*columns).select_from(source)


class _Decoder:
    """Turns selected rows into Recipients; a JSON text seen before is not parsed again."""

    # most subscribers share a few tag sets and attribute sets; unique ones are not kept
    _KEEP = 4096

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._tags: dict[str, frozenset[str]] = {"[]": NO_TAGS, "": NO_TAGS}
        self._attributes: dict[str, dict[str, Any]] = {"{}": {}, "": {}}

    def recipient(self, row: Any) -> Recipient:
        """The Recipient of one row of `_query`."""
        pk, address, name, language, zone, tier, lifecycle, tags, attributes, last = row[:10]
        tag_set = self._tags.get(tags)
        if tag_set is None:
            tag_set = frozenset(json.loads(tags))
            if len(self._tags) < self._KEEP:
                self._tags[tags] = tag_set
        values = self._attributes.get(attributes)
        if values is None:
            values = json.loads(attributes)
            if len(self._attributes) < self._KEEP:
                self._attributes[attributes] = values
        return Recipient(
            int(pk),
            address,
            name,
            language,
            zone,
            tier,
            lifecycle or derived_lifecycle(row[10], last, self.now),
            tag_set,
            dict(values),
            last,
        )


def _matcher(segment: Segment | None) -> Callable[[Recipient, datetime], bool] | None:
    return None if segment is None else segment.matches


def audience(
    conn: Connection, list_name: str, segment: Segment | None, now: datetime
) -> list[Recipient]:
    """The subscribed members of a list that match the segment, ordered by address.

    tier: the subscriber's, else the customer archive's (the contact linked by contact_id,
    else the contact with the same address). last_contact_at: the later of the subscriber's
    and the contact's last_seen_at. lifecycle: the subscriber's if set, else derived at `now`:
    no contact history -> potential; first contact within 30 days -> new; last contact within
    180 days -> active; otherwise lapsed.
    """
    rows = conn.execute(
        _query(listed=True).where(MEMBERS.c["list"] == list_name, MEMBERS.c.status == "subscribed")
    ).all()
    decoder = _Decoder(now)
    found = [decoder.recipient(row) for row in rows]
    matches = _matcher(segment)
    if matches is not None:
        found = [person for person in found if matches(person, now)]
    found.sort(key=lambda person: person.address)
    return found


def members(
    conn: Connection,
    list_name: str,
    now: datetime,
    statuses: Sequence[str] | None = None,
    segment: Segment | None = None,
    subscriber_ids: Sequence[int] | None = None,
) -> list[Member]:
    """Members of a list (in any of statuses, of subscriber_ids) in the segment, by address."""
    query = _query(listed=True, details=True).where(MEMBERS.c["list"] == list_name)
    if statuses is not None:
        query = query.where(MEMBERS.c.status.in_(list(statuses)))
    wanted = None if subscriber_ids is None else set(subscriber_ids)
    if wanted is not None and len(wanted) <= CHUNK:
        query = query.where(among(MEMBERS.c.subscriber_id, sorted(wanted)))
    matches = _matcher(segment)
    found: list[Member] = []
    decoder = _Decoder(now)
    for row in conn.execute(query):
        if wanted is not None and row.id not in wanted:
            continue
        person = decoder.recipient(row)
        if matches is None or matches(person, now):
            found.append(
                Member(
                    person,
                    row.status,
                    row.consent_source,
                    row.consent_at,
                    row.confirmed_at,
                    row.unsubscribed_at,
                )
            )
    found.sort(key=lambda member: member.recipient.address)
    return found


def recipient(conn: Connection, address: str, now: datetime) -> Recipient | None:
    """Any subscriber by address, member of a list or not (for previews and test sends)."""
    row = conn.execute(
        _query(listed=False).where(SUBSCRIBERS.c.address == address.strip().lower())
    ).first()
    return None if row is None else _Decoder(now).recipient(row)


def _member_of(conn: Connection, subscriber_id: int, list_name: str) -> Any | None:
    return conn.execute(
        select(MEMBERS.c.status, MEMBERS.c.unsubscribed_at).where(
            MEMBERS.c["list"] == list_name, MEMBERS.c.subscriber_id == subscriber_id
        )
    ).first()


def member_status(conn: Connection, subscriber_id: int, list_name: str) -> str | None:
    """pending, subscribed or unsubscribed; None when not a member of the list."""
    row = _member_of(conn, subscriber_id, list_name)
    return None if row is None else str(row.status)


def confirm_member(
    conn: Connection, subscriber_id: int, list_name: str, now: datetime
) -> str | None:
    """Confirm a pending member: `confirmed`; else the unchanged status, or None (no member)."""
    row = _member_of(conn, subscriber_id, list_name)
    if row is None or row.status != "pending":
        return None if row is None else str(row.status)
    conn.execute(
        update(MEMBERS)
        .where(
            MEMBERS.c["list"] == list_name,
            MEMBERS.c.subscriber_id == subscriber_id,
            MEMBERS.c.status == "pending",
        )
        .values(status="subscribed", confirmed_at=now)
    )
    if row.unsubscribed_at is not None:
        lift_unsubscribes(conn, list_name, [subscriber_id])
    return "confirmed"


def lift_unsubscribes(conn: Connection, list_name: str, subscriber_ids: Sequence[int]) -> None:
    """Drop the list's `unsubscribe` suppressions of members who subscribed again."""
    # a new consent given after the unsubscribe outweighs it; bounces and complaints stay
    for start in range(0, len(subscriber_ids), CHUNK):
        addresses = select(SUBSCRIBERS.c.address).where(
            among(SUBSCRIBERS.c.id, subscriber_ids[start : start + CHUNK])
        )
        conn.execute(
            delete(SUPPRESSIONS).where(
                SUPPRESSIONS.c.address.in_(addresses),
                SUPPRESSIONS.c.scope == list_scope(list_name),
                SUPPRESSIONS.c.reason == "unsubscribe",
            )
        )


def unsubscribe_member(conn: Connection, address: str, list_name: str, now: datetime) -> bool:
    """End a pending or subscribed membership; False when there was none to end."""
    subscriber = select(SUBSCRIBERS.c.id).where(SUBSCRIBERS.c.address == address.strip().lower())
    result = conn.execute(
        update(MEMBERS)
        .where(
            MEMBERS.c["list"] == list_name,
            MEMBERS.c.subscriber_id == subscriber.scalar_subquery(),
            MEMBERS.c.status != "unsubscribed",
        )
        .values(status="unsubscribed", unsubscribed_at=now)
    )
    return bool(result.rowcount)
