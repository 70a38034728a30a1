"""Two real mailcare daemons whose support addresses write to each other: no mail loop."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from daemon.database import Database
from daemon.outbox import OUTBOX
from daemon.tables import Message
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Daemon:
    name: str
    address: str
    port: int
    db_url: str
    process: subprocess.Popen[bytes] | None = None

    def counts(self) -> tuple[int, int]:
        """(messages received, auto-replies sent)."""
        db = Database(self.db_url)
        try:
            with db.reading() as conn:
                received = conn.execute(select(func.count()).select_from(Message)).scalar_one()
                sent = conn.execute(
                    select(func.count()).select_from(OUTBOX).where(OUTBOX.c.state == "sent")
                ).scalar_one()
        finally:
            db.dispose()
        return int(received), int(sent)

    def kinds(self) -> list[str]:
        db = Database(self.db_url)
        try:
            with db.reading() as conn:
                return list(conn.execute(select(Message.automated).order_by(Message.id)).scalars())
        finally:
            db.dispose()


def configure(tmp_path: Path, me: Daemon, relay_port: int) -> Path:
    folder = tmp_path / me.name
    folder.mkdir()
    (folder / "rules.yaml").write_text(
        "version: 1\n"
        "auto_replies:\n"
        "  rules:\n"
        f"    - {{name: acknowledge, template: acknowledge, from: 'Support {me.name} "
        f"<{me.address}>', faq: {{limit: 0}}}}\n",
        encoding="utf-8",
    )
    config = folder / "mailcare.yaml"
    config.write_text(
        f"database_url: {me.db_url}\n"
        "log_level: WARNING\n"
        f"paths: {{rules: rules.yaml, templates: {ROOT / 'templates'}}}\n"
        "runner: {processes: 1, idle_wait: 0.05}\n"
        "intake: {enabled: true, protocol: smtp, host: 127.0.0.1, "
        f"port: {me.port}, recipients: [{me.address}]}}\n"
        "relay: {enabled: true, host: 127.0.0.1, tls: none, "
        f"port: {relay_port}, idle_wait: 0.05}}\n",
        encoding="utf-8",
    )
    return config


def start(config: Path) -> subprocess.Popen[bytes]:
    subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), "db", "upgrade"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with (config.parent / "daemon.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--config", str(config), "run"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )


def send(port: int, sender: str, to: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '.')}@test.example>"
    message.set_content("Hello, this is a person writing.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message)


def listening(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def daemons(tmp_path: Path, free_port: object) -> Iterator[tuple[Daemon, Daemon]]:
    port_a, port_b = free_port(), free_port()  # type: ignore[operator]
    a = Daemon("a", "support@a.example", port_a, f"sqlite:///{tmp_path / 'a.sqlite3'}")
    b = Daemon("b", "help@b.example", port_b, f"sqlite:///{tmp_path / 'b.sqlite3'}")
    a.process = start(configure(tmp_path, a, relay_port=b.port))
    b.process = start(configure(tmp_path, b, relay_port=a.port))
    try:
        for daemon in (a, b):
            wait_until(lambda d=daemon: listening(d.port), timeout=30, what=f"{daemon.name} up")
        yield a, b
    finally:
        for daemon in (a, b):
            assert daemon.process is not None
            if daemon.process.poll() is None:
                os.killpg(daemon.process.pid, signal.SIGTERM)
            daemon.process.wait(30)


def test_two_daemons_writing_to_each_other_exchange_one_reply_each(
    daemons: tuple[Daemon, Daemon],
) -> None:
    a, b = daemons
    # each support address writes to the other once, as a person would
    send(a.port, b.address, a.address, "Question from b")
    send(b.port, a.address, b.address, "Question from a")
    wait_until(lambda: a.counts() == (2, 1) and b.counts() == (2, 1), timeout=30, what="replies")
    threading.Event().wait(3)  # would a loop go on? give it time to show
    assert a.counts() == (2, 1)
    assert b.counts() == (2, 1)
    assert a.kinds() == ["human", "auto-reply"]
    assert b.kinds() == ["human", "auto-reply"]


def test_a_responder_that_ignores_loop_headers_gets_one_reply(
    daemons: tuple[Daemon, Daemon],
) -> None:
    a, _ = daemons
    stop = time.monotonic() + 8
    # a careless robot: writes to A again and again with a fresh subject each time
    for number in range(6):
        send(a.port, "robot@careless.example", a.address, f"Robot message {number}")
    assert time.monotonic() < stop
    wait_until(lambda: a.counts()[0] == 6, timeout=20, what="six robot messages stored")
    threading.Event().wait(1.5)
    # the robot's address is on no relay here; what matters is what A queued
    db = Database(a.db_url)
    try:
        with db.reading() as conn:
            queued = conn.execute(select(func.count()).select_from(OUTBOX)).scalar_one()
            reasons = list(conn.execute(select(Message.reply_decision)).scalars())
    finally:
        db.dispose()
    assert queued == 1
    assert sum("rate limit" in (r or "") for r in reasons) == 5
