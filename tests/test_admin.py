"""The admin commands (inspect, outbox, suppressions, faq, templates, rules), run as users run
them: `python -m daemon.cli --config mailcare.yaml ...` in a subprocess, on real databases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from daemon.admin import faq_stats
from daemon.clock import SystemClock
from daemon.database import Database
from daemon.inbox import Inbox
from daemon.outbox import OUTBOX, Outbox, OutgoingMail
from daemon.replies import OFFERS
from daemon.settings import CONFIG_ENV, DATABASE_ENV
from daemon.suppressions import SUPPRESSIONS
from daemon.tables import Message
from tests.helpers import make_mail

ROOT = Path(__file__).resolve().parent.parent
INSPECT_KEYS = {"message", "automated", "bounce", "feedback", "classification", "auto_reply"}
SUPPORT = "support@example.com"  # the `from` of the shipped rule `acknowledge`


def _command(args: tuple[str, ...], config: Path | None) -> list[str]:
    prefix = [sys.executable, "-m", "daemon.cli"]
    return [*prefix, "--config", str(config), *args] if config else [*prefix, *args]


def _env() -> dict[str, str]:
    """The environment without settings overrides, so that only the config file counts."""
    return {k: v for k, v in os.environ.items() if k not in (CONFIG_ENV, DATABASE_ENV)}


def mailcare(
    *args: str, config: Path | None = None, code: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run the mailcare command and check its exit status."""
    result = subprocess.run(
        _command(args, config),
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        text=True,
        env=_env(),
    )
    if result.returncode != code:
        raise AssertionError(
            f"mailcare {' '.join(args)} exited {result.returncode}, not {code}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


def write_settings(
    directory: Path, db_url: str, models: Path = ROOT / "models", name: str = "mailcare.yaml"
) -> Path:
    """A mailcare.yaml with the shipped rules, templates and models and this database."""
    path = directory / name
    path.write_text(
        f"database_url: {json.dumps(db_url)}\n"
        "paths:\n"
        f"  rules: {json.dumps(str(ROOT / 'rules.yaml'))}\n"
        f"  templates: {json.dumps(str(ROOT / 'templates'))}\n"
        f"  models: {json.dumps(str(models))}\n"
    )
    return path


# --- inspect ------------------------------------------------------------------------------

DSN_BOUNCE = b"""\
From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>\r
To: support@example.com\r
Subject: Undelivered Mail Returned to Sender\r
Date: Fri, 20 Nov 2026 09:31:00 +0000\r
Message-ID: <dsn1@mx.customer.example>\r
Auto-Submitted: auto-replied\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"\r
\r
--BOUNDARY\r
Content-Type: text/plain; charset=us-ascii\r
\r
Your message could not be delivered to one or more recipients.\r
\r
--BOUNDARY\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.customer.example\r
Arrival-Date: Fri, 20 Nov 2026 09:30:59 +0000\r
\r
Final-Recipient: rfc822; gone@customer.example\r
Original-Recipient: rfc822;gone@customer.example\r
Action: failed\r
Status: 5.1.1\r
Remote-MTA: dns; mx.customer.example\r
Diagnostic-Code: smtp; 550 5.1.1 <gone@customer.example>: Recipient address rejected:\r
 User unknown\r
\r
--BOUNDARY\r
Content-Type: text/rfc822-headers\r
\r
From: Example Ltd Customer Service <support@example.com>\r
To: gone@customer.example\r
Subject: [MC#7] Received: hello\r
Message-ID: <reply7@example.com>\r
\r
--BOUNDARY--\r
"""

ORDINARY = make_mail(
    subject="My invoice shows the wrong amount",
    body="Hello,\n\nmy invoice shows the wrong amount. Can I get a corrected copy of the "
    "invoice?\n\nThanks,\nAnna",
    to=SUPPORT,
)

# name: (mail, options, whether the classifier runs: it costs ~1 s and changes nothing here)
INSPECTED: dict[str, tuple[bytes, tuple[str, ...], bool]] = {
    "ordinary": (ORDINARY, ("--json",), True),
    "ordinary-text": (ORDINARY, (), False),
    "bounce": (DSN_BOUNCE, ("--json",), False),
    "auto-replied": (
        make_mail(
            subject="Out of office: My invoice",
            body="I am out of the office until Monday.",
            to=SUPPORT,
            message_id="<ooo@customer.example>",
            extra={"Auto-Submitted": "auto-replied"},
        ),
        ("--json",),
        False,
    ),
    "chinese": (
        make_mail(
            subject="发票金额不对",
            body="您好，\n\n我的订单发票金额不对，请帮我重新开具发票。谢谢！\n\n王芳",
            sender="王芳 <wang.fang@example.cn>",
            to=SUPPORT,
            message_id="<zh1@example.cn>",
        ),
        ("--json",),
        True,
    ),
    "bcc": (
        make_mail(to="Someone Else <someone@elsewhere.example>", message_id="<bcc@x.example>"),
        ("--json",),
        False,
    ),
}


@pytest.fixture(scope="module")
def inspected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`mailcare inspect` of every INSPECTED mail, run side by side (each takes a second)."""
    directory = tmp_path_factory.mktemp("inspect")
    url = f"sqlite:///{directory / 'db.sqlite3'}"
    config = write_settings(directory, url)
    no_model = write_settings(directory, url, models=directory / "none", name="no-model.yaml")
    mailcare("db", "upgrade", config=config)
    running: dict[str, subprocess.Popen[str]] = {}
    for name, (raw, options, classify) in INSPECTED.items():
        eml = directory / f"{name}.eml"
        eml.write_bytes(raw)
        running[name] = subprocess.Popen(
            _command(("inspect", str(eml), *options), config if classify else no_model),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
    reports: dict[str, Any] = {}
    try:
        for name, proc in running.items():
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"inspect {name} exited {proc.returncode}:\n{out}{err}"
            assert "database not consulted" not in err
            reports[name] = out if name.endswith("-text") else json.loads(out)
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return reports


def test_inspect_json_keys_are_the_documented_interface(inspected: dict[str, Any]) -> None:
    for name, report in inspected.items():
        if not name.endswith("-text"):
            assert set(report) == INSPECT_KEYS, name


def test_inspect_ordinary_customer_mail_would_be_acknowledged(inspected: dict[str, Any]) -> None:
    report = inspected["ordinary"]
    assert report["message"]["from"] == "anna.berg@customer.example"
    assert report["message"]["language"] == "en"
    assert report["automated"] == {
        "kind": "human",
        "automated": False,
        "reason": "no automated-mail signal",
    }
    assert report["bounce"] is None and report["feedback"] is None
    reply = report["auto_reply"]
    assert reply["would_send"] is True
    assert reply["rule"] == "acknowledge" and reply["reason"] == "rule acknowledge"
    assert reply["recipient"] == "anna.berg@customer.example"
    assert reply["checked_database"] is True
    template = reply["template"]
    assert template.startswith("replies/acknowledge/") and template.endswith(".txt")
    assert (ROOT / "templates" / template).is_file()
    assert reply["subject"] and "My invoice shows the wrong amount" in reply["subject"]
    if (ROOT / "models" / "default.skops").exists():
        assert report["classification"]["model"] == str(ROOT / "models" / "default")


def test_inspect_text_output(inspected: dict[str, Any]) -> None:
    lines = inspected["ordinary-text"].splitlines()
    assert any(line.startswith("automated ") and "human" in line for line in lines)
    assert any(line.startswith("auto-reply ") and "yes: rule acknowledge" in line for line in lines)
    assert "subject      My invoice shows the wrong amount" in lines


def test_inspect_dsn_bounce(inspected: dict[str, Any]) -> None:
    report = inspected["bounce"]
    assert report["automated"]["kind"] == "bounce" and report["automated"]["automated"] is True
    bounce = report["bounce"]
    assert bounce["severity"] == "hard"
    assert bounce["format"] == "rfc3464"
    assert bounce["original_message_id"] == "<reply7@example.com>"
    [recipient] = bounce["recipients"]
    assert recipient["address"] == "gone@customer.example"
    assert recipient["status"] == "5.1.1" and recipient["hard"] is True
    reply = report["auto_reply"]
    assert reply["would_send"] is False
    assert reply["reason"].startswith("automated mail")
    assert reply["template"] is None and reply["checked_database"] is False


def test_inspect_auto_submitted_mail_is_not_answered(inspected: dict[str, Any]) -> None:
    report = inspected["auto-replied"]
    assert report["automated"]["kind"] == "auto-reply"
    assert "Auto-Submitted" in report["automated"]["reason"]
    assert report["bounce"] is None
    assert report["auto_reply"]["would_send"] is False
    assert report["auto_reply"]["reason"].startswith("automated mail (auto-reply)")


def test_inspect_chinese_mail_gets_the_chinese_variant(inspected: dict[str, Any]) -> None:
    report = inspected["chinese"]
    assert report["message"]["language"] == "zh"
    assert report["automated"]["kind"] == "human"
    reply = report["auto_reply"]
    assert reply["would_send"] is True
    assert reply["template"] == "replies/acknowledge/zh.txt"
    assert "发票金额不对" in reply["subject"]


def test_inspect_mail_we_were_only_bccd_on(inspected: dict[str, Any]) -> None:
    report = inspected["bcc"]
    assert report["automated"]["kind"] == "human"
    reply = report["auto_reply"]
    assert reply["would_send"] is False and reply["recipient"] is None
    assert "Bcc" in reply["reason"]


# --- suppressions -------------------------------------------------------------------------


def test_suppressions_add_list_remove_and_inspect(db_url: str, tmp_path: Path) -> None:
    config = write_settings(tmp_path, db_url, models=tmp_path / "no-models")
    added = mailcare(
        "suppressions", "add", "Bob@Customer.Example", "--note", "asked us", config=config
    )
    again = mailcare("suppressions", "add", "bob@customer.example", config=config)
    assert again.stdout.strip() == "bob@customer.example: already suppressed"
    [row] = json.loads(mailcare("suppressions", "list", "--json", config=config).stdout)
    assert row["address"] == "bob@customer.example"
    assert (row["reason"], row["detail"], row["message_pk"]) == ("manual", "asked us", None)
    assert datetime.fromisoformat(row["created_at"]).tzinfo is not None

    eml = tmp_path / "bob.eml"
    eml.write_bytes(make_mail(sender="Bob <bob@customer.example>", to=SUPPORT))
    report = json.loads(mailcare("inspect", str(eml), "--json", config=config).stdout)
    reply = report["auto_reply"]
    assert reply["would_send"] is False
    assert reply["reason"] == "bob@customer.example is suppressed (manual)"
    assert reply["checked_database"] is True

    removed = mailcare("suppressions", "remove", "BOB@customer.example", config=config)
    assert removed.stdout.strip() == "BOB@customer.example: removed"
    unknown = mailcare("suppressions", "remove", "bob@customer.example", config=config, code=1)
    assert "was not suppressed" in unknown.stdout
    db = Database(db_url)
    with db.reading() as conn:
        assert conn.execute(select(SUPPRESSIONS.c.address)).all() == []
    db.dispose()

    assert added.stdout.strip() == "Bob@Customer.Example: suppressed"
    refused = mailcare("suppressions", "add", "not-an-address", config=config, code=2)
    assert "not an e-mail address" in refused.stderr


# --- outbox -------------------------------------------------------------------------------


def _outgoing(n: int) -> OutgoingMail:
    return OutgoingMail(
        key=f"test:{n}",
        kind="auto-reply",
        message_id=f"<out{n}@example.com>",
        mail_from=SUPPORT,
        recipients=(f"customer{n}@customer.example",),
        raw=b"Subject: test\r\n\r\nbody\r\n",
        rule="acknowledge",
    )


def test_outbox_list_and_resend(db_url: str, tmp_path: Path) -> None:
    db = Database(db_url)
    with db.transaction() as conn:
        Outbox(db, SystemClock(), "test").enqueue(conn, [_outgoing(n) for n in (1, 2, 3)])
        ids = dict(conn.execute(select(OUTBOX.c.key, OUTBOX.c.id)).all())
        uncertain, failed = ids["test:2"], ids["test:3"]
        conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id == uncertain)
            .values(state="uncertain", last_error="no reply from the relay")
        )
        conn.execute(update(OUTBOX).where(OUTBOX.c.id == failed).values(state="failed"))
    config = write_settings(tmp_path, db_url)
    try:
        listed = json.loads(
            mailcare("outbox", "list", "--state", "uncertain", "--json", config=config).stdout
        )
        assert listed["counts"] == {"queued": 1, "uncertain": 1, "failed": 1}
        [row] = listed["rows"]
        assert row["id"] == uncertain and row["state"] == "uncertain"
        assert row["recipients"] == ["customer2@customer.example"]
        assert row["message_id"] == "<out2@example.com>" and row["kind"] == "auto-reply"
        assert row["last_error"] == "no reply from the relay"
        if db.is_sqlite:  # neither depends on the backend
            text = mailcare("outbox", "list", config=config).stdout.splitlines()
            assert text[0] == "failed: 1  queued: 1  uncertain: 1"
            assert [line.split("\t")[:3] for line in text[1:]] == [
                [str(ids[f"test:{n}"]), state, "auto-reply"]
                for n, state in ((3, "failed"), (2, "uncertain"), (1, "queued"))
            ]
            refused = mailcare("outbox", "resend", config=config, code=2)
            assert "give outbox ids or --all" in refused.stderr

        resent = mailcare("outbox", "resend", str(uncertain), config=config).stdout
        assert resent.startswith("1 message(s) queued")
        assert mailcare("outbox", "resend", "--all", config=config).stdout.startswith("0 ")
        with db.reading() as conn:
            states = dict(conn.execute(select(OUTBOX.c.id, OUTBOX.c.state)).all())
        assert states == {ids["test:1"]: "queued", uncertain: "queued", failed: "failed"}
        again = mailcare("outbox", "resend", "--all", "--failed", config=config).stdout
        assert again.startswith("1 message(s) queued")
        with db.reading() as conn:
            rows = conn.execute(select(OUTBOX.c.state, OUTBOX.c.finished_at)).all()
        assert rows == [("queued", None)] * 3
    finally:
        db.dispose()


# --- faq stats ----------------------------------------------------------------------------

# (entry, department, offered_at): two months, two entries, departments and none
OFFERED = [
    ("invoice-copy", "billing", datetime(2026, 1, 5, 10, 0, tzinfo=UTC)),
    ("invoice-copy", "billing", datetime(2026, 1, 20, 8, 0, tzinfo=UTC)),
    # late on the last day of January in UTC, February in Berlin or Shanghai
    ("invoice-copy", "billing", datetime(2026, 1, 31, 23, 30, tzinfo=UTC)),
    ("refund-policy", "billing", datetime(2026, 1, 12, 9, 0, tzinfo=UTC)),
    ("invoice-copy", None, datetime(2026, 1, 14, 9, 0, tzinfo=UTC)),
    ("refund-policy", "sales", datetime(2026, 2, 1, 0, 30, tzinfo=UTC)),
    ("refund-policy", "sales", datetime(2026, 2, 27, 16, 0, tzinfo=UTC)),
    ("invoice-copy", "billing", datetime(2026, 2, 3, 12, 0, tzinfo=UTC)),
]
FEBRUARY = [
    {"entry": "refund-policy", "department": "sales", "month": "2026-02", "offers": 2},
    {"entry": "invoice-copy", "department": "billing", "month": "2026-02", "offers": 1},
]
ALL_MONTHS = [
    {"entry": "invoice-copy", "department": "billing", "month": "2026-01", "offers": 3},
    {"entry": "invoice-copy", "department": None, "month": "2026-01", "offers": 1},
    {"entry": "refund-policy", "department": "billing", "month": "2026-01", "offers": 1},
    *FEBRUARY,
]


@pytest.fixture
def offers_db(db_url: str) -> Iterator[Database]:
    """db_url with OFFERED, one stored message per offer (an offer belongs to a reply)."""
    db = Database(db_url)
    inbox = Inbox(db)
    for n in range(len(OFFERED)):
        raw = make_mail(message_id=f"<faq{n}@customer.example>", to=SUPPORT)
        inbox.store_delivered(raw, channel="file", envelope_from=None, recipients=["file"])
    with db.transaction() as conn:
        pks = list(conn.execute(select(Message.id).order_by(Message.id)).scalars())
        conn.execute(
            insert(OFFERS),
            [
                {
                    "message_pk": pk,
                    "entry": entry,
                    "department": department,
                    "language": "en",
                    "score": 0.5,
                    "offered_at": when,
                }
                for pk, (entry, department, when) in zip(pks, OFFERED, strict=True)
            ],
        )
    try:
        yield db
    finally:
        db.dispose()


def test_faq_stats_per_month_department_and_entry(offers_db: Database, tmp_path: Path) -> None:
    assert faq_stats(offers_db, None) == ALL_MONTHS
    assert faq_stats(offers_db, datetime(2026, 2, 1, tzinfo=UTC)) == FEBRUARY
    url = offers_db.engine.url
    if offers_db.is_postgresql:
        # months are UTC months whatever the session's time zone (as on SQLite)
        url = url.update_query_dict({"options": "-c timezone=Asia/Shanghai"})
    config = write_settings(tmp_path, url.render_as_string(hide_password=False))
    assert json.loads(mailcare("faq", "stats", "--json", config=config).stdout) == ALL_MONTHS
    if offers_db.is_sqlite:  # the text form is the same on both backends
        since = mailcare("faq", "stats", "--since", "2026-01-14", config=config).stdout
        assert since.splitlines() == [
            "2026-01\tbilling\t2\tinvoice-copy",
            "2026-01\t-\t1\tinvoice-copy",
            "2026-02\tsales\t2\trefund-policy",
            "2026-02\tbilling\t1\tinvoice-copy",
        ]


# --- templates check ----------------------------------------------------------------------


def test_templates_check_shipped_templates(tmp_path: Path) -> None:
    config = write_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite3'}")
    result = mailcare("templates", "check", config=config)
    assert result.stdout.splitlines()[-1] == f"{ROOT / 'templates'}: 0 error(s), 0 warning(s)"


def test_templates_check_names_file_and_line_of_errors(tmp_path: Path) -> None:
    root = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", root)
    broken = root / "replies" / "broken"
    broken.mkdir()
    (broken / "default.txt").write_text(
        "Subject: {{ ticket }} Received\n\nHello {{ customer.name }},\n\n{{ no_such_thing }}\n"
    )
    (broken / "en.txt").write_text(
        "Subject: {{ ticket }} Received\n\nHello,\n{% if faq %}\nsee {{ ticket }}\n"
    )
    result = mailcare("templates", "check", str(root), code=1)
    lines = result.stdout.splitlines()
    assert f"replies/broken/default.txt: error: {broken / 'default.txt'}:5: undefined:" in (
        result.stdout
    )
    assert "'no_such_thing' is undefined" in result.stdout
    assert f"replies/broken/en.txt: error: {broken / 'en.txt'}:5: syntax error:" in result.stdout
    assert lines[-1] == f"{root}: 2 error(s), 0 warning(s)"


def test_templates_check_renders_chinese_variants_with_chinese_sample(tmp_path: Path) -> None:
    """templates/README.md: every variant is rendered with sample data, English and Chinese."""
    hello = tmp_path / "replies" / "hello"
    hello.mkdir(parents=True)
    (hello / "default.txt").write_text("Subject: {{ ticket }} Hello\n\nHello {{ ticket }}\n")
    (hello / "zh.txt").write_text(
        "Subject: {{ ticket }} 您好\n\n"
        '{% if language == "zh" %}您好 {{ ticket }}{% else %}{{ english_sample }}{% endif %}\n'
    )
    assert "0 error(s)" in mailcare("templates", "check", str(tmp_path)).stdout


# --- rules check and schema ---------------------------------------------------------------


def _rules_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    config = write_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite3'}")
    rules = tmp_path / "rules.yaml"
    rules.write_text(text)
    return mailcare("rules", "check", str(rules), config=config, code=1)


RULE = (
    "version: 1\nauto_replies:\n  rules:\n    - name: ack\n      from: 'S <support@example.com>'\n"
)


def test_rules_check_shipped_rules(tmp_path: Path) -> None:
    config = write_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite3'}")
    assert mailcare("rules", "check", config=config).stdout == f"{ROOT / 'rules.yaml'}: ok\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "version: 1\nauto_replies:\n  limits:\n    max_per_hour: lots\n",
            "{path}:4:5: auto_replies.limits.max_per_hour: Input should be a valid integer",
        ),
        ("version: 1\nauto_replies: [\n  enabled: true\n", "{path}:4:1: YAML syntax error"),
        (
            RULE + "      template: nosuch\n",
            "{path}: auto_replies.rules[ack].template: no templates/replies/nosuch/",
        ),
        (
            RULE + "      template: acknowledge\n      calendar: nosuch\n",
            "{path}:1:1: (top level): Value error, auto_replies rule ack: unknown calendar "
            "'nosuch'",
        ),
    ],
    ids=["validation", "yaml-syntax", "missing-template", "unknown-calendar"],
)
def test_rules_check_reports_problems(tmp_path: Path, text: str, message: str) -> None:
    result = _rules_check(tmp_path, text)
    assert message.format(path=tmp_path / "rules.yaml") in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_rules_schema_matches_the_committed_file() -> None:
    printed = json.loads(mailcare("rules", "schema").stdout)
    committed = json.loads((ROOT / "daemon" / "rules.schema.json").read_text())
    assert printed == committed, "regenerate: mailcare rules schema > daemon/rules.schema.json"
    assert printed["$schema"].startswith("https://json-schema.org/")
    assert {"auto_replies", "calendars", "identity"} <= set(printed["properties"])
    first_line = (ROOT / "rules.yaml").read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=daemon/rules.schema.json"
