"""Conversations and the customer archive, as the runner builds them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from daemon import contacts as _contacts  # noqa: F401  (registers the step)
from daemon import threads as _threads  # noqa: F401  (registers the step)
from daemon.clock import FrozenClock
from daemon.database import Database
from daemon.inbox import Inbox
from daemon.pipeline import build_steps
from daemon.rules import ConversationRules
from daemon.runner import Runner
from daemon.tables import Contact, Conversation, Message
from daemon.threads import TicketTags, base_subject
from tests.helpers import make_mail


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


class Desk:
    """Delivers mail and runs the runner, one batch per call unless told otherwise."""

    def __init__(self, db: Database, rules: ConversationRules | None = None) -> None:
        self.db = db
        self.clock = FrozenClock()
        self.rules = rules or ConversationRules()
        self.inbox = Inbox(db, self.clock, merge_copies=self.rules.merge_copies)
        steps = build_steps(["parse", "thread", "contact"], conversation_rules=self.rules)
        self.runner = Runner(db, self.clock, steps, "h:1:t", batch_size=50)

    def deliver(self, raw: bytes, *recipients: str, process: bool = True) -> None:
        self.inbox.store_delivered(
            raw,
            channel="lmtp",
            envelope_from=None,
            recipients=list(recipients or ["support@acme.example"]),
        )
        self.clock.advance(timedelta(minutes=5))
        if process:
            self.process()

    def process(self) -> None:
        while self.runner.run_once():
            pass

    def conversation_of(self, message_id: str) -> int:
        with self.db.reading() as conn:
            value = conn.execute(
                select(Message.conversation_id).where(Message.message_id == message_id)
            ).scalar_one()
        assert value is not None
        return int(value)


def test_replies_join_by_in_reply_to_and_references(db: Database) -> None:
    desk = Desk(db)
    desk.deliver(make_mail(message_id="<a@c.example>", subject="Invoice wrong"))
    desk.deliver(
        make_mail(
            message_id="<b@c.example>", subject="Re: Invoice wrong", in_reply_to="<a@c.example>"
        )
    )
    desk.deliver(
        make_mail(
            message_id="<c@c.example>",
            subject="AW: Invoice wrong",
            references="<zz@elsewhere> <b@c.example>",
        )
    )
    desk.deliver(make_mail(message_id="<d@c.example>", subject="Invoice wrong"))  # new request
    first = desk.conversation_of("<a@c.example>")
    assert desk.conversation_of("<b@c.example>") == first
    assert desk.conversation_of("<c@c.example>") == first
    assert desk.conversation_of("<d@c.example>") != first
    with db.reading() as conn:
        conv = conn.execute(select(Conversation).where(Conversation.id == first)).one()
    assert conv.message_count == 3 and conv.subject == "Invoice wrong"
    assert conv.last_message_at > conv.opened_at


def test_reply_arriving_before_its_original_still_joins(db: Database) -> None:
    desk = Desk(db)
    desk.deliver(make_mail(message_id="<reply@c>", in_reply_to="<orig@c>", subject="Re: Hi"))
    desk.deliver(make_mail(message_id="<orig@c>", subject="Hi"))
    assert desk.conversation_of("<reply@c>") == desk.conversation_of("<orig@c>")


def test_thread_inside_one_batch(db: Database) -> None:
    desk = Desk(db)
    desk.deliver(make_mail(message_id="<p@c>", subject="Order"), process=False)
    desk.deliver(
        make_mail(message_id="<q@c>", in_reply_to="<p@c>", subject="Re: Order"), process=False
    )
    desk.deliver(make_mail(message_id="<r@c>", subject="Other"), process=False)
    desk.process()
    assert desk.conversation_of("<p@c>") == desk.conversation_of("<q@c>")
    assert desk.conversation_of("<r@c>") != desk.conversation_of("<p@c>")


def test_ticket_tag_joins_when_headers_are_missing(db: Database) -> None:
    desk = Desk(db)
    desk.deliver(make_mail(message_id="<t1@c>", subject="Broken screen"))
    ticket = desk.conversation_of("<t1@c>")
    desk.deliver(make_mail(message_id="<t2@c>", subject=f"Re: [MC#{ticket}] Broken screen"))
    desk.deliver(make_mail(message_id="<t3@c>", subject="[MC#999999] no such ticket"))
    assert desk.conversation_of("<t2@c>") == ticket
    assert desk.conversation_of("<t3@c>") != ticket


def test_tag_threading_can_be_turned_off(db: Database) -> None:
    desk = Desk(db, ConversationRules(thread_by_tag=False))
    desk.deliver(make_mail(message_id="<t1@c>", subject="Broken screen"))
    ticket = desk.conversation_of("<t1@c>")
    desk.deliver(make_mail(message_id="<t2@c>", subject=f"Re: [MC#{ticket}] Broken screen"))
    assert desk.conversation_of("<t2@c>") != ticket


def test_message_to_two_addresses_is_one_conversation(db: Database) -> None:
    desk = Desk(db)
    raw = make_mail(message_id="<both@c>", to="sales@acme.example, support@acme.example")
    desk.deliver(raw, "sales@acme.example", "support@acme.example")
    desk.deliver(b"Delivered-To: support@acme.example\r\n" + raw, "support@acme.example")
    with db.reading() as conn:
        assert (
            conn.execute(select(Message.id)).all()
            == conn.execute(select(Message.id).where(Message.message_id == "<both@c>")).all()
        )
        assert len(conn.execute(select(Conversation.id)).all()) == 1


def test_two_addresses_can_get_a_conversation_each(db: Database) -> None:
    desk = Desk(db, ConversationRules(merge_copies=False))
    raw = make_mail(message_id="<both@c>", to="sales@acme.example, support@acme.example")
    desk.deliver(raw, "sales@acme.example", "support@acme.example")
    desk.deliver(make_mail(message_id="<re@c>", in_reply_to="<both@c>"), "sales@acme.example")
    with db.reading() as conn:
        rows = conn.execute(select(Message.mailbox, Message.conversation_id)).all()
    by_box: dict[str | None, set[int | None]] = {}
    for box, conv in rows:
        by_box.setdefault(box, set()).add(conv)
    assert len(by_box["sales@acme.example"]) == 1  # the reply joined the sales copy
    assert by_box["sales@acme.example"] != by_box["support@acme.example"]


def test_contacts_keep_history(db: Database) -> None:
    desk = Desk(db)
    desk.deliver(make_mail(message_id="<1@c>", sender="anna@Customer.Example"))
    first_seen = desk.clock.now() - timedelta(minutes=5)
    desk.deliver(
        make_mail(
            message_id="<2@c>", sender="Anna Berg <ANNA@customer.example>", in_reply_to="<1@c>"
        )
    )
    desk.deliver(
        make_mail(
            message_id="<3@c>", sender="Anna Berg <anna@customer.example>", subject="New question"
        )
    )
    desk.deliver(make_mail(message_id="<4@c>", sender="Bo <bo@other.example>", in_reply_to="<3@c>"))
    with db.reading() as conn:
        anna = conn.execute(select(Contact).where(Contact.address == "anna@customer.example")).one()
        bo = conn.execute(select(Contact).where(Contact.address == "bo@other.example")).one()
        owner = conn.execute(
            select(Conversation.contact_id).where(Conversation.id == desk.conversation_of("<3@c>"))
        ).scalar_one()
    assert (anna.message_count, anna.conversation_count) == (3, 2)
    assert anna.name == "Anna Berg" and anna.first_seen_at == first_seen
    assert anna.last_seen_at == desk.clock.now() - timedelta(minutes=10)
    assert (bo.message_count, bo.conversation_count) == (1, 1)
    assert owner == anna.id  # the conversation belongs to who opened it


def test_base_subject_strips_prefixes_and_tags() -> None:
    tags = TicketTags("MC")
    assert base_subject("Re: AW: [MC#12] Fwd: Printer", tags) == "Printer"
    assert base_subject("回复：答复: 发票问题", tags) == "发票问题"
    assert base_subject("RE[2]: Status", tags) == "Status"
    assert base_subject("Reminder: renew", tags) == "Reminder: renew"
    assert tags.find("re: [mc#42] x") == 42 and tags.tag(42) == "[MC#42]"
