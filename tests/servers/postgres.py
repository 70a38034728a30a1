"""Throwaway PostgreSQL databases on the local server: one per test, dropped afterwards."""

from __future__ import annotations

import functools
import ipaddress
import itertools
import logging
import os
import queue
import re
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL, make_url

from daemon.folders import process_alive

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

ADMIN_URL_ENV = "MAILCARE_TEST_PG_URL"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NAME_PREFIX = "mailcare_test_"
_NAME = re.compile(rf"^{NAME_PREFIX}(\d+)_\w+$")


def admin_url() -> URL:
    """The URL of the database used to create and drop the test databases (loopback only)."""
    url = make_url(os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL))
    host = url.host or "127.0.0.1"
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{ADMIN_URL_ENV} must point at a loopback address, not {host}")
    return url


def _conninfo(url: URL) -> str:
    """A libpq connection string for url."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        dbname=url.database or "postgres",
        password=str(url.password) if url.password else None,
    )


@functools.cache
def pg_missing(timeout: float = 1.0) -> str | None:
    """Say why the local PostgreSQL cannot be used, or None when it can (checked once)."""
    try:
        url = admin_url()
    except ValueError as exc:
        return str(exc)
    host, port = url.host or "127.0.0.1", url.port or 5432
    try:
        # A plain TCP probe first: libpq's connect_timeout cannot go below 2 s.
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        return f"nothing listens on {host}:{port} ({exc})"
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(_conninfo(url), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"cannot log in to {url.render_as_string()}: {exc}".strip()
    return None


def pg_available() -> bool:
    """True when the local PostgreSQL accepts our admin login."""
    return pg_missing() is None


class PostgresDatabases:
    """Creates databases named mailcare_test_<pid>_<n> and drops them again."""

    def __init__(self, url: URL | str | None = None) -> None:
        import psycopg

        self.admin_url = make_url(url) if url is not None else admin_url()
        self.prefix = f"{NAME_PREFIX}{os.getpid()}_"
        self._counter = itertools.count(1)
        self._created: list[str] = []
        self._templates: dict[str, str] = {}
        self._conn = psycopg.connect(_conninfo(self.admin_url), autocommit=True)
        # DROP DATABASE sometimes waits ~1 s for a checkpoint; tests need not wait for it.
        self._doomed: queue.Queue[str | None] = queue.Queue()
        self._dropper = threading.Thread(target=self._drop_in_background, daemon=True)
        self._dropper.start()

    def url_for(self, name: str) -> str:
        """The SQLAlchemy URL of database name on the same server."""
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def create(self, template: str = "template0") -> str:
        """Create a new database (a copy of template) and return its URL."""
        from psycopg import sql

        name = f"{self.prefix}{next(self._counter)}"
        self._conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} ENCODING 'UTF8'").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
        self._created.append(name)
        logger.debug("created database %s from %s", name, template)
        return self.url_for(name)

    def create_from(self, key: str, build: Callable[[str], None]) -> str:
        """Create a database copied from a template that build(url) filled once per key."""
        template = self._templates.get(key)
        if template is None:
            url = self.create()
            template = make_url(url).database or ""
            build(url)
            self._seal(template)
            self._templates[key] = template
        return self.create(template)

    def _seal(self, name: str) -> None:
        """Close every session on name, so it can serve as a CREATE DATABASE template."""
        self._conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )

    def drop(self, url_or_name: str, wait: bool = False) -> None:
        """Drop one database (in the background unless wait), closing sessions still on it."""
        name = make_url(url_or_name).database if "://" in url_or_name else url_or_name
        if not name or not name.startswith(self.prefix):
            raise ValueError(f"refusing to drop {name!r}: not created by this session")
        if name in self._created:
            self._created.remove(name)
        if wait:
            _drop_database(self._conn, name)
        else:
            self._doomed.put(name)

    def _drop_in_background(self) -> None:
        import psycopg

        with psycopg.connect(_conninfo(self.admin_url), autocommit=True) as conn:
            while (name := self._doomed.get()) is not None:
                try:
                    _drop_database(conn, name)
                except psycopg.Error as exc:
                    logger.warning("could not drop test database %s: %s", name, exc)

    def drop_stale(self) -> list[str]:
        """Drop test databases left behind by processes of this machine that no longer run."""
        dropped = []
        rows = self._conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (NAME_PREFIX + "%",)
        ).fetchall()
        for (name,) in rows:
            match = _NAME.match(name)
            if match is None or process_alive(int(match.group(1))):
                continue
            _drop_database(self._conn, name)
            dropped.append(name)
        if dropped:
            logger.info("dropped %d stale test databases", len(dropped))
        return dropped

    def close(self) -> None:
        """Drop every database this object created and close the admin connection."""
        self._doomed.put(None)
        self._dropper.join(timeout=60)
        try:
            for name in reversed(list(self._created)):
                self.drop(name, wait=True)
        finally:
            self._conn.close()


def _drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    from psycopg import sql

    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
