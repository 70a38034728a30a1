"""Real-world mail and the support corpus, end to end through Dovecot, LMTP and the runner."""

from __future__ import annotations

import csv
import json
import re
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.app import App, build_app
from daemon.inbox import content_digest, dedup_key
from daemon.message import extract_message_id
from daemon.tables import Attachment, Message
from tests.helpers import mailbox_for, settings_for, states, wait_until
from tests.servers.dovecot import Dovecot

PASSWORD_ENV = "MAILCARE_CORPUS_PW"


def real_world(shared_dir: Path) -> list[tuple[str, bytes]]:
    manifest = shared_dir / "data" / "mail" / "manifest.csv"
    if not manifest.exists():
        pytest.skip(f"{manifest} not found")
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    root = shared_dir.parent
    return [(row["path"], (root / row["path"]).read_bytes()) for row in rows]


def expected_messages(raws: list[bytes]) -> int:
    return len({dedup_key(extract_message_id(r), content_digest(r)) for r in raws})


@pytest.fixture
def app_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[App]]:
    apps: list[App] = []
    yield apps
    for app in apps:
        app.stop()


def finished(app: App, count: int) -> bool:
    now = states(app.db)
    return now.get("done", 0) + now.get("quarantined", 0) == count and sum(now.values()) == count


def assert_nothing_lost(app: App, count: int) -> None:
    wait_until(lambda: finished(app, count), timeout=120, what=f"{count} messages settled")
    with app.db.reading() as conn:
        quarantined = conn.execute(
            select(Message.id, Message.quarantine_reason).where(Message.state == "quarantined")
        ).all()
    assert all(reason for _, reason in quarantined)  # never without a reason
    assert quarantined == []  # and in practice nothing in this corpus needs quarantine


def test_real_world_mail_through_imap(
    shared_dir: Path,
    dovecot: Dovecot,
    db_url: str,
    app_factory: list[App],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = real_world(shared_dir)
    account = dovecot.account()
    raws = [raw for _, raw in files]
    dovecot.append_many(account, "INBOX", raws)
    monkeypatch.setenv(PASSWORD_ENV, account.password)
    app = build_app(settings_for(db_url, [mailbox_for(dovecot, account, PASSWORD_ENV)]))
    app_factory.append(app)
    app.start()
    assert_nothing_lost(app, expected_messages(raws))


def test_real_world_mail_through_lmtp(
    shared_dir: Path, db_url: str, app_factory: list[App]
) -> None:
    files = real_world(shared_dir)
    app = build_app(
        settings_for(
            db_url, intake={"enabled": True, "port": 0, "recipients": ["support@acme.example"]}
        )
    )
    app_factory.append(app)
    app.start()
    assert app.listener is not None
    sent = []
    with smtplib.LMTP("127.0.0.1", app.listener.port, timeout=30) as client:
        for name, raw in files:
            refused = client.sendmail("mta@relay.example", ["support@acme.example"], raw)
            assert refused == {}, name
            sent.append(raw)
    # smtplib sends bytes as they are (bare LF, bare CR) and ends the data with CRLF
    normalised = [raw if raw.endswith(b"\r\n") else raw + b"\r\n" for raw in sent]
    assert_nothing_lost(app, expected_messages(normalised))


def make_corpus(shared_dir: Path, tmp_path: Path, count: int) -> tuple[Path, list[dict]]:
    script = shared_dir / "corpus" / "make_corpus.py"
    if not script.exists():
        pytest.skip(f"{script} not found")
    out = tmp_path / "corpus"
    subprocess.run(
        [sys.executable, str(script), str(count), "42", str(out)], check=True, capture_output=True
    )
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return out, [json.loads(line) for line in lines]


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_support_corpus_fidelity(
    shared_dir: Path,
    dovecot: Dovecot,
    db_url: str,
    tmp_path: Path,
    app_factory: list[App],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory, manifest = make_corpus(shared_dir, tmp_path, 1000)
    raws = [(directory / row["file"]).read_bytes() for row in manifest]
    account = dovecot.account()
    dovecot.append_many(account, "INBOX", raws)
    monkeypatch.setenv(PASSWORD_ENV, account.password)
    settings = settings_for(
        db_url,
        [mailbox_for(dovecot, account, PASSWORD_ENV)],
        intake={"enabled": True, "port": 0, "recipients": ["support@helpdesk.example"]},
    )
    app = build_app(settings)
    app_factory.append(app)
    app.start()
    wait_until(lambda: states(app.db).get("done") == 1000, timeout=120, what="1000 processed")

    # the same Message-IDs arriving again, by IMAP and by LMTP, store nothing new
    dovecot.append_many(account, "INBOX", raws[:50])
    assert app.listener is not None
    with smtplib.LMTP("127.0.0.1", app.listener.port, timeout=30) as client:
        for raw in raws[50:100]:
            client.sendmail("mta@relay.example", ["support@helpdesk.example"], raw)
    wait_until(
        lambda: app.imap.workers[0].ledger.state(app.imap.workers[0].folder_id).last_uid >= 1050,
        what="the repeated messages fetched",
    )
    assert states(app.db) == {"done": 1000}

    with app.db.reading() as conn:
        rows = {r.message_id: r for r in conn.execute(select(Message)).all()}
        attachments = {}
        for pk, name, size in conn.execute(
            select(Attachment.message_pk, Attachment.filename, Attachment.size)
        ):
            attachments.setdefault(pk, []).append((name, size))
    by_id = {m["message_id"]: m for m in manifest}
    problems = []
    for meta in manifest:
        row = rows[meta["message_id"]]
        body = row.body_text or ""
        checks = {
            "subject": row.subject == meta["subject"],
            "sender": row.from_addr == meta["from"].lower(),
            "probe": squash(meta["probe"]) in squash(body),
            "win_path": meta["win_path"] is None or meta["win_path"] in body,
            "language": row.language == meta["lang"],
            "attachment": (
                attachments.get(row.id, [])
                == (
                    [(meta["attachment"]["name"], meta["attachment"]["size"])]
                    if meta["attachment"]
                    else []
                )
            ),
            "thread": meta["reply_to"] is None
            or row.conversation_id == rows[by_id[meta["reply_to"]]["message_id"]].conversation_id,
        }
        problems += [f"{meta['file']}: {name}" for name, ok in checks.items() if not ok]
    assert problems == []
