"""The server fixtures work against the real servers they start."""

from __future__ import annotations

import imaplib
import os
import smtplib
import ssl
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.servers import REQUIRE_ENV, Account
from tests.servers import imap as imap_helpers
from tests.servers.dovecot import DIR_PREFIX, Dovecot, remove_stale_directories
from tests.servers.imap import close_client, expand_uid_set, wait_for_line
from tests.servers.pymap import PymapServer
from tests.servers.smtp_sink import SmtpSink

ImapServer = Dovecot | PymapServer


def message(subject: str = "hello", body: str = "body") -> bytes:
    """A small RFC 5322 message with CRLF line ends."""
    return (
        f"From: customer@example.test\r\nTo: support@example.test\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\n{body}\r\n"
    ).encode()


# -- any IMAP server ---------------------------------------------------------------------


def test_login_append_fetch(imap_server: ImapServer, imap_account: Account) -> None:
    raw = message("append-fetch")
    uid = imap_server.append(imap_account, "INBOX", raw)
    assert imap_server.fetch_all(imap_account, "INBOX") == {uid: raw}


def test_accounts_are_fresh(imap_server: ImapServer) -> None:
    first, second = imap_server.account(), imap_server.account()
    assert first != second
    imap_server.append(first, "INBOX", message())
    assert imap_server.fetch_all(second, "INBOX") == {}


def test_append_many_returns_consecutive_uids(
    imap_server: ImapServer, imap_account: Account
) -> None:
    raws = [message(f"bulk-{n}") for n in range(250)]
    uids = imap_server.append_many(imap_account, "INBOX", raws)
    assert len(uids) == 250
    assert uids == list(range(uids[0], uids[0] + 250))
    stored = imap_server.fetch_all(imap_account, "INBOX")
    assert [stored[uid] for uid in uids] == raws


def test_uidvalidity_changes_after_delete_and_create(
    imap_server: ImapServer, imap_account: Account
) -> None:
    imap_server.create_folder(imap_account, "Orders")
    before = imap_server.uidvalidity(imap_account, "Orders")
    imap_server.delete_folder(imap_account, "Orders")
    imap_server.create_folder(imap_account, "Orders")
    assert imap_server.uidvalidity(imap_account, "Orders") != before


def test_idle_sees_new_mail(imap_server: ImapServer, imap_account: Account) -> None:
    watcher = imap_server.open_client(imap_account)
    try:
        watcher.select_folder("INBOX")
        watcher.idle()
        if imap_server.lmtp:
            imap_server.lmtp_deliver(imap_account, message("idle"))
        else:
            imap_server.append(imap_account, "INBOX", message("idle"))
        lines = wait_for_line(watcher, lambda line: line.endswith(b"EXISTS"), timeout=5)
        assert lines[-1] == b"* 1 EXISTS"
        watcher.idle_done()
    finally:
        close_client(watcher)


def test_restart_keeps_mail_and_drops_connections(
    imap_server: ImapServer, imap_account: Account
) -> None:
    raw = message("survives-restart")
    uid = imap_server.append(imap_account, "INBOX", raw)
    client = imap_server.open_client(imap_account)
    try:
        imap_server.restart()
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            client.noop()
    finally:
        close_client(client)
    assert imap_server.fetch_all(imap_account, "INBOX") == {uid: raw}


def test_wrong_password_is_refused_without_penalty(
    imap_server: ImapServer, imap_account: Account
) -> None:
    wrong = Account(imap_account.username, "not-the-password")
    with pytest.raises(imaplib.IMAP4.error):
        imap_server.open_client(wrong)
    # Dovecot's per-IP auth penalty (2-15 s) would slow every later test; it is off.
    started = time.monotonic()
    close_client(imap_server.open_client(imap_account))
    assert time.monotonic() - started < 1.5


# -- Dovecot only ------------------------------------------------------------------------


def test_dovecot_stores_custom_keywords(dovecot: Dovecot) -> None:
    account = dovecot.account()
    uid = dovecot.append(account, "INBOX", message("keyword"), flags=("$Processed",))
    client = dovecot.open_client(account)
    try:
        client.select_folder("INBOX")
        client.add_flags([uid], ["$Ticket123"])
        flags = client.get_flags([uid])[uid]
    finally:
        close_client(client)
    assert {b"$Processed", b"$Ticket123"} <= set(flags)


def test_dovecot_special_use_folders(dovecot: Dovecot) -> None:
    client = dovecot.open_client(dovecot.account())
    try:
        flags = {name: set(flags) for flags, _, name in client.list_folders()}
    finally:
        close_client(client)
    assert b"\\Sent" in flags["Sent"]
    assert b"\\Trash" in flags["Trash"]
    assert {"IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE"} <= dovecot.capabilities


def test_lmtp_adds_delivery_headers(dovecot: Dovecot) -> None:
    account = dovecot.account()
    dovecot.lmtp_deliver(account, message("lmtp"), mail_from="bounce@example.test")
    (raw,) = dovecot.fetch_all(account, "INBOX").values()
    assert b"Return-Path: <bounce@example.test>" in raw
    assert f"Delivered-To: {account.address}".encode() in raw


def test_imaps_verifies_with_the_test_ca(dovecot: Dovecot) -> None:
    account = dovecot.account()
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    client = dovecot.open_client(account, security="implicit", ssl_context=context)
    try:
        assert client.socket().version() in ("TLSv1.2", "TLSv1.3")
    finally:
        close_client(client)


def test_imaps_without_the_test_ca_fails_verification(dovecot: Dovecot) -> None:
    system_only = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        dovecot.open_client(security="implicit", ssl_context=system_only)


def test_starttls_upgrades_the_plain_port(dovecot: Dovecot) -> None:
    account = dovecot.account()
    client = dovecot.open_client(account, security="starttls")
    try:
        assert isinstance(client.socket(), ssl.SSLSocket)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        close_client(client)


def test_kick_drops_the_users_connections(dovecot: Dovecot) -> None:
    victim, bystander = dovecot.account(), dovecot.account()
    kicked = dovecot.open_client(victim)
    spared = dovecot.open_client(bystander)
    try:
        assert dovecot.kick(victim) is True
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            kicked.noop()
        spared.noop()
        assert dovecot.kick(victim) is False
    finally:
        close_client(kicked)
        close_client(spared)


def test_stale_dovecot_directories_are_removed(tmp_path: Path) -> None:
    def instance(name: str, pid: int | None, age: float) -> Path:
        directory = tmp_path / f"{DIR_PREFIX}{name}"
        (directory / "run").mkdir(parents=True)
        (directory / "log").mkdir()
        if pid is not None:
            (directory / "run" / "master.pid").write_text(f"{pid}\n")
        log = directory / "log" / "dovecot.log"
        log.write_text("")
        when = time.time() - age
        os.utime(log, (when, when))
        return directory

    dead = instance("dead", 2**22 + 7, age=3600)  # above pid_max, so never alive
    running = instance("running", os.getpid(), age=3600)
    starting = instance("starting", None, age=1)
    assert remove_stale_directories(tmp_path) == [dead]
    assert running.exists() and starting.exists()


def test_noidle_instance_hides_idle(dovecot_noidle: Dovecot) -> None:
    assert "IDLE" not in dovecot_noidle.capabilities
    client = dovecot_noidle.open_client(dovecot_noidle.account())
    try:
        assert b"IDLE" not in client.capabilities()
        assert client.has_capability("UIDPLUS")
    finally:
        close_client(client)


def test_pymap_drops_stored_custom_keywords(pymap_server: PymapServer) -> None:
    # Documents the gap that keeps pymap from being the only server under test: keywords
    # given at APPEND stay, but STORE +FLAGS of a new keyword is answered OK and dropped.
    account = pymap_server.account()
    uid = pymap_server.append(account, "INBOX", message(), flags=("$Appended",))
    client = pymap_server.open_client(account)
    try:
        client.select_folder("INBOX")
        client.add_flags([uid], ["$Stored", "\\Flagged"])
        flags = set(client.get_flags([uid])[uid])
    finally:
        close_client(client)
    assert {b"$Appended", b"\\Flagged"} <= flags
    assert b"$Stored" not in flags


def test_expand_uid_set() -> None:
    assert expand_uid_set("3:5,9,12:11") == [3, 4, 5, 9, 12, 11]


def test_multiappend_batches_bound_count_and_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imap_helpers, "MULTIAPPEND_BATCH", 3)
    monkeypatch.setattr(imap_helpers, "MULTIAPPEND_MAX_BYTES", 10)
    raws = [b"a" * 4, b"b" * 4, b"c" * 4, b"d", b"e", b"f", b"g" * 20, b"h"]
    assert [list(batch) for batch in imap_helpers._batches(raws)] == [
        [b"a" * 4, b"b" * 4],
        [b"c" * 4, b"d", b"e"],
        [b"f"],
        [b"g" * 20],
        [b"h"],
    ]


# -- SMTP sink ---------------------------------------------------------------------------


def test_sink_keeps_envelope_and_bytes(smtp_sink: SmtpSink) -> None:
    raw = message("sink")
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=5) as smtp:
        smtp.sendmail("from@example.test", ["a@example.test", "b@example.test"], raw)
    (received,) = smtp_sink.wait_for(1)
    assert received.mail_from == "from@example.test"
    assert received.rcpt_tos == ("a@example.test", "b@example.test")
    assert received.data == raw


def test_sink_answers_451_then_accepts(smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next(1, 451)
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=5) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("from@example.test", ["a@example.test"], message())
        assert refused.value.smtp_code == 451
        smtp.sendmail("from@example.test", ["a@example.test"], message())
    assert len(smtp_sink.wait_for(1)) == 1
    assert len(smtp_sink.refused) == 1


def test_sink_answers_550_at_rcpt(smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next(1, 550, stage="RCPT")
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=5) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail("from@example.test", ["a@example.test"], message())
        assert refused.value.recipients["a@example.test"][0] == 550
        smtp.sendmail("from@example.test", ["a@example.test"], message())
    assert smtp_sink.count == 1


def test_sink_down_and_up_on_the_same_port(smtp_sink: SmtpSink) -> None:
    port = smtp_sink.port
    open_session = smtplib.SMTP(smtp_sink.host, port, timeout=5)
    try:
        open_session.ehlo()
        smtp_sink.down()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            open_session.noop()
    finally:
        open_session.close()
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP(smtp_sink.host, port, timeout=5)
    smtp_sink.up()
    assert smtp_sink.port == port
    with smtplib.SMTP(smtp_sink.host, port, timeout=5) as smtp:
        smtp.sendmail("from@example.test", ["a@example.test"], message())
    assert smtp_sink.wait_for(1)


def test_sink_wait_for_times_out(smtp_sink: SmtpSink) -> None:
    with pytest.raises(TimeoutError):
        smtp_sink.wait_for(1, timeout=0.05)


# -- PostgreSQL --------------------------------------------------------------------------


@pytest.mark.parametrize("round_", [1, 2])
def test_pg_database_is_fresh_per_test(pg_fresh_url: str, round_: int) -> None:
    engine = sa.create_engine(pg_fresh_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE left_behind (round integer)"))
            conn.execute(sa.text("INSERT INTO left_behind VALUES (:r)"), {"r": round_})
    finally:
        engine.dispose()


def test_pg_url_is_a_database(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == (
                sa.make_url(pg_url).database
            )
    finally:
        engine.dispose()


def test_db_url_has_the_schema(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        assert sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


# -- server-missing skips ----------------------------------------------------------------

_PROBE_CONFTEST = """
from tests.servers.skips import pytest_runtest_makereport  # noqa: F401
"""

_PROBE_TESTS = """
import pytest
from tests.servers import require_server

def test_missing_server():
    require_server("imaginary-imapd", False, "not installed")

@pytest.mark.skip(reason="server missing: marker-made")
def test_marked_skip():
    pass

def test_other_skip():
    pytest.skip("shared data directory not found")
"""


def _run_probe(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, require: bool
) -> pytest.RunResult:
    pytester.makeini("[pytest]\n")
    pytester.makeconftest(_PROBE_CONFTEST)
    pytester.makepyfile(test_probe=_PROBE_TESTS)
    if require:
        monkeypatch.setenv(REQUIRE_ENV, "1")
    else:
        monkeypatch.delenv(REQUIRE_ENV, raising=False)
    return pytester.runpytest_inprocess(
        "-rA", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"
    )


def test_server_skips_stay_skips_by_default(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run_probe(pytester, monkeypatch, require=False)
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*server missing: imaginary-imapd: not installed*"])


def test_require_servers_turns_server_skips_into_failures(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run_probe(pytester, monkeypatch, require=True)
    # A skip marker is evaluated during setup, so it turns into an error rather than a failure.
    result.assert_outcomes(failed=1, errors=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*SKIPPED*shared data directory not found*",
            "*ERROR test_probe.py::test_marked_skip - server missing: marker-made*",
            "*FAILED test_probe.py::test_missing_server*server missing*",
        ]
    )
