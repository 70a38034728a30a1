"""The one exception tree of mailcare; each subclass says when it is raised."""

from __future__ import annotations


class MailcareError(Exception):
    """Root of every error mailcare raises on purpose."""


class ConfigError(MailcareError):
    """Raised when settings or rules are invalid; the message names the file, line and key."""


class StorageError(MailcareError):
    """Raised when the database cannot persist or read what intake or the runner needs."""


class SchemaOutdatedError(StorageError):
    """Raised at start when the database schema is older than this release (run `db upgrade`)."""


class LeaseLostError(MailcareError):
    """Raised when a folder lease was taken over by another process before a commit."""


class MailSourceError(MailcareError):
    """Raised when a mailbox cannot be reached, logged into or read."""


class ParseError(MailcareError):
    """Raised when a message cannot be turned into a parsed message at all."""


class StepError(MailcareError):
    """Raised by a pipeline step that must quarantine the message it was given."""


class TemplateError(MailcareError):
    """Raised when a mail template is missing, fails to compile or to render; names the file."""
