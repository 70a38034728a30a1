"""Unsubscribing: tokens, List-Unsubscribe headers, the one-click endpoint over real HTTP,
and the intake step through the real pipeline (mailto requests and plain replies)."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import insert, select

from daemon.app import App
from daemon.clock import FrozenClock
from daemon.database import Database
from daemon.inbox import Inbox
from daemon.keys import instance_key
from daemon.outbox import OUTBOX
from daemon.settings import Http
from daemon.suppressions import SUPPRESSIONS
from daemon.tables import ListMember, Message, Subscriber
from daemon.unsubscribe import (
    UnsubscribeToken,
    list_unsubscribe_headers,
    make_token,
    read_token,
    unsubscribe,
    unsubscribe_routes,
)
from daemon.unsubscribe_step import asks_to_unsubscribe
from tests.helpers import make_mail, pipeline_app

DATA = Path(__file__).resolve().parent / "data" / "automated"
SUPPORT = "support@acme.example"
UNSUBSCRIBE = "unsubscribe@acme.example"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KEY = b"k" * 32
MEMBERS = ListMember.__table__
SUBSCRIBERS = Subscriber.__table__

RULES = f"""
version: 1
identity:
  company: {{name: Acme Support, signature: "Acme Ltd"}}
  addresses: [{UNSUBSCRIBE}]
auto_replies:
  rules:
    - name: acknowledge
      template: acknowledge
      from: "Acme Support <{SUPPORT}>"
marketing:
  from: "Acme News <news@acme.example>"
  unsubscribe_address: {UNSUBSCRIBE}
  lists:
    news: {{title: Acme News}}
    offers: {{title: Offers}}
"""


# --- tokens and headers -------------------------------------------------------------------


def test_a_token_round_trips_and_hides_the_address() -> None:
    token = make_token(KEY, 123456789, "news", 42)
    assert token.startswith("mcu-") and len(token) < 60
    assert token == token.lower() and token[4:].isalnum()
    assert read_token(KEY, token) == UnsubscribeToken(123456789, "news", 42)
    assert read_token(KEY, token.upper().replace("MCU-", "mcu-")) is not None
    assert read_token(KEY, make_token(KEY, 0, "a", 0)) == UnsubscribeToken(0, "a", 0)


def test_a_tampered_or_foreign_token_is_refused() -> None:
    token = make_token(KEY, 7, "news", 1)
    for position in range(4, len(token)):
        changed = "a" if token[position] != "a" else "b"
        assert read_token(KEY, token[:position] + changed + token[position + 1 :]) is None
    assert read_token(os.urandom(32), token) is None
    assert read_token(KEY, token[:-3]) is None
    assert read_token(KEY, "mcu-") is None
    assert read_token(KEY, "mcu-!!!!") is None
    assert read_token(KEY, "mcs-" + token[4:]) is None
    assert read_token(KEY, token + "a" * 500) is None


def test_list_unsubscribe_headers_with_both_uris() -> None:
    token = make_token(KEY, 7, "news", 1)
    headers = list_unsubscribe_headers(token, "https://help.acme.example/mc/", UNSUBSCRIBE)
    assert headers == [
        (
            "List-Unsubscribe",
            f"<https://help.acme.example/mc/unsubscribe/{token}>, "
            f"<mailto:{UNSUBSCRIBE}?subject=unsubscribe%20{token}>",
        ),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]


def test_list_unsubscribe_headers_with_one_uri_or_none() -> None:
    token = make_token(KEY, 7, "news", 1)
    assert list_unsubscribe_headers(token, None, UNSUBSCRIBE) == [
        ("List-Unsubscribe", f"<mailto:{UNSUBSCRIBE}?subject=unsubscribe%20{token}>")
    ]
    [(_, value), post] = list_unsubscribe_headers(token, "https://acme.example", None)
    assert value == f"<https://acme.example/unsubscribe/{token}>"
    assert post == ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    # RFC 8058 one-click needs https: a plain http link gets no List-Unsubscribe-Post
    assert [n for n, _ in list_unsubscribe_headers(token, "http://acme.example", None)] == [
        "List-Unsubscribe"
    ]
    assert list_unsubscribe_headers(token, None, None) == []


def test_header_values_are_ascii_and_header_safe() -> None:
    token = make_token(KEY, 7, "news", 1)
    for name, value in list_unsubscribe_headers(
        token, "https://bücher.example/a b,c<d>", "ab+c%d@bücher.example"
    ):
        if name == "List-Unsubscribe-Post":
            continue
        assert value.isascii()
        assert not set(value) & {"\r", "\n"}
        uris = [part.strip() for part in value.split(",")]
        assert all(u.startswith("<") and u.endswith(">") and " " not in u for u in uris)
    message = EmailMessage()
    for name, value in list_unsubscribe_headers(token, "https://acme.example", UNSUBSCRIBE):
        message[name] = value
    message.set_content("x")
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in message.as_bytes(policy=SMTP)


# --- the database side --------------------------------------------------------------------


def add_subscriber(db: Database, address: str, lists: tuple[str, ...] = ("news",)) -> int:
    with db.transaction() as conn:
        subscriber = conn.execute(
            insert(SUBSCRIBERS)
            .values(address=address, created_at=START, updated_at=START)
            .returning(SUBSCRIBERS.c.id)
        ).scalar_one()
        for name in lists:
            conn.execute(
                insert(MEMBERS).values(
                    list=name, subscriber_id=subscriber, status="subscribed", created_at=START
                )
            )
    return int(subscriber)


def memberships(db: Database) -> dict[str, str]:
    with db.reading() as conn:
        return dict(conn.execute(select(MEMBERS.c["list"], MEMBERS.c.status)).all())


def suppressions(db: Database) -> dict[tuple[str, str], str]:
    with db.reading() as conn:
        rows = conn.execute(
            select(SUPPRESSIONS.c.address, SUPPRESSIONS.c.scope, SUPPRESSIONS.c.reason)
        ).all()
    return {(r.address, r.scope): r.reason for r in rows}


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def test_unsubscribe_from_one_list_is_idempotent(db: Database) -> None:
    subscriber = add_subscriber(db, "ann@example.org", ("news", "offers"))
    for expected in (True, False):
        with db.transaction() as conn:
            changed = unsubscribe(
                conn,
                subscriber_id=subscriber,
                list_name="news",
                scope="list",
                when=START,
                source="test",
            )
        assert changed is expected
    assert memberships(db) == {"news": "unsubscribed", "offers": "subscribed"}
    assert suppressions(db) == {("ann@example.org", "list:news"): "unsubscribe"}


def test_unsubscribe_from_all_marketing_by_address(db: Database) -> None:
    add_subscriber(db, "ann@example.org", ("news", "offers"))
    with db.transaction() as conn:
        assert unsubscribe(
            conn,
            address="Ann@Example.org",
            list_name=None,
            scope="marketing",
            when=START,
            source="test",
        )
    assert memberships(db) == {"news": "unsubscribed", "offers": "unsubscribed"}
    assert suppressions(db) == {("ann@example.org", "marketing"): "unsubscribe"}


def test_unsubscribe_of_someone_we_never_knew_still_suppresses(db: Database) -> None:
    with db.transaction() as conn:
        assert unsubscribe(
            conn, address="x@example.org", list_name=None, scope="marketing", when=START, source="t"
        )
        assert not unsubscribe(
            conn, subscriber_id=999, list_name="news", scope="list", when=START, source="t"
        )
        with pytest.raises(ValueError, match="scope"):
            unsubscribe(conn, address="x@example.org", list_name=None, scope="all", when=START,
                        source="t")  # fmt: skip
    assert suppressions(db) == {("x@example.org", "marketing"): "unsubscribe"}


# --- the web endpoint, over real HTTP -----------------------------------------------------


@pytest.fixture
def web(db: Database) -> Iterator[str]:
    from daemon.http import HttpServer, build_http_app
    from daemon.rules import Rules

    clock = FrozenClock(START)
    app = build_http_app(
        db, clock, b"s" * 32, lambda: Rules(), extra_routes=unsubscribe_routes(db, clock, KEY)
    )
    server = HttpServer(Http(port=0), app)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def request(
    url: str, method: str = "GET", body: bytes | None = None, content_type: str | None = None
) -> tuple[int, dict[str, str], str]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    headers = {"Content-Type": content_type} if content_type else {}
    try:
        connection.request(method, parts.path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode("utf-8")
    finally:
        connection.close()


def test_one_click_post_unsubscribes_at_once(web: str, db: Database) -> None:
    subscriber = add_subscriber(db, "ann@example.org", ("news", "offers"))
    url = f"{web}/unsubscribe/{make_token(KEY, subscriber, 'news', 3)}"
    status, headers, page = request(
        url, "POST", b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded"
    )
    assert status == 200 and "location" not in {h.lower() for h in headers}
    assert "will not receive" in page
    assert suppressions(db) == {("ann@example.org", "list:news"): "unsubscribe"}
    assert memberships(db) == {"news": "unsubscribed", "offers": "subscribed"}
    with db.reading() as conn:
        detail = conn.execute(select(SUPPRESSIONS.c.detail)).scalar_one()
    assert detail == "web: list news (run 3)"
    again = request(url, "POST", b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded")
    assert again[0] == 200


def test_a_multipart_one_click_post_and_an_empty_post_unsubscribe(web: str, db: Database) -> None:
    first = add_subscriber(db, "ann@example.org", ("news",))
    second = add_subscriber(db, "bo@example.org", ("offers",))
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        b"One-Click\r\n--XyZ--\r\n"
    )
    token = make_token(KEY, first, "news", 1)
    status, _, _ = request(
        f"{web}/unsubscribe/{token}", "POST", body, "multipart/form-data; boundary=XyZ"
    )
    assert status == 200
    status, _, _ = request(f"{web}/unsubscribe/{make_token(KEY, second, 'offers', 1)}", "POST", b"")
    assert status == 200
    assert suppressions(db) == {
        ("ann@example.org", "list:news"): "unsubscribe",
        ("bo@example.org", "list:offers"): "unsubscribe",
    }


def test_a_get_only_shows_the_two_buttons(web: str, db: Database) -> None:
    subscriber = add_subscriber(db, "ann@example.org")
    status, headers, page = request(f"{web}/unsubscribe/{make_token(KEY, subscriber, 'news', 1)}")
    assert status == 200
    assert page.count('method="post"') == 2
    assert 'name="scope" value="marketing"' in page
    assert headers.get("cache-control") == "no-store"
    assert suppressions(db) == {}
    assert memberships(db) == {"news": "subscribed"}


def test_the_all_marketing_button(web: str, db: Database) -> None:
    subscriber = add_subscriber(db, "ann@example.org", ("news", "offers"))
    url = f"{web}/unsubscribe/{make_token(KEY, subscriber, 'news', 1)}"
    status, _, page = request(url, "POST", b"scope=marketing", "application/x-www-form-urlencoded")
    assert status == 200 and "any of our marketing mail" in page
    assert suppressions(db) == {("ann@example.org", "marketing"): "unsubscribe"}
    assert memberships(db) == {"news": "unsubscribed", "offers": "unsubscribed"}


def test_a_forged_token_is_not_found(web: str, db: Database) -> None:
    subscriber = add_subscriber(db, "ann@example.org")
    forged = make_token(b"x" * 32, subscriber, "news", 1)
    for method in ("GET", "POST"):
        status, _, _ = request(
            f"{web}/unsubscribe/{forged}", method, b"List-Unsubscribe=One-Click" if method == "POST"
            else None, "application/x-www-form-urlencoded"
        )  # fmt: skip
        assert status == 404
    assert request(f"{web}/unsubscribe/nonsense", "POST", b"")[0] == 404
    assert suppressions(db) == {}


# --- the intake step, through the real pipeline -------------------------------------------


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[App]:
    application = pipeline_app(db_url, tmp_path, RULES, FrozenClock(START))
    yield application
    application.db.dispose()


def deliver(app: App, raw: bytes, recipient: str = SUPPORT, envelope: str | None = None) -> None:
    Inbox(app.db, app.clock).store_delivered(
        raw, channel="lmtp", envelope_from=envelope, recipients=[recipient], mailboxes=["support"]
    )
    while app.runner.run_once():
        pass


def replies(app: App) -> int:
    with app.db.reading() as conn:
        return len(conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.kind == "auto-reply")).all())


def message_row(app: App, message_id: str) -> Any:
    with app.db.reading() as conn:
        return conn.execute(select(Message).where(Message.message_id == message_id)).one()


def test_a_mailto_request_with_a_token_leaves_that_list(app: App) -> None:
    subscriber = add_subscriber(app.db, "ann@example.org", ("news", "offers"))
    token = make_token(instance_key(app.db, "unsubscribe"), subscriber, "offers", 5)
    deliver(
        app,
        make_mail(
            subject=f"unsubscribe {token}",
            body="This message will unsubscribe you.",
            sender="someone-else@example.net",  # a forwarding mailbox: the token decides
            to=UNSUBSCRIBE,
            message_id="<u1@example.org>",
        ),
        UNSUBSCRIBE,
    )
    assert suppressions(app.db) == {("ann@example.org", "list:offers"): "unsubscribe"}
    assert memberships(app.db) == {"news": "subscribed", "offers": "unsubscribed"}
    assert message_row(app, "<u1@example.org>").automated == "human"


def test_a_mailto_request_without_a_token_leaves_all_marketing(app: App) -> None:
    add_subscriber(app.db, "ann@example.org", ("news", "offers"))
    forged = make_token(b"x" * 32, 1, "news", 1)
    deliver(
        app,
        make_mail(
            subject=f"unsubscribe {forged}",
            body="",
            sender="Ann <ann@example.org>",
            to=UNSUBSCRIBE,
        ),
        UNSUBSCRIBE,
    )
    assert suppressions(app.db) == {("ann@example.org", "marketing"): "unsubscribe"}
    assert memberships(app.db) == {"news": "unsubscribed", "offers": "unsubscribed"}


def test_a_request_that_reached_the_address_only_through_the_envelope(app: App) -> None:
    deliver(
        app,
        make_mail(subject="stop", body="", sender="cy@example.org", to="friends@example.org"),
        UNSUBSCRIBE,
    )
    assert suppressions(app.db) == {("cy@example.org", "marketing"): "unsubscribe"}


def test_machines_writing_to_the_unsubscribe_address_unsubscribe_nobody(app: App) -> None:
    bounce = (DATA / "dsn-userunknown.eml").read_bytes()
    auto = make_mail(
        subject="Out of office",
        sender="dan@example.org",
        to=UNSUBSCRIBE,
        extra={"Auto-Submitted": "auto-replied"},
    )
    deliver(app, bounce, UNSUBSCRIBE, envelope="")
    deliver(app, auto, UNSUBSCRIBE)
    assert all(scope == "all" for _, scope in suppressions(app.db))  # only the hard bounce
    assert ("dan@example.org", "marketing") not in suppressions(app.db)


def test_a_plain_unsubscribe_reply_to_support_leaves_all_marketing(app: App) -> None:
    add_subscriber(app.db, "anna.berg@customer.example", ("news",))
    deliver(
        app,
        make_mail(
            subject="Re: Spring sale",
            body="Please remove me from your mailing list.\n\nThanks,\nAnna\n\n"
            "On Mon, 2 Mar 2026, Acme News <news@acme.example> wrote:\n> Spring sale!\n",
            message_id="<r1@customer.example>",
        ),
    )
    assert suppressions(app.db) == {("anna.berg@customer.example", "marketing"): "unsubscribe"}
    assert memberships(app.db) == {"news": "unsubscribed"}
    row = message_row(app, "<r1@customer.example>")
    assert row.conversation_id is not None  # still a conversation people see


def test_a_chinese_unsubscribe_reply(app: App) -> None:
    deliver(app, make_mail(subject="回复：春季促销", body="退订，谢谢", sender="li@example.cn"))
    assert suppressions(app.db) == {("li@example.cn", "marketing"): "unsubscribe"}


def test_a_long_question_that_mentions_unsubscribe_is_an_ordinary_request(app: App) -> None:
    body = (
        "Hello,\n\nhow do I unsubscribe my colleague? She left the company last month and "
        "her mailbox forwards to me now. We also need to move our team to the new billing "
        "plan, and the invoice for March shows the old address. Could you update both?\n\n"
        "Thanks,\nAnna"
    )
    deliver(app, make_mail(subject="Colleague left", body=body, message_id="<q1@customer.example>"))
    assert suppressions(app.db) == {}
    assert replies(app) == 1
    assert message_row(app, "<q1@customer.example>").reply_decision.startswith("auto-reply")


@pytest.mark.parametrize("via", ["mailto", "reply"])
def test_unsubscribe_requests_get_no_auto_reply(app: App, via: str) -> None:
    raw = make_mail(
        subject="unsubscribe",
        body="",
        to=UNSUBSCRIBE if via == "mailto" else SUPPORT,
        message_id="<n1@customer.example>",
    )
    deliver(app, raw, UNSUBSCRIBE if via == "mailto" else SUPPORT)
    assert suppressions(app.db) == {("anna.berg@customer.example", "marketing"): "unsubscribe"}
    assert replies(app) == 0
    decision = message_row(app, "<n1@customer.example>").reply_decision
    assert decision.startswith("an unsubscribe request")


# --- the detection rule -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("Unsubscribe", ""),
        ("UNSUBSCRIBE ME", "sent from my phone"),
        ("Re: Spring sale", "unsubscribe\n\nOn Mon, 2 Mar 2026 Acme wrote:\n> offers\n> more"),
        ("Re: News", "Hi,\nplease take me off your mailing list.\nRegards,\nJo Smith\nFoo Ltd"),
        ("hello", "Stop sending me these emails!"),
        ("", "I would like to opt out of your newsletters."),
        ("", "I want to unsubscribe."),
        ("退订", ""),
        ("回复：促销", "请不要再给我发邮件"),
        ("", "我想取消订阅你们的邮件"),
        ("", "不要再发了"),
    ],
)
def test_short_requests_are_recognised(subject: str, body: str) -> None:
    assert asks_to_unsubscribe(subject, body)


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("Question", "How do I unsubscribe my colleague?"),
        ("", "Please unsubscribe my colleague bob@example.com"),
        ("Re: hi", "Can you unsubscribe me?"),
        ("Unsubscribe", "My order #1234 arrived broken and I want a refund."),
        ("", "I want to opt out of the extended warranty."),
        ("", "怎么退订？"),
        ("", "我要退订酒店"),
        ("", "不要再发错货了"),
        ("", "我想取消订阅会员"),
        ("Printer", "Hello,\nthe printer is jammed.\n" + "It prints stripes. " * 30),
        ("Re: offer", "\n".join(["Some text."] * 9 + ["unsubscribe me"])),
    ],
)
def test_questions_long_mail_and_other_business_are_not_requests(subject: str, body: str) -> None:
    assert not asks_to_unsubscribe(subject, body)


# --- the admin command --------------------------------------------------------------------


def test_admin_suppressions_take_a_scope(db_url: str, tmp_path: Path) -> None:
    from tests.test_admin import mailcare, write_settings

    config = write_settings(tmp_path, db_url, models=tmp_path / "no-models")
    mailcare("suppressions", "add", "ann@example.org", config=config)
    added = mailcare(
        "suppressions", "add", "ann@example.org", "--scope", "list:news", config=config
    )
    assert added.stdout.strip() == "ann@example.org: suppressed (list:news)"
    mailcare("suppressions", "add", "bo@example.org", "--scope", "marketing", config=config)
    refused = mailcare("suppressions", "add", "x@example.org", "--scope", "news", config=config,
                       code=2)  # fmt: skip
    assert "not a scope" in refused.stderr
    rows = json.loads(mailcare("suppressions", "list", "--json", config=config).stdout)
    assert sorted((r["address"], r["scope"]) for r in rows) == [
        ("ann@example.org", "all"),
        ("ann@example.org", "list:news"),
        ("bo@example.org", "marketing"),
    ]
    text = mailcare("suppressions", "list", config=config).stdout
    assert "bo@example.org\tmarketing\tmanual\t" in text
    removed = mailcare("suppressions", "remove", "ann@example.org", "--scope", "all", config=config)
    assert removed.stdout.strip() == "ann@example.org: removed (all)"
    mailcare("suppressions", "remove", "bo@example.org", "--scope", "all", config=config, code=1)
    mailcare("suppressions", "remove", "ann@example.org", config=config)  # every scope
    rows = json.loads(mailcare("suppressions", "list", "--json", config=config).stdout)
    assert [(r["address"], r["scope"]) for r in rows] == [("bo@example.org", "marketing")]
