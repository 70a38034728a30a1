"""Folder leases between processes, and UIDVALIDITY changes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest

from daemon.clock import FrozenClock
from daemon.database import Database
from daemon.folders import FolderLedger, holder_is_dead, new_owner_id


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def test_one_holder_at_a_time_until_the_lease_expires(db: Database) -> None:
    clock = FrozenClock()
    a = FolderLedger(db, clock, "elsewhere:1:a", ttl=60)
    b = FolderLedger(db, clock, "elsewhere:2:b", ttl=60)
    folder_id = a.ensure("support", "INBOX")
    assert b.ensure("support", "INBOX") == folder_id
    assert a.acquire(folder_id)
    assert not b.acquire(folder_id)
    clock.advance(timedelta(seconds=30))
    assert a.renew(folder_id)
    clock.advance(timedelta(seconds=45))
    assert not b.acquire(folder_id)  # renewed 45 s ago: still a's
    clock.advance(timedelta(seconds=16))
    assert b.acquire(folder_id)  # expired: b takes over
    assert not a.renew(folder_id)
    b.release(folder_id)
    assert a.acquire(folder_id)


def test_lease_of_a_dead_process_on_this_host_is_taken_at_once(db: Database) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = f"{socket.gethostname()}:{dead.pid}:dead"
    assert holder_is_dead(owner)
    assert not holder_is_dead(f"{socket.gethostname()}:{os.getpid()}:me")
    assert not holder_is_dead(f"other-host:{dead.pid}:x")
    clock = FrozenClock()
    ghost = FolderLedger(db, clock, owner, ttl=600)
    folder_id = ghost.ensure("support", "INBOX")
    assert ghost.acquire(folder_id)
    assert FolderLedger(db, clock, new_owner_id(), ttl=600).acquire(folder_id)


def test_uidvalidity_change_resets_the_cursor_and_counts_a_resync(db: Database) -> None:
    clock = FrozenClock()
    ledger = FolderLedger(db, clock, "h:1:x", ttl=60)
    folder_id = ledger.ensure("support", "INBOX")
    assert ledger.acquire(folder_id)
    assert ledger.begin_sync(folder_id, 100) == 0
    from daemon.inbox import Arrival, Inbox
    from tests.helpers import make_mail

    Inbox(db, clock).store_imap(
        folder_id=folder_id,
        mailbox="support",
        owner="h:1:x",
        uidvalidity=100,
        arrivals=[Arrival(make_mail(), 9)],
        highest_uid=9,
    )
    assert ledger.begin_sync(folder_id, 100) == 9
    assert ledger.begin_sync(folder_id, 200) == 0
    state = ledger.state(folder_id)
    assert (state.uidvalidity, state.last_uid) == (200, 0)
