"""Corrections: recorded on SQLite and PostgreSQL, made with the CLI, learned from IMAP moves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update

from daemon.clock import SystemClock
from daemon.corrections import department_folders, record_correction, reroute
from daemon.database import Database
from daemon.folders import new_owner_id
from daemon.inbox import Inbox
from daemon.outbox import OUTBOX, Outbox
from daemon.routing import Forwarder
from daemon.rules import Department, Routing
from daemon.screening import Identity
from daemon.settings import Mailbox, Secret
from daemon.tables import Correction, Delivery, Message
from tests.helpers import mailbox_for, make_mail, wait_until
from tests.servers.dovecot import Dovecot
from tests.servers.imap import close_client
from tests.test_imap_routes import (
    PASSWORD_ENV,
    IntakeFactory,
    classify,
    route_states,
    server_view,
    settled,
    start_intake,
)

__all__ = ["start_intake"]  # the fixture, shared with test_imap_routes

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
# `mailcare` with daemon.corrections registered, whether or not daemon/cli.py does it yet
LAUNCHER = """
import sys
from daemon import cli
from daemon.corrections import register

build = cli.build_parser


def build_parser(argv=()):
    parser = build(argv)
    sub = parser._subparsers._group_actions[0]
    if "relabel" not in sub.choices:
        register(sub)
    return parser


cli.build_parser = build_parser
sys.exit(cli.main(sys.argv[1:]))
"""


def store(db: Database, tag: str, department: str | None = None) -> int:
    """Store a message as if delivered over LMTP, with the department the runner chose."""
    outcome = Inbox(db).store_delivered(
        make_mail(message_id=f"<{tag}@customer.example>"),
        channel="lmtp",
        envelope_from=None,
        recipients=["support@acme.example"],
        mailboxes=["support"],
    )
    pk = outcome.message_pks[0]
    with db.transaction() as conn:
        conn.execute(
            update(Message).where(Message.id == pk).values(department=department, triage=True)
        )
    return pk


def corrections(db: Database) -> list[tuple[int, str, str | None, str, str]]:
    with db.reading() as conn:
        rows = conn.execute(
            select(
                Correction.message_pk,
                Correction.head,
                Correction.previous,
                Correction.label,
                Correction.source,
            ).order_by(Correction.id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def message(db: Database, pk: int) -> tuple[str | None, str | None, bool | None]:
    with db.reading() as conn:
        row = conn.execute(
            select(Message.department, Message.urgency, Message.triage).where(Message.id == pk)
        ).one()
    return row.department, row.urgency, row.triage


def test_record_correction_applies_it_once(db_url: str) -> None:
    db = Database(db_url)
    try:
        pk = store(db, "rc", department="billing")
        with db.transaction() as conn:
            assert record_correction(conn, pk, "department", "sales", "cli", NOW)
            assert not record_correction(conn, pk, "department", "sales", "cli", NOW)
            assert record_correction(conn, pk, "urgency", "important", "cli", NOW)
        assert message(db, pk) == ("sales", "important", False)
        assert corrections(db) == [
            (pk, "department", "billing", "sales", "cli"),
            (pk, "urgency", None, "important", "cli"),
        ]
        with db.transaction() as conn, pytest.raises(ValueError, match="head"):
            record_correction(conn, pk, "mood", "happy", "cli", NOW)
        with db.transaction() as conn, pytest.raises(ValueError, match="no message"):
            record_correction(conn, pk + 100, "department", "sales", "cli", NOW)
    finally:
        db.dispose()


def mailcare(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, "--config", str(config), *args],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        text=True,
        env=dict(os.environ),
    )


def test_relabel_by_id_and_message_id_then_list(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    (tmp_path / "rules.yaml").write_text(
        "routing:\n  departments:\n    billing: {folder: Billing}\n    sales: {folder: Sales}\n"
    )
    config = tmp_path / "mailcare.yaml"
    config.write_text(f"database_url: {url}\npaths: {{rules: rules.yaml}}\n")
    db = Database(url)
    db.upgrade()
    try:
        first, second = store(db, "one", "billing"), store(db, "two", "general")

        done = mailcare(config, "relabel", str(first), "--department", "sales")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{first}\t<one@customer.example>\tdepartment: billing -> sales\n"
        done = mailcare(
            config, "relabel", "two@customer.example", "--department", "billing", "--urgency", "low"
        )
        assert done.returncode == 0, done.stderr
        assert (
            "department: general -> billing" in done.stdout and "urgency: - -> low" in done.stdout
        )
        again = mailcare(config, "relabel", "<two@customer.example>", "--department", "billing")
        assert again.returncode == 0 and "department: already billing" in again.stdout

        missing = mailcare(config, "relabel", "nobody@example.test", "--department", "sales")
        assert missing.returncode == 1 and "no message" in missing.stderr
        unknown = mailcare(config, "relabel", str(first), "--department", "marketing")
        assert unknown.returncode == 2 and "unknown department 'marketing'" in unknown.stderr
        nothing = mailcare(config, "relabel", str(first))
        assert nothing.returncode == 2

        assert message(db, first) == ("sales", None, False)
        assert message(db, second) == ("billing", "low", False)
        listed = mailcare(config, "corrections", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [(r["message"], r["head"], r["previous"], r["label"]) for r in rows] == [
            (second, "urgency", None, "low"),
            (second, "department", "general", "billing"),
            (first, "department", "billing", "sales"),
        ]
        assert {r["source"] for r in rows} == {"cli"}
        text = mailcare(config, "corrections", "list").stdout
        assert len(text.splitlines()) == 3 and "billing -> sales" in text
    finally:
        db.dispose()


ROUTING = Routing(
    departments={
        "billing": Department(folder="Billing", keywords=["$Billing"]),
        "sales": Department(folder="Sales", keywords=["$Sales"]),
        "general": Department(keywords=["$General"]),
    }
)


def test_a_message_moved_by_an_agent_is_a_correction(
    dovecot: Dovecot, db_url: str, start_intake: IntakeFactory
) -> None:
    account = dovecot.account()
    dovecot.append_many(
        account,
        "INBOX",
        [make_mail(message_id=f"<{tag}@customer.example>") for tag in ("wrong", "right")],
    )
    box = mailbox_for(dovecot, account, PASSWORD_ENV)
    sales = Department(folder="Sales", keywords=["$Sales"], forward="sales-team@acme.example")
    routing = ROUTING.model_copy(update={"departments": {**ROUTING.departments, "sales": sales}})
    intake = start_intake(db_url, box, account, routing=routing, forwarder=forwarder)
    classify(intake.db, "wrong", "billing", "Billing", "$Billing")
    classify(intake.db, "right", "sales", "Sales", "$Sales")
    intake.source.wake()
    wait_until(settled(intake.db, "wrong", "right"), what="both routed")
    intake.cycle()  # the sweep has seen both folders: mailcare's own moves are no corrections
    assert corrections(intake.db) == []

    agent = dovecot.open_client(account)
    try:
        agent.select_folder("Billing")
        agent.move(agent.search(["ALL"]), "Sales")
    finally:
        close_client(agent)

    def learned() -> bool:
        intake.cycle()
        return bool(corrections(intake.db))

    wait_until(learned, what="the correction")

    with intake.db.reading() as conn:
        pk, department, triage = conn.execute(
            select(Message.id, Message.department, Message.triage).where(
                Message.message_id == "<wrong@customer.example>"
            )
        ).one()
    assert corrections(intake.db) == [(pk, "department", "billing", "sales", "imap-move")]
    assert (department, triage) == ("sales", False)
    # the message stays where the agent put it; its keywords become those of Sales
    wait_until(settled(intake.db, "wrong"), what="the keywords changed")
    assert route_states(intake.db) == {"wrong": "done", "right": "done"}
    assert server_view(dovecot, account) == {"Sales": {"wrong": {"$Sales"}, "right": {"$Sales"}}}
    assert intake.commands["move"] == 2, "mailcare moved nothing after the agent's move"
    # Sales works from its forward address too: the corrected message is forwarded once
    assert forwards(intake.db) == [(pk, "sales-team@acme.example")]
    intake.cycle()  # the cursor moved on: nothing is learned twice
    assert len(corrections(intake.db)) == 1
    sweep = intake.worker.routes.sweep
    assert sweep is not None and sweep.learned == 1


def test_department_folders_that_are_intake_folders_are_not_swept() -> None:
    box = Mailbox(
        name="support",
        host="127.0.0.1",
        username="u",
        password=Secret(env=PASSWORD_ENV),
        folders=["INBOX", "Sales"],
    )
    shared = Routing(
        departments={
            "billing": Department(folder="Billing"),
            "refunds": Department(folder="Billing"),  # two departments: no single truth
            "sales": Department(folder="Sales"),
            "returns": Department(folder="Returns"),
            "general": Department(),
        }
    )
    assert department_folders(shared, box) == {"Returns": "returns"}


def forwarder(db: Database) -> Forwarder:
    identity = Identity(frozenset({"support@acme.example"}), frozenset(), "token", "X-Loop-Test")
    return Forwarder(Outbox(db, SystemClock(), new_owner_id()), identity, b"k" * 32)


def forwards(db: Database) -> list[tuple[int, str]]:
    with db.reading() as conn:
        rows = conn.execute(
            select(OUTBOX.c.message_pk, OUTBOX.c.recipients, OUTBOX.c.raw).where(
                OUTBOX.c.kind == "forward"
            )
        ).all()
    for row in rows:
        assert f"Resent-To: {row.recipients}\r\n".encode() in bytes(row.raw)
    return [(row.message_pk, row.recipients) for row in rows]


def test_relabel_forwards_to_the_new_department_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    (tmp_path / "rules.yaml").write_text(
        "identity: {addresses: [support@acme.example]}\n"
        "routing:\n  departments:\n    billing: {folder: Billing}\n"
        "    sales: {folder: Sales, forward: sales-team@acme.example}\n"
    )
    config = tmp_path / "mailcare.yaml"
    config.write_text(
        f"database_url: {url}\npaths: {{rules: rules.yaml}}\n"
        "relay: {enabled: true, host: 127.0.0.1, port: 2525, tls: none}\n"
    )
    db = Database(url)
    db.upgrade()
    try:
        pk = store(db, "fw", "billing")
        done = mailcare(config, "relabel", str(pk), "--department", "sales")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == (
            f"{pk}\t<fw@customer.example>\tforwarded to sales-team@acme.example"
        )
        assert forwards(db) == [(pk, "sales-team@acme.example")]
        for department in ("billing", "sales"):  # back and forth: still one forward to sales
            done = mailcare(config, "relabel", str(pk), "--department", department)
            assert done.returncode == 0, done.stderr
            assert "forwarded" not in done.stdout
        assert forwards(db) == [(pk, "sales-team@acme.example")]
        urgency = mailcare(config, "relabel", str(pk), "--urgency", "low")
        assert "forwarded" not in urgency.stdout, "an urgency correction forwards nothing"
    finally:
        db.dispose()


def relabel(db: Database, tag: str, routing: Routing, **labels: str) -> int:
    """What `mailcare relabel` does: record the corrections, then route the message again."""
    with db.transaction() as conn:
        pk = conn.execute(
            select(Message.id).where(Message.message_id == f"<{tag}@customer.example>")
        ).scalar_one()
        for head, label in labels.items():
            record_correction(conn, pk, head, label, "cli", NOW)
        return reroute(conn, pk, routing)


def test_a_relabel_moves_the_message_and_changes_its_keywords(
    dovecot: Dovecot, db_url: str, start_intake: IntakeFactory
) -> None:
    routing = ROUTING.model_copy(update={"urgency_keywords": {"emergency": ["$Urgent"]}})
    account = dovecot.account()
    tags = ("moved", "unsure", "gone")
    dovecot.append_many(
        account, "INBOX", [make_mail(message_id=f"<{tag}@customer.example>") for tag in tags]
    )
    intake = start_intake(
        db_url, mailbox_for(dovecot, account, PASSWORD_ENV), account, routing=routing
    )
    classify(intake.db, "moved", "billing", "Billing", "$Billing $Urgent")
    classify(intake.db, "unsure", "general", None, "$General $NeedsTriage")
    classify(intake.db, "gone", "sales", "Sales", "$Sales")
    with intake.db.transaction() as conn:
        conn.execute(
            update(Message)
            .where(Message.message_id == "<moved@customer.example>")
            .values(urgency="emergency")
        )
    intake.source.wake()
    wait_until(settled(intake.db, *tags), what="first routes")
    assert server_view(dovecot, account) == {
        "INBOX": {"unsure": {"$General", "$NeedsTriage"}},
        "Billing": {"moved": {"$Billing", "$Urgent"}},
        "Sales": {"gone": {"$Sales"}},
    }
    agent = dovecot.open_client(account)
    try:  # an agent deletes one message for good
        agent.select_folder("Sales")
        agent.delete_messages(agent.search(["ALL"]))
        agent.expunge()
    finally:
        close_client(agent)

    assert relabel(intake.db, "moved", routing, department="sales") == 1
    assert relabel(intake.db, "unsure", routing, department="billing") == 1
    assert relabel(intake.db, "gone", routing, department="billing") == 1
    intake.source.wake()
    wait_until(settled(intake.db, *tags), what="routes made again")

    assert route_states(intake.db) == {"moved": "done", "unsure": "done", "gone": "failed"}
    assert server_view(dovecot, account) == {
        "Sales": {"moved": {"$Sales", "$Urgent"}},  # the urgency keyword stays
        "Billing": {"unsure": {"$Billing"}},  # triage and the old department's keyword are off
    }
    # a second correction of the same message, now of its urgency, only takes a keyword off
    assert relabel(intake.db, "moved", routing, urgency="normal") == 1
    intake.source.wake()
    wait_until(settled(intake.db, "moved"), what="the urgency keyword taken off")
    assert server_view(dovecot, account)["Sales"] == {"moved": {"$Sales"}}
    intake.cycle()  # the sweep of the department folders sees mailcare's own moves
    assert [c[-1] for c in corrections(intake.db)] == ["cli"] * 4, "no correction learned"
    with intake.db.transaction() as conn:  # nothing to do when the route already holds
        pk = conn.execute(
            select(Message.id).where(Message.message_id == "<unsure@customer.example>")
        ).scalar_one()
        assert reroute(conn, pk, routing) == 0


def test_a_relabel_while_the_first_route_runs_is_not_lost(
    dovecot: Dovecot, db_url: str, start_intake: IntakeFactory
) -> None:
    account = dovecot.account()
    dovecot.append_many(account, "INBOX", [make_mail(message_id="<race@customer.example>")])
    intake = start_intake(
        db_url, mailbox_for(dovecot, account, PASSWORD_ENV), account, routing=ROUTING
    )
    # the correction lands after the worker read the route and before it set the keywords
    intake.before["add_flags"] = lambda: relabel(intake.db, "race", ROUTING, department="sales")
    classify(intake.db, "race", "billing", "Billing", "$Billing")
    intake.source.wake()

    def final() -> bool:
        intake.cycle()
        return route_states(intake.db) == {"race": "done"} and "Sales" in server_view(
            dovecot, account
        )

    wait_until(final, what="the corrected route carried out")
    assert not intake.before, "the correction was made while the first route ran"
    assert server_view(dovecot, account) == {"Sales": {"race": {"$Sales"}}}
    # mailcare's own move into Billing, made for the replaced route, taught nothing
    assert [c[-1] for c in corrections(intake.db)] == ["cli"]


def test_an_agents_move_in_one_mailbox_leaves_the_copy_in_another_where_it_was(
    db_url: str,
) -> None:
    db = Database(db_url)
    try:
        pk = store(db, "copies", department="billing")
        with db.transaction() as conn:
            conn.execute(update(Message).where(Message.id == pk).values(route_reason="model"))
            for mailbox in ("a", "b"):
                conn.execute(
                    Delivery.__table__.insert().values(  # type: ignore[attr-defined]
                        message_pk=pk,
                        channel="imap",
                        mailbox=mailbox,
                        delivered_at=NOW,
                        route_state="done",
                        route_folder="Billing",
                        route_keywords="$Billing",
                    )
                )
            record_correction(conn, pk, "department", "sales", "imap-move", NOW)
            assert reroute(conn, pk, ROUTING, located=("a", "Sales")) == 2
        with db.reading() as conn:
            rows = conn.execute(
                select(
                    Delivery.mailbox,
                    Delivery.route_state,
                    Delivery.route_from,
                    Delivery.route_folder,
                    Delivery.route_keywords,
                    Delivery.route_drop,
                )
                .where(Delivery.message_pk == pk, Delivery.channel == "imap")
                .order_by(Delivery.mailbox)
            ).all()
        assert [tuple(row) for row in rows] == [
            ("a", "pending", "Sales", "Sales", "$Sales", "$Billing"),  # keywords only
            ("b", "pending", "Billing", "Sales", "$Sales", "$Billing"),  # moved as well
        ]
    finally:
        db.dispose()
