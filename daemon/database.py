"""Engines, transactions and schema upgrades for SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from .errors import SchemaOutdatedError, StorageError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest migration of this release (a test keeps it equal to the migrations' head);
# checked at start without importing Alembic, which costs a fifth of a second.
SCHEMA_REVISION = "0005"
READ_ONLY = "mailcare_read_only"
DURABLE = "mailcare_durable"


def normalize_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain postgresql:// URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin (needed for
        # savepoints), and make every write transaction take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        # readers take a snapshot without the write lock; writers take it up front
        if options.get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
            return
        # FULL syncs the log at every commit (survives a power cut); NORMAL only at
        # checkpoints (survives a crash of the process, not of the machine)
        level = "FULL" if options.get(DURABLE, True) else "NORMAL"
        conn.exec_driver_sql(f"PRAGMA synchronous={level}")
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """Create an engine with the pragmas and pool settings mailcare relies on."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _sqlite_setup(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


class Database:
    """The one handle on storage: an engine plus transaction helpers."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = normalize_url(url)
        self.engine = engine or make_engine(self.url)
        # SQLite has one writer at a time; threads of this process queue here instead of
        # in SQLite's busy handler, which sleeps in steps of up to 100 ms.
        self._writer = threading.Lock() if self.is_sqlite else None

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Connection]:
        """One atomic unit of work; database errors surface as StorageError.

        durable=False is for work that may be redone after a power cut (it is still
        atomic and survives a crash of the process): SQLite then skips the sync.
        """
        with self._writer or nullcontext():
            try:
                with self.engine.connect() as conn:
                    conn = conn.execution_options(**{DURABLE: durable})
                    with conn.begin():
                        if not durable and self.is_postgresql:
                            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                        yield conn
            except SQLAlchemyError as exc:
                raise StorageError(f"database error: {_short(exc)}") from exc

    def writer_lock(self) -> Any:
        """The lock this process's SQLite writers queue on (a no-op on PostgreSQL).

        For code that writes through its own DBAPI connection (see raw_connection).
        """
        return self._writer or nullcontext()

    def raw_connection(self) -> Any:
        """A DBAPI connection of the pool, for a hot path that keeps it (close() returns it).

        On SQLite it runs in autocommit mode: the caller writes BEGIN IMMEDIATE and COMMIT.
        """
        try:
            return self.engine.raw_connection()
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {_short(exc)}") from exc

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only connection (no write lock taken on SQLite)."""
        try:
            with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {_short(exc)}") from exc

    def dispose(self) -> None:
        self.engine.dispose()

    def upgrade(self) -> None:
        """Bring the schema to the newest revision."""
        upgrade(self.url, self.engine)

    def check_schema(self) -> None:
        """Raise SchemaOutdatedError unless the schema is at the newest revision."""
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table("alembic_version"):
                    current = None
                else:
                    current = conn.exec_driver_sql(
                        "SELECT version_num FROM alembic_version"
                    ).scalar()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read the schema version: {_short(exc)}") from exc
        head = SCHEMA_REVISION
        if current != head:
            raise SchemaOutdatedError(
                f"database schema is at {current or 'nothing'}, this release needs {head}: "
                "run `mailcare db upgrade`"
            )


def later(conn: Connection, *values: Any) -> Any:
    """SQL for the latest of values (scalar MAX on SQLite, GREATEST elsewhere)."""
    return (func.max if conn.dialect.name == "sqlite" else func.greatest)(*values)


def earlier(conn: Connection, *values: Any) -> Any:
    """SQL for the earliest of values (scalar MIN on SQLite, LEAST elsewhere)."""
    return (func.min if conn.dialect.name == "sqlite" else func.least)(*values)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, engine: Engine | None = None) -> None:
    """Run every pending migration on the database at url."""
    from alembic import command

    url = normalize_url(url)
    config = _alembic_config(url)
    own = engine is None
    engine = engine or make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            if conn.in_transaction():
                conn.commit()
    except OperationalError as exc:
        raise StorageError(f"cannot upgrade {engine.url!r}: {_short(exc)}") from exc
    finally:
        if own:
            engine.dispose()


def revisions(engine: Engine) -> tuple[str | None, str]:
    """Return (current revision of the database, newest revision of this release)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(str(engine.url))).get_current_head()
    assert head is not None
    try:
        with engine.connect() as conn:
            if "alembic_version" not in inspect(conn).get_table_names():
                return None, head
            current = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read the schema version: {_short(exc)}") from exc
    return current, head
