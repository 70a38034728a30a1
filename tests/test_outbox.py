"""The outbox and its sender against a real SMTP server: once, retried, failed, uncertain."""

from __future__ import annotations

import email
import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from daemon.clock import FrozenClock
from daemon.database import Database
from daemon.outbox import OUTBOX, Outbox, OutgoingMail
from daemon.sender import Sender
from daemon.settings import Relay
from daemon.transport import SmtpSession
from tests.helpers import wait_until
from tests.servers.smtp_sink import SmtpSink


def relay_for(sink: SmtpSink, **values: object) -> Relay:
    return Relay.model_validate(
        {
            "enabled": True,
            "host": "127.0.0.1",
            "port": sink.port,
            "tls": "none",
            "timeout": 2.0,
            "idle_wait": 0.02,
            "retry_first": 60,
            "retry_max": 600,
            "reconnect_max": 5,
            **values,
        }
    )


def mail(number: int, body: str = "Hello.\r\n") -> OutgoingMail:
    message_id = f"out{number}@acme.example"
    raw = (
        f"From: support@acme.example\r\nTo: c{number}@customer.example\r\n"
        f"Subject: Reply {number}\r\nMessage-ID: <{message_id}>\r\n\r\n{body}"
    ).encode()
    return OutgoingMail(
        key=f"test:{number}",
        kind="auto-reply",
        message_id=message_id,
        mail_from="",
        recipients=(f"c{number}@customer.example",),
        raw=raw,
    )


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def queue(outbox: Outbox, mails: list[OutgoingMail]) -> int:
    with outbox.db.transaction() as conn:
        return outbox.enqueue(conn, mails)


def states(db: Database) -> dict[int, str]:
    with db.reading() as conn:
        return {r.id: r.state for r in conn.execute(select(OUTBOX.c.id, OUTBOX.c.state))}


def running(sender: Sender) -> Sender:
    sender.start()
    return sender


def test_each_message_is_sent_once_with_its_bytes_intact(db: Database, smtp_sink: SmtpSink) -> None:
    clock = FrozenClock()
    outbox = Outbox(db, clock, "test:1:a")
    tricky = "Line one\r\n.leading dot stays\r\n..two dots\r\n"
    assert queue(outbox, [mail(n, tricky) for n in range(30)]) == 30
    assert queue(outbox, [mail(0)]) == 0, "a key already queued is not queued again"
    sender = running(Sender(outbox, relay_for(smtp_sink, connections=2, batch=4), clock))
    try:
        received = smtp_sink.wait_for(30)
        wait_until(lambda: set(states(db).values()) == {"sent"}, what="rows marked sent")
    finally:
        sender.stop()
    ids = [email.message_from_bytes(m.data)["Message-ID"] for m in received]
    assert len(ids) == len(set(ids)) == 30
    assert all(m.mail_from in ("", "<>") for m in received), "auto-replies use the null return path"
    sent = {m.key: m.raw for m in [mail(n, tricky) for n in range(30)]}
    assert sorted(m.data for m in received) == sorted(sent.values()), "bytes arrive unchanged"


def test_a_4xx_is_retried_after_backoff_and_a_5xx_fails(db: Database, smtp_sink: SmtpSink) -> None:
    clock = FrozenClock()
    outbox = Outbox(db, clock, "test:1:b")
    smtp_sink.fail_next(1, 451, "DATA")
    queue(outbox, [mail(1)])
    sender = running(Sender(outbox, relay_for(smtp_sink, connections=1), clock))
    try:
        wait_until(lambda: smtp_sink.refused, what="the scripted 451")
        wait_until(lambda: states(db) == {1: "queued"}, what="the row back in the queue")
        assert smtp_sink.count == 0
        clock.advance(59)
        sender.wake()
        threading.Event().wait(0.3)
        assert smtp_sink.count == 0, "retried before its backoff"
        clock.advance(2)
        sender.wake()
        smtp_sink.wait_for(1)
        wait_until(lambda: states(db) == {1: "sent"}, what="sent on the second attempt")
        smtp_sink.fail_next(1, 550, "RCPT")
        queue(outbox, [mail(2)])
        sender.wake()
        wait_until(lambda: states(db).get(2) == "failed", what="a 5xx failing the row")
    finally:
        sender.stop()
    with db.reading() as conn:
        row = conn.execute(select(OUTBOX).where(OUTBOX.c.id == 2)).one()
    assert row.last_error.startswith("RCPT TO:<c2@customer.example>: 550")
    assert smtp_sink.count == 1


def test_a_relay_down_for_60_seconds_delays_but_loses_nothing(
    db: Database, smtp_sink: SmtpSink
) -> None:
    clock = FrozenClock()
    outbox = Outbox(db, clock, "test:1:c")
    smtp_sink.down()
    queue(outbox, [mail(n) for n in range(40)])
    sender = running(Sender(outbox, relay_for(smtp_sink, connections=2, batch=5), clock))
    try:
        for _ in range(60):  # one minute of clock time with the relay unreachable
            clock.advance(1)
            sender.wake()
            threading.Event().wait(0.01)
        assert smtp_sink.count == 0
        wait_until(lambda: set(states(db).values()) == {"queued"}, what="claims handed back")
        smtp_sink.up()
        clock.advance(5)
        received = smtp_sink.wait_for(40, timeout=15)
        wait_until(lambda: set(states(db).values()) == {"sent"}, what="every row sent")
    finally:
        sender.stop()
    assert len({email.message_from_bytes(m.data)["Message-ID"] for m in received}) == 40
    with db.reading() as conn:
        attempts = set(conn.execute(select(OUTBOX.c.attempts)).scalars())
    assert attempts == {1}, "an unreachable relay does not use up a message's attempts"


def test_no_reply_after_the_data_makes_the_row_uncertain_not_resent(
    db: Database, smtp_sink: SmtpSink
) -> None:
    clock = FrozenClock()
    outbox = Outbox(db, clock, "test:1:d")
    smtp_sink.hang_next(1, seconds=3)
    queue(outbox, [mail(1), mail(2)])
    sender = running(Sender(outbox, relay_for(smtp_sink, connections=1, timeout=0.5), clock))
    try:
        wait_until(lambda: states(db) == {1: "uncertain", 2: "sent"}, what="uncertain + sent")
        clock.advance(timedelta(hours=1))
        sender.wake()
        threading.Event().wait(0.3)
        assert states(db)[1] == "uncertain", "an uncertain row is never resent on its own"
        assert outbox.resend([1]) == 1
        wait_until(lambda: states(db)[1] == "sent", what="the admin's resend")
    finally:
        sender.stop()
    copies = [m for m in smtp_sink.messages if b"out1@acme.example" in m.data]
    assert len(copies) == 2, "the relay had the first copy: resending was the admin's call"


def test_rows_a_dead_process_was_sending_become_uncertain(db: Database) -> None:
    clock = FrozenClock()
    dead = Outbox(db, clock, "x")
    queue(dead, [mail(n) for n in range(3)])
    import socket

    dead.owner = f"{socket.gethostname()}:999999999:dead"
    assert len(dead.claim(2, ttl=600)) == 2
    alive = Outbox(db, clock, f"{socket.gethostname()}:1:alive")
    assert alive.recover() == 2
    assert sorted(states(db).values()) == ["queued", "uncertain", "uncertain"]
    listed = alive.listing("uncertain")
    assert {row["state"] for row in listed} == {"uncertain"} and len(listed) == 2


def test_a_claim_past_its_ttl_becomes_uncertain(db: Database) -> None:
    clock = FrozenClock()
    outbox = Outbox(db, clock, "otherhost:1:a")
    queue(outbox, [mail(1)])
    assert len(outbox.claim(5, ttl=60)) == 1
    other = Outbox(db, clock, "thishost:2:b")
    assert other.recover() == 0, "a live claim on another host is left alone"
    clock.advance(61)
    assert other.recover() == 1
    assert states(db) == {1: "uncertain"}


def test_session_reports_unreachable_relay(free_port: object) -> None:
    from daemon.transport import RelayUnavailable

    port = free_port()  # type: ignore[operator]
    relay = Relay(enabled=True, host="127.0.0.1", port=port, tls="none", timeout=1)
    with pytest.raises(RelayUnavailable, match=f"127.0.0.1:{port}"):
        SmtpSession(relay).send("", ["a@b.example"], b"Subject: x\r\n\r\nx\r\n")


def test_starttls_and_login_to_the_relay(db: Database, test_certs: Any) -> None:
    sink = SmtpSink(
        tls_context=test_certs.server_context(), credentials=("mailcare", "s3cret")
    ).start()
    os.environ["TEST_RELAY_PASSWORD"] = "s3cret"
    try:
        clock = FrozenClock()
        outbox = Outbox(db, clock, "test:1:e")
        queue(outbox, [mail(1)])
        relay = relay_for(
            sink,
            tls="starttls",
            ca_file=str(test_certs.ca_file),
            username="mailcare",
            password={"env": "TEST_RELAY_PASSWORD"},
            host="localhost",
        )
        sender = running(Sender(outbox, relay, clock))
        try:
            sink.wait_for(1)
            wait_until(lambda: states(db) == {1: "sent"}, what="sent over STARTTLS with AUTH")
        finally:
            sender.stop()
        # a wrong password is not a message's fault: nothing is sent, nothing fails
        os.environ["TEST_RELAY_PASSWORD"] = "wrong"
        queue(outbox, [mail(2)])
        sender = running(Sender(outbox, relay, clock))
        try:
            wait_until(lambda: sender.backoff.failures > 0, what="the refused login")
            wait_until(lambda: states(db)[2] == "queued", what="the claim handed back")
        finally:
            sender.stop()
        assert sink.count == 1
        with db.reading() as conn:
            row = conn.execute(select(OUTBOX).where(OUTBOX.c.id == 2)).one()
        assert row.attempts == 0 and row.last_error is None
    finally:
        sink.stop()
        os.environ.pop("TEST_RELAY_PASSWORD", None)
