"""The pace of campaign mail: a token bucket per relay, kept in the database.

The bucket is a row read and written inside the claim transaction, so every process
sending through one relay shares it and a restart continues where the last process left
off (a restart does not buy a fresh burst). A 4xx deferral lowers the rate; it grows back
by a quarter for each `recover_after` without another deferral.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, select, update

from .database import Database
from .inbox import insert_ignoring
from .marketing_config import Throttle as ThrottleConfig
from .tables import Throttle

THROTTLES: Table = Throttle.__table__  # type: ignore[assignment]
RECOVERY = 1.25


@dataclass(frozen=True, slots=True)
class Grant:
    """Tokens granted now, and how long to wait before asking again when none were."""

    count: int
    wait: float
    rate: float


def _row(conn: Connection, db: Database, relay: str, config: ThrottleConfig, now: datetime) -> Any:
    query = select(THROTTLES).where(THROTTLES.c.relay == relay)
    if db.is_postgresql:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        conn.execute(
            insert_ignoring(conn, THROTTLES, ["relay"]),
            [
                {
                    "relay": relay,
                    "rate": config.per_second,
                    "tokens": float(config.burst),
                    "updated_at": now,
                    "deferrals": 0,
                    "last_deferral_at": None,
                }
            ],
        )
        row = conn.execute(query).first()
    return row


def effective_rate(row: Any, config: ThrottleConfig, now: datetime) -> float:
    """The rate now: the configured one, or the lowered one recovering since the last deferral."""
    if row.last_deferral_at is None:
        return config.per_second
    quiet = max(0.0, (now - row.last_deferral_at).total_seconds())
    steps = math.floor(quiet / config.recover_after) if config.recover_after > 0 else 64
    rate = float(row.rate) * RECOVERY ** min(steps, 64)
    return max(config.min_per_second, min(config.per_second, rate))


class TokenBucket:
    """Take tokens for a relay inside the caller's transaction."""

    def __init__(self, db: Database, relay: str) -> None:
        self.db = db
        self.relay = relay

    def take(self, conn: Connection, wanted: int, config: ThrottleConfig, now: datetime) -> Grant:
        """Grant up to `wanted` sends now."""
        row = _row(conn, self.db, self.relay, config, now)
        rate = effective_rate(row, config, now)
        elapsed = max(0.0, (now - row.updated_at).total_seconds())
        tokens = min(float(config.burst), float(row.tokens) + elapsed * rate)
        count = max(0, min(wanted, math.floor(tokens)))
        tokens -= count
        conn.execute(
            update(THROTTLES)
            .where(THROTTLES.c.relay == self.relay)
            .values(tokens=tokens, updated_at=now)
        )
        wait = 0.0 if count else max(0.001, (1.0 - tokens) / rate)
        return Grant(count, wait, rate)

    def give_back(self, conn: Connection, count: int, config: ThrottleConfig) -> None:
        """Return tokens for sends that did not happen (released claims)."""
        if count <= 0:
            return
        row = conn.execute(select(THROTTLES.c.tokens).where(THROTTLES.c.relay == self.relay))
        tokens = row.scalar()
        if tokens is None:
            return
        conn.execute(
            update(THROTTLES)
            .where(THROTTLES.c.relay == self.relay)
            .values(tokens=min(float(config.burst), float(tokens) + count))
        )

    def deferred(self, conn: Connection, config: ThrottleConfig, now: datetime) -> float:
        """The relay deferred a message (4xx): slow down; returns the new rate."""
        row = _row(conn, self.db, self.relay, config, now)
        rate = max(config.min_per_second, effective_rate(row, config, now) * config.on_deferral)
        conn.execute(
            update(THROTTLES)
            .where(THROTTLES.c.relay == self.relay)
            .values(
                rate=rate,
                tokens=0.0,
                updated_at=now,
                deferrals=THROTTLES.c.deferrals + 1,
                last_deferral_at=now,
            )
        )
        return rate
