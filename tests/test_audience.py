"""The campaign audience: segments, imports and consent, double opt-in over real HTTP, the CLI."""

from __future__ import annotations

import email
import email.policy
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select

from daemon.audience import (
    CONTACTS,
    MEMBERS,
    SUBSCRIBERS,
    audience,
    members,
    recipient,
    unsubscribe_member,
)
from daemon.audience_csv import read_csv
from daemon.audience_import import (
    Enrolment,
    NewSubscriber,
    add_members,
    subscribe_member,
    upsert_subscribers,
)
from daemon.cli import main
from daemon.clock import FrozenClock
from daemon.database import Database
from daemon.errors import ConfigError
from daemon.http import HttpServer, build_http_app
from daemon.marketing_config import LastContact, MailingList, Segment
from daemon.optin import Confirmations, optin_routes, token, verify
from daemon.outbox import OUTBOX, Outbox
from daemon.render import TemplateStore
from daemon.rules import Rules, load_rules
from daemon.screening import Identity
from daemon.settings import Http
from daemon.suppressions import list_scope, suppress, suppressed
from tests.helpers import fetch

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
PUBLIC = "https://lists.acme.example/mc"
DOUBLE = MailingList(title="Acme News", double_opt_in=True)
SINGLE = MailingList(title="Offers", double_opt_in=False)
RULES = """
version: 1
identity:
  company: {name: Acme, signature: "The Acme team"}
marketing:
  from: "Acme News <news@acme.example>"
  confirmation: {valid_for: 7d}
  lists:
    news: {title: Acme News, double_opt_in: true}
    offers: {title: Offers, double_opt_in: false}
  segments:
    vip: {tiers: [vip]}
    chinese: {languages: [zh]}
"""


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def rules(tmp_path: Path) -> Rules:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return load_rules(path)


def confirmations(
    db: Database, clock: FrozenClock, rules: Rules, public_url: str | None = PUBLIC
) -> Confirmations:
    return Confirmations(
        TemplateStore(ROOT / "templates"),
        Outbox(db, clock, "test"),
        Identity(frozenset(), frozenset(), "looptoken", "X-Mailcare-Loop"),
        b"k" * 32,
        b"m" * 32,
        public_url,
        lambda: rules,
    )


def contact(
    db: Database, address: str, tier: str, first: timedelta, last: timedelta, now: datetime = NOW
) -> int:
    with db.transaction() as conn:
        return int(
            conn.execute(
                insert(CONTACTS)
                .values(
                    address=address,
                    tier=tier,
                    name=None,
                    first_seen_at=now - first,
                    last_seen_at=now - last,
                    message_count=1,
                    conversation_count=1,
                )
                .returning(CONTACTS.c.id)
            ).scalar_one()
        )


def enrol(
    db: Database,
    list_name: str,
    people: list[NewSubscriber],
    confirmer: Confirmations | None = None,
    confirmed: bool = False,
    now: datetime = NOW,
) -> Enrolment:
    mailing_list = DOUBLE if list_name == "news" else SINGLE
    with db.transaction() as conn:
        return add_members(
            conn, list_name, mailing_list, people, now, confirmer, confirmed=confirmed
        )


def status_of(db: Database, address: str, list_name: str) -> str | None:
    with db.reading() as conn:
        return conn.execute(
            select(MEMBERS.c.status)
            .join(SUBSCRIBERS, SUBSCRIBERS.c.id == MEMBERS.c.subscriber_id)
            .where(SUBSCRIBERS.c.address == address, MEMBERS.c["list"] == list_name)
        ).scalar()


def outbox(db: Database) -> list[Any]:
    with db.reading() as conn:
        return list(conn.execute(select(OUTBOX).order_by(OUTBOX.c.id)).all())


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def confirm_link(row: Any) -> str:
    text = parsed(row.raw).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    [link] = re.findall(re.escape(PUBLIC) + r"/confirm/\S+", text)
    return str(link)


def addresses(found: list[Any]) -> list[str]:
    return [person.address for person in found]


def person(address: str, **values: Any) -> NewSubscriber:
    values.setdefault("consent_source", "signup form")
    return NewSubscriber(address=address, **values)


# -- selecting the audience ------------------------------------------------------------------


@pytest.fixture
def population(db: Database) -> dict[str, int]:
    """Subscribers on `offers` covering every selector; f is pending, g unsubscribed."""
    linked = contact(db, "c-linked@x.example", "ordinary", timedelta(400), timedelta(200))
    contact(db, "a@x.example", "ordinary", timedelta(10), timedelta(5))
    contact(db, "b@x.example", "gold", timedelta(100), timedelta(20))
    people = [
        person(
            "a@x.example",
            tier="vip",
            language="zh-CN",
            tags=frozenset({"alpha", "beta"}),
            last_contact_at=NOW - timedelta(days=1),
        ),
        person("b@x.example", tags=frozenset({"beta"}), attributes={"city": "Berlin"}),
        person("c@x.example", contact_id=linked, language="en"),
        person("d@x.example"),
        person("e@x.example", lifecycle="active", last_contact_at=NOW - timedelta(days=60)),
        person("f@x.example"),
        person("g@x.example"),
    ]
    report = enrol(db, "offers", people)
    assert sorted(report.added) == addresses(people)
    with db.transaction() as conn:
        assert unsubscribe_member(conn, "G@x.example", "offers", NOW)
        conn.execute(
            MEMBERS.update()
            .where(
                MEMBERS.c.subscriber_id
                == select(SUBSCRIBERS.c.id)
                .where(SUBSCRIBERS.c.address == "f@x.example")
                .scalar_subquery()
            )
            .values(status="pending")
        )
    return {"linked": linked}


def select_audience(db: Database, **segment: Any) -> list[str]:
    with db.reading() as conn:
        chosen = Segment(**segment) if segment else None
        return addresses(audience(conn, "offers", chosen, NOW))


def test_the_audience_is_the_subscribed_members_with_archive_facts(
    db: Database, population: dict[str, int]
) -> None:
    assert select_audience(db) == [f"{c}@x.example" for c in "abcde"]
    with db.reading() as conn:
        found = {p.address: p for p in audience(conn, "offers", None, NOW)}
    # tier: the subscriber's own, else the contact's (by contact_id or by the same address)
    assert found["a@x.example"].tier == "vip"
    assert found["b@x.example"].tier == "gold"
    assert found["c@x.example"].tier == "ordinary"
    assert found["d@x.example"].tier is None
    # last contact: the later of the subscriber's and the contact's
    assert found["a@x.example"].last_contact_at == NOW - timedelta(days=1)
    assert found["b@x.example"].last_contact_at == NOW - timedelta(days=20)
    assert found["c@x.example"].last_contact_at == NOW - timedelta(days=200)
    assert found["e@x.example"].last_contact_at == NOW - timedelta(days=60)
    assert found["b@x.example"].attributes == {"city": "Berlin"}
    assert found["a@x.example"].tags == frozenset({"alpha", "beta"})
    assert {p.address: p.lifecycle for p in found.values()} == {
        "a@x.example": "new",
        "b@x.example": "active",
        "c@x.example": "lapsed",
        "d@x.example": "potential",
        "e@x.example": "active",  # set explicitly: no contact history would make it potential
    }


def test_segments_select_by_tier_lifecycle_language_tags_and_last_contact(
    db: Database, population: dict[str, int]
) -> None:
    assert select_audience(db, tiers=["vip", "gold"]) == ["a@x.example", "b@x.example"]
    assert select_audience(db, lifecycles=["new"]) == ["a@x.example"]
    assert select_audience(db, lifecycles=["active"]) == ["b@x.example", "e@x.example"]
    assert select_audience(db, lifecycles=["lapsed", "potential"]) == [
        "c@x.example",
        "d@x.example",
    ]
    assert select_audience(db, languages=["zh"]) == ["a@x.example"]  # zh-CN counts as zh
    assert select_audience(db, languages=["EN"]) == ["c@x.example"]
    assert select_audience(db, tags_any=["alpha", "gamma"]) == ["a@x.example"]
    assert select_audience(db, tags_all=["alpha", "beta"]) == ["a@x.example"]
    assert select_audience(db, tags_none=["beta"]) == ["c@x.example", "d@x.example", "e@x.example"]
    assert select_audience(db, last_contact=LastContact(within=30 * 86400)) == [
        "a@x.example",
        "b@x.example",
    ]
    assert select_audience(db, last_contact=LastContact(older_than=90 * 86400)) == [
        "c@x.example",
        "d@x.example",  # never in contact counts as older than anything
    ]
    assert select_audience(db, tiers=["gold"], tags_any=["beta"]) == ["b@x.example"]


def test_lifecycle_moves_with_time(db: Database, population: dict[str, int]) -> None:
    later = NOW + timedelta(days=25)
    with db.reading() as conn:
        found = {p.address: p.lifecycle for p in audience(conn, "offers", None, later)}
    assert found["a@x.example"] == "active"  # first contact 35 days back: no longer new
    assert found["b@x.example"] == "active"  # last contact 45 days back
    even_later = NOW + timedelta(days=170)
    with db.reading() as conn:
        found = {p.address: p.lifecycle for p in audience(conn, "offers", None, even_later)}
    assert found["b@x.example"] == "lapsed"  # last contact 190 days back


def test_recipient_finds_any_subscriber_and_members_lists_states(
    db: Database, population: dict[str, int]
) -> None:
    with db.reading() as conn:
        pending = recipient(conn, " F@X.example ", NOW)
        assert pending is not None and pending.address == "f@x.example"
        assert recipient(conn, "nobody@x.example", NOW) is None
        listed = members(conn, "offers", NOW, statuses=["pending", "unsubscribed"])
        chinese = members(conn, "offers", NOW, segment=Segment(languages=["zh"]))
    assert [(m.recipient.address, m.status) for m in listed] == [
        ("f@x.example", "pending"),
        ("g@x.example", "unsubscribed"),
    ]
    assert listed[1].unsubscribed_at == NOW and listed[0].consent_source == "signup form"
    assert [m.recipient.address for m in chinese] == ["a@x.example"]


def test_the_audience_is_one_query_however_large_the_list(db: Database) -> None:
    people = [
        person(f"user{n:05d}@x.example", tier="vip" if n % 3 == 0 else None) for n in range(3000)
    ]
    for n in range(0, 3000, 7):
        contact(db, f"user{n:05d}@x.example", "gold", timedelta(50), timedelta(3))
    assert len(enrol(db, "offers", people).added) == 3000
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.reading() as conn:
            found = audience(conn, "offers", Segment(tiers=["vip", "gold"]), NOW)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    expected = {n for n in range(3000) if n % 3 == 0 or n % 7 == 0}
    assert addresses(found) == [f"user{n:05d}@x.example" for n in sorted(expected)]


# -- adding people and consent ---------------------------------------------------------------


def test_a_new_member_needs_a_consent_source(db: Database) -> None:
    report = enrol(db, "offers", [NewSubscriber("nobody-asked@x.example"), person("ok@x.example")])
    assert report.added == ["ok@x.example"]
    [(address, reason)] = report.skipped
    assert address == "nobody-asked@x.example" and "no consent source" in reason
    with db.reading() as conn:
        assert recipient(conn, "nobody-asked@x.example", NOW) is None  # nothing stored
    assert status_of(db, "ok@x.example", "offers") == "subscribed"
    assert outbox(db) == []  # a single opt-in list sends no confirmation


def test_upsert_lowercases_validates_and_merges(db: Database) -> None:
    with db.transaction() as conn:
        first = upsert_subscribers(
            conn, [NewSubscriber("Anna@X.example", name="Anna", attributes={"a": "1"})], NOW
        )
        assert first.created == {"anna@x.example"}
        again = upsert_subscribers(
            conn, [NewSubscriber("anna@x.example", language="de", attributes={"b": "2"})], NOW
        )
        assert again.ids == first.ids and again.changed == {"anna@x.example"}
        same = upsert_subscribers(conn, [NewSubscriber("anna@x.example", language="de")], NOW)
        assert same.changed == frozenset()
        # the lookups write addresses into the SQL text: a quote must stay a quote
        quoted = upsert_subscribers(conn, [NewSubscriber("o'brien@x.example", name="O'Brien")], NOW)
        assert upsert_subscribers(conn, [NewSubscriber("O'Brien@x.example")], NOW).ids == quoted.ids
        with pytest.raises(ValueError, match="not a usable e-mail address"):
            upsert_subscribers(conn, [NewSubscriber("not an address")], NOW)
        with pytest.raises(ValueError, match="unknown timezone"):
            upsert_subscribers(conn, [NewSubscriber("x@x.example", timezone="Mars/Base")], NOW)
        found = recipient(conn, "anna@x.example", NOW)
    assert found is not None
    assert (found.name, found.language, found.attributes) == ("Anna", "de", {"a": "1", "b": "2"})


def test_double_opt_in_queues_one_confirmation_mail(
    db: Database, clock: FrozenClock, rules: Rules
) -> None:
    confirmer = confirmations(db, clock, rules)
    people = [person("anna@x.example", name="Anna Berg"), person("li@x.example", language="zh")]
    report = enrol(db, "news", people, confirmer)
    assert report.pending == ["anna@x.example", "li@x.example"] and report.confirmations == 2
    assert status_of(db, "anna@x.example", "news") == "pending"
    rows = outbox(db)
    assert [(r.kind, r.recipients) for r in rows] == [
        ("optin", "anna@x.example"),
        ("optin", "li@x.example"),
    ]
    with db.reading() as conn:
        anna = recipient(conn, "anna@x.example", NOW)
    assert anna is not None and rows[0].key == f"optin:news:{anna.subscriber_id}"
    mail = parsed(rows[0].raw)
    assert mail["From"].addresses[0].addr_spec == "news@acme.example"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "Acme News" in mail["Subject"]
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Dear Anna Berg" in text and "valid for 7 days" in text
    assert mail.get_body(("html",)) is not None  # the default variant has an HTML part
    chinese = parsed(rows[1].raw)
    assert "请确认订阅" in chinese["Subject"] and chinese.get_body(("html",)) is None
    # a re-import: pending members are not mailed again, subscribed ones are left alone
    again = enrol(db, "news", [*people, person("new@x.example")], confirmer)
    assert again.pending == ["new@x.example"] and again.confirmations == 1
    assert sorted(again.unchanged) == ["anna@x.example", "li@x.example"]
    assert len(outbox(db)) == 3
    # the same mail asked for twice is queued once (the outbox key)
    with db.transaction() as conn:
        assert confirmer.request(conn, "news", [anna.subscriber_id], NOW) == 0


def test_confirmed_consent_skips_the_confirmation_mail(
    db: Database, clock: FrozenClock, rules: Rules
) -> None:
    confirmer = confirmations(db, clock, rules)
    enrol(db, "news", [person("pending@x.example")], confirmer)
    report = enrol(
        db,
        "news",
        [
            person("done@x.example", consent_at=NOW - timedelta(days=400)),
            person("pending@x.example"),
        ],
        confirmer,
        confirmed=True,
    )
    assert report.added == ["done@x.example"] and report.updated == ["pending@x.example"]
    assert report.confirmations == 0
    assert status_of(db, "done@x.example", "news") == "subscribed"
    assert status_of(db, "pending@x.example", "news") == "subscribed"
    with db.reading() as conn:
        [done, _] = members(conn, "news", NOW)
    assert done.confirmed_at == NOW - timedelta(days=400)
    assert len(outbox(db)) == 1  # only the first, unconfirmed import mailed


def test_an_import_never_resubscribes_but_an_explicit_subscribe_does(
    db: Database, clock: FrozenClock, rules: Rules
) -> None:
    confirmer = confirmations(db, clock, rules)
    enrol(db, "offers", [person("gone@x.example")])
    with db.transaction() as conn:
        assert unsubscribe_member(conn, "gone@x.example", "offers", NOW)
        assert not unsubscribe_member(conn, "gone@x.example", "offers", NOW)
        suppress(conn, [("gone@x.example", "unsubscribe", None, None)], NOW, list_scope("offers"))
    report = enrol(db, "offers", [person("gone@x.example", consent_source="fair stand")])
    assert report.added == [] and "unsubscribed" in report.skipped[0][1]
    assert status_of(db, "gone@x.example", "offers") == "unsubscribed"
    with db.transaction() as conn:
        again = subscribe_member(
            conn, "offers", SINGLE, person("gone@x.example", consent_source="phone"), NOW, None
        )
        assert again.added == ["gone@x.example"]
        # the new consent outweighs the list's unsubscribe suppression
        assert suppressed(conn, ["gone@x.example"], [list_scope("offers")]) == {}
    assert status_of(db, "gone@x.example", "offers") == "subscribed"
    with db.reading() as conn:
        [member] = members(conn, "offers", NOW)
    assert member.consent_source == "phone"
    # on a double opt-in list the new consent is confirmed by a new mail, not the first one's key
    enrol(db, "news", [person("back@x.example")], confirmer)
    with db.transaction() as conn:
        unsubscribe_member(conn, "back@x.example", "news", NOW)
        subscribe_member(conn, "news", DOUBLE, person("back@x.example"), NOW, confirmer)
    assert status_of(db, "back@x.example", "news") == "pending"
    keys = [row.key for row in outbox(db)]
    assert len(keys) == 2 and keys[1].startswith(keys[0] + ":")


def test_double_opt_in_needs_a_public_url_and_a_sender(
    db: Database, clock: FrozenClock, rules: Rules
) -> None:
    with pytest.raises(ConfigError, match=r"http\.public_url"):
        enrol(db, "news", [person("a@x.example")], confirmations(db, clock, rules, None))
    silent = rules.model_copy(
        update={"marketing": rules.marketing.model_copy(update={"sender": None})}
    )
    with pytest.raises(ConfigError, match=r"marketing\.from"):
        enrol(db, "news", [person("a@x.example")], confirmations(db, clock, silent))
    assert status_of(db, "a@x.example", "news") is None  # rolled back
    assert outbox(db) == []


# -- CSV files -------------------------------------------------------------------------------

CSV = (
    "\ufeffAddress,Name,Language,Timezone,Tier,Lifecycle,Tags,consent_at,City\r\n"
    "Anna@X.example,Anna Berg,de,Europe/Berlin,vip,active,alpha;beta,2025-06-01,Berlin\r\n"
    'broken-address,"Two\r\nLines",,,,,,,\r\n'
    "tz@x.example,,,Mars/Base,,,,,\r\n"
    "life@x.example,,,,,zombie,,,\r\n"
    "\r\n"
    "date@x.example,,,,,,,yesterday,\r\n"
    'li@x.example,李雷,zh-CN,Asia/Shanghai,,,"gamma, delta",2025-06-02T08:00:00+08:00,\r\n'
    "anna@x.example,Again,,,,,,,\r\n"
)


def test_read_csv_reports_bad_rows_by_line_and_keeps_the_rest() -> None:
    found = read_csv(CSV.encode("utf-8"), "newsletter form")
    assert [p.address for p in found.people] == ["anna@x.example", "li@x.example"]
    assert found.lines == {"anna@x.example": 2, "li@x.example": 9}
    assert [line for line, _ in found.problems] == [3, 5, 6, 8, 10]
    messages = dict(found.problems)
    assert "not a usable e-mail address" in messages[3]
    assert "unknown timezone" in messages[5]
    assert "unknown lifecycle" in messages[6]
    assert "ISO date" in messages[8]
    assert "already on line 2" in messages[10]
    anna, li = found.people
    assert anna.tags == frozenset({"alpha", "beta"}) and anna.attributes == {"city": "Berlin"}
    assert anna.consent_source == "newsletter form"
    assert anna.consent_at == datetime(2025, 6, 1, tzinfo=UTC)
    assert li.tags == frozenset({"gamma", "delta"}) and li.language == "zh-CN"
    assert li.consent_at == datetime(2025, 6, 2, tzinfo=UTC)


def test_read_csv_refuses_unusable_files() -> None:
    with pytest.raises(ValueError, match="no `address` column"):
        read_csv(b"email,name\r\na@x.example,A\r\n")
    with pytest.raises(ValueError, match="line 3: not UTF-8"):
        read_csv(b"address\na@x.example\nb\xff@x.example\n")


# -- double opt-in over HTTP -----------------------------------------------------------------


@pytest.fixture
def web(db: Database, clock: FrozenClock, rules: Rules) -> Iterator[str]:
    routes = optin_routes(db, clock, b"k" * 32, lambda: rules)
    app = build_http_app(db, clock, b"s" * 32, lambda: rules, extra_routes=routes)
    server = HttpServer(Http(port=0), app)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def test_the_link_shows_a_page_and_only_its_post_confirms(
    db: Database, clock: FrozenClock, rules: Rules, web: str
) -> None:
    enrol(db, "news", [person("anna@x.example")], confirmations(db, clock, rules))
    link = confirm_link(outbox(db)[0]).replace(PUBLIC, web)
    clock.advance(timedelta(days=2))
    status, body = fetch(link)
    assert status == 200 and 'method="post"' in body and "Acme News" in body
    with urllib.request.urlopen(link, timeout=10) as response:
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    assert status_of(db, "anna@x.example", "news") == "pending"  # a scanner's GET changes nothing
    status, body = fetch(link, "POST")
    assert status == 200 and "is confirmed" in body
    assert status_of(db, "anna@x.example", "news") == "subscribed"
    with db.reading() as conn:
        [member] = members(conn, "news", NOW)
        assert addresses(audience(conn, "news", None, NOW)) == ["anna@x.example"]
    assert member.confirmed_at == NOW + timedelta(days=2)
    assert fetch(link, "POST") == (200, body)  # twice: the same thank-you
    assert fetch(link)[1] == body
    with db.transaction() as conn:
        unsubscribe_member(conn, "anna@x.example", "news", NOW)
    status, body = fetch(link, "POST")
    assert status == 200 and "unsubscribed" in body
    assert status_of(db, "anna@x.example", "news") == "unsubscribed"


def test_forged_foreign_and_expired_tokens_are_refused(
    db: Database, clock: FrozenClock, rules: Rules, web: str
) -> None:
    enrol(db, "news", [person("anna@x.example")], confirmations(db, clock, rules))
    link = confirm_link(outbox(db)[0]).replace(PUBLIC, web)
    signed = link.rsplit("/", 1)[1]
    forged = signed[:-1] + ("a" if signed[-1] != "a" else "b")
    other_list = signed.replace("-news-", "-offers-")
    with db.reading() as conn:
        anna = recipient(conn, "anna@x.example", NOW)
    assert anna is not None
    stranger = token(b"k" * 32, anna.subscriber_id + 1, "news", NOW)  # signed, not a member
    for bad in (forged, other_list, stranger, "mco-1-news-x-y", "nonsense"):
        for method in ("GET", "POST"):
            status, body = fetch(f"{web}/confirm/{bad}", method)
            assert status == 404 and "not valid" in body, (bad, method)
    assert status_of(db, "anna@x.example", "news") == "pending"
    assert verify(b"k" * 32, signed, NOW + timedelta(days=7), 7 * 86400) is not None
    clock.advance(timedelta(days=9))  # past marketing.confirmation.valid_for (7 days)
    status, _ = fetch(link, "POST")
    assert status == 404
    assert status_of(db, "anna@x.example", "news") == "pending"


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def config(db_url: str, tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    path = tmp_path / "mailcare.yaml"
    path.write_text(
        f"database_url: {db_url}\n"
        f"paths: {{rules: rules.yaml, templates: {ROOT / 'templates'}}}\n"
        f"http: {{enabled: true, port: 0, public_url: '{PUBLIC}/'}}\n",
        encoding="utf-8",
    )
    return path


def run(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(config), "audience", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_import_reports_bad_rows_and_queues_confirmations(
    config: Path, tmp_path: Path, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = tmp_path / "people.csv"
    csv_file.write_bytes(CSV.encode("utf-8"))
    code, out, err = run(
        config,
        capsys,
        "import",
        str(csv_file),
        "--list",
        "news",
        "--consent-source",
        "form",
        "--dry-run",
    )
    assert code == 1 and out.startswith("dry run")
    assert outbox(db) == [] and status_of(db, "anna@x.example", "news") is None
    code, out, err = run(
        config, capsys, "import", str(csv_file), "--list", "news", "--consent-source", "form"
    )
    assert code == 1
    assert "added 2 (2 pending confirmation)" in out and "confirmation mails queued 2" in out
    assert "skipped 5" in out
    assert f"{csv_file}:3: skipped: not a usable e-mail address" in err
    assert f"{csv_file}:10: skipped:" in err
    assert [row.kind for row in outbox(db)] == ["optin", "optin"]
    assert PUBLIC + "/confirm/mco-" in confirm_link(outbox(db)[0])
    code, out, _ = run(config, capsys, "list", "--list", "news", "--status", "pending", "--json")
    listed = json.loads(out)
    assert code == 0 and [m["address"] for m in listed] == ["anna@x.example", "li@x.example"]
    assert listed[0]["attributes"] == {"city": "Berlin"} and listed[0]["consent_source"] == "form"
    assert run(config, capsys, "count", "--list", "news")[1] == "0\n"  # nobody confirmed yet


def test_cli_import_of_a_clean_file_exits_zero_and_unsubscribed_stay_out(
    config: Path, tmp_path: Path, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = tmp_path / "clean.csv"
    csv_file.write_text(
        "address,tier,consent_source\na@x.example,vip,shop\nb@x.example,,shop\n", encoding="utf-8"
    )
    code, out, err = run(config, capsys, "import", str(csv_file), "--list", "offers")
    assert (code, err) == (0, "") and "added 2" in out and "confirmation mails queued 0" in out
    assert run(config, capsys, "count", "--list", "offers", "--segment", "vip")[1] == "1\n"
    code, out, _ = run(config, capsys, "unsubscribe", "B@x.example", "--list", "offers")
    assert code == 0 and "unsubscribed from offers" in out
    assert run(config, capsys, "unsubscribe", "b@x.example", "--list", "offers")[0] == 1
    code, out, err = run(config, capsys, "import", str(csv_file), "--list", "offers")
    assert code == 1 and "b@x.example: unsubscribed from offers" in err
    assert status_of(db, "b@x.example", "offers") == "unsubscribed"
    with db.transaction() as conn:
        suppress(conn, [("b@x.example", "unsubscribe", None, None)], NOW, list_scope("offers"))
        suppress(conn, [("a@x.example", "complaint", None, None)], NOW, "marketing")
    code, out, err = run(
        config,
        capsys,
        "subscribe",
        "b@x.example",
        "--list",
        "offers",
        "--consent-source",
        "phone call",
        "--name",
        "Bea",
        "--timezone",
        "Europe/Paris",
    )
    assert code == 0 and "subscribed to offers" in out and err == ""  # the unsubscribe lifted
    code, out, err = run(
        config, capsys, "subscribe", "a@x.example", "--list", "offers", "--consent-source", "x"
    )
    assert code == 0 and "already on offers" in out
    assert "suppression list (complaint)" in err  # a complaint is not lifted by a subscribe
    assert run(config, capsys, "count", "--list", "offers")[1] == "2\n"
    code, out, _ = run(config, capsys, "list", "--list", "offers")
    assert out.splitlines() == [
        "a@x.example\tsubscribed\t-\tvip\tpotential\t-",
        "b@x.example\tsubscribed\tBea\t-\tpotential\t-",
    ]


def test_cli_subscribe_on_a_double_opt_in_list_mails_the_link(
    config: Path, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        config,
        capsys,
        "subscribe",
        "Li@x.example",
        "--list",
        "news",
        "--consent-source",
        "web",
        "--language",
        "zh",
    )
    assert code == 0 and "pending confirmation on news; confirmation mail queued" in out
    [row] = outbox(db)
    assert "请确认订阅" in parsed(row.raw)["Subject"]
    code, _, err = run(
        config, capsys, "subscribe", "not-an-address", "--list", "news", "--consent-source", "web"
    )
    assert code == 2 and "not a usable e-mail address" in err


def test_cli_from_contacts_takes_the_archive(
    config: Path, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    today = datetime.now(UTC)  # the command reads the real clock
    contact(db, "vip@x.example", "vip", timedelta(5), timedelta(1), today)
    contact(db, "plain@x.example", "ordinary", timedelta(500), timedelta(300), today)
    code, out, _ = run(
        config,
        capsys,
        "from-contacts",
        "--list",
        "offers",
        "--consent-source",
        "customers",
        "--tier",
        "vip",
    )
    assert code == 0 and "1 contacts" in out and "added 1" in out
    code, out, _ = run(config, capsys, "list", "--list", "offers", "--json")
    [only] = json.loads(out)
    assert (only["address"], only["tier"], only["lifecycle"]) == ("vip@x.example", "vip", "new")
    code, out, _ = run(
        config,
        capsys,
        "from-contacts",
        "--list",
        "news",
        "--consent-source",
        "customers",
        "--confirmed",
    )
    assert code == 0 and "added 2" in out and "confirmation mails queued 0" in out
    assert outbox(db) == []


def test_cli_names_the_known_lists_and_segments(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(config, capsys, "count", "--list", "newz")
    assert code == 2 and "unknown list 'newz'" in err and "news, offers" in err
    code, _, err = run(config, capsys, "list", "--list", "news", "--segment", "vips")
    assert code == 2 and "unknown segment 'vips'" in err and "chinese, vip" in err
    csv_file = tmp_path / "no-consent.csv"
    csv_file.write_text("address\na@x.example\n", encoding="utf-8")
    code, out, err = run(config, capsys, "import", str(csv_file), "--list", "offers")
    assert code == 1 and "no consent source" in err and "--consent-source" in err
    assert "added 0" in out


def test_cli_double_opt_in_without_the_web_endpoint_is_a_clear_error(
    config: Path, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("enabled: true", "enabled: false"), encoding="utf-8")
    code, _, err = run(
        config, capsys, "subscribe", "a@x.example", "--list", "news", "--consent-source", "web"
    )
    assert code == 1 and "http.public_url" in err
    assert status_of(db, "a@x.example", "news") is None  # nothing half done
    code, out, _ = run(
        config, capsys, "subscribe", "a@x.example", "--list", "offers", "--consent-source", "web"
    )
    assert code == 0 and "subscribed to offers" in out  # single opt-in needs no link
