"""The `sla` section of rules.yaml: policies per department × urgency × tier, and how the
daemon sees responses and resolutions."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from .rule_types import Address, Duration, Keyword, Minutes, Name, Strict

TARGETS = ("first_response", "next_response", "resolution")


class PolicyMatch(Strict):
    """Which conversations a policy covers; an omitted list matches anything."""

    departments: list[str] | None = None
    urgencies: list[str] | None = None
    tiers: list[str] | None = None
    mailboxes: list[str] | None = None

    def matches(
        self, department: str | None, urgency: str | None, tier: str | None, mailbox: str | None
    ) -> bool:
        """Whether a conversation with these attributes falls under the policy."""
        pairs = (
            (self.departments, department),
            (self.urgencies, urgency),
            (self.tiers, tier),
            (self.mailboxes, mailbox),
        )
        return all(wanted is None or value in wanted for wanted, value in pairs)


class Warning(Strict):
    """When to warn before a target falls due: at a share of it and/or a lead time before it.

    With both, the warning goes out at whichever moment comes first.
    """

    at_percent: float | None = Field(default=80.0, gt=0, lt=100)
    before: Minutes | None = None


class Policy(Strict):
    """Response and resolution targets, in minutes (business minutes unless `business: false`)."""

    name: Name
    when: PolicyMatch = PolicyMatch()
    calendar: Name | None = None  # defaults to sla.calendar
    business: bool = True
    first_response: Minutes | None = None
    next_response: Minutes | None = None
    resolution: Minutes | None = None
    warn: Warning | None = Warning()
    # stop the clocks while the last word is ours (we wait on the customer)
    pause_while_waiting: bool = False

    @model_validator(mode="after")
    def _targets_make_sense(self) -> Policy:
        if self.first_response is None and self.next_response is None and self.resolution is None:
            raise ValueError(
                f"policy {self.name}: no target (first_response, next_response, resolution)"
            )
        if self.resolution is not None:
            for name in ("first_response", "next_response"):
                target = getattr(self, name)
                if target is not None and self.resolution < target:
                    raise ValueError(
                        f"policy {self.name}: resolution ({self.resolution:g} min) is shorter than "
                        f"{name} ({target:g} min)"
                    )
        if self.warn is not None and self.warn.before is not None:
            for name in TARGETS:
                target = getattr(self, name)
                if target is not None and self.warn.before >= target:
                    raise ValueError(
                        f"policy {self.name}: warn.before ({self.warn.before:g} min) is not "
                        f"shorter than {name} ({target:g} min)"
                    )
        return self

    def target(self, name: str) -> float | None:
        """The minutes allowed for one of TARGETS."""
        value: float | None = getattr(self, name)
        return value


class Survey(Strict):
    """A satisfaction survey mailed to the customer after a conversation is resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    enabled: bool = False
    template: Name = "satisfaction"
    sender: Annotated[str, Field(alias="from", min_length=3)] = "support@example.com"
    # a survey answer is accepted this long after the survey was sent
    valid_for: Duration = 30 * 86400.0


class Sla(Strict):
    """Service levels: which policy applies, who hears about warnings and breaches."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    enabled: bool = True
    calendar: Name | None = None
    policies: list[Policy] = Field(default_factory=list)
    # department -> the lead who is warned and escalated to; "default" for the others
    leads: dict[Name, Address] = Field(default_factory=dict)
    notify_from: str | None = Field(default=None, alias="from", min_length=3)
    notify_template: Name = "sla"
    sweep_every: Duration = 60.0
    # where agents mark a conversation resolved: moving a message there, or this keyword
    resolved_folder: str | None = None
    resolved_keyword: Keyword | None = "$Resolved"
    # the mailbox folder agents' clients file their sent mail in (watched for responses);
    # "auto" finds it by its SPECIAL-USE \Sent attribute
    sent_folder: str | None = "auto"
    survey: Survey = Survey()

    @model_validator(mode="after")
    def _unique_policy_names(self) -> Sla:
        seen: set[str] = set()
        for policy in self.policies:
            if policy.name in seen:
                raise ValueError(f"sla: policy name {policy.name!r} is used twice")
            seen.add(policy.name)
        if self.policies and self.notify_from is None and self.leads:
            raise ValueError("sla: `from` is needed to send notifications to the leads")
        return self

    def policy_for(
        self, department: str | None, urgency: str | None, tier: str | None, mailbox: str | None
    ) -> Policy | None:
        """The first policy whose `when` matches, or None."""
        for policy in self.policies:
            if policy.when.matches(department, urgency, tier, mailbox):
                return policy
        return None

    def calendar_of(self, policy: Policy) -> str | None:
        """The calendar a policy counts business minutes on (None: wall clock)."""
        if not policy.business:
            return None
        return policy.calendar or self.calendar

    def lead_for(self, department: str | None) -> str | None:
        """The address warned about a department's conversations."""
        if department is not None and department in self.leads:
            return self.leads[department]
        return self.leads.get("default")
