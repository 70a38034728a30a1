"""Submission port over real sockets: AUTH inside TLS, exact bytes to `accept`, clean refusals."""

from __future__ import annotations

import base64
import logging
import smtplib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.errors import ConfigError
from daemon.settings import Secret, Submission, SubmissionUser, load_settings
from daemon.submission import SubmissionRefused, SubmissionServer, Submitted
from tests.servers.certs import TestCertificates

HOST = "127.0.0.1"
USER = "agent.anna"
PASSWORD = "correct horse battery staple"
PASSWORD_ENV = "MAILCARE_TEST_SUBMISSION_PASSWORD"
SENDER = "anna@acme.example"
RECIPIENTS = ["customer@example.org", "copy@example.org"]
MAX_SIZE = 64 * 1024
TIMEOUT = 10

# the leading-dot line checks that dot-stuffing is undone exactly once
RAW = (
    b"From: Anna <anna@acme.example>\r\n"
    b"To: customer@example.org\r\n"
    b"Subject: Re: [#1042] Printer jammed\r\n"
    b"Message-ID: <reply-1@acme.example>\r\n"
    b"\r\n"
    b"Hello,\r\n"
    b".hidden dot line\r\n"
    b"the technician comes on Monday.\r\n"
)

OK = 250
AUTH_OK = 235
TEMPORARY_FAILURE = 451
AUTH_REQUIRED = 530
AUTH_FAILED = 535
REFUSED = 550
TOO_BIG = 552
BAD_ADDRESS = 553
TOO_MANY_COMMANDS = 421


class Recorder:
    """An Accept callback that keeps what it got, or fails or waits on request."""

    def __init__(self) -> None:
        self.received: list[Submitted] = []
        self.error: Exception | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self, message: Submitted) -> None:
        self.entered.set()
        if self.gate is not None and not self.gate.wait(TIMEOUT):
            raise TimeoutError("the test never opened the gate")
        if self.error is not None:
            raise self.error
        self.received.append(message)


Serve = Callable[..., SubmissionServer]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def serve(
    recorder: Recorder, test_certs: TestCertificates, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Serve]:
    """Start a submission server on a free loopback port; stopped after the test."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    servers: list[SubmissionServer] = []

    def start(tls: str = "starttls", **overrides: Any) -> SubmissionServer:
        values: dict[str, Any] = {
            "enabled": True,
            "host": HOST,
            "port": 0,
            "tls": tls,
            "users": [{"username": USER, "password": {"env": PASSWORD_ENV}}],
            "max_size": MAX_SIZE,
        }
        if tls != "none":
            values.update(cert_file=test_certs.cert_file, key_file=test_certs.key_file)
        values.update(overrides)
        server = SubmissionServer(Submission.model_validate(values), recorder)
        server.start()
        servers.append(server)
        assert server.port != 0
        return server

    yield start
    for server in servers:
        server.stop()


def connect(port: int, certs: TestCertificates | None = None) -> smtplib.SMTP:
    """A client after EHLO, upgraded with STARTTLS when certs are given."""
    client = smtplib.SMTP(HOST, port, local_hostname="agent.test", timeout=TIMEOUT)
    if certs is not None:
        client.starttls(context=certs.client_context())
    client.ehlo()
    return client


def authenticate(client: smtplib.SMTP, mechanism: str, password: str = PASSWORD) -> None:
    client.user, client.password = USER, password
    method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
    client.auth(mechanism, method)


def transaction(client: smtplib.SMTP, raw: bytes = RAW) -> tuple[int, bytes]:
    """MAIL, RCPT for each recipient, DATA; returns the reply to DATA."""
    assert client.mail(SENDER)[0] == OK
    for rcpt in RECIPIENTS:
        assert client.rcpt(rcpt)[0] == OK
    return client.data(raw)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_submission_over_starttls_hands_over_exact_bytes(
    serve: Serve, recorder: Recorder, test_certs: TestCertificates, mechanism: str
) -> None:
    server = serve()
    with connect(server.port, test_certs) as client:
        authenticate(client, mechanism)
        code, text = transaction(client)
    assert (code, text) == (OK, b"2.0.0 Message accepted for delivery")
    [message] = recorder.received
    assert message.raw == RAW
    assert message.mail_from == SENDER
    assert message.recipients == tuple(RECIPIENTS)
    assert message.username == USER
    assert message.peer.startswith(f"{HOST}:")


def test_implicit_tls(serve: Serve, recorder: Recorder, test_certs: TestCertificates) -> None:
    server = serve(tls="implicit")
    context = test_certs.client_context()
    with smtplib.SMTP_SSL(
        HOST, server.port, local_hostname="agent.test", timeout=TIMEOUT, context=context
    ) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert client.has_extn("auth")
        client.login(USER, PASSWORD)
        assert client.sendmail(SENDER, RECIPIENTS, RAW) == {}
    assert [m.raw for m in recorder.received] == [RAW]


def test_plaintext_auth_only_with_tls_none_on_loopback(serve: Serve, recorder: Recorder) -> None:
    server = serve(tls="none")
    with connect(server.port) as client:
        assert not client.has_extn("starttls")
        authenticate(client, "PLAIN")
        assert transaction(client)[0] == OK
    assert len(recorder.received) == 1


def test_auth_not_offered_before_starttls(serve: Serve, test_certs: TestCertificates) -> None:
    server = serve()
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    with connect(server.port) as client:
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        assert client.docmd("AUTH", f"PLAIN {plain}")[0] == AUTH_REQUIRED
        assert client.mail(SENDER)[0] == AUTH_REQUIRED
        client.starttls(context=test_certs.client_context())
        client.ehlo()
        assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}


@pytest.mark.parametrize(("user", "password"), [(USER, "wrong"), ("mallory", PASSWORD)])
def test_wrong_credentials_get_535_and_no_callback(
    serve: Serve, recorder: Recorder, test_certs: TestCertificates, user: str, password: str
) -> None:
    server = serve()
    with connect(server.port, test_certs) as client:
        client.user, client.password = user, password
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            client.auth("PLAIN", client.auth_plain)
        assert caught.value.smtp_code == AUTH_FAILED
        assert client.mail(SENDER)[0] == AUTH_REQUIRED
    assert recorder.received == []
    assert not recorder.entered.is_set()


def test_repeated_auth_failures_end_the_connection(
    serve: Serve, test_certs: TestCertificates
) -> None:
    server = serve()
    bad = base64.b64encode(f"\0{USER}\0nope".encode()).decode()
    with connect(server.port, test_certs) as client:
        codes = [client.docmd("AUTH", f"PLAIN {bad}")[0] for _ in range(6)]
        assert codes == [AUTH_FAILED] * 5 + [TOO_MANY_COMMANDS]
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_mail_without_auth_gets_530(
    serve: Serve, recorder: Recorder, test_certs: TestCertificates
) -> None:
    server = serve()
    with connect(server.port, test_certs) as client:
        assert client.has_extn("auth")
        assert client.mail(SENDER)[0] == AUTH_REQUIRED
        assert client.rcpt(RECIPIENTS[0])[0] == AUTH_REQUIRED
    assert recorder.received == []


def test_envelope_needs_valid_sender_and_a_recipient(
    serve: Serve, test_certs: TestCertificates
) -> None:
    server = serve()
    with connect(server.port, test_certs) as client:
        authenticate(client, "PLAIN")
        assert client.mail("no-at-sign")[0] == BAD_ADDRESS
        assert client.mail(SENDER)[0] == OK
        assert client.rcpt("nobody")[0] == BAD_ADDRESS
        assert client.docmd("DATA")[0] == 503  # no recipient yet


def test_refusal_from_the_callback_reaches_the_client(
    serve: Serve, recorder: Recorder, test_certs: TestCertificates
) -> None:
    server = serve()
    recorder.error = SubmissionRefused(550, "5.7.1 No conversation for this reply")
    with connect(server.port, test_certs) as client:
        authenticate(client, "PLAIN")
        assert transaction(client) == (REFUSED, b"5.7.1 No conversation for this reply")
        assert client.noop()[0] == OK  # the session is still in step


def test_internal_error_is_a_451_without_details(
    serve: Serve,
    recorder: Recorder,
    test_certs: TestCertificates,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve()
    recorder.error = RuntimeError("connection to db.internal:5432 refused")
    with (
        caplog.at_level(logging.ERROR, logger="daemon.submission"),
        connect(server.port, test_certs) as client,
    ):
        authenticate(client, "LOGIN")
        code, text = transaction(client)
        assert client.noop()[0] == OK
    assert code == TEMPORARY_FAILURE
    assert text == b"4.3.0 Temporary failure, try again later"
    assert "db.internal" in caplog.text  # logged for the operator, not sent to the client
    assert "<reply-1@acme.example>" in caplog.text


def test_oversize_message_gets_552(
    serve: Serve, recorder: Recorder, test_certs: TestCertificates
) -> None:
    server = serve()
    big = RAW + b"".join(b"z" * 78 + b"\r\n" for _ in range(MAX_SIZE // 80 + 10))
    with connect(server.port, test_certs) as client:
        authenticate(client, "PLAIN")
        assert client.has_extn("size")
        # declared with SIZE: refused at MAIL
        with pytest.raises(smtplib.SMTPSenderRefused) as caught:
            client.sendmail(SENDER, RECIPIENTS, big)
        assert caught.value.smtp_code == TOO_BIG
        client.rset()
        # undeclared: refused after DATA
        assert transaction(client, big) == (TOO_BIG, b"5.3.4 Message too big")
        assert transaction(client)[0] == OK
    assert [m.raw for m in recorder.received] == [RAW]


def test_slow_callback_leaves_the_loop_responsive(
    serve: Serve, recorder: Recorder, test_certs: TestCertificates
) -> None:
    server = serve()
    recorder.gate = threading.Event()
    replies: list[tuple[int, bytes]] = []

    def submit() -> None:
        with connect(server.port, test_certs) as client:
            authenticate(client, "PLAIN")
            replies.append(transaction(client))

    first = threading.Thread(target=submit)
    first.start()
    try:
        assert recorder.entered.wait(TIMEOUT)
        with connect(server.port, test_certs) as second:
            assert second.has_extn("auth")
            assert second.noop()[0] == OK
        assert replies == []  # the first client still waits for its 250
    finally:
        recorder.gate.set()
        first.join(TIMEOUT)
    assert replies == [(OK, b"2.0.0 Message accepted for delivery")]
    assert len(recorder.received) == 1


def test_missing_password_stops_the_start(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    serve()  # sets the variable; this server starts fine
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(ConfigError, match=f"{PASSWORD_ENV} is not set"):
        serve()


# -- settings -----------------------------------------------------------------------


def user() -> SubmissionUser:
    return SubmissionUser(username=USER, password=Secret(env=PASSWORD_ENV))


def test_disabled_section_needs_nothing() -> None:
    section = Submission()
    assert (section.enabled, section.port, section.tls) == (False, 587, "starttls")
    assert section.max_size == 35 * 1024 * 1024


def test_tls_none_only_on_loopback() -> None:
    with pytest.raises(ValidationError, match="only for loopback"):
        Submission(enabled=True, host="192.0.2.10", tls="none", users=[user()])
    assert Submission(enabled=True, host="::1", tls="none", users=[user()]).tls == "none"


def test_enabled_port_needs_users() -> None:
    with pytest.raises(ValidationError, match="needs `users`: AUTH is always required"):
        Submission(enabled=True, tls="none")


def test_starttls_needs_certificate_and_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="`cert_file` and `key_file` are required"):
        Submission(enabled=True, users=[user()], key_file=tmp_path / "key.pem")


def test_usernames_are_unique() -> None:
    with pytest.raises(ValidationError, match=f"usernames must be unique: {USER}"):
        Submission(enabled=True, tls="none", users=[user(), user()])


def test_error_in_the_file_names_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "mailcare.yaml"
    path.write_text(
        "submission:\n  enabled: true\n  host: 192.0.2.10\n  tls: none\n"
        f"  users:\n    - {{username: {USER}, password: {{env: {PASSWORD_ENV}}}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"mailcare.yaml:1:1: submission: .*only for loopback"):
        load_settings(path)
