"""The classify step: abstention to triage, rule overrides, label renames, routes, forwards,
and a model swapped without a restart."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from daemon.app import App, build_app
from daemon.clock import FrozenClock
from daemon.corrections import record_correction, reroute
from daemon.folders import FolderLedger
from daemon.inbox import Arrival, Inbox
from daemon.outbox import OUTBOX
from daemon.tables import Delivery, Message
from tests.helpers import make_mail, settings_for

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = "support@acme.example"

RULES = """
version: 1
routing:
  model: default
  triage_department: triage
  departments:
    billing: {folder: Billing, keywords: [$Billing], forward: billing-team@acme.example}
    sales: {keywords: [$Sales]}
  urgency_keywords: {emergency: [$Urgent]}
  overrides:
    - name: key-account
      when: {sender_domains: [bigcorp.example]}
      department: sales
      urgency: important
labels:
  department: {returns: after_sales}
"""

BILLING = make_mail(
    subject="Charged twice for invoice INV-20931",
    body="Hello, my credit card was charged twice for invoice INV-20931. "
    "Please refund the duplicate payment. Thanks, Mary",
    sender="Mary <mary@globex.example>",
    to=SUPPORT,
    message_id="<billing@globex.example>",
)


def make_app(db_url: str, tmp_path: Path, clock: FrozenClock, rules: str = RULES) -> App:
    (tmp_path / "rules.yaml").write_text(rules, encoding="utf-8")
    models = tmp_path / "models"
    if not models.exists():
        models.mkdir()
        for path in (ROOT / "models").glob("*.*"):
            shutil.copy(path, models / path.name)
    settings = settings_for(
        db_url,
        paths={
            "rules": str(tmp_path / "rules.yaml"),
            "templates": str(ROOT / "templates"),
            "models": str(models),
        },
        relay={"enabled": True, "host": "127.0.0.1", "port": 2525, "tls": "none"},
    )
    return build_app(settings, clock=clock, intake=False, sender=False)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def app(db_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[App]:
    application = make_app(db_url, tmp_path, clock)
    yield application
    application.db.dispose()


def deliver_imap(app: App, *raws: bytes, run: bool = True) -> None:
    """Store as the IMAP worker would (folder support/INBOX), then run the pipeline."""
    ledger = FolderLedger(app.db, app.clock, app.owner, ttl=30)
    folder_id = ledger.ensure("support", "INBOX")
    assert ledger.acquire(folder_id)
    start = ledger.begin_sync(folder_id, uidvalidity=7)
    Inbox(app.db, app.clock).store_imap(
        folder_id=folder_id,
        mailbox="support",
        owner=app.owner,
        uidvalidity=7,
        arrivals=[Arrival(raw, start + n + 1) for n, raw in enumerate(raws)],
        highest_uid=start + len(raws),
    )
    while run and app.runner.run_once():
        pass


def routed(app: App, message_id: str) -> tuple[Any, Any]:
    messages, deliveries = Message.__table__, Delivery.__table__
    with app.db.reading() as conn:
        message = conn.execute(select(messages).where(messages.c.message_id == message_id)).one()
        delivery = conn.execute(
            select(deliveries).where(deliveries.c.message_pk == message.id)
        ).one()
    return message, delivery


def test_a_confident_prediction_routes_and_forwards_once(app: App) -> None:
    deliver_imap(app, BILLING)
    message, delivery = routed(app, "<billing@globex.example>")
    assert message.department == "billing" and not message.triage
    assert message.department_confidence is not None and message.department_confidence > 0.5
    assert message.route_reason.startswith("model: department billing")
    assert (delivery.route_state, delivery.route_folder) == ("pending", "Billing")
    assert "$Billing" in (delivery.route_keywords or "").split()
    with app.db.reading() as conn:
        forwards = conn.execute(select(OUTBOX).where(OUTBOX.c.kind == "forward")).all()
    assert len(forwards) == 1
    raw = bytes(forwards[0].raw)
    assert b"Resent-To: billing-team@acme.example\r\n" in raw
    assert raw.endswith(BILLING), "the original message travels unchanged"
    # processing the message again does not forward it again
    with app.db.transaction() as conn:
        conn.execute(Message.__table__.update().values(state="new"))  # type: ignore[attr-defined]
    while app.runner.run_once():
        pass
    with app.db.reading() as conn:
        assert len(conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.kind == "forward")).all()) == 1


def test_an_unsure_model_sends_the_message_to_triage(app: App, tmp_path: Path) -> None:
    # a label whose threshold is 1.0 never routes automatically (models/README.md)
    metadata_path = tmp_path / "models" / "default.json"
    metadata = json.loads(metadata_path.read_text())
    thresholds = metadata["heads"]["department"]["thresholds"]
    metadata["heads"]["department"]["thresholds"] = {label: 1.0 for label in thresholds}
    metadata_path.write_text(json.dumps(metadata))
    deliver_imap(app, BILLING)
    message, delivery = routed(app, "<billing@globex.example>")
    assert message.triage is True
    assert message.department == "triage"
    assert "model unsure of the department" in message.route_reason
    assert message.route_reason.endswith("to triage department triage")
    assert "$NeedsTriage" in (delivery.route_keywords or "").split()
    with app.db.reading() as conn:
        forwards = conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.kind == "forward")).all()
    assert forwards == [], "an unsure message is not forwarded to a department"


def test_an_override_beats_the_model_and_says_so(app: App) -> None:
    deliver_imap(
        app,
        make_mail(
            subject=BILLING.split(b"Subject: ")[1].split(b"\r\n")[0].decode(),
            body="my card was charged twice for the same invoice, refund please",
            sender="Buyer <buyer@eu.bigcorp.example>",
            to=SUPPORT,
            message_id="<vip@bigcorp.example>",
        ),
    )
    message, delivery = routed(app, "<vip@bigcorp.example>")
    assert (message.department, message.urgency) == ("sales", "important")
    assert message.route_reason.startswith(
        "override key-account (sender domain eu.bigcorp.example)"
    )
    assert delivery.route_keywords == "$Sales"
    assert delivery.route_folder is None


def test_labels_are_renamed_as_rules_yaml_says(app: App) -> None:
    deliver_imap(
        app,
        make_mail(
            subject="Return request for order #4668136",
            body="Hello, I would like to return the headphones from order #4668136, they do "
            "not fit. Please send me a return label and refund the purchase.",
            to=SUPPORT,
            message_id="<return@x.example>",
        ),
    )
    message, _ = routed(app, "<return@x.example>")
    assert message.department == "after_sales"


def test_automated_mail_is_not_classified(app: App) -> None:
    deliver_imap(
        app,
        make_mail(to=SUPPORT, extra={"Auto-Submitted": "auto-replied"}, message_id="<a@x>"),
    )
    message, delivery = routed(app, "<a@x>")
    assert message.department is None
    assert message.route_reason == "automated mail: not classified"
    assert delivery.route_state == "none"


def test_a_retrained_model_file_is_swapped_in_without_a_restart(app: App, tmp_path: Path) -> None:
    deliver_imap(app, BILLING)
    first, _ = routed(app, "<billing@globex.example>")
    assert first.department == "billing"
    # the Chinese government-letters model knows none of these departments
    models = tmp_path / "models"
    for suffix in (".skops", ".json"):
        shutil.copy(models / f"tipdm-zh{suffix}", models / f"default{suffix}.new")
        (models / f"default{suffix}.new").replace(models / f"default{suffix}")
    deliver_imap(app, BILLING.replace(b"<billing@globex.example>", b"<second@globex.example>"))
    second, _ = routed(app, "<second@globex.example>")
    assert second.department != "billing"
    known = {"billing", "sales", "technical_support", "returns", "complaints", "general"}
    assert second.department not in known


def test_rules_yaml_can_switch_the_model(app: App, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES.replace("model: default", "model: nosuch"))
    deliver_imap(app, BILLING)
    message, _ = routed(app, "<billing@globex.example>")
    assert message.department == "billing", "a missing model keeps the one in use"


def test_without_a_model_mail_goes_to_triage_until_one_appears(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    (tmp_path / "models").mkdir()  # empty: the daemon still starts
    application = make_app(db_url, tmp_path, clock)
    try:
        deliver_imap(application, BILLING)
        message, _ = routed(application, "<billing@globex.example>")
        assert (message.department, message.triage) == ("triage", True)
        assert message.route_reason == "no model loaded; to triage department triage"
        for suffix in (".skops", ".json"):
            shutil.copy(ROOT / "models" / f"default{suffix}", tmp_path / "models")
        deliver_imap(
            application, BILLING.replace(b"<billing@globex.example>", b"<later@globex.example>")
        )
        later, _ = routed(application, "<later@globex.example>")
        assert later.department == "billing"
    finally:
        application.db.dispose()


def test_the_reply_uses_the_template_of_the_classified_department(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    rules = RULES + (
        "auto_replies:\n  rules:\n"
        "    - {name: acknowledge, template: acknowledge, from: 'Acme <support@acme.example>'}\n"
    )
    application = make_app(db_url, tmp_path, clock, rules=rules)
    try:
        deliver_imap(
            application,
            make_mail(
                subject="Complaint: third time asking, still no answer about my refund",
                body="This is unacceptable. I have written three times about my refund and "
                "nobody answers. I want to complain about your customer service.",
                to=SUPPORT,
                message_id="<complaint@x.example>",
            ),
        )
        message, _ = routed(application, "<complaint@x.example>")
        assert message.department == "complaints"
        with application.db.reading() as conn:
            raw = conn.execute(select(OUTBOX.c.raw).where(OUTBOX.c.kind == "auto-reply")).scalar()
        assert raw is not None
        assert b"sorry that you had reason to complain" in raw
    finally:
        application.db.dispose()


def test_a_relabel_before_classification_is_kept_and_a_later_one_reroutes(app: App) -> None:
    deliver_imap(app, BILLING, run=False)  # stored, not yet processed
    routing = app.rules.routing
    with app.db.transaction() as conn:
        pk = conn.execute(
            select(Message.id).where(Message.message_id == "<billing@globex.example>")
        ).scalar_one()
        assert record_correction(conn, pk, "department", "sales", "cli", app.clock.now())
        assert reroute(conn, pk, routing) == 0, "the classify step applies it"
    while app.runner.run_once():
        pass
    message, delivery = routed(app, "<billing@globex.example>")
    assert (message.department, message.triage) == ("sales", False)
    assert message.route_reason.startswith(
        "corrected by a person before classification (department sales); model: department"
    )
    assert (delivery.route_state, delivery.route_folder, delivery.route_keywords) == (
        "pending",
        None,
        "$Sales",
    )
    with app.db.reading() as conn:
        forwards = conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.kind == "forward")).all()
    assert forwards == [], "billing's forward is not sent for a message that is sales'"

    # corrected again while that route is still pending: the pending route is replaced
    with app.db.transaction() as conn:
        assert record_correction(conn, pk, "department", "billing", "cli", app.clock.now())
        assert record_correction(conn, pk, "urgency", "emergency", "cli", app.clock.now())
        assert reroute(conn, pk, routing) == 1
    _, delivery = routed(app, "<billing@globex.example>")
    assert (delivery.route_state, delivery.route_folder, delivery.route_from) == (
        "pending",
        "Billing",
        None,
    )
    assert (delivery.route_keywords, delivery.route_drop) == ("$Billing $Urgent", "$Sales")
