"""A campaign as a marketer defines it (YAML file or command line), and when it runs.

Every schedule, one-off or recurring, becomes a crontab-style trigger in the campaign's
time zone (APScheduler's CronTrigger computes the next occurrence, across DST changes). An
occurrence is named by its local wall time, e.g. `2026-12-01T09:00`; the database keeps one
run per (campaign, occurrence), so no occurrence can start twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import ConfigDict, Field, field_validator, model_validator

from .configfile import load_yaml, validate
from .rule_types import Duration, Name, Strict

KINDS = ("newsletter", "promotion")
# the earliest local time on Earth is UTC+14: a local-time campaign starts when it is due there
EARLIEST_OFFSET = timedelta(hours=14)
_REPEATS = ("daily", "weekly", "monthly")


def zone(name: str) -> ZoneInfo:
    """The IANA time zone, or a ValueError naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (e.g. Europe/Berlin, Asia/Shanghai)"
        ) from None


class Schedule(Strict):
    """When a campaign runs: once at `at`, or repeatedly, in `timezone`.

    repeat: daily, weekly (on the weekday of `at`), monthly (on its day of the month; months
    without that day are skipped), or `cron: MIN HOUR DAY MONTH WEEKDAY`. late_start: an
    occurrence more than this late (the daemon was down) is skipped, not sent.
    """

    at: datetime | None = None
    timezone: str = "UTC"
    local_time: bool = False
    repeat: str | None = None
    until: datetime | None = None
    late_start: Duration | None = 6 * 3600.0

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("repeat")
    @classmethod
    def _repeat(cls, value: str | None) -> str | None:
        if value is None or value in _REPEATS:
            return value
        if value.startswith("cron:"):
            try:
                CronTrigger.from_crontab(value[5:].strip(), timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"repeat: {value!r}: {exc}") from None
            return value
        raise ValueError(f"repeat: {value!r} is not daily, weekly, monthly or 'cron: ...'")

    @model_validator(mode="after")
    def _needs_start(self) -> Schedule:
        if self.repeat in _REPEATS and self.at is None:
            raise ValueError(f"repeat: {self.repeat} needs `at` (the first occurrence)")
        return self

    def local(self, moment: datetime) -> datetime:
        """A moment in the schedule's time zone (naive times are read as local)."""
        tz = zone(self.timezone)
        return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment.astimezone(tz)

    def trigger(self) -> CronTrigger | None:
        """The recurrence as a cron trigger, or None for a one-off campaign."""
        if self.repeat is None:
            return None
        tz = zone(self.timezone)
        if self.repeat.startswith("cron:"):
            return CronTrigger.from_crontab(self.repeat[5:].strip(), timezone=tz)
        assert self.at is not None
        first = self.local(self.at)
        fields: dict[str, Any] = {"minute": first.minute, "hour": first.hour, "timezone": tz}
        if self.repeat == "weekly":
            fields["day_of_week"] = first.weekday()
        elif self.repeat == "monthly":
            fields["day"] = first.day
        return CronTrigger(**fields)

    def first(self, now: datetime) -> datetime:
        """The first occurrence (local time): `at`, the next cron time, or now."""
        if self.at is not None:
            return self.local(self.at).replace(second=0, microsecond=0)
        trigger = self.trigger()
        if trigger is not None:
            found = trigger.get_next_fire_time(None, now)
            if found is not None:
                return self.local(found)
        return self.local(now).replace(microsecond=0)

    def after(self, occurrence: datetime) -> datetime | None:
        """The occurrence after this one, or None when the campaign is done."""
        trigger = self.trigger()
        if trigger is None:
            return None
        found = trigger.get_next_fire_time(occurrence, occurrence + timedelta(seconds=1))
        if found is None:
            return None
        found = self.local(found)
        if self.until is not None and found > self.local(self.until):
            return None
        return found

    def start_at(self, occurrence: datetime) -> datetime:
        """When a run must begin: the occurrence, or its earliest local time anywhere."""
        if not self.local_time:
            return occurrence
        wall = occurrence.replace(tzinfo=None)
        return (wall - EARLIEST_OFFSET).replace(tzinfo=ZoneInfo("UTC"))


def occurrence_key(occurrence: datetime) -> str:
    """The name of an occurrence: its local wall time to the minute."""
    return occurrence.strftime("%Y-%m-%dT%H:%M")


class CampaignDefinition(Strict):
    """One campaign: audience, template, sender, schedule and the policy for unclear sends."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Name
    kind: Literal["newsletter", "promotion"] = "newsletter"
    list: Name
    segment: Name | None = None
    template: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    sender: str | None = Field(default=None, alias="from")
    reply_to: str | None = None
    schedule: Schedule = Schedule()
    # variables every recipient's template sees, e.g. a coupon code or a landing page
    variables: dict[str, str | int | float | bool] = Field(default_factory=dict)
    # a send whose result was never seen (crash, lost connection) is not repeated unless this
    # is true: a second copy is then possible, a missing one is not
    resend_uncertain: bool = False
    # 4xx deferrals are retried after retry_after, doubling, up to max_attempts tries
    max_attempts: int = Field(default=5, ge=1, le=50)
    retry_after: Duration = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _addresses(self) -> CampaignDefinition:
        from .compose import split_mailbox

        for key, value in (("from", self.sender), ("reply_to", self.reply_to)):
            if value is not None:
                try:
                    split_mailbox(value)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from exc
        return self

    def to_json(self) -> str:
        """The stored form."""
        return self.model_dump_json(by_alias=True, exclude_defaults=False)

    @classmethod
    def from_json(cls, text: str) -> CampaignDefinition:
        """Read the stored form back."""
        return cls.model_validate_json(text)


class CampaignFile(Strict):
    """A YAML file holding several campaigns."""

    campaigns: list[CampaignDefinition]


def load_definitions(path: Path) -> list[CampaignDefinition]:
    """Campaigns from a YAML file: one campaign, or a list of them under `campaigns:`."""
    loaded = load_yaml(path)
    if isinstance(loaded.data, dict) and "campaigns" in loaded.data:
        return validate(loaded, CampaignFile).campaigns
    return [validate(loaded, CampaignDefinition)]
