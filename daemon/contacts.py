"""The customer archive: every sender becomes a contact with a history."""

from __future__ import annotations

from sqlalchemy import Connection, Table, func, select, update

from .inbox import MESSAGES, insert_ignoring
from .pipeline import Work, register
from .tables import Contact, Conversation, Participant

CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
PARTICIPANTS: Table = Participant.__table__  # type: ignore[assignment]
CONVERSATIONS: Table = Conversation.__table__  # type: ignore[assignment]


def _later(conn: Connection, column: object, value: object) -> object:
    return (func.max if conn.dialect.name == "sqlite" else func.greatest)(column, value)


def _earlier(conn: Connection, column: object, value: object) -> object:
    return (func.min if conn.dialect.name == "sqlite" else func.least)(column, value)


@register("contact")
class ContactStep:
    """Record the sender in the customer archive and link it to message and conversation."""

    name = "contact"
    description = "create or update the sender's contact: first/last seen, messages, conversations"
    needs: tuple[str, ...] = ()

    def prepare(self, item: Work) -> None:
        sender = item.message().sender
        address = sender.addr if sender and "@" in sender.addr else (item.envelope_from or "")
        item.facts["contact_address"] = address.strip().lower()[:320] or None
        item.facts["contact_name"] = (sender.name or None) if sender else None

    def apply(self, item: Work, conn: Connection) -> None:
        address: str | None = item.facts["contact_address"]
        if not address:
            return
        when = item.received_at
        name: str | None = item.facts["contact_name"]
        conn.execute(
            insert_ignoring(conn, CONTACTS, ["address"]),
            [
                {
                    "address": address,
                    "name": name[:300] if name else None,
                    "tier": "ordinary",
                    "first_seen_at": when,
                    "last_seen_at": when,
                    "message_count": 0,
                    "conversation_count": 0,
                }
            ],
        )
        contact = int(
            conn.execute(select(CONTACTS.c.id).where(CONTACTS.c.address == address)).scalar_one()
        )
        values: dict[str, object] = {
            "message_count": CONTACTS.c.message_count + 1,
            "last_seen_at": _later(conn, CONTACTS.c.last_seen_at, when),
            "first_seen_at": _earlier(conn, CONTACTS.c.first_seen_at, when),
        }
        if name:
            values["name"] = name[:300]
        conversation = item.facts.get("conversation_id")
        if conversation is not None:
            joined = conn.execute(
                insert_ignoring(conn, PARTICIPANTS, ["conversation_id", "contact_id"]),
                [{"conversation_id": conversation, "contact_id": contact, "first_message_at": when}],
            ).rowcount
            if joined:
                values["conversation_count"] = CONTACTS.c.conversation_count + 1
            conn.execute(
                update(CONVERSATIONS)
                .where(CONVERSATIONS.c.id == conversation, CONVERSATIONS.c.contact_id.is_(None))
                .values(contact_id=contact)
            )
        conn.execute(update(CONTACTS).where(CONTACTS.c.id == contact).values(**values))
        conn.execute(update(MESSAGES).where(MESSAGES.c.id == item.pk).values(contact_id=contact))
        item.facts["contact_id"] = contact
