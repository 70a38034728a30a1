"""Small helpers shared by the daemon tests: building messages, settings and apps."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import func, select

from daemon.database import Database
from daemon.settings import Mailbox, Secret, Settings
from daemon.tables import Message
from tests.servers.imap import Account

if TYPE_CHECKING:
    from daemon.app import App
    from daemon.interfaces import Clock

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def make_mail(
    subject: str = "Printer on floor 3 is jammed",
    body: str = "Hello,\n\nthe printer is jammed again.\n\nThanks,\nAnna",
    sender: str = "Anna Berg <anna.berg@customer.example>",
    to: str = "support@acme.example",
    message_id: str | None = "<m1@customer.example>",
    in_reply_to: str | None = None,
    references: str | None = None,
    charset: str = "utf-8",
    extra: dict[str, str] | None = None,
) -> bytes:
    """A small well-formed message as CRLF bytes."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime(2026, 11, 20, 9, 30, tzinfo=UTC))
    if message_id:
        message["Message-ID"] = message_id
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
    if references:
        message["References"] = references
    for name, value in (extra or {}).items():
        message[name] = value
    message.set_content(body, charset=charset)
    return message.as_bytes(policy=SMTP)


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll predicate until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def mailbox_for(
    server: Any, account: Account, env: str, name: str = "support", **options: Any
) -> Mailbox:
    """Mailbox settings for an account on a test server (password from the environment)."""
    return Mailbox(
        name=name,
        host=server.host,
        port=server.imap_port,
        tls="none",
        username=account.username,
        password=Secret(env=env),
        poll_interval=options.pop("poll_interval", 0.2),
        **options,
    )


def settings_for(db_url: str, mailboxes: list[Mailbox] | None = None, **values: Any) -> Settings:
    """Settings with fast leases and runner waits, for tests."""
    values.setdefault("leases", {"ttl": 5.0, "retry": 0.2})
    values.setdefault("runner", {"idle_wait": 0.05, "processes": 1})
    return Settings.model_validate(
        {"database_url": db_url, "mailboxes": [m.model_dump() for m in mailboxes or []], **values}
    )


def states(db: Database) -> dict[str, int]:
    """Message counts by state."""
    with db.reading() as conn:
        return dict(conn.execute(select(Message.state, func.count()).group_by(Message.state)).all())


def fetch(url: str, method: str = "GET") -> tuple[int, str]:
    """(status, body) of a real HTTP request; a POST sends an empty body."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def pipeline_app(db_url: str, tmp_path: Path, rules_text: str, clock: Clock) -> App:
    """The runner with these rules and the shipped templates; mail is queued, not sent."""
    from daemon.app import build_app

    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text, encoding="utf-8")
    settings = settings_for(
        db_url,
        paths={"rules": str(rules), "templates": str(ROOT / "templates")},
        relay={"enabled": True, "host": "127.0.0.1", "port": 2525, "tls": "none"},
    )
    return build_app(settings, clock=clock, intake=False, sender=False, campaigns=False)
