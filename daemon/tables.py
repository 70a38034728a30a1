"""The database schema as SQLAlchemy ORM classes (migrations live in daemon/migrations)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .clock import utc

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names for migrations."""

    metadata = MetaData(naming_convention=NAMING)


class Instant(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores it naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else utc(value)


class MailFolder(Base):
    """One IMAP folder of one mailbox: its UID cursor, its lease and its health."""

    __tablename__ = "mail_folders"
    __table_args__ = (UniqueConstraint("mailbox", "folder"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(64))
    folder: Mapped[str] = mapped_column(String(512))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    server_uidnext: Mapped[int | None] = mapped_column(BigInteger)
    server_messages: Mapped[int | None] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(Instant())
    last_success_at: Mapped[datetime | None] = mapped_column(Instant())
    last_stored_at: Mapped[datetime | None] = mapped_column(Instant())
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(Instant())
    resyncs: Mapped[int] = mapped_column(Integer, default=0)


class Contact(Base):
    """A customer in the archive: one row per e-mail address."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(300))
    tier: Mapped[str] = mapped_column(String(32), default="ordinary")
    first_seen_at: Mapped[datetime] = mapped_column(Instant())
    last_seen_at: Mapped[datetime] = mapped_column(Instant())
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    conversation_count: Mapped[int] = mapped_column(Integer, default=0)


class Conversation(Base):
    """A thread of messages about one request (a ticket)."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    mailbox: Mapped[str | None] = mapped_column(String(64))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    status: Mapped[str] = mapped_column(String(16), default="open")
    opened_at: Mapped[datetime] = mapped_column(Instant())
    last_message_at: Mapped[datetime] = mapped_column(Instant())
    message_count: Mapped[int] = mapped_column(Integer, default=0)


class ConversationRef(Base):
    """A Message-ID known to belong to a conversation (its own messages and their references)."""

    __tablename__ = "conversation_refs"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    ref: Mapped[str] = mapped_column(String(998), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)


class Participant(Base):
    """A contact who wrote in a conversation."""

    __tablename__ = "participants"

    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), primary_key=True, index=True)
    first_message_at: Mapped[datetime] = mapped_column(Instant())


class Message(Base):
    """The durable inbox: raw bytes first, then what the runner learned from them."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_state_id", "state", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(64), unique=True)
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    mailbox: Mapped[str | None] = mapped_column(String(64))
    envelope_from: Mapped[str | None] = mapped_column(String(998))
    received_at: Mapped[datetime] = mapped_column(Instant())
    state: Mapped[str] = mapped_column(String(16), default="new")
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claim_until: Mapped[datetime | None] = mapped_column(Instant())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    quarantined_at: Mapped[datetime | None] = mapped_column(Instant())
    processed_at: Mapped[datetime | None] = mapped_column(Instant())
    subject: Mapped[str | None] = mapped_column(Text)
    from_addr: Mapped[str | None] = mapped_column(String(320), index=True)
    from_name: Mapped[str | None] = mapped_column(String(300))
    sent_at: Mapped[datetime | None] = mapped_column(Instant())
    language: Mapped[str | None] = mapped_column(String(8))
    body_text: Mapped[str | None] = mapped_column(Text)
    body_from_html: Mapped[bool | None] = mapped_column(Boolean)
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    references: Mapped[str | None] = mapped_column(Text)
    defects: Mapped[str | None] = mapped_column(Text)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    automated: Mapped[str | None] = mapped_column(String(32))
    automated_reason: Mapped[str | None] = mapped_column(Text)
    department: Mapped[str | None] = mapped_column(String(64))
    urgency: Mapped[str | None] = mapped_column(String(32))
    department_confidence: Mapped[float | None] = mapped_column(Float)
    urgency_confidence: Mapped[float | None] = mapped_column(Float)
    triage: Mapped[bool | None] = mapped_column(Boolean)
    route_reason: Mapped[str | None] = mapped_column(Text)
    reply_decision: Mapped[str | None] = mapped_column(Text)


class Delivery(Base):
    """Where and how a message arrived (one message may arrive in several places)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("folder_id", "uidvalidity", "uid", name="uq_deliveries_folder_uid"),
        Index("ix_deliveries_disposition", "folder_id", "disposition"),
        Index("ix_deliveries_route", "folder_id", "route_state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    mailbox: Mapped[str | None] = mapped_column(String(64))
    folder_id: Mapped[int | None] = mapped_column(ForeignKey("mail_folders.id"))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    uid: Mapped[int | None] = mapped_column(BigInteger)
    recipient: Mapped[str | None] = mapped_column(String(320))
    delivered_at: Mapped[datetime] = mapped_column(Instant())
    disposition: Mapped[str] = mapped_column(String(16), default="none")
    # routing decided by the classify step: keywords to set, a folder to move into
    route_state: Mapped[str] = mapped_column(String(16), default="none")
    route_folder: Mapped[str | None] = mapped_column(String(512))
    route_keywords: Mapped[str | None] = mapped_column(Text)
    # a route made again after a correction: where the message is now when that is not the
    # delivery's own folder and UID, and the keywords of the earlier route to take off
    route_from: Mapped[str | None] = mapped_column(String(512))
    route_drop: Mapped[str | None] = mapped_column(Text)


class Attachment(Base):
    """An attachment found in a message (metadata; the bytes stay in the raw message)."""

    __tablename__ = "attachments"
    __table_args__ = (UniqueConstraint("message_pk", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)


class Bounce(Base):
    """One failed (or delayed) recipient reported by a bounce or DSN message."""

    __tablename__ = "bounces"
    __table_args__ = (UniqueConstraint("message_pk", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    recipient: Mapped[str | None] = mapped_column(String(320), index=True)
    status: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    hard: Mapped[bool] = mapped_column(Boolean)
    diagnostic: Mapped[str | None] = mapped_column(Text)
    original_message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    reported_at: Mapped[datetime] = mapped_column(Instant())


class Suppression(Base):
    """An address some mail may not be sent to (hard bounce, complaint, unsubscribe).

    scope: `all` (nothing automatic: auto-replies, surveys, campaigns), `marketing` (no
    campaign of any list) or `list:<name>` (no campaign of that list).
    """

    __tablename__ = "suppressions"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    scope: Mapped[str] = mapped_column(String(80), primary_key=True, default="all")
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    created_at: Mapped[datetime] = mapped_column(Instant())


class ReplyLimit(Base):
    """Rate-limit state per recipient and rule ("*" holds the per-recipient hourly ceiling)."""

    __tablename__ = "reply_limits"

    recipient: Mapped[str] = mapped_column(String(320), primary_key=True)
    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_at: Mapped[datetime] = mapped_column(Instant())
    window_start: Mapped[datetime] = mapped_column(Instant())
    window_count: Mapped[int] = mapped_column(Integer, default=0)


class Outgoing(Base):
    """The outbox: every outgoing mail is a row before it is sent, keyed against doubles."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_state_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str] = mapped_column(String(998))
    mail_from: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(Instant())
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(Instant())
    finished_at: Mapped[datetime | None] = mapped_column(Instant())
    last_error: Mapped[str | None] = mapped_column(Text)
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"))
    rule: Mapped[str | None] = mapped_column(String(64))


class FaqOffer(Base):
    """One FAQ entry offered in one auto-reply: the counts behind `mailcare faq stats`."""

    __tablename__ = "faq_offers"
    __table_args__ = (UniqueConstraint("message_pk", "entry"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"))
    entry: Mapped[str] = mapped_column(String(128), index=True)
    department: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(8))
    score: Mapped[float] = mapped_column(Float)
    offered_at: Mapped[datetime] = mapped_column(Instant(), index=True)


class InstanceKey(Base):
    """Secrets this installation generates for itself (e.g. the Message-ID hash key)."""

    __tablename__ = "instance_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class Correction(Base):
    """An agent's correction of a classification: training data for the next model."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    head: Mapped[str] = mapped_column(String(16))
    previous: Mapped[str | None] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(Instant(), index=True)


class SlaEvent(Base):
    """Something that happened to a conversation's SLA clock; `key` makes recording idempotent."""

    __tablename__ = "sla_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(Instant())
    source: Mapped[str] = mapped_column(String(32))
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    detail: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(Instant())


class SlaClock(Base):
    """A conversation's SLA clock as its events and policy define it (recomputed on change)."""

    __tablename__ = "sla_clocks"
    __table_args__ = (
        Index("ix_sla_clocks_next_check_at", "next_check_at"),
        Index("ix_sla_clocks_opened_at", "opened_at"),
    )

    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), primary_key=True)
    policy: Mapped[str | None] = mapped_column(String(64))
    mailbox: Mapped[str | None] = mapped_column(String(64))
    department: Mapped[str | None] = mapped_column(String(64))
    urgency: Mapped[str | None] = mapped_column(String(32))
    tier: Mapped[str | None] = mapped_column(String(32))
    calendar: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime] = mapped_column(Instant())
    waiting_since: Mapped[datetime | None] = mapped_column(Instant())
    first_response_due: Mapped[datetime | None] = mapped_column(Instant())
    first_response_at: Mapped[datetime | None] = mapped_column(Instant())
    first_response_minutes: Mapped[float | None] = mapped_column(Float)
    next_response_due: Mapped[datetime | None] = mapped_column(Instant())
    next_response_rounds: Mapped[int] = mapped_column(Integer, default=0)
    next_response_breaches: Mapped[int] = mapped_column(Integer, default=0)
    resolution_due: Mapped[datetime | None] = mapped_column(Instant())
    resolved_at: Mapped[datetime | None] = mapped_column(Instant())
    resolution_minutes: Mapped[float | None] = mapped_column(Float)
    # JSON: the warnings and breaches still to announce, and those already announced
    checks: Mapped[str] = mapped_column(Text, default="[]")
    notified: Mapped[str] = mapped_column(Text, default="[]")
    next_check_at: Mapped[datetime | None] = mapped_column(Instant())
    updated_at: Mapped[datetime] = mapped_column(Instant())


class SurveyAnswer(Base):
    """A customer's satisfaction rating of a resolved conversation (the latest one counts)."""

    __tablename__ = "survey_answers"

    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), primary_key=True)
    rating: Mapped[int] = mapped_column(Integer)
    answered_at: Mapped[datetime] = mapped_column(Instant(), index=True)
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    channel: Mapped[str] = mapped_column(String(16))


class SoftBounce(Base):
    """Soft bounces of one address in the current window (reset when the address proves alive)."""

    __tablename__ = "soft_bounces"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[datetime] = mapped_column(Instant())
    last_at: Mapped[datetime] = mapped_column(Instant())
    last_detail: Mapped[str | None] = mapped_column(Text)


class Subscriber(Base):
    """A person marketing mail may go to: contact attributes that segments select on."""

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(300))
    language: Mapped[str | None] = mapped_column(String(16))
    timezone: Mapped[str | None] = mapped_column(String(64))
    tier: Mapped[str | None] = mapped_column(String(32))
    lifecycle: Mapped[str | None] = mapped_column(String(32))
    # JSON: a list of tags, an object of further attributes for templates
    tags: Mapped[str] = mapped_column(Text, default="[]")
    attributes: Mapped[str] = mapped_column(Text, default="{}")
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    last_contact_at: Mapped[datetime | None] = mapped_column(Instant())
    created_at: Mapped[datetime] = mapped_column(Instant())
    updated_at: Mapped[datetime] = mapped_column(Instant())


class ListMember(Base):
    """A subscriber's membership of one list, with the consent behind it."""

    __tablename__ = "list_members"
    __table_args__ = (Index("ix_list_members_list_status", "list", "status"),)

    list: Mapped[str] = mapped_column(String(64), primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id"), primary_key=True)
    # pending (double opt-in not yet confirmed), subscribed, unsubscribed
    status: Mapped[str] = mapped_column(String(16))
    consent_source: Mapped[str | None] = mapped_column(String(200))
    consent_at: Mapped[datetime | None] = mapped_column(Instant())
    confirmed_at: Mapped[datetime | None] = mapped_column(Instant())
    unsubscribed_at: Mapped[datetime | None] = mapped_column(Instant())
    created_at: Mapped[datetime] = mapped_column(Instant())


class Campaign(Base):
    """A newsletter or promotion as the marketer defined it; each occurrence is a run."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_state_next", "state", "next_run_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    # JSON of the validated definition (daemon/campaign_config.py)
    definition: Mapped[str] = mapped_column(Text)
    # draft, scheduled (a next run is due at next_run_at), done, cancelled
    state: Mapped[str] = mapped_column(String(16))
    next_run_at: Mapped[datetime | None] = mapped_column(Instant())
    next_occurrence: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(Instant())
    updated_at: Mapped[datetime] = mapped_column(Instant())


class CampaignRun(Base):
    """One occurrence of a campaign; the unique occurrence makes a double start impossible."""

    __tablename__ = "campaign_runs"
    __table_args__ = (
        UniqueConstraint("campaign_id", "occurrence"),
        Index("ix_campaign_runs_status", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    occurrence: Mapped[str] = mapped_column(String(40))
    # running, paused, finished, finished_with_failures, cancelled, skipped
    status: Mapped[str] = mapped_column(String(24))
    scheduled_for: Mapped[datetime] = mapped_column(Instant())
    started_at: Mapped[datetime] = mapped_column(Instant())
    finished_at: Mapped[datetime | None] = mapped_column(Instant())
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    excluded: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(Text)


class CampaignSend(Base):
    """One recipient of one run: claimed with a lease, its Message-ID fixed before DATA."""

    __tablename__ = "campaign_sends"
    __table_args__ = (
        UniqueConstraint("run_id", "address"),
        Index("ix_campaign_sends_state_due", "state", "due_at"),
        Index("ix_campaign_sends_run_state", "run_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("campaign_runs.id"))
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    # queued, claimed, sending, sent, failed, uncertain, cancelled, skipped
    state: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(Instant())
    # indexed: a complaint or bounce names the Message-ID of the mail it is about
    message_id: Mapped[str] = mapped_column(String(998), index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(Instant())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(Instant())
    last_error: Mapped[str | None] = mapped_column(Text)


class Throttle(Base):
    """A relay's token bucket: shared by every process and kept across restarts."""

    __tablename__ = "throttles"

    relay: Mapped[str] = mapped_column(String(200), primary_key=True)
    rate: Mapped[float] = mapped_column(Float)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(Instant())
    deferrals: Mapped[int] = mapped_column(Integer, default=0)
    last_deferral_at: Mapped[datetime | None] = mapped_column(Instant())
