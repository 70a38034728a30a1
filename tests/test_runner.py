"""The runner: batches, quarantine with reasons, retries, and claims shared by processes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, select

from daemon import contacts as _contacts  # noqa: F401  (registers the step)
from daemon import threads as _threads  # noqa: F401  (registers the step)
from daemon.clock import FrozenClock
from daemon.database import Database
from daemon.inbox import Inbox
from daemon.pipeline import Work, build_steps
from daemon.quarantine import list_quarantined, raw_bytes, retry
from daemon.rules import ConversationRules
from daemon.runner import Runner
from daemon.tables import Message
from tests.helpers import make_mail, states


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def runner(
    db: Database,
    clock: FrozenClock,
    owner: str = "h:1:r",
    steps: Sequence[Any] = (),
    **options: Any,
) -> Runner:
    chosen = list(steps) or build_steps(
        ["parse", "thread", "contact"], conversation_rules=ConversationRules()
    )
    return Runner(db, clock, chosen, owner, **options)


def store(db: Database, clock: FrozenClock, *raws: bytes) -> None:
    inbox = Inbox(db, clock)
    for raw in raws:
        inbox.store_delivered(raw, channel="lmtp", envelope_from="x@y", recipients=["s@acme"])


class Exploding:
    """A step that fails on messages whose subject contains a marker."""

    name = "explode"
    description = "fails on purpose"

    def __init__(self, where: str = "apply") -> None:
        self.where = where

    def prepare(self, item: Work) -> None:
        if self.where == "prepare" and "BOOM" in item.message().subject:
            raise ValueError("prepare refused this one")

    def apply(self, items: Sequence[Work], conn: Connection) -> None:
        if self.where == "apply" and any("BOOM" in i.message().subject for i in items):
            raise ValueError("apply refused this one")


def test_processes_everything_in_batches(db: Database) -> None:
    clock = FrozenClock()
    store(db, clock, *(make_mail(message_id=f"<{n}@x>", subject=f"Ticket {n}") for n in range(7)))
    work = runner(db, clock, batch_size=3)
    assert [work.run_once() for _ in range(4)] == [3, 3, 1, 0]
    assert states(db) == {"done": 7}
    with db.reading() as conn:
        subjects = sorted(conn.execute(select(Message.subject)).scalars())
    assert subjects == [f"Ticket {n}" for n in range(7)]


@pytest.mark.parametrize("where", ["prepare", "apply"])
def test_a_failing_message_is_quarantined_and_does_not_block_the_rest(
    db: Database, where: str
) -> None:
    clock = FrozenClock()
    raws = [
        make_mail(message_id=f"<{n}@x>", subject="BOOM" if n == 2 else f"fine {n}")
        for n in range(5)
    ]
    store(db, clock, *raws)
    steps = [
        *build_steps(["parse", "thread", "contact"], conversation_rules=ConversationRules()),
        Exploding(where),
    ]
    work = runner(db, clock, steps=steps, batch_size=10)
    assert work.run_once() == 5
    assert states(db) == {"done": 4, "quarantined": 1}
    [bad] = list_quarantined(db)
    assert bad.message_id == "<2@x>"
    assert bad.reason.startswith(f"explode: ValueError: {where} refused this one")
    assert raw_bytes(db, bad.pk) == raws[2]
    with db.reading() as conn:
        # the failed message left nothing behind: no conversation, no contact
        row = conn.execute(select(Message).where(Message.id == bad.pk)).one()
    assert row.conversation_id is None and row.contact_id is None


def test_quarantine_retry_processes_again(db: Database) -> None:
    clock = FrozenClock()
    store(db, clock, make_mail(subject="BOOM"))
    steps = [*build_steps(["parse"], conversation_rules=ConversationRules()), Exploding()]
    runner(db, clock, steps=steps).run_once()
    assert states(db) == {"quarantined": 1}
    assert retry(db, None) == 1
    runner(db, clock).run_once()  # the "fixed" pipeline
    assert states(db) == {"done": 1}
    assert list_quarantined(db) == []


def test_unparseable_input_is_still_stored_and_processed(db: Database) -> None:
    clock = FrozenClock()
    junk = [
        b"",
        b"\x00\xff\xfe garbage",
        b"Subject: =?x-unknown?B?!!!?=\r\n\r\n\x80\x81",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n" * 3,
    ]
    store(db, clock, *junk)
    runner(db, clock).run_once()
    assert sum(states(db).values()) == len(junk)
    assert states(db).get("new", 0) == 0


def test_two_runners_never_claim_the_same_message(db: Database) -> None:
    clock = FrozenClock()
    store(db, clock, *(make_mail(message_id=f"<{n}@x>") for n in range(10)))
    first = runner(db, clock, owner="h:1:a", batch_size=6).claim()
    second = runner(db, clock, owner="h:2:b", batch_size=6).claim()
    assert len(first) == 6 and len(second) == 4
    assert not {w.pk for w in first} & {w.pk for w in second}


def test_abandoned_claims_are_taken_after_the_claim_expires(db: Database) -> None:
    clock = FrozenClock()
    store(db, clock, make_mail())
    crashed = runner(db, clock, owner="elsewhere:1:a", claim_ttl=60)
    assert len(crashed.claim()) == 1  # ... and the process dies here
    other = runner(db, clock, owner="elsewhere:2:b", claim_ttl=60)
    assert other.claim() == []
    clock.advance(timedelta(seconds=61))
    assert other.run_once() == 1
    assert states(db) == {"done": 1}


def test_a_late_runner_cannot_commit_over_a_reclaimed_batch(db: Database) -> None:
    clock = FrozenClock()
    store(db, clock, make_mail())
    slow = runner(db, clock, owner="elsewhere:1:a", claim_ttl=10)
    batch = slow.claim()
    clock.advance(timedelta(seconds=11))
    assert runner(db, clock, owner="elsewhere:2:b", claim_ttl=10).run_once() == 1
    with pytest.raises(Exception, match="claim lost"):
        slow.process(batch)
    with db.reading() as conn:
        conversations = conn.execute(select(Message.conversation_id)).scalars().all()
    assert len(conversations) == 1 and conversations[0] is not None


def test_a_message_that_keeps_crashing_the_runner_is_quarantined(db: Database) -> None:
    clock = FrozenClock()
    store(db, clock, make_mail())
    for attempt in range(3):
        assert len(runner(db, clock, owner=f"elsewhere:{attempt}:x", claim_ttl=5).claim()) == 1
        clock.advance(timedelta(seconds=6))  # the process died mid-batch every time
    runner(db, clock, max_attempts=3).run_once()
    [item] = list_quarantined(db)
    assert "gave up after 3 attempts" in item.reason


def test_release_dead_claims_returns_messages_at_once(db: Database) -> None:
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    clock = FrozenClock()
    store(db, clock, make_mail())
    runner(db, clock, owner=f"{socket.gethostname()}:{gone.pid}:x", claim_ttl=600).claim()
    fresh = runner(db, clock, claim_ttl=600)
    assert fresh.claim() == []
    assert fresh.release_dead_claims() == 1
    assert fresh.run_once() == 1
    assert states(db) == {"done": 1}
