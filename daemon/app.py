"""The composition root: builds every part of the daemon from settings."""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .agent_replies import AgentReplies
from .calendar import BusinessCalendar
from .campaign_ledger import SendLedger
from .campaign_send import CampaignSender, Composers
from .campaigns import CampaignBook
from .clock import SystemClock
from .compose import split_mailbox
from .database import Database
from .errors import ConfigError
from .faq import FaqIndex
from .folders import FolderLedger, new_owner_id
from .imap_source import Connector, ImapSource, connect_imap
from .inbox import Inbox
from .interfaces import Clock
from .keys import instance_key
from .lmtp import IntakeListener
from .outbox import Outbox
from .pipeline import build_steps
from .render import TemplateStore
from .replies import Replier
from .rules import Rules, RulesFile, load_rules
from .runner import Runner
from .schedule import Scheduler
from .screening import Identity
from .sender import Sender
from .settings import Settings
from .sla import SlaBook
from .sla_imap import SlaFolders
from .sla_sweep import Sweeper
from .submission import SubmissionServer
from .survey import Surveys
from .throttle import TokenBucket

# Steps register themselves by name when their modules are imported.
from . import contacts as _contacts  # noqa: F401  isort: skip
from . import sla_step as _sla_step  # noqa: F401  isort: skip
from . import threads as _threads  # noqa: F401  isort: skip
from . import unsubscribe_step as _unsubscribe_step  # noqa: F401  isort: skip

if TYPE_CHECKING:
    from .http import HttpServer

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
    outbox: Outbox
    sender: Sender | None
    sla: SlaBook | None = None
    sweeper: Sweeper | None = None
    scheduler: Scheduler | None = None
    submission: SubmissionServer | None = None
    http: HttpServer | None = None
    campaigns: CampaignSender | None = None
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
        if self.sender is not None:
            self.sender.start()
        if self.campaigns is not None:
            self.campaigns.start()
        if self.submission is not None:
            self.submission.start()
            log.info(
                "submission port on %s:%s", self.settings.submission.host, self.submission.port
            )
        if self.scheduler is not None:
            self.scheduler.start()
        if self.http is not None:
            self.http.start()
            log.info("web endpoint on %s:%s", self.settings.http.host, self.http.port)
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
        if self.submission is not None:
            try:
                self.submission.stop()
            except Exception as exc:
                log.warning("stopping the submission port: %s", exc)
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.http is not None:
            self.http.stop(timeout)
        self.imap.stop(timeout)
        self.stop_event.set()
        self.runner.wake()
        for thread in self._threads:
            thread.join(timeout)
        if self.sender is not None:
            self.sender.stop(timeout)
        if self.campaigns is not None:
            self.campaigns.stop(timeout)
        self.db.dispose()


def build_app(settings: Settings, **overrides: Any) -> App:
    """Wire the daemon; overrides replace parts (clock, db, rules, connect, owner) in tests.

    With intake=False the app only runs the runner (no IMAP workers, no listener, no
    submission port); with sender=False it queues outgoing mail but leaves sending to
    another process; with sweeper=False another process runs the SLA sweep.
    """
    clock: Clock = overrides.get("clock") or SystemClock()
    db: Database = overrides.get("db") or Database(settings.database_url)
    rules: Rules = overrides.get("rules") or load_rules(settings.paths.rules)
    owner: str = overrides.get("owner") or new_owner_id()
    connect: Connector = overrides.get("connect") or connect_imap
    inbox = Inbox(db, clock, merge_copies=rules.conversations.merge_copies)
    ledger = FolderLedger(db, clock, owner, settings.leases.ttl)
    outbox = Outbox(db, clock, owner)
    rules_file = RulesFile(settings.paths.rules, rules)
    identity = build_identity(settings, rules, db)
    step_names = list(settings.runner.steps)
    if "reply" in step_names and not settings.relay.enabled:
        log.warning("auto-replies are off: no relay is enabled in the settings (relay.enabled)")
        step_names.remove("reply")
    templates = TemplateStore(settings.paths.templates)
    mid_key = instance_key(db, "message-id")
    survey_key = instance_key(db, "survey")
    replier = None
    if "reply" in step_names:
        replier = build_replier(settings, rules_file, identity, outbox, clock, templates, mid_key)
    classifier = None
    if "classify" in step_names:
        from .routing import Classifier

        classifier = Classifier(
            settings.paths.models,
            rules_file,
            outbox if settings.relay.enabled else None,
            identity,
            mid_key,
        )
    sla = build_sla_book(
        settings, rules_file, clock, identity, outbox, templates, (survey_key, mid_key)
    )
    steps = build_steps(
        step_names,
        conversation_rules=rules.conversations,
        identity=identity,
        replier=replier,
        classifier=classifier,
        sla_book=sla,
        survey_key=survey_key,
        unsubscribe_key=instance_key(db, "unsubscribe"),
        rules=rules_file.fresh,
    )
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
    from .routing import Forwarder

    imap = ImapSource(
        settings.mailboxes if intake_on else [],
        inbox,
        ledger,
        clock,
        connect,
        lease_retry=settings.leases.retry,
        routing=lambda: rules_file.fresh().routing,
        sla=lambda box: SlaFolders(db, clock, ledger, box, sla, identity),
        forwarder=Forwarder(outbox, identity, mid_key) if settings.relay.enabled else None,
    )
    if classifier is not None:
        runner.after_commit(imap.wake)  # routes to carry out
    listener = None
    if settings.intake.enabled and intake_on:
        intake = settings.intake
        if intake.port == 0:
            intake = intake.model_copy(update={"port": free_port(intake.host)})
        listener = IntakeListener(intake, inbox)
    sender = None
    if settings.relay.enabled and overrides.get("sender", True):
        sender = Sender(outbox, settings.relay, clock)
        outbox.subscribe(sender.wake)
    if replier is not None:
        runner.before_batch(replier.refresh)  # rules, templates, FAQ
    elif classifier is not None:
        runner.before_batch(rules_file.refresh)
    if classifier is not None:
        runner.before_batch(classifier.refresh)
    if settings.relay.enabled:
        runner.after_commit(outbox.notify)
    submission = None
    if settings.submission.enabled and intake_on:
        if not settings.relay.enabled:
            raise ConfigError("submission: the submission port relays through `relay`; enable it")
        replies = AgentReplies(db, clock, outbox, sla, identity)
        submission = SubmissionServer(settings.submission, replies.accept)
    campaigns = None
    if settings.relay.enabled and overrides.get("campaigns", True):
        campaigns = build_campaign_sender(
            settings, rules_file, db, clock, owner, templates, identity, mid_key
        )
    http = None
    if settings.http.enabled and intake_on:
        from .http import HttpServer, build_http_app
        from .optin import optin_routes
        from .unsubscribe import unsubscribe_routes

        routes = [
            *unsubscribe_routes(db, clock, instance_key(db, "unsubscribe")),
            *optin_routes(db, clock, instance_key(db, "optin"), rules_file.fresh),
        ]
        web = build_http_app(db, clock, survey_key, rules_file.fresh, routes)
        http = HttpServer(settings.http, web)
    sweeper = scheduler = None
    if overrides.get("sweeper", True):
        sweeper = Sweeper(
            db, clock, sla, templates, outbox if settings.relay.enabled else None, identity, mid_key
        )
        scheduler = Scheduler()
        scheduler.every("sla-sweep", rules.sla.sweep_every, sweeper.run)
    return App(
        settings,
        rules,
        db,
        clock,
        owner,
        inbox,
        ledger,
        imap,
        runner,
        listener,
        outbox,
        sender,
        sla,
        sweeper,
        scheduler,
        submission,
        http,
        campaigns,
    )


def own_addresses(settings: Settings, rules: Rules) -> tuple[frozenset[str], frozenset[str]]:
    """(addresses, @domains) that are ours: mailboxes, listener recipients, reply senders."""
    addresses = {a.lower() for a in rules.identity.addresses}
    addresses.update(m.address.lower() for m in settings.mailboxes if m.address)
    domains: set[str] = set()
    for recipient in settings.intake.recipients if settings.intake.enabled else []:
        if recipient.startswith("@"):
            domains.add(recipient[1:])
        else:
            addresses.add(recipient)
    for rule in rules.auto_replies.rules:
        try:
            addresses.add(split_mailbox(rule.sender)[1])
        except ValueError as exc:
            raise ConfigError(f"auto_replies rule {rule.name}: from: {exc}") from exc
    return frozenset(addresses), frozenset(domains)


def build_identity(settings: Settings, rules: Rules, db: Database) -> Identity:
    """Our addresses and the loop token only this installation's replies carry."""
    addresses, domains = own_addresses(settings, rules)
    token = hmac.new(instance_key(db, "loop"), b"loop", hashlib.sha256).hexdigest()[:24]
    return Identity(addresses, domains, token, rules.identity.loop_header)


def build_sla_book(
    settings: Settings,
    rules_file: RulesFile,
    clock: Clock,
    identity: Identity,
    outbox: Outbox,
    templates: TemplateStore,
    keys: tuple[bytes, bytes],
) -> SlaBook:
    """The SLA event book; with a relay, resolutions are followed by the satisfaction survey.

    keys: the survey token key and the Message-ID key (`instance_key`).
    """
    book = SlaBook(rules_file.fresh, clock)
    if settings.relay.enabled:
        public_url = settings.http.public_url if settings.http.enabled else None
        surveys = Surveys(templates, outbox, identity, *keys, public_url)
        book.on_resolved(surveys.after_resolution)
    return book


def build_campaign_sender(
    settings: Settings,
    rules_file: RulesFile,
    db: Database,
    clock: Clock,
    owner: str,
    templates: TemplateStore,
    identity: Identity,
    mid_key: bytes,
    only_run: int | None = None,
) -> CampaignSender:
    """The campaign book, the send ledger with its relay's token bucket, and the sender.

    With only_run, the sender sends that run's mail and starts no scheduled run.
    """
    relay = settings.relay
    bucket = TokenBucket(db, f"{relay.host}:{relay.effective_port}")
    ledger = SendLedger(db, clock, owner, bucket, only_run)
    book = CampaignBook(db, clock, rules_file.fresh, mid_key)
    public_url = settings.http.public_url if settings.http.enabled else None
    composers = Composers(
        db, rules_file.fresh, templates, identity, instance_key(db, "unsubscribe"), public_url
    )
    return CampaignSender(
        ledger, book, composers, relay, clock, rules_file.fresh, starts_runs=only_run is None
    )


def build_replier(
    settings: Settings,
    rules_file: RulesFile,
    identity: Identity,
    outbox: Outbox,
    clock: Clock,
    templates: TemplateStore,
    mid_key: bytes,
) -> Replier:
    """The auto-reply machinery: templates, FAQ entries, calendars, the Message-ID key."""
    faq_dir = settings.paths.templates / "faq"
    faq = FaqIndex.load(faq_dir) if faq_dir.is_dir() else None
    rules = rules_file.current
    calendars = {
        name: BusinessCalendar.from_config(config) for name, config in rules.calendars.items()
    }
    return Replier(
        rules_file,
        templates,
        faq,
        identity,
        outbox,
        mid_key,
        clock,
        calendars,
    )
