"""Routes carried out by the folder worker on real IMAP servers (Dovecot; pymap for keywords)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select, update

from daemon.clock import SystemClock
from daemon.database import Database
from daemon.folders import FolderLedger, new_owner_id
from daemon.imap_routes import kept_keywords
from daemon.imap_source import FolderWorker, ImapSource, connect_imap
from daemon.inbox import Inbox
from daemon.routing import Forwarder
from daemon.rules import Routing
from daemon.settings import Mailbox
from daemon.tables import Delivery, Message
from tests.helpers import mailbox_for, make_mail, wait_until
from tests.servers.dovecot import Dovecot
from tests.servers.imap import Account, close_client
from tests.servers.pymap import PymapServer

PASSWORD_ENV = "MAILCARE_TEST_ROUTES_PW"


@dataclass
class Intake:
    """A running ImapSource on its own database, with a count of IMAP commands sent."""

    db: Database
    source: ImapSource
    commands: Counter[str] = field(default_factory=Counter)
    before: dict[str, Callable[[], object]] = field(default_factory=dict)  # run once, first

    @property
    def worker(self) -> FolderWorker:
        return self.source.workers[0]

    def cycle(self) -> None:
        """Wake the workers and wait for two whole cycles (one began after any DB change)."""
        for _ in range(2):
            for worker in self.source.workers:
                worker.synced.clear()
            self.source.wake()
            for worker in self.source.workers:
                wait_until(worker.synced.is_set, what=f"a cycle of {worker.name}")


IntakeFactory = Callable[..., Intake]


@pytest.fixture
def start_intake(monkeypatch: pytest.MonkeyPatch) -> Iterator[IntakeFactory]:
    """Start ImapSources that store into db_url; all are stopped at the end."""
    started: list[Intake] = []

    def start(
        db_url: str,
        box: Mailbox,
        account: Account,
        routing: Routing | None = None,
        forwarder: Callable[[Database], Forwarder] | None = None,
    ) -> Intake:
        monkeypatch.setenv(PASSWORD_ENV, account.password)
        db = Database(db_url)
        clock = SystemClock()
        commands: Counter[str] = Counter()
        before: dict[str, Callable[[], object]] = {}

        def connect(mailbox: Mailbox) -> Any:
            client = connect_imap(mailbox)
            for name in ("add_flags", "move", "create_folder"):
                client.__dict__[name] = _counted(getattr(client, name), name, commands, before)
            return client

        ledger = FolderLedger(db, clock, new_owner_id(), ttl=5.0)
        source = ImapSource(
            [box],
            Inbox(db, clock),
            ledger,
            clock,
            connect,
            lease_retry=0.2,
            routing=None if routing is None else (lambda: routing),
            forwarder=None if forwarder is None else forwarder(db),
        )
        for worker in source.workers:
            worker.routes.sweep_every = 0.0
        intake = Intake(db, source, commands, before)
        started.append(intake)
        source.start()
        for worker in source.workers:
            wait_until(worker.synced.is_set, what="first sync")
        return intake

    yield start
    for intake in started:
        intake.source.stop()
        intake.db.dispose()


def _counted(
    method: Callable[..., Any],
    name: str,
    counter: Counter[str],
    before: dict[str, Callable[[], object]],
) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        counter[name] += 1
        if name in before:
            before.pop(name)()
        return method(*args, **kwargs)

    return call


def mail(tag: str) -> bytes:
    return make_mail(message_id=f"<{tag}@customer.example>", subject=f"About {tag}")


def classify(
    db: Database,
    tag: str,
    department: str | None,
    folder: str | None = None,
    keywords: str | None = None,
) -> None:
    """What the classify step does: the department on the message, a route on its deliveries."""
    with db.transaction() as conn:
        pk = conn.execute(
            select(Message.id).where(Message.message_id == f"<{tag}@customer.example>")
        ).scalar_one()
        conn.execute(
            update(Message)
            .where(Message.id == pk)
            .values(department=department, route_reason="classified by the test")
        )
        conn.execute(
            update(Delivery)
            .where(Delivery.message_pk == pk, Delivery.channel == "imap")
            .values(route_state="pending", route_folder=folder, route_keywords=keywords)
        )


def route_states(db: Database) -> dict[str, str]:
    with db.reading() as conn:
        rows = conn.execute(
            select(Message.message_id, Delivery.route_state).join(
                Delivery, Delivery.message_pk == Message.id
            )
        ).all()
    return {str(mid).strip("<>").split("@")[0]: state for mid, state in rows}


def settled(db: Database, *tags: str) -> Callable[[], bool]:
    return lambda: all(route_states(db).get(tag) in ("done", "failed") for tag in tags)


def server_view(server: Any, account: Account) -> dict[str, dict[str, set[str]]]:
    """Folder -> {message tag: keywords (no system flags)} as a separate client sees it."""
    client = server.open_client(account)
    view: dict[str, dict[str, set[str]]] = {}
    try:
        for _flags, _sep, name in client.list_folders():
            client.select_folder(name, readonly=True)
            uids = client.search(["NOT", "DELETED"])
            if not uids:
                continue
            items = client.fetch(uids, [b"FLAGS", b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
            view[name] = {
                _tag(data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"]): {
                    flag.decode() for flag in data[b"FLAGS"] if not flag.startswith(b"\\")
                }
                for data in items.values()
            }
    finally:
        close_client(client)
    return view


def _tag(header: bytes) -> str:
    return header.decode().split("<", 1)[1].split("@", 1)[0]


def test_kept_keywords_follow_permanentflags() -> None:
    assert kept_keywords(None, ["$A"]) == (["$A"], [])
    assert kept_keywords((b"\\Seen", b"\\*"), ["$A", "$B"]) == (["$A", "$B"], [])
    assert kept_keywords((b"\\Seen", b"$a"), ["$A", "$B"]) == (["$A"], ["$B"])


def test_routes_set_keywords_and_move_into_a_created_folder(
    dovecot: Dovecot, db_url: str, start_intake: IntakeFactory
) -> None:
    account = dovecot.account()
    dovecot.append_many(account, "INBOX", [mail(tag) for tag in ("bill", "unsure", "plain")])
    intake = start_intake(db_url, mailbox_for(dovecot, account, PASSWORD_ENV), account)
    classify(intake.db, "bill", "billing", "Billing", "$Billing $Urgent")
    classify(intake.db, "unsure", "general", None, "$NeedsTriage")
    intake.source.wake()
    wait_until(settled(intake.db, "bill", "unsure"), what="routes carried out")

    assert route_states(intake.db) == {"bill": "done", "unsure": "done", "plain": "none"}
    expected = {
        "INBOX": {"unsure": {"$NeedsTriage"}, "plain": set()},
        "Billing": {"bill": {"$Billing", "$Urgent"}},
    }
    assert server_view(dovecot, account) == expected
    client = dovecot.open_client(account)
    try:
        assert "Billing" in [name for _f, _s, name in client.list_sub_folders()]
    finally:
        close_client(client)

    before = dict(intake.commands)
    intake.cycle()  # a second run does nothing
    assert dict(intake.commands) == before
    assert server_view(dovecot, account) == expected
    assert intake.worker.routes.carried_out == 2


def test_mail_arriving_while_routes_run_is_not_missed(
    dovecot: Dovecot, db_url: str, start_intake: IntakeFactory
) -> None:
    account = dovecot.account()
    dovecot.append(account, "INBOX", mail("first"))
    intake = start_intake(db_url, mailbox_for(dovecot, account, PASSWORD_ENV), account)
    # the server announces this one in its answer to STORE, which imapclient throws away
    intake.before["add_flags"] = lambda: dovecot.append(account, "INBOX", mail("meanwhile"))
    classify(intake.db, "first", "billing", None, "$Billing")
    intake.source.wake()
    wait_until(lambda: "meanwhile" in route_states(intake.db), what="the message sent meanwhile")
    assert route_states(intake.db) == {"first": "done", "meanwhile": "none"}


def test_one_command_per_folder_and_keywords(
    dovecot: Dovecot, db_url: str, start_intake: IntakeFactory
) -> None:
    account = dovecot.account()
    dovecot.create_folder(account, "Billing")
    tags = [f"b{n}" for n in range(5)] + ["s0", "s1"]
    dovecot.append_many(account, "INBOX", [mail(tag) for tag in tags])
    intake = start_intake(db_url, mailbox_for(dovecot, account, PASSWORD_ENV), account)
    for tag in tags:
        if tag.startswith("b"):
            classify(intake.db, tag, "billing", "Billing", "$Billing")
        else:
            classify(intake.db, tag, "sales", "Sales", None)
    intake.source.wake()
    wait_until(settled(intake.db, *tags), what="7 routes")
    assert set(route_states(intake.db).values()) == {"done"}
    assert intake.commands == Counter({"add_flags": 1, "move": 2, "create_folder": 1})
    view = server_view(dovecot, account)
    assert sorted(view["Billing"]) == [f"b{n}" for n in range(5)]
    assert view["Sales"] == {"s0": set(), "s1": set()}


def test_a_vanished_uid_and_an_old_uidvalidity_do_not_stop_the_worker(
    dovecot: Dovecot, db_url: str, start_intake: IntakeFactory
) -> None:
    account = dovecot.account()
    dovecot.append_many(account, "INBOX", [mail(tag) for tag in ("gone", "old", "fine")])
    intake = start_intake(db_url, mailbox_for(dovecot, account, PASSWORD_ENV), account)
    client = dovecot.open_client(account)  # an agent deletes one message for good
    try:
        client.select_folder("INBOX")
        uid = client.search(["HEADER", "Message-ID", "gone@customer.example"])
        client.delete_messages(uid)
        client.expunge()
    finally:
        close_client(client)
    for tag in ("gone", "old", "fine"):
        classify(intake.db, tag, "billing", "Billing", "$Billing")
    with intake.db.transaction() as conn:  # as if stored before the folder was re-created
        pk = select(Message.id).where(Message.message_id == "<old@customer.example>")
        conn.execute(
            update(Delivery)
            .where(Delivery.message_pk == pk.scalar_subquery())
            .values(uidvalidity=Delivery.uidvalidity - 1)
        )
    intake.source.wake()
    wait_until(settled(intake.db, "gone", "old", "fine"), what="three routes settled")
    assert route_states(intake.db) == {"gone": "done", "old": "failed", "fine": "done"}
    assert server_view(dovecot, account) == {
        "INBOX": {"old": set()},
        "Billing": {"fine": {"$Billing"}},
    }
    dovecot.append(account, "INBOX", mail("later"))  # the worker still takes mail in
    wait_until(lambda: "later" in route_states(intake.db), what="a later message")


def test_a_deleted_folder_is_created_again_and_a_refused_one_fails(
    dovecot: Dovecot, db_url: str, start_intake: IntakeFactory
) -> None:
    account = dovecot.account()
    dovecot.append_many(account, "INBOX", [mail(tag) for tag in ("first", "second", "bad")])
    intake = start_intake(db_url, mailbox_for(dovecot, account, PASSWORD_ENV), account)
    classify(intake.db, "first", "billing", "Billing")
    intake.source.wake()
    wait_until(settled(intake.db, "first"), what="first route")
    dovecot.delete_folder(account, "Billing")  # the worker believes it exists: MOVE says TRYCREATE
    classify(intake.db, "second", "billing", "Billing")
    classify(intake.db, "bad", "odd", "~Odd")  # Dovecot refuses names starting with ~
    intake.source.wake()
    wait_until(settled(intake.db, "second", "bad"), what="second and refused route")
    assert route_states(intake.db) == {"first": "done", "second": "done", "bad": "failed"}
    assert server_view(dovecot, account) == {"INBOX": {"bad": set()}, "Billing": {"second": set()}}
    assert intake.commands["create_folder"] == 3  # Billing twice, ~Odd refused


def test_routes_fail_where_the_disposition_moved_the_message(
    dovecot: Dovecot, db_url: str, start_intake: IntakeFactory
) -> None:
    account = dovecot.account()
    dovecot.create_folder(account, "Stored")
    dovecot.append(account, "INBOX", mail("moved"))
    disposition = {"action": "move", "folder": "Stored"}
    box = mailbox_for(dovecot, account, PASSWORD_ENV, disposition=disposition)
    intake = start_intake(db_url, box, account)
    classify(intake.db, "moved", "billing", "Billing", "$Billing")
    intake.source.wake()
    wait_until(settled(intake.db, "moved"), what="route settled")
    assert route_states(intake.db) == {"moved": "failed"}
    assert server_view(dovecot, account) == {"Stored": {"moved": set()}}


def test_a_server_without_custom_keywords_still_gets_the_move(
    pymap_server: PymapServer, db_url: str, start_intake: IntakeFactory
) -> None:
    account = pymap_server.account()
    pymap_server.append_many(account, "INBOX", [mail("kw"), mail("kw-only")])
    intake = start_intake(db_url, mailbox_for(pymap_server, account, PASSWORD_ENV), account)
    classify(intake.db, "kw", "billing", "Billing", "$Billing $Urgent")
    classify(intake.db, "kw-only", "general", None, "$NeedsTriage")
    intake.source.wake()
    wait_until(settled(intake.db, "kw", "kw-only"), what="routes settled")
    assert route_states(intake.db) == {"kw": "done", "kw-only": "done"}
    assert server_view(pymap_server, account) == {
        "INBOX": {"kw-only": set()},
        "Billing": {"kw": set()},
    }
    assert intake.commands["add_flags"] == 0  # skipped, not sent and silently dropped
