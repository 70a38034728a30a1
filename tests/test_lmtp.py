"""LMTP/SMTP intake over real sockets: per-recipient replies, 250 only after the commit."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from daemon.app import App, build_app
from daemon.database import Database
from daemon.lmtp import RecipientPolicy
from daemon.tables import Delivery, Message
from tests.helpers import make_mail, settings_for, states, wait_until

SUPPORT = "support@acme.example"
SALES = "sales@acme.example"


def listener_app(db_url: str, protocol: str = "lmtp", size: int = 64 * 1024) -> App:
    settings = settings_for(
        db_url,
        intake={
            "enabled": True,
            "protocol": protocol,
            "port": 0,
            "max_message_size": size,
            "recipients": [SUPPORT, SALES, "@help.acme.example"],
        },
    )
    app = build_app(settings)
    app.start(runner=False)
    return app


@pytest.fixture
def lmtp(db_url: str) -> Iterator[App]:
    app = listener_app(db_url)
    yield app
    app.stop()


def count(db: Database) -> int:
    with db.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(Message)).scalar_one())


def transaction(port: int, recipients: list[str], raw: bytes) -> tuple[list[int], list[int]]:
    """One LMTP transaction; returns the RCPT codes and the per-recipient DATA codes."""
    with smtplib.LMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo_or_helo_if_needed()
        client.mail("customer@example.org")
        rcpt_codes = [client.rcpt(r)[0] for r in recipients]
        accepted = sum(1 for c in rcpt_codes if c == 250)
        if not accepted:
            return rcpt_codes, []
        data_codes = [client.data(raw)[0]]
        data_codes += [client.getreply()[0] for _ in range(accepted - 1)]
        assert client.noop()[0] == 250  # the conversation is still in step
    return rcpt_codes, data_codes


def test_one_reply_per_recipient_after_the_commit(lmtp: App) -> None:
    assert lmtp.listener is not None
    raw = make_mail(message_id="<two@x>", to=f"{SUPPORT}, {SALES}")
    rcpt, data = transaction(lmtp.listener.port, [SUPPORT, "nobody@acme.example", SALES], raw)
    assert rcpt == [250, 550, 250]
    assert data == [250, 250]
    assert count(lmtp.db) == 1  # stored before the 250s were sent
    with lmtp.db.reading() as conn:
        row = conn.execute(select(Message)).one()
        recipients = sorted(conn.execute(select(Delivery.recipient)).scalars())
    assert bytes(row.raw) == raw and row.envelope_from == "customer@example.org"
    assert recipients == [SALES, SUPPORT]


def test_domain_and_plus_addresses(lmtp: App) -> None:
    assert lmtp.listener is not None
    rcpt, data = transaction(
        lmtp.listener.port,
        ["anyone@help.acme.example", "support+billing@acme.example", "support@evil.example"],
        make_mail(),
    )
    assert rcpt == [250, 250, 550] and data == [250, 250]


def test_oversized_message_is_refused_per_recipient(lmtp: App) -> None:
    assert lmtp.listener is not None
    big = make_mail(body="x" * 100 + "\n" + ("y" * 70 + "\n") * 2000)
    rcpt, data = transaction(lmtp.listener.port, [SUPPORT, SALES], big)
    assert rcpt == [250, 250] and data == [552, 552]
    assert count(lmtp.db) == 0


def test_storage_failure_answers_451_and_the_retry_succeeds(lmtp: App) -> None:
    assert lmtp.listener is not None
    raw = make_mail(message_id="<retry@x>")
    with lmtp.db.transaction() as conn:
        conn.execute(text("ALTER TABLE deliveries RENAME TO deliveries_away"))
    _, data = transaction(lmtp.listener.port, [SUPPORT, SALES], raw)
    assert data == [451, 451]
    with lmtp.db.transaction() as conn:
        conn.execute(text("ALTER TABLE deliveries_away RENAME TO deliveries"))
    assert count(lmtp.db) == 0  # nothing half-stored
    _, data = transaction(lmtp.listener.port, [SUPPORT, SALES], raw)  # the MTA retries
    assert data == [250, 250] and count(lmtp.db) == 1


def test_smtp_mode_and_processing(db_url: str) -> None:
    app = listener_app(db_url, protocol="smtp")
    try:
        assert app.listener is not None
        with smtplib.SMTP("127.0.0.1", app.listener.port, timeout=10) as client:
            refused = client.sendmail(
                "a@example.org", [SUPPORT, "x@nowhere.example"], make_mail(message_id="<smtp@x>")
            )
            assert list(refused) == ["x@nowhere.example"]
        app.runner.run_once()
        assert states(app.db) == {"done": 1}
    finally:
        app.stop()


def test_eight_bit_and_binary_content_is_stored_byte_for_byte(lmtp: App) -> None:
    assert lmtp.listener is not None
    raw = (
        "Subject: 发票\r\nContent-Type: text/plain; charset=gbk\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + "请开发票\r\n".encode("gbk")
    _, data = transaction(lmtp.listener.port, [SUPPORT], raw)
    assert data == [250]
    wait_until(lambda: count(lmtp.db) == 1)
    with lmtp.db.reading() as conn:
        assert bytes(conn.execute(select(Message.raw)).scalar_one()) == raw


def test_recipient_policy() -> None:
    policy = RecipientPolicy(["support@acme.example", "@help.example"])
    assert policy.accepts("Support@ACME.example")
    assert policy.accepts("support+vip@acme.example")
    assert policy.accepts("x@help.example")
    assert not policy.accepts("x@sub.help.example")
    assert not policy.accepts("@help.example")
    assert not policy.accepts("sales@acme.example")


def test_full_disk_answers_451_and_loses_nothing(tmp_path: Path) -> None:
    from sqlalchemy import event

    from daemon.database import upgrade

    url = f"sqlite:///{tmp_path / 'full.sqlite3'}"
    upgrade(url)
    app = listener_app(url, size=1_000_000)
    try:
        assert app.listener is not None
        limit = {"pages": 0}

        @event.listens_for(app.db.engine, "connect")
        def cap(dbapi_connection: Any, _record: Any) -> None:
            if limit["pages"]:
                dbapi_connection.execute(f"PRAGMA max_page_count={limit['pages']}")

        with app.db.reading() as conn:
            limit["pages"] = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
        app.db.engine.dispose()  # new connections see a disk with no room left
        big = make_mail(message_id="<full@x>", body="z" * 200_000)
        _, data = transaction(app.listener.port, [SUPPORT], big)
        assert data == [451]
        assert count(app.db) == 0
        limit["pages"] = 0
        app.db.engine.dispose()  # room again: the sending server's retry succeeds
        _, data = transaction(app.listener.port, [SUPPORT], big)
        assert data == [250] and count(app.db) == 1
    finally:
        app.stop()
