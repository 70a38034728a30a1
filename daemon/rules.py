"""The admin-edited rules.yaml: validated once into a typed object, reloaded on change."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from .calendar_config import CalendarConfig
from .configfile import load_yaml, validate
from .errors import ConfigError
from .marketing_config import Marketing
from .rule_types import ADDRESS, Duration, Keyword, Name, Strict
from .sla_config import Sla

log = logging.getLogger(__name__)


class ConversationRules(Strict):
    """How messages are grouped into conversations (tickets)."""

    ticket_prefix: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{0,15}$")] = "MC"
    merge_copies: bool = True
    thread_by_tag: bool = True


class Company(Strict):
    """How replies sign off."""

    name: str = "Customer Service"
    signature: str = ""


class Identity(Strict):
    """Who mailcare is: mail from these addresses is never answered."""

    # besides every mailbox `address`, every listener recipient and every reply `from`
    addresses: list[Annotated[str, Field(pattern=ADDRESS)]] = Field(default_factory=list)
    loop_header: Annotated[str, Field(pattern=r"^X-[A-Za-z0-9-]{1,60}$")] = "X-Mailcare-Loop"
    company: Company = Company()


class Match(Strict):
    """Conditions of a rule; each given list must contain the message's value (AND of lists)."""

    # only the message that opens a conversation; follow-ups in a thread are not acknowledged
    new_conversation: bool = True

    mailboxes: list[str] | None = None
    to: list[str] | None = None
    departments: list[str] | None = None
    urgencies: list[str] | None = None
    languages: list[str] | None = None
    tiers: list[str] | None = None


class FaqChoice(Strict):
    """How many FAQ answers an auto-reply offers, and how similar they must be."""

    limit: int = Field(default=3, ge=0, le=10)
    min_score: float = Field(default=0.2, ge=0, le=1)


class ReplyRule(Strict):
    """One auto-reply: when it applies, which template, from which address."""

    name: Name
    template: Name
    sender: Annotated[str, Field(alias="from", min_length=3)]
    when: Match = Match()
    faq: FaqChoice = FaqChoice()
    html: bool = True
    # promised answer time in minutes per urgency ("default" for the rest)
    answer_within: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: {"default": 480.0}
    )
    calendar: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ReplyLimits(Strict):
    """Rate limits on auto-replies per recipient address."""

    # at most one reply per sender per rule within this window
    per_rule_window: Duration = 86400.0
    # and at most this many auto-replies of any rule to one address per hour and per day
    max_per_hour: int = Field(default=3, ge=1)
    max_per_day: int = Field(default=10, ge=1)


class AutoReplies(Strict):
    """Auto-reply rules: the first rule whose `when` matches answers the message."""

    enabled: bool = True
    limits: ReplyLimits = ReplyLimits()
    rules: list[ReplyRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> AutoReplies:
        names = [rule.name for rule in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique: {', '.join(dupes)}")
        return self


class Labels(Strict):
    """Rename or regroup the model's labels: model label -> the label mailcare uses."""

    department: dict[str, Name] = Field(default_factory=dict)
    urgency: dict[str, Name] = Field(default_factory=dict)


class Department(Strict):
    """Where agents see a department's mail: an IMAP folder, keywords, a forward."""

    folder: str | None = None
    keywords: list[Keyword] = Field(default_factory=list)
    forward: Annotated[str, Field(pattern=ADDRESS)] | None = None


class OverrideMatch(Strict):
    """Conditions of an override; all given ones must hold."""

    sender_domains: list[str] | None = None
    senders: list[Annotated[str, Field(pattern=ADDRESS)]] | None = None
    subject: str | None = None  # a regular expression, searched case-insensitively
    body: str | None = None
    tiers: list[str] | None = None

    @model_validator(mode="after")
    def _patterns_compile(self) -> OverrideMatch:
        for pattern in (self.subject, self.body):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"bad regular expression {pattern!r}: {exc}") from exc
        return self


class Override(Strict):
    """A rule that decides department and/or urgency instead of the model."""

    name: Name
    when: OverrideMatch
    department: Name | None = None
    urgency: Name | None = None

    @model_validator(mode="after")
    def _decides_something(self) -> Override:
        if self.department is None and self.urgency is None:
            raise ValueError("an override sets `department`, `urgency` or both")
        return self


class Routing(Strict):
    """Classification: the model, where unsure mail goes, and how decisions become visible."""

    model: Name = "default"
    triage_department: Name = "general"
    triage_keyword: Keyword = "$NeedsTriage"
    departments: dict[Name, Department] = Field(default_factory=dict)
    urgency_keywords: dict[Name, list[Keyword]] = Field(default_factory=dict)
    overrides: list[Override] = Field(default_factory=list)
    # a message moved into another department's folder by an agent is a correction
    learn_from_moves: bool = True

    def visible(
        self, department: str | None, urgency: str | None, triage: bool
    ) -> tuple[str | None, list[str]]:
        """Where agents see a decision: the department's folder (or None) and the keywords."""
        config = self.departments.get(department or "")
        keywords = list(config.keywords) if config else []
        keywords += self.urgency_keywords.get(urgency or "", [])
        if triage:
            keywords.append(self.triage_keyword)
        return (config.folder if config else None), list(dict.fromkeys(keywords))


class Rules(Strict):
    """Everything rules.yaml decides."""

    version: Literal[1] = 1
    conversations: ConversationRules = ConversationRules()
    identity: Identity = Identity()
    calendars: dict[Name, CalendarConfig] = Field(default_factory=dict)
    labels: Labels = Labels()
    routing: Routing = Routing()
    auto_replies: AutoReplies = AutoReplies()
    sla: Sla = Sla()
    marketing: Marketing = Marketing()

    @model_validator(mode="after")
    def _known_calendars(self) -> Rules:
        known = ", ".join(sorted(self.calendars)) or "none defined"
        for rule in self.auto_replies.rules:
            if rule.calendar is not None and rule.calendar not in self.calendars:
                raise ValueError(
                    f"auto_replies rule {rule.name}: unknown calendar {rule.calendar!r} ({known})"
                )
        if self.sla.calendar is not None and self.sla.calendar not in self.calendars:
            raise ValueError(f"sla: unknown calendar {self.sla.calendar!r} ({known})")
        for policy in self.sla.policies:
            name = self.sla.calendar_of(policy)
            if policy.business and name is None:
                raise ValueError(
                    f"sla policy {policy.name}: business minutes need a calendar "
                    "(set `calendar` here or in sla, or `business: false` for wall-clock minutes)"
                )
            if name is not None and name not in self.calendars:
                raise ValueError(f"sla policy {policy.name}: unknown calendar {name!r} ({known})")
        return self


def load_rules(path: Path) -> Rules:
    """Load and validate rules.yaml; a missing file means the defaults."""
    if not path.exists():
        return Rules()
    return validate(load_yaml(path), Rules)


def json_schema() -> str:
    """The JSON Schema of rules.yaml, for editor completion (yaml-language-server)."""
    schema = Rules.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mailcare rules.yaml"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


class RulesFile:
    """rules.yaml as the running daemon sees it: reloaded on change, last good kept."""

    def __init__(self, path: Path, rules: Rules | None = None) -> None:
        self.path = path
        self._stamp = self._fingerprint()
        self.current = rules if rules is not None else load_rules(path)
        self.error: str | None = None

    def _fingerprint(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def fresh(self) -> Rules:
        """The current rules, reloaded first if the file changed."""
        self.refresh()
        return self.current

    def refresh(self) -> bool:
        """Reload if the file changed; True when new rules took effect."""
        stamp = self._fingerprint()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            rules = load_rules(self.path)
        except ConfigError as exc:
            self.error = str(exc)
            log.error("rules not reloaded, keeping the last good rules: %s", exc)
            return False
        self.current = rules
        self.error = None
        log.info("rules reloaded from %s", self.path)
        return True
