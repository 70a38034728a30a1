"""The mailcare command, run as users run it: a real process with a config file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.database import SCHEMA_REVISION, Database, revisions
from tests.helpers import make_mail, states, wait_until
from tests.servers.dovecot import Dovecot
from tests.servers.imap import Account

ROOT = Path(__file__).resolve().parent.parent


def mailcare(
    *args: str, config: Path | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "daemon.cli"]
    if config is not None:
        command += ["--config", str(config)]
    result = subprocess.run(
        [*command, *args],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mailcare {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def write_config(tmp_path: Path, db_url: str, extra: str = "", processes: int = 1) -> Path:
    path = tmp_path / "mailcare.yaml"
    path.write_text(
        f"database_url: {db_url}\nlog_level: INFO\nrunner: {{processes: {processes}}}\n{extra}"
    )
    return path


def mailbox_config(
    tmp_path: Path, db_url: str, dovecot: Dovecot, account: Account, processes: int = 1
) -> Path:
    """Settings for one Dovecot mailbox whose password is in $CLI_TEST_PW."""
    return write_config(
        tmp_path,
        db_url,
        extra=(
            "mailboxes:\n"
            f"  - {{name: support, host: 127.0.0.1, port: {dovecot.imap_port}, tls: none,\n"
            f"     username: {account.username}, password: {{env: CLI_TEST_PW}}}}\n"
        ),
        processes=processes,
    )


def test_schema_revision_constant_matches_the_migrations(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    assert revisions(db.engine) == (None, SCHEMA_REVISION)
    db.upgrade()
    assert revisions(db.engine) == (SCHEMA_REVISION, SCHEMA_REVISION)
    db.check_schema()


def test_models_and_migrations_agree(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from daemon.tables import Base

    db = Database(db_url)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    db.dispose()
    assert diff == []


def test_db_upgrade_then_status(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'm.sqlite3'}")
    refused = mailcare("status", config=config, check=False)
    assert refused.returncode == 1 and "mailcare db upgrade" in refused.stderr
    assert "up to date" in mailcare("db", "upgrade", config=config).stdout
    mailcare("db", "upgrade", config=config)  # twice is harmless
    report = json.loads(mailcare("status", "--json", config=config).stdout)
    assert report == {
        "folders": [],
        "queue": {"new": 0, "processing": 0, "done": 0, "quarantined": 0},
        "outbox": {"queued": 0, "sending": 0, "sent": 0, "failed": 0, "uncertain": 0},
        "sla": {"open": 0, "paused": 0, "overdue": 0},
        "campaigns": {
            "queued": 0,
            "claimed": 0,
            "sending": 0,
            "sent": 0,
            "failed": 0,
            "uncertain": 0,
        },
    }


def test_ingest_quarantine_list_and_retry(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'm.sqlite3'}")
    mailcare("db", "upgrade", config=config)
    eml = tmp_path / "a.eml"
    eml.write_bytes(make_mail())
    assert "1 stored, 0 already known" in mailcare("ingest", str(eml), config=config).stdout
    assert "0 stored, 1 already known" in mailcare("ingest", str(eml), config=config).stdout
    db = Database(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    with db.transaction() as conn:  # as if a step had failed on it
        conn.exec_driver_sql(
            "UPDATE messages SET state='quarantined', quarantine_reason='parse: ValueError: test'"
        )
    listed = json.loads(mailcare("quarantine", "list", "--json", config=config).stdout)
    assert [(q["id"], q["reason"]) for q in listed] == [(1, "parse: ValueError: test")]
    shown = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), "quarantine", "show", "1"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert shown.stdout == eml.read_bytes()
    assert "1 message(s) queued" in mailcare("quarantine", "retry", "--all", config=config).stdout
    assert states(db) == {"new": 1}
    db.dispose()


def test_rules_check_reports_line_and_column(tmp_path: Path) -> None:
    assert "ok" in mailcare("rules", "check", str(ROOT / "rules.yaml")).stdout
    bad = tmp_path / "rules.yaml"
    bad.write_text("version: 1\nconversations:\n  ticket_prefix: 'no spaces allowed'\n")
    result = mailcare("rules", "check", str(bad), check=False)
    assert result.returncode == 1
    assert f"{bad}:3:3: conversations.ticket_prefix" in result.stderr


def test_run_ingests_and_stops_cleanly_on_sigterm(dovecot: Dovecot, tmp_path: Path) -> None:
    account = dovecot.account()
    dovecot.lmtp_deliver(account, make_mail(message_id="<cli@x>"))
    db_url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    config = mailbox_config(tmp_path, db_url, dovecot, account)
    mailcare("db", "upgrade", config=config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), "run"],
        cwd=ROOT,
        env={**os.environ, "CLI_TEST_PW": account.password},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    db = Database(db_url)
    try:
        wait_until(lambda: states(db).get("done") == 1, what="the message processed")
        status = json.loads(mailcare("status", "--json", config=config).stdout)
        # the intake folder, and the Sent folder the SLA clocks watch for agents' replies
        folders = {f["folder"]: f for f in status["folders"]}
        assert sorted(folders) == ["INBOX", "Sent"]
        folder = folders["INBOX"]
        assert folder["mailbox"] == "support" and folder["last_uid"] == 1
        assert folder["lease_owner"] is not None and folder["last_error"] is None
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "stopped cleanly" in output
    released = json.loads(mailcare("status", "--json", config=config).stdout)
    # the lease was handed back
    assert [f["lease_owner"] for f in released["folders"] if f["folder"] == "INBOX"] == [None]
    db.dispose()


def test_run_refuses_a_bad_config_clearly(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sqlite:///x.sqlite3", extra="mailboxes: [{name: a}]\n")
    result = mailcare("run", config=config, check=False)
    assert result.returncode == 1
    assert "mailboxes.0.host: Field required" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_runs_from_a_clean_environment(tmp_path: Path) -> None:
    result = mailcare("demo", "--workdir", str(tmp_path / "demo"), env={"MAILCARE_CONFIG": ""})
    out = result.stdout
    assert "0 quarantined" in out
    # 31 sample messages and 2 machine messages (an out-of-office reply and a bounce)
    assert "stored and processed 33 distinct messages" in out
    assert "Conversations (29)" in out  # 4 follow-ups joined their threads, 1 copy merged
    assert "开票信息.csv (text/csv" in out
    # one auto-reply per new request: 27 people, none to the two machines
    assert "Auto-replies sent to the relay: 27" in out
    assert "automated mail (auto-reply)" in out
    assert "automated mail (bounce)" in out
    # an agent's reply through the submission port is a first response; a resolution, a survey
    assert "an agent answered through the submission port; first response recorded" in out
    assert "resolved; satisfaction survey sent to chloe.dubois@northwind.example" in out
    assert "standard    27" in out  # the SLA report's policy row
    # a newsletter once to each of 4 subscribers; one leaves by one-click POST, one by mail
    assert "(4 subscribers): 4 messages, 4 recipients, run finished" in out
    assert "one-click POST: 200" in out
    assert "suppressed: anna.schmidt@customer.example (list:news, unsubscribe)" in out
    assert "suppressed: bob.jones@customer.example (list:news, unsubscribe)" in out
    # the outbox at the end: 27 auto-replies, the agent's reply and the survey; the
    # unsubscribe mail got no auto-reply (campaign mail does not go through the outbox)
    outbox = re.search(r"outbox: (\d+) queued, (\d+) sending, (\d+) sent", out)
    assert outbox is not None and sum(int(n) for n in outbox.groups()) == 29, out


def test_classifier_commands_run_through_mailcare(tmp_path: Path) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(
        make_mail(
            subject="Charged twice for invoice 4711",
            body="My card was charged twice for the same invoice. Refund?",
        )
    )
    result = mailcare("classify", str(eml), "--json")
    verdict = json.loads(result.stdout)
    assert verdict["department"] == "billing"
    # other commands (run above all) do not pay for importing scikit-learn
    imports = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "daemon.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stderr
    assert "sklearn" not in imports and "classify" in mailcare("--help").stdout


def session_processes(session: int) -> list[int]:
    """PIDs of live (not zombie) processes in a session."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("ending", ["sigterm", "sigkill", "runner-dies"])
def test_runner_processes_end_with_the_main_process(
    dovecot: Dovecot, tmp_path: Path, ending: str
) -> None:
    account = dovecot.account()
    for n in range(20):
        dovecot.lmtp_deliver(account, make_mail(message_id=f"<proc{n}@x>"))
    db_url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    config = mailbox_config(tmp_path, db_url, dovecot, account, processes=2)
    mailcare("db", "upgrade", config=config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), "run"],
        cwd=ROOT,
        env={**os.environ, "CLI_TEST_PW": account.password},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = Database(db_url)
    try:
        wait_until(lambda: states(db).get("done") == 20, what="20 processed by the runners")
        # the main process and two runner processes forked from it
        runners = [pid for pid in session_processes(proc.pid) if pid != proc.pid]
        assert len(runners) == 2
        if ending == "runner-dies":
            os.kill(runners[0], signal.SIGKILL)  # a replacement comes from a fork server
            wait_until(
                lambda: len(set(session_processes(proc.pid)) - {runners[0]}) >= 4,
                what="a fork server and a new runner process",
            )
            os.kill(runners[1], signal.SIGKILL)  # no original runner is left: replacements work
            dovecot.lmtp_deliver(account, make_mail(message_id="<after-replacement@x>"))
            wait_until(lambda: states(db).get("done") == 21, what="mail processed again")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        elif ending == "sigterm":
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        else:
            proc.kill()  # only the main process: its runners must not live on
            proc.wait(30)
        wait_until(
            lambda: session_processes(proc.pid) == [],
            timeout=15,
            what="every process of the daemon gone",
        )
    finally:
        for pid in session_processes(proc.pid):
            os.kill(pid, signal.SIGKILL)
        db.dispose()
