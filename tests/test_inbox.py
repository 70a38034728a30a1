"""The inbox ledger: raw bytes stored once, the cursor moving in the same transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from daemon.clock import FrozenClock
from daemon.database import Database
from daemon.errors import LeaseLostError
from daemon.folders import FolderLedger
from daemon.inbox import Arrival, Inbox, content_digest
from daemon.tables import Delivery, MailFolder, Message
from tests.helpers import make_mail

OWNER = "host-a:1:aaaa"


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def folder(db: Database, clock: FrozenClock, owner: str = OWNER) -> tuple[FolderLedger, int]:
    ledger = FolderLedger(db, clock, owner, ttl=30)
    folder_id = ledger.ensure("support", "INBOX")
    assert ledger.acquire(folder_id)
    assert ledger.begin_sync(folder_id, uidvalidity=7) == 0
    return ledger, folder_id


def count(db: Database, table: type) -> int:
    with db.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_store_keeps_raw_bytes_hash_and_message_id(db: Database) -> None:
    clock = FrozenClock()
    _, folder_id = folder(db, clock)
    raw = make_mail(message_id="<abc@x.example>")
    outcome = Inbox(db, clock).store_imap(
        folder_id=folder_id,
        mailbox="support",
        owner=OWNER,
        uidvalidity=7,
        arrivals=[Arrival(raw, 1)],
        highest_uid=1,
    )
    assert outcome.stored == 1 and outcome.known == 0
    with db.reading() as conn:
        row = conn.execute(select(Message)).one()
        cursor = conn.execute(select(MailFolder.last_uid)).scalar_one()
    assert bytes(row.raw) == raw
    assert row.sha256 == hashlib.sha256(raw).hexdigest()
    assert row.message_id == "<abc@x.example>"
    assert row.state == "new" and row.source == "imap"
    assert cursor == 1


def test_same_message_again_is_not_stored_twice(db: Database) -> None:
    clock = FrozenClock()
    _, folder_id = folder(db, clock)
    inbox = Inbox(db, clock)
    raw = make_mail()
    inbox.store_imap(
        folder_id=folder_id,
        mailbox="support",
        owner=OWNER,
        uidvalidity=7,
        arrivals=[Arrival(raw, 1)],
        highest_uid=1,
    )
    again = inbox.store_imap(
        folder_id=folder_id,
        mailbox="support",
        owner=OWNER,
        uidvalidity=7,
        arrivals=[Arrival(raw, 2), Arrival(raw, 3)],
        highest_uid=3,
    )
    assert again.stored == 0 and again.known == 2
    assert count(db, Message) == 1
    assert count(db, Delivery) == 3  # every sighting is recorded, the message once


def test_same_message_id_with_other_content_is_a_different_message(db: Database) -> None:
    clock = FrozenClock()
    inbox = Inbox(db, clock)
    first = make_mail(body="first version")
    second = make_mail(body="second version")
    inbox.store_delivered(first, channel="lmtp", envelope_from=None, recipients=["s@x"])
    inbox.store_delivered(second, channel="lmtp", envelope_from=None, recipients=["s@x"])
    assert count(db, Message) == 2


def test_trace_headers_do_not_make_copies_different(db: Database) -> None:
    raw = make_mail()
    copy_a = b"Return-Path: <a@x>\r\nDelivered-To: sales@acme.example\r\nReceived: from a\r\n" + raw
    copy_b = b"Delivered-To: support@acme.example\r\nReceived: from b\r\n by c\r\n" + raw
    assert content_digest(copy_a) == content_digest(copy_b) == content_digest(raw)
    assert content_digest(raw.replace(b"jammed again", b"jammed twice")) != content_digest(raw)
    inbox = Inbox(db, FrozenClock())
    inbox.store_delivered(copy_a, channel="lmtp", envelope_from=None, recipients=["sales@x"])
    outcome = inbox.store_delivered(
        copy_b, channel="lmtp", envelope_from=None, recipients=["support@x"]
    )
    assert outcome.known == 1 and count(db, Message) == 1


def test_copies_stay_separate_when_merging_is_off(db: Database) -> None:
    inbox = Inbox(db, FrozenClock(), merge_copies=False)
    outcome = inbox.store_delivered(
        make_mail(), channel="lmtp", envelope_from="a@x", recipients=["sales@x", "support@x"]
    )
    assert outcome.stored == 2
    with db.reading() as conn:
        boxes = sorted(conn.execute(select(Message.mailbox)).scalars())
    assert boxes == ["sales@x", "support@x"]


def test_lease_lost_means_nothing_stored_and_cursor_unmoved(db: Database) -> None:
    clock = FrozenClock()
    ledger, folder_id = folder(db, clock)
    clock.advance(timedelta(seconds=31))  # our lease expired ...
    rival = FolderLedger(db, clock, "host-b:2:bbbb", ttl=30)
    assert rival.acquire(folder_id)  # ... and another process took the folder over
    with pytest.raises(LeaseLostError):
        Inbox(db, clock).store_imap(
            folder_id=folder_id,
            mailbox="support",
            owner=OWNER,
            uidvalidity=7,
            arrivals=[Arrival(make_mail(), 1)],
            highest_uid=1,
        )
    assert count(db, Message) == 0
    assert ledger.state(folder_id).last_uid == 0
    assert not ledger.renew(folder_id)


def test_cursor_never_moves_backwards(db: Database) -> None:
    clock = FrozenClock()
    _, folder_id = folder(db, clock)
    inbox = Inbox(db, clock)
    inbox.store_imap(
        folder_id=folder_id,
        mailbox="support",
        owner=OWNER,
        uidvalidity=7,
        arrivals=[Arrival(make_mail(), 5)],
        highest_uid=5,
    )
    with pytest.raises(LeaseLostError):
        inbox.store_imap(
            folder_id=folder_id,
            mailbox="support",
            owner=OWNER,
            uidvalidity=7,
            arrivals=[Arrival(make_mail(message_id="<o@x>"), 3)],
            highest_uid=3,
        )
    assert count(db, Message) == 1


def test_listeners_hear_about_new_messages_only(db: Database) -> None:
    heard: list[int] = []
    inbox = Inbox(db, FrozenClock(), on_stored=lambda: heard.append(1))
    raw = make_mail()
    inbox.store_delivered(raw, channel="lmtp", envelope_from=None, recipients=["s@x"])
    inbox.store_delivered(raw, channel="lmtp", envelope_from=None, recipients=["s@x"])
    assert heard == [1]


def test_pending_dispositions_until_marked(db: Database) -> None:
    clock = FrozenClock()
    _, folder_id = folder(db, clock)
    inbox = Inbox(db, clock)
    arrivals = [Arrival(make_mail(message_id=f"<{n}@x>"), n) for n in (1, 2, 3)]
    inbox.store_imap(
        folder_id=folder_id,
        mailbox="support",
        owner=OWNER,
        uidvalidity=7,
        arrivals=arrivals,
        highest_uid=3,
        disposition="pending",
    )
    assert inbox.pending_dispositions(folder_id, 7) == [1, 2, 3]
    inbox.mark_disposed(folder_id, 7, [1, 3])
    assert inbox.pending_dispositions(folder_id, 7) == [2]
