"""The composition root: builds every part of the daemon from settings."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from .clock import SystemClock
from .database import Database
from .folders import FolderLedger, new_owner_id
from .imap_source import Connector, ImapSource, connect_imap
from .inbox import Inbox
from .interfaces import Clock
from .lmtp import IntakeListener
from .pipeline import build_steps
from .rules import Rules, load_rules
from .runner import Runner
from .settings import Settings

# Steps register themselves by name when their modules are imported.
from . import contacts as _contacts  # noqa: F401  isort: skip
from . import threads as _threads  # noqa: F401  isort: skip

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class App:
    """A wired daemon: start() runs intake and the runner in threads, stop() ends them."""

    settings: Settings
    rules: Rules
    db: Database
    clock: Clock
    owner: str
    inbox: Inbox
    ledger: FolderLedger
    imap: ImapSource
    runner: Runner
    listener: IntakeListener | None
    stop_event: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, runner: bool = True) -> None:
        """Start the listener, the IMAP workers and (optionally) the runner."""
        if self.listener is not None:
            self.listener.start()
            log.info(
                "%s listener on %s:%s",
                self.settings.intake.protocol.upper(),
                self.settings.intake.host,
                self.listener.port,
            )
        self.imap.start()
        if runner:
            thread = threading.Thread(
                target=self.runner.run_forever, args=(self.stop_event,), name="runner", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop accepting, finish the current batch, release leases, close the database."""
        if self.listener is not None:
            try:
                self.listener.stop()
            except Exception as exc:
                log.warning("stopping the listener: %s", exc)
        self.imap.stop(timeout)
        self.stop_event.set()
        self.runner.wake()
        for thread in self._threads:
            thread.join(timeout)
        self.db.dispose()


def build_app(settings: Settings, **overrides: Any) -> App:
    """Wire the daemon; overrides replace parts (clock, db, rules, connect, owner) in tests.

    With intake=False the app only runs the runner (no IMAP workers, no listener).
    """
    clock: Clock = overrides.get("clock") or SystemClock()
    db: Database = overrides.get("db") or Database(settings.database_url)
    rules: Rules = overrides.get("rules") or load_rules(settings.paths.rules)
    owner: str = overrides.get("owner") or new_owner_id()
    connect: Connector = overrides.get("connect") or connect_imap
    inbox = Inbox(db, clock, merge_copies=rules.conversations.merge_copies)
    ledger = FolderLedger(db, clock, owner, settings.leases.ttl)
    steps = build_steps(settings.runner.steps, conversation_rules=rules.conversations)
    runner = Runner(
        db,
        clock,
        steps,
        owner,
        batch_size=settings.runner.batch_size,
        claim_ttl=settings.runner.claim_ttl,
        max_attempts=settings.runner.max_attempts,
        idle_wait=settings.runner.idle_wait,
    )
    inbox.subscribe(runner.wake)
    intake_on = overrides.get("intake", True)
    imap = ImapSource(
        settings.mailboxes if intake_on else [],
        inbox,
        ledger,
        clock,
        connect,
        lease_retry=settings.leases.retry,
    )
    listener = None
    if settings.intake.enabled and intake_on:
        intake = settings.intake
        if intake.port == 0:
            intake = intake.model_copy(update={"port": free_port(intake.host)})
        listener = IntakeListener(intake, inbox)
    return App(settings, rules, db, clock, owner, inbox, ledger, imap, runner, listener)
