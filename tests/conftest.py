"""Shared fixtures: real mail servers and databases on loopback, started once per session."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

# Makes `daemon` and `tests.servers` importable without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers.certs import TestCertificates
from tests.servers.dovecot import DEFAULT_POOL_SIZE, Dovecot
from tests.servers.imap import Account
from tests.servers.net import free_port as _free_port
from tests.servers.postgres import PostgresDatabases, pg_missing
from tests.servers.pymap import PymapServer
from tests.servers.skips import pytest_runtest_makereport, require_server
from tests.servers.smtp_sink import SmtpSink

__all__ = ["pytest_runtest_makereport"]  # the hook turns `server missing:` skips into failures

pytest_plugins = ["pytester"]  # test_servers.py runs the skip switch in a nested pytest

ImapServer = Dovecot | PymapServer
REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_ENV = "MAILCARE_SHARED"
NOIDLE_POOL_SIZE = 50


@pytest.fixture(scope="session")
def test_certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """A test CA and a localhost certificate, shared by every TLS server of the session."""
    return TestCertificates.create(tmp_path_factory.mktemp("certs"))


def _start_dovecot(
    certs: TestCertificates, *, idle: bool = True, pool_size: int = DEFAULT_POOL_SIZE
) -> Dovecot:
    reason = Dovecot.missing()
    require_server("dovecot", reason is None, reason or "")
    return Dovecot(certs=certs, idle=idle, pool_size=pool_size).start()


@pytest.fixture(scope="session")
def dovecot(test_certs: TestCertificates) -> Iterator[Dovecot]:
    """Dovecot with IMAP, IMAPS/STARTTLS and LMTP on free loopback ports, for the session."""
    server = _start_dovecot(test_certs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dovecot_noidle(test_certs: TestCertificates) -> Iterator[Dovecot]:
    """A second Dovecot that does not advertise IDLE, for testing pollers."""
    server = _start_dovecot(test_certs, idle=False, pool_size=NOIDLE_POOL_SIZE)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pymap_server() -> Iterator[PymapServer]:
    """pymap's in-memory IMAP server in a thread, for the session."""
    reason = PymapServer.missing()
    require_server("pymap", reason is None, reason or "")
    server = PymapServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", params=["dovecot", "pymap"])
def imap_server(request: pytest.FixtureRequest) -> ImapServer:
    """Each IMAP server in turn (the session-scoped instances are reused)."""
    server: ImapServer = request.getfixturevalue(
        "dovecot" if request.param == "dovecot" else "pymap_server"
    )
    return server


@pytest.fixture
def imap_account(imap_server: ImapServer) -> Account:
    """An account on imap_server that no other test uses."""
    return imap_server.account()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """An SMTP sink on a free loopback port that keeps every message it receives."""
    sink = SmtpSink().start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PostgresDatabases]:
    """Creates and drops the session's PostgreSQL databases (mailcare_test_<pid>_<n>)."""
    reason = pg_missing()
    require_server("postgresql", reason is None, reason or "")
    databases = PostgresDatabases()
    databases.drop_stale()
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture(scope="session")
def pg_url(pg_databases: PostgresDatabases) -> str:
    """URL of an empty PostgreSQL database shared by the whole session."""
    return pg_databases.create()


@pytest.fixture
def pg_fresh_url(pg_databases: PostgresDatabases) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database for this test only."""
    url = pg_databases.create()
    try:
        yield url
    finally:
        pg_databases.drop(url)


def _schema_upgrade() -> Callable[[str], None]:
    """daemon.database.upgrade, imported late: the module may not exist yet."""
    if importlib.util.find_spec("daemon.database") is None:
        pytest.skip("daemon.database does not exist yet")
    from daemon.database import upgrade

    return upgrade


@pytest.fixture(scope="session")
def _sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file upgraded once; each test gets a copy."""
    upgrade = _schema_upgrade()
    path = tmp_path_factory.mktemp("schema") / "template.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


def _copy_sqlite(source: Path, target: Path) -> None:
    """Copy an SQLite database with the backup API (safe even if a WAL file is pending)."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh database with the current schema, per test, on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("_sqlite_schema")
        path = tmp_path / "mailcare.sqlite3"
        _copy_sqlite(template, path)
        yield f"sqlite:///{path}"
        return
    databases: PostgresDatabases = request.getfixturevalue("pg_databases")
    url = databases.create_from("schema", _schema_upgrade())
    try:
        yield url
    finally:
        databases.drop(url)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data directory ($MAILCARE_SHARED or ../shared); skips when absent."""
    path = Path(os.environ.get(SHARED_ENV) or REPO_ROOT.parent / "shared")
    if not path.is_dir():
        pytest.skip(f"shared data directory not found: {path} (set {SHARED_ENV})")
    return path


@pytest.fixture
def free_port() -> Callable[[], int]:
    """The free_port() helper: a loopback TCP port that was free a moment ago."""
    return _free_port
