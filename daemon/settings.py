"""Typed settings (connections, paths, database), validated once at start."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .configfile import load_yaml, validate
from .errors import ConfigError

DEFAULT_CONFIG = "mailcare.yaml"
CONFIG_ENV = "MAILCARE_CONFIG"
DATABASE_ENV = "MAILCARE_DATABASE_URL"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(_Strict):
    """Where a password comes from: an environment variable or a file, never the YAML itself."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of `env` or `file`")
        return self

    def reveal(self) -> str:
        """Read the secret now; raise ConfigError naming the source when it is missing."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}") from exc


class Disposition(_Strict):
    """What happens to the server copy once a message is stored: nothing is deleted."""

    action: Literal["leave", "flag", "move"] = "leave"
    flag: str = "$MailcareStored"
    folder: str | None = None

    @model_validator(mode="after")
    def _folder_for_move(self) -> Disposition:
        if self.action == "move" and not self.folder:
            raise ValueError("`folder` is required when action is move")
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Mailbox(_Strict):
    """One IMAP account and the folders mailcare reads from it."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    ca_file: Path | None = None
    verify: bool = True
    username: str
    password: Secret
    folders: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1)
    address: str | None = None
    idle: Literal["auto", "never"] = "auto"
    poll_interval: float = Field(default=30.0, gt=0)
    idle_refresh: float = Field(default=600.0, gt=0, le=1740)
    fetch_batch: int = Field(default=500, ge=1, le=5000)
    timeout: float = Field(default=60.0, gt=0)
    disposition: Disposition = Disposition()

    @model_validator(mode="after")
    def _plaintext_only_on_loopback(self) -> Mailbox:
        if self.tls == "none" and not _is_loopback(self.host):
            raise ValueError(
                "tls: none is allowed only for loopback hosts; use implicit or starttls"
            )
        return self

    @property
    def effective_port(self) -> int:
        """The port to connect to: the configured one or the standard one for the TLS mode."""
        if self.port is not None:
            return self.port
        return 993 if self.tls == "implicit" else 143


class Intake(_Strict):
    """The LMTP/SMTP listener that mail servers deliver to directly."""

    enabled: bool = False
    protocol: Literal["lmtp", "smtp"] = "lmtp"
    host: str = "127.0.0.1"
    port: int = Field(default=10025, ge=0, le=65535)
    recipients: list[str] = Field(default_factory=list)
    max_message_size: int = Field(default=25 * 1024 * 1024, ge=1024)
    hostname: str = "mailcare"

    @field_validator("recipients")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [item.strip().lower() for item in value]

    @model_validator(mode="after")
    def _needs_recipients(self) -> Intake:
        if self.enabled and not self.recipients:
            raise ValueError("an enabled listener needs `recipients` (addresses or @domains)")
        return self


STEPS = ["parse", "screen", "thread", "contact", "unsubscribe", "classify", "sla", "reply"]


class Runner(_Strict):
    """How the runner claims and processes stored messages."""

    batch_size: int = Field(default=200, ge=1, le=5000)
    # 1: the runner is a thread of the main process. More: the main process only takes
    # mail in and that many runner processes work in parallel (bench/intake.py measured
    # two to be fastest on two cores)
    processes: int = Field(default_factory=lambda: min(os.cpu_count() or 1, 2), ge=1, le=64)
    steps: list[str] = Field(default_factory=STEPS.copy)
    max_attempts: int = Field(default=3, ge=1)
    claim_ttl: float = Field(default=60.0, gt=0)
    idle_wait: float = Field(default=0.2, gt=0)


class Relay(_Strict):
    """The SMTP relay every outgoing mail (auto-replies, forwards, campaigns) is handed to."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: Literal["implicit", "starttls", "none"] = "starttls"
    ca_file: Path | None = None
    verify: bool = True
    username: str | None = None
    password: Secret | None = None
    hostname: str = "mailcare"
    timeout: float = Field(default=30.0, gt=0)
    # parallel SMTP connections, each kept open and reused for many messages
    connections: int = Field(default=2, ge=1, le=32)
    # messages one connection takes per round; after a crash at most connections x batch
    # messages are `uncertain` (handed to the relay, reply not seen)
    batch: int = Field(default=16, ge=1, le=500)
    messages_per_connection: int = Field(default=500, ge=1)
    # a message the relay refuses with 4xx (or that times out) is retried with backoff
    retry_first: float = Field(default=60.0, gt=0)
    retry_max: float = Field(default=1800.0, gt=0)
    give_up_after: float = Field(default=5 * 86400.0, gt=0)
    # an unreachable relay is probed again after this many seconds at most
    reconnect_max: float = Field(default=30.0, gt=0)
    claim_ttl: float = Field(default=600.0, gt=0)
    idle_wait: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _checked(self) -> Relay:
        if self.tls == "none" and not _is_loopback(self.host):
            raise ValueError(
                "tls: none is allowed only for loopback hosts; use implicit or starttls"
            )
        if (self.username is None) != (self.password is None):
            raise ValueError("give both `username` and `password`, or neither")
        return self

    @property
    def effective_port(self) -> int:
        """The configured port or the standard one for the TLS mode (465 or 587; 25 plain)."""
        if self.port is not None:
            return self.port
        return {"implicit": 465, "starttls": 587, "none": 25}[self.tls]


class SubmissionUser(_Strict):
    """An agent allowed to send through the submission port."""

    username: Annotated[str, Field(min_length=1, max_length=256)]
    password: Secret


class Submission(_Strict):
    """The SMTP submission port agents' mail clients use as their outgoing server."""

    enabled: bool = False
    host: str = "127.0.0.1"
    # 0: a free port is picked at start
    port: int = Field(default=587, ge=0, le=65535)
    # AUTH is offered only inside TLS; plaintext AUTH needs tls: none, which needs loopback
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    cert_file: Path | None = None
    key_file: Path | None = None
    users: list[SubmissionUser] = Field(default_factory=list)
    max_size: int = Field(default=35 * 1024 * 1024, ge=1024)
    hostname: str = "mailcare"

    @model_validator(mode="after")
    def _checked(self) -> Submission:
        if self.tls == "none" and not _is_loopback(self.host):
            raise ValueError(
                "tls: none is allowed only for loopback hosts; use implicit or starttls"
            )
        if not self.enabled:
            return self
        if self.tls != "none" and (self.cert_file is None or self.key_file is None):
            raise ValueError(f"`cert_file` and `key_file` are required when tls is {self.tls}")
        if not self.users:
            raise ValueError("an enabled submission port needs `users`: AUTH is always required")
        names = [u.username for u in self.users]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"submission usernames must be unique: {', '.join(dupes)}")
        return self


class Leases(_Strict):
    """Folder leases shared by several `mailcare run` processes on one database."""

    ttl: float = Field(default=60.0, gt=0)
    retry: float = Field(default=5.0, gt=0)


class Http(_Strict):
    """The daemon's small web endpoint: health, Prometheus metrics, survey answers."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=0, le=65535)  # 0: a free port
    # the address customers reach it under (behind a TLS proxy), for links in mail
    public_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")] | None = None


class Paths(_Strict):
    """Where the admin-edited data lives (relative paths are taken from the config file)."""

    rules: Path = Path("rules.yaml")
    templates: Path = Path("templates")
    models: Path = Path("models")


class Settings(_Strict):
    """Everything mailcare needs to start, validated once."""

    database_url: str = "sqlite:///var/mailcare.sqlite3"
    paths: Paths = Paths()
    mailboxes: list[Mailbox] = Field(default_factory=list)
    intake: Intake = Intake()
    runner: Runner = Runner()
    leases: Leases = Leases()
    relay: Relay = Relay()
    submission: Submission = Submission()
    http: Http = Http()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _unique_mailbox_names(self) -> Settings:
        names = [m.name for m in self.mailboxes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"mailbox names must be unique: {', '.join(dupes)}")
        return self

    def resolve(self, base: Path) -> Settings:
        """Return a copy with relative paths (and a relative SQLite file) anchored at base."""
        paths = Paths(
            rules=_anchor(base, self.paths.rules),
            templates=_anchor(base, self.paths.templates),
            models=_anchor(base, self.paths.models),
        )
        url = self.database_url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith("sqlite:////") and url != "sqlite://":
            tail = url[len(prefix) :]
            if tail and tail != ":memory:":
                url = prefix + str(_anchor(base, Path(tail)))
        return self.model_copy(update={"paths": paths, "database_url": url})


def _anchor(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path)


def load_settings(path: Path | None = None) -> Settings:
    """Load settings from `path`, $MAILCARE_CONFIG or ./mailcare.yaml (defaults if absent)."""
    explicit = path is not None or CONFIG_ENV in os.environ
    chosen = path or Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))
    if chosen.exists():
        settings = validate(load_yaml(chosen), Settings).resolve(chosen.resolve().parent)
    elif explicit:
        raise ConfigError(f"{chosen}: settings file not found")
    else:
        settings = Settings().resolve(Path.cwd())
    url = os.environ.get(DATABASE_ENV)
    if url:
        settings = settings.model_copy(update={"database_url": url}).resolve(Path.cwd())
    return settings
