"""The `marketing` section of rules.yaml: lists, segments, sender, pace, bounce handling."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Protocol

from pydantic import ConfigDict, Field, model_validator

from .rule_types import Address, Duration, Name, Strict

LIFECYCLES = ("potential", "new", "active", "lapsed")


class Audience(Protocol):
    """What a segment selects on (an audience row; read-only, so frozen dataclasses fit)."""

    @property
    def tier(self) -> str | None: ...
    @property
    def lifecycle(self) -> str | None: ...
    @property
    def language(self) -> str | None: ...
    @property
    def tags(self) -> frozenset[str]: ...
    @property
    def last_contact_at(self) -> datetime | None: ...


class MailingList(Strict):
    """A list people subscribe to; with double opt-in a new member must confirm by link."""

    title: str | None = None
    double_opt_in: bool = True


class LastContact(Strict):
    """Last contact (mail from the customer) within a span, or older than one (or never)."""

    within: Duration | None = None
    older_than: Duration | None = None


class Segment(Strict):
    """A part of a list chosen by contact attributes; an omitted condition matches anything."""

    tiers: list[str] | None = None
    lifecycles: list[Annotated[str, Field(pattern="^(potential|new|active|lapsed)$")]] | None = None
    languages: list[str] | None = None
    tags_any: list[str] | None = None
    tags_all: list[str] | None = None
    tags_none: list[str] | None = None
    last_contact: LastContact | None = None

    def matches(self, person: Audience, now: datetime) -> bool:
        """Whether a subscriber belongs to the segment at `now`."""
        if self.tiers is not None and person.tier not in self.tiers:
            return False
        if self.lifecycles is not None and person.lifecycle not in self.lifecycles:
            return False
        if self.languages is not None:
            primary = (person.language or "").split("-")[0].lower()
            if primary not in {language.lower() for language in self.languages}:
                return False
        if self.tags_any is not None and not person.tags.intersection(self.tags_any):
            return False
        if self.tags_all is not None and not person.tags.issuperset(self.tags_all):
            return False
        if self.tags_none is not None and person.tags.intersection(self.tags_none):
            return False
        wanted = self.last_contact
        if wanted is not None:
            last = person.last_contact_at
            if wanted.within is not None and (
                last is None or now - last > timedelta(seconds=wanted.within)
            ):
                return False
            if (
                wanted.older_than is not None
                and last is not None
                and now - last <= timedelta(seconds=wanted.older_than)
            ):
                return False
        return True


class Bounces(Strict):
    """Soft bounces suppress an address after `soft_limit` of them within `soft_window`."""

    soft_limit: int = Field(default=3, ge=1)
    soft_window: Duration = 30 * 86400.0


class Throttle(Strict):
    """The pace of campaign mail through the relay: a token bucket kept in the database.

    A 4xx deferral multiplies the rate by `on_deferral` (not below `min_per_second`); every
    `recover_after` without a deferral it grows back by a quarter towards `per_second`.
    """

    per_second: float = Field(default=20.0, gt=0)
    burst: int = Field(default=50, ge=1)
    on_deferral: float = Field(default=0.5, gt=0, le=1)
    min_per_second: float = Field(default=0.5, gt=0)
    recover_after: Duration = 60.0


class Confirmation(Strict):
    """Double opt-in: the mail with the signed confirmation link."""

    template: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] = "confirm-subscription"
    valid_for: Duration = 7 * 86400.0


class Marketing(Strict):
    """Campaign mail: who it comes from, the lists and segments, pace and bounce policy."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    sender: str | None = Field(default=None, alias="from")
    reply_to: str | None = None
    # the mailto: address in List-Unsubscribe; mail to it (through the intake) unsubscribes
    unsubscribe_address: Address | None = None
    lists: dict[Name, MailingList] = Field(default_factory=dict)
    segments: dict[Name, Segment] = Field(default_factory=dict)
    bounces: Bounces = Bounces()
    throttle: Throttle = Throttle()
    confirmation: Confirmation = Confirmation()
    # SMTP connections to the relay for campaign mail, rows claimed at once, claim lease
    connections: int = Field(default=2, ge=1, le=32)
    batch: int = Field(default=50, ge=1, le=1000)
    lease: Duration = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _addresses(self) -> Marketing:
        from .compose import split_mailbox

        for key, value in (("from", self.sender), ("reply_to", self.reply_to)):
            if value is not None:
                try:
                    split_mailbox(value)
                except ValueError as exc:
                    raise ValueError(f"marketing.{key}: {exc}") from exc
        if self.throttle.min_per_second > self.throttle.per_second:
            raise ValueError("marketing.throttle: min_per_second is above per_second")
        return self

    def list_of(self, name: str) -> MailingList:
        """A configured list, or a ValueError naming the known ones."""
        try:
            return self.lists[name]
        except KeyError:
            known = ", ".join(sorted(self.lists)) or "none defined"
            raise ValueError(f"unknown list {name!r} (marketing.lists: {known})") from None

    def segment_of(self, name: str) -> Segment:
        """A configured segment, or a ValueError naming the known ones."""
        try:
            return self.segments[name]
        except KeyError:
            known = ", ".join(sorted(self.segments)) or "none defined"
            raise ValueError(f"unknown segment {name!r} (marketing.segments: {known})") from None
