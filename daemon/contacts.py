"""The customer archive: every sender becomes a contact with a history."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Table, bindparam, func, select, update

from .database import earlier, later
from .inbox import insert_ignoring
from .pipeline import Work, register
from .tables import Contact, Conversation, Participant

CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
PARTICIPANTS: Table = Participant.__table__  # type: ignore[assignment]
CONVERSATIONS: Table = Conversation.__table__  # type: ignore[assignment]


def tiers_of(conn: Connection, items: Sequence[Work]) -> dict[int, str]:
    """The customer tier of each item's contact (after the contact step), by contact id."""
    ids = sorted({int(i.facts["contact_id"]) for i in items if i.facts.get("contact_id")})
    if not ids:
        return {}
    rows = conn.execute(select(CONTACTS.c.id, CONTACTS.c.tier).where(CONTACTS.c.id.in_(ids)))
    return {int(pk): tier for pk, tier in rows}


MACHINE_KINDS = frozenset({"bounce", "delay", "delivery-report", "feedback", "loop", "own-address"})


@register("contact")
class ContactStep:
    """Record the sender in the customer archive and link it to message and conversation."""

    name = "contact"
    description = "create or update the sender's contact: first/last seen, messages, conversations"
    needs: tuple[str, ...] = ()

    def prepare(self, item: Work) -> None:
        verdict = item.facts.get("verdict")
        if verdict is not None and verdict.kind in MACHINE_KINDS:
            # a mail server's report is not a customer: it joins the thread, not the archive
            item.facts["contact_address"] = item.facts["contact_name"] = None
            return
        sender = item.message().sender
        address = sender.addr if sender and "@" in sender.addr else (item.envelope_from or "")
        item.facts["contact_address"] = address.strip().lower()[:320] or None
        item.facts["contact_name"] = (sender.name or None) if sender else None

    def apply(self, items: Sequence[Work], conn: Connection) -> None:
        mine = [item for item in items if item.facts["contact_address"]]
        if not mine:
            return
        seen: dict[str, list[Work]] = {}
        for item in mine:
            seen.setdefault(item.facts["contact_address"], []).append(item)
        conn.execute(
            insert_ignoring(conn, CONTACTS, ["address"]),
            [
                {
                    "address": address,
                    "name": None,
                    "tier": "ordinary",
                    "first_seen_at": min(i.received_at for i in group),
                    "last_seen_at": max(i.received_at for i in group),
                    "message_count": 0,
                    "conversation_count": 0,
                }
                for address, group in seen.items()
            ],
        )
        ids = self._ids(conn, sorted(seen))
        pairs = {
            (int(item.facts["conversation_id"]), ids[item.facts["contact_address"]]): item
            for item in mine
            if item.facts.get("conversation_id") is not None
        }
        new_pairs = set(pairs) - self._participants(conn, pairs)
        if new_pairs:
            conn.execute(
                insert_ignoring(conn, PARTICIPANTS, ["conversation_id", "contact_id"]),
                [
                    {
                        "conversation_id": conv,
                        "contact_id": contact,
                        "first_message_at": pairs[(conv, contact)].received_at,
                    }
                    for conv, contact in sorted(new_pairs)
                ],
            )
        joined: dict[int, int] = {}
        for _conv, contact in new_pairs:
            joined[contact] = joined.get(contact, 0) + 1
        conn.execute(
            update(CONTACTS)
            .where(CONTACTS.c.id == bindparam("k_id"))
            .values(
                message_count=CONTACTS.c.message_count + bindparam("k_messages"),
                conversation_count=CONTACTS.c.conversation_count + bindparam("k_joined"),
                last_seen_at=later(conn, CONTACTS.c.last_seen_at, bindparam("k_last")),
                first_seen_at=earlier(conn, CONTACTS.c.first_seen_at, bindparam("k_first")),
                name=func.coalesce(bindparam("k_name"), CONTACTS.c.name),
            ),
            [
                {
                    "k_id": ids[address],
                    "k_messages": len(group),
                    "k_joined": joined.get(ids[address], 0),
                    "k_last": max(i.received_at for i in group),
                    "k_first": min(i.received_at for i in group),
                    "k_name": next(
                        (
                            i.facts["contact_name"][:300]
                            for i in reversed(group)
                            if i.facts["contact_name"]
                        ),
                        None,
                    ),
                }
                for address, group in seen.items()
            ],
        )
        firsts: dict[int, int] = {}
        for (conv, contact), _item in pairs.items():
            firsts.setdefault(conv, contact)
        if firsts:
            conn.execute(
                update(CONVERSATIONS)
                .where(
                    CONVERSATIONS.c.id == bindparam("v_id"), CONVERSATIONS.c.contact_id.is_(None)
                )
                .values(contact_id=bindparam("v_contact")),
                [{"v_id": conv, "v_contact": contact} for conv, contact in firsts.items()],
            )
        for item in mine:
            contact = ids[item.facts["contact_address"]]
            item.facts["contact_id"] = item.record["contact_id"] = contact

    def _ids(self, conn: Connection, addresses: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(addresses), 500):
            rows = conn.execute(
                select(CONTACTS.c.address, CONTACTS.c.id).where(
                    CONTACTS.c.address.in_(addresses[start : start + 500])
                )
            )
            found.update({address: int(pk) for address, pk in rows})
        return found

    def _participants(
        self, conn: Connection, pairs: dict[tuple[int, int], Work]
    ) -> set[tuple[int, int]]:
        conversations = sorted({conv for conv, _ in pairs})
        existing: set[tuple[int, int]] = set()
        for start in range(0, len(conversations), 500):
            rows = conn.execute(
                select(PARTICIPANTS.c.conversation_id, PARTICIPANTS.c.contact_id).where(
                    PARTICIPANTS.c.conversation_id.in_(conversations[start : start + 500])
                )
            )
            existing.update((int(conv), int(contact)) for conv, contact in rows)
        return existing
