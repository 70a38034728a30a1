"""IMAP intake against real servers: Dovecot (and pymap where it can), SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from daemon.app import App, build_app
from daemon.database import Database
from daemon.settings import Mailbox
from daemon.tables import MailFolder, Message
from tests.helpers import mailbox_for, make_mail, settings_for, states, wait_until
from tests.servers.dovecot import Dovecot
from tests.servers.imap import Account, close_client

PASSWORD_ENV = "MAILCARE_TEST_IMAP_PASSWORD"
AppFactory = Callable[..., App]


@pytest.fixture
def start_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[AppFactory]:
    """Build and start apps for a test; every app is stopped at the end."""
    apps: list[App] = []

    def start(db_url: str, mailboxes: list[Mailbox], account: Account, **overrides: Any) -> App:
        monkeypatch.setenv(PASSWORD_ENV, account.password)
        app = build_app(settings_for(db_url, mailboxes), **overrides)
        app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


def mails(count: int, prefix: str = "m") -> list[bytes]:
    return [
        make_mail(message_id=f"<{prefix}{n}@customer.example>", subject=f"Question {n}")
        for n in range(count)
    ]


def stored(db: Database) -> int:
    with db.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(Message)).scalar_one())


def done(db: Database, count: int) -> Callable[[], bool]:
    return lambda: states(db).get("done", 0) == count


def test_ingests_a_folder_and_leaves_the_server_copy(
    imap_server: Any, imap_account: Account, db_url: str, start_app: AppFactory
) -> None:
    imap_server.append_many(imap_account, "INBOX", mails(30))
    app = start_app(db_url, [mailbox_for(imap_server, imap_account, PASSWORD_ENV)], imap_account)
    wait_until(done(app.db, 30), what="30 messages processed")
    client = imap_server.open_client(imap_account)
    try:
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags(client.search(["ALL"]))
    finally:
        close_client(client)
    assert len(flags) == 30  # nothing deleted
    assert not any(b"\\Seen" in f for f in flags.values())  # BODY.PEEK: humans' flags untouched
    with app.db.reading() as conn:
        folder = conn.execute(select(MailFolder).where(MailFolder.folder != "Sent")).one()
    assert folder.last_uid == max(flags) and folder.last_success_at is not None


def test_new_mail_arrives_while_running(
    imap_server: Any, imap_account: Account, db_url: str, start_app: AppFactory
) -> None:
    app = start_app(db_url, [mailbox_for(imap_server, imap_account, PASSWORD_ENV)], imap_account)
    wait_until(app.imap.workers[0].synced.is_set, what="first sync")
    for n, raw in enumerate(mails(3, prefix="live")):
        imap_server.append(imap_account, "INBOX", raw)
        wait_until(done(app.db, n + 1), what=f"message {n + 1}")


def test_polling_without_idle(dovecot_noidle: Dovecot, db_url: str, start_app: AppFactory) -> None:
    account = dovecot_noidle.account()
    assert "IDLE" not in dovecot_noidle.capabilities
    app = start_app(db_url, [mailbox_for(dovecot_noidle, account, PASSWORD_ENV)], account)
    wait_until(app.imap.workers[0].synced.is_set, what="first sync")
    dovecot_noidle.lmtp_deliver(account, make_mail(message_id="<poll@x>"))
    wait_until(done(app.db, 1), what="polled message")


def test_uidvalidity_change_resyncs_without_duplicates(
    dovecot: Dovecot, db_url: str, start_app: AppFactory
) -> None:
    account = dovecot.account()
    dovecot.create_folder(account, "Work")
    batch = mails(5, prefix="uv")
    dovecot.append_many(account, "Work", batch)
    box = mailbox_for(dovecot, account, PASSWORD_ENV, folders=["Work"])
    app = start_app(db_url, [box], account)
    wait_until(done(app.db, 5), what="first 5")
    before = dovecot.uidvalidity(account, "Work")
    app.stop()
    dovecot.delete_folder(account, "Work")
    dovecot.create_folder(account, "Work")
    assert dovecot.uidvalidity(account, "Work") != before
    dovecot.append_many(account, "Work", [*batch, make_mail(message_id="<uv-new@x>")])
    again = start_app(db_url, [box], account)
    wait_until(done(again.db, 6), what="the one new message")
    wait_until(lambda: again.imap.workers[0].synced.is_set(), what="resync")
    assert stored(again.db) == 6
    with again.db.reading() as conn:
        folder = conn.execute(select(MailFolder).where(MailFolder.folder != "Sent")).one()
    assert folder.resyncs == 1 and folder.uidvalidity != before


@pytest.mark.parametrize("action", ["flag", "move"])
def test_disposition_flags_or_moves_and_never_deletes(
    dovecot: Dovecot, db_url: str, start_app: AppFactory, action: str
) -> None:
    account = dovecot.account()
    dovecot.create_folder(account, "Stored")
    dovecot.append_many(account, "INBOX", mails(4, prefix=action))
    disposition = {"action": action, "flag": "$MailcareStored", "folder": "Stored"}
    box = mailbox_for(dovecot, account, PASSWORD_ENV, disposition=disposition)
    app = start_app(db_url, [box], account)
    wait_until(done(app.db, 4), what="4 processed")

    def server_view() -> tuple[int, int, int]:
        client = dovecot.open_client(account)
        try:
            inbox = client.select_folder("INBOX", readonly=True)[b"EXISTS"]
            flagged = len(client.search(["KEYWORD", "$MailcareStored"]))
            moved = client.select_folder("Stored", readonly=True)[b"EXISTS"]
        finally:
            close_client(client)
        return inbox, flagged, moved

    expected = (4, 4, 0) if action == "flag" else (0, 0, 4)
    wait_until(lambda: server_view() == expected, what=f"{action} on the server")
    assert (
        app.inbox.pending_dispositions(
            app.imap.workers[0].folder_id,
            app.ledger.state(app.imap.workers[0].folder_id).uidvalidity or 0,
        )
        == []
    )


def test_reconnects_after_the_connection_drops(
    dovecot: Dovecot, db_url: str, start_app: AppFactory
) -> None:
    account = dovecot.account()
    app = start_app(db_url, [mailbox_for(dovecot, account, PASSWORD_ENV)], account)
    worker = app.imap.workers[0]
    wait_until(worker.synced.is_set, what="first sync")
    worker.backoff.first = worker.backoff.current = 0.05
    assert dovecot.kick(account)
    dovecot.lmtp_deliver(account, make_mail(message_id="<after-kick@x>"))
    wait_until(done(app.db, 1), what="message after reconnect")
    dovecot.restart()
    dovecot.lmtp_deliver(account, make_mail(message_id="<after-restart@x>"))
    wait_until(done(app.db, 2), what="message after server restart")
    with app.db.reading() as conn:
        folder = conn.execute(select(MailFolder).where(MailFolder.folder != "Sent")).one()
    assert folder.last_error is not None  # the drop was noticed and recorded


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_tls_is_verified(dovecot: Dovecot, db_url: str, start_app: AppFactory, mode: str) -> None:
    account = dovecot.account()
    dovecot.lmtp_deliver(account, make_mail(message_id=f"<tls-{mode}@x>"))
    port = dovecot.imaps_port if mode == "implicit" else dovecot.imap_port
    untrusted = Mailbox(
        name="untrusted",
        host="localhost",
        port=port,
        tls=mode,
        username=account.username,
        password={"env": PASSWORD_ENV},
        poll_interval=0.2,
    )
    app = start_app(db_url, [untrusted], account)
    wait_until(
        lambda: app.ledger.state(app.imap.workers[0].folder_id) and _error(app),
        what="a recorded TLS error",
    )
    assert "CERTIFICATE_VERIFY_FAILED" in (_error(app) or "")
    assert stored(app.db) == 0
    app.stop()
    trusted = untrusted.model_copy(update={"name": "trusted", "ca_file": dovecot.ca_file})
    good = start_app(db_url, [trusted], account)
    wait_until(done(good.db, 1), what="message over TLS")


def _error(app: App) -> str | None:
    with app.db.reading() as conn:
        return (
            conn.execute(select(MailFolder.last_error).where(MailFolder.folder != "Sent"))
            .scalars()
            .first()
        )


def test_two_processes_share_a_folder_one_at_a_time(
    dovecot: Dovecot, pg_url: str, start_app: AppFactory
) -> None:
    from daemon.database import upgrade

    upgrade(pg_url)
    account = dovecot.account()
    dovecot.append_many(account, "INBOX", mails(20, prefix="two"))
    box = mailbox_for(dovecot, account, PASSWORD_ENV)
    first = start_app(pg_url, [box], account, owner="elsewhere:1:first")
    second = start_app(pg_url, [box], account, owner="elsewhere:2:second")
    wait_until(done(first.db, 20), what="20 processed")
    holders = {first.ledger.state(first.imap.workers[0].folder_id).lease_owner}
    assert holders <= {"elsewhere:1:first", "elsewhere:2:second"}
    holder, other = (first, second) if holders == {"elsewhere:1:first"} else (second, first)
    assert not other.imap.workers[0].synced.is_set()  # the other never polled
    holder.stop()  # releases the lease ...
    dovecot.append_many(account, "INBOX", mails(5, prefix="later"))
    wait_until(done(other.db, 25), what="the other process takes over")
    assert stored(other.db) == 25


def test_a_message_the_server_cannot_return_does_not_block_the_rest(
    dovecot: Dovecot, db_url: str, start_app: AppFactory
) -> None:
    from daemon.quarantine import list_quarantined

    account = dovecot.account()
    uids = dovecot.append_many(account, "INBOX", mails(6, prefix="unreadable"))
    maildir = dovecot.directory / "mail" / account.username / "Maildir"
    files = sorted((maildir / "new").iterdir()) + sorted((maildir / "cur").iterdir())
    assert len(files) == 6
    files[2].chmod(0)  # Dovecot now drops the connection when asked for this message
    app = start_app(db_url, [mailbox_for(dovecot, account, PASSWORD_ENV)], account)
    app.imap.workers[0].backoff.first = app.imap.workers[0].backoff.current = 0.05
    wait_until(done(app.db, 5), timeout=30, what="the 5 readable messages")
    [stuck] = wait_until(lambda: list_quarantined(app.db), what="the unreadable one recorded")
    assert f"UID {uids[2]}" in stuck.reason and "refused" in stuck.reason


def test_several_mailboxes_and_folders(
    dovecot: Dovecot, db_url: str, start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    support, sales = dovecot.account(), dovecot.account()
    dovecot.create_folder(support, "Urgent")
    dovecot.append_many(support, "INBOX", mails(3, prefix="s-inbox"))
    dovecot.append_many(support, "Urgent", mails(2, prefix="s-urgent"))
    dovecot.append_many(sales, "INBOX", mails(4, prefix="sales"))
    monkeypatch.setenv("SALES_PW", sales.password)
    boxes = [
        mailbox_for(dovecot, support, PASSWORD_ENV, folders=["INBOX", "Urgent"]),
        mailbox_for(dovecot, sales, "SALES_PW", name="sales"),
    ]
    app = start_app(db_url, boxes, support)
    assert len(app.imap.workers) == 3
    wait_until(done(app.db, 9), what="9 messages from 3 folders")
    with app.db.reading() as conn:
        per_box = dict(
            conn.execute(select(Message.mailbox, func.count()).group_by(Message.mailbox)).all()
        )
        cursors = {(f.mailbox, f.folder): f.last_uid for f in conn.execute(select(MailFolder))}
    assert per_box == {"support": 5, "sales": 4}
    # the intake folders, and each mailbox's Sent folder the SLA clocks watch
    assert set(cursors) == {
        ("support", "INBOX"),
        ("support", "Urgent"),
        ("sales", "INBOX"),
        ("support", "Sent"),
        ("sales", "Sent"),
    }
