"""Real servers for tests on loopback: Dovecot, pymap, an SMTP sink, PostgreSQL databases.

Import as `tests.servers`; the heavy modules (dovecot, pymap, smtp_sink, postgres) are
imported on demand.
"""

from __future__ import annotations

from .imap import Account
from .net import LOOPBACK, free_port
from .skips import REQUIRE_ENV, SERVER_MISSING, require_server, servers_required

__all__ = [
    "LOOPBACK",
    "REQUIRE_ENV",
    "SERVER_MISSING",
    "Account",
    "free_port",
    "require_server",
    "servers_required",
]
