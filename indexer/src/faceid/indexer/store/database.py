"""Engines and schema migrations: how faceid opens a gallery database (SQLite file or PostgreSQL).

SQLite is configured for a gallery that promises durability (see `_configure_sqlite`); PostgreSQL for a
server that outlives database restarts (see `_postgres_engine`). Everything dialect-specific lives here,
the store's queries and the Alembic migrations are plain SQLAlchemy that both dialects run.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from faceid.indexer.errors import FailedPrecondition

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# How long a write waits for a lock another connection holds before it fails as Unavailable (retryable):
# SQLite's busy_timeout, PostgreSQL's lock_timeout. Without it a PostgreSQL write would wait for as long as
# any other session (an operator's psql, a stuck job) holds the lock, tying up an RPC worker and a connection.
BUSY_TIMEOUT_MS = 5000

# PostgreSQL: how long to wait for a connection (the server down or unreachable fails within this), the
# pool of one process (RPC worker threads + index loads), and how long a request waits for a free slot.
CONNECT_TIMEOUT_S = 5
POOL_SIZE = 10
POOL_MAX_OVERFLOW = 10
POOL_TIMEOUT_S = 10
# Key of the transaction-level advisory lock that serialises migrations of servers starting together.
_MIGRATION_LOCK_KEY = 0x46414345_4944  # "FACEID"
# SQLSTATEs of a transaction PostgreSQL aborted to resolve a conflict: the same work may simply be retried.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected

# Execution option that marks a connection as the start of a write transaction (see `_begin`).
WRITE_OPTION = "faceid_write"


def create_database_engine(url: str) -> Engine:
    """An Engine for `url` (e.g. sqlite:///faceid.db, postgresql+psycopg://user@host/db), ready for the store."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed)
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return _postgres_engine(parsed)
    # Other dialects: SQLAlchemy's defaults, plus the pre-ping that lets a server outlive a database restart.
    return create_engine(parsed, pool_pre_ping=True)


def _postgres_engine(url: URL) -> Engine:
    """A pooled PostgreSQL engine that survives the database going away and coming back.

    - pool_pre_ping: a pooled connection is tested before use, so after a database restart the first
      request gets a fresh connection instead of "server closed the connection unexpectedly".
    - connect_timeout: an unreachable server fails a request within seconds (UNAVAILABLE), not minutes.
    - TCP keepalives: a connection to a host that vanished (no FIN/RST) is noticed and dropped.
    - lock_timeout = BUSY_TIMEOUT_MS: a statement kept waiting that long for another session's lock fails
      (SQLSTATE 55P03, an OperationalError: `Unavailable` to the caller), as SQLite's busy_timeout does.
    Isolation stays READ COMMITTED (PostgreSQL's default); races between servers are resolved by the
    unique constraints and the retries in `store.writes`, and readers ask for snapshots (`read_engine`).
    None of SQLite's pragmas apply: foreign keys are always enforced and every commit is WAL-fsynced by
    the server (synchronous_commit, fsync: the database administrator's settings).
    """
    connect_args = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "application_name": "faceid",
        "options": _server_options(url),
    }
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=POOL_MAX_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_S,
        connect_args=connect_args,
    )


def _server_options(url: URL) -> str:
    """libpq `options` (connect_args replace the URL's own): ours first, so an operator's `?options=-c
    lock_timeout=...` in the URL comes later and wins."""
    given = url.query.get("options", ())
    return " ".join([f"-c lock_timeout={BUSY_TIMEOUT_MS}", *([given] if isinstance(given, str) else given)])


def read_engine(engine: Engine) -> Engine:
    """The engine to read with: on PostgreSQL each read transaction sees one snapshot (REPEATABLE READ),
    as SQLite's read transactions do in WAL mode; a read-only transaction there never fails to serialise."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ")
    return engine


def is_unreachable(exc: BaseException) -> bool:
    """A database error that says "not now" rather than "wrong": down, unreachable, locked, pool exhausted,
    a connection lost mid-call, or a transaction aborted by a conflict. Callers retry; nothing was written."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def is_retryable_conflict(exc: BaseException) -> bool:
    """PostgreSQL aborted the statement to break a deadlock or a serialization conflict (retry the step)."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def ping(engine: Engine) -> None:
    """One round trip to the database (raises what the driver raises when it is unreachable)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _configure_sqlite(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 driver (Python < 3.12 "legacy" mode emits it late and never for
    # SELECT or SAVEPOINT); `_begin` emits it instead, so reads are snapshots and savepoints nest properly.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # Wait for another process's write lock (backup, `keys create`) instead of failing at once.
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # WAL: readers never block the writer and vice versa; a commit appends to the log.
        _enter_wal(cursor)
        # FULL with WAL fsyncs the log at every commit: an acknowledged face survives a process crash AND a
        # power loss. NORMAL would survive only a process crash (the last commits can roll back on power
        # loss); the fsync costs ~ms per transaction, small next to detecting a face (~100 ms on CPU).
        cursor.execute("PRAGMA synchronous=FULL")
        # Off by default in SQLite: without it ON DELETE CASCADE would leave a deleted person's faces behind.
        cursor.execute("PRAGMA foreign_keys=ON")
        # DeleteIdentity is a hard erase: overwrite deleted rows (embeddings, thumbnails) with zeros instead
        # of leaving them readable in free pages of the file (see `checkpoint_truncate` for the WAL).
        cursor.execute("PRAGMA secure_delete=ON")
    finally:
        cursor.close()


def _enter_wal(cursor: sqlite3.Cursor) -> None:
    """PRAGMA journal_mode=WAL, retried while another connection holds the lock it needs.

    Switching a new file to WAL writes its header in a write transaction that SQLite opens from a read
    transaction, and there it returns SQLITE_BUSY at once instead of calling the busy handler: two servers
    started together on a new gallery file failed with "database is locked" (seen in CI, reproduced with
    four processes opening one new file at the same instant). Once the header says WAL, nothing is written.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause_s = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if (exc.sqlite_errorcode & 0xFF) != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.05)


def _begin(conn: Connection) -> None:
    # Writers take the database write lock up front (IMMEDIATE): a deferred transaction that read first and
    # then writes cannot wait for the lock (SQLITE_BUSY at once); an immediate one waits busy_timeout.
    immediate = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def checkpoint_truncate(engine: Engine) -> bool:
    """SQLite: copy the WAL into the database file and truncate it to zero bytes; True when complete.

    After an erase, the WAL still holds the page images written before it (the person's embeddings and
    thumbnails) until they are overwritten; a TRUNCATE checkpoint removes them. It waits (busy_timeout)
    for readers of older snapshots; False when one outlasted that (the next erase or checkpoint retries).
    Other dialects: nothing to do (True).
    """
    if engine.dialect.name != "sqlite":
        return True
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        busy, _log_frames, _done = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(busy) == 0
    finally:
        raw.close()


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration built in code: the scripts ship inside the package, no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the store ships at least one migration"
    return head


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None: never migrated, e.g. a new empty file)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_database(target: str | Engine, revision: str = "head") -> str:
    """Migrate the database at `target` (URL or Engine) to `revision`; returns the revision it is now at.

    Safe to call on every start: at head it does nothing. Runs in one transaction on both dialects, so a
    failed migration leaves the schema as it was.
    """
    engine = target if isinstance(target, Engine) else create_database_engine(target)
    try:
        config = alembic_config()
        with engine.execution_options(**{WRITE_OPTION: True}).connect() as conn, _foreign_keys_suspended(conn):
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    # Several servers starting against one new database would run the same CREATE TABLEs;
                    # the first takes this lock and migrates, the others wait and then find the schema at head.
                    # A migration may take longer than lock_timeout (and its DDL waits for running servers'
                    # transactions): no timeout inside it.
                    conn.execute(text("SET LOCAL lock_timeout = 0"))
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                _check_foreign_keys(conn)  # inside the transaction: a bad migration rolls back
        now = current_revision(engine)
    finally:
        if not isinstance(target, Engine):
            engine.dispose()
    assert now is not None
    return now


def require_head(engine: Engine) -> None:
    """Refuse to serve from a database whose schema is not the one this code was written for."""
    now, head = current_revision(engine), head_revision()
    if now != head:
        raise FailedPrecondition(
            f"the gallery database schema is at revision {now or 'none (empty database)'}, this faceid needs "
            f"{head}: back the database up, then start the server with migrations enabled (the default) "
            "or call faceid.indexer.store.upgrade_database(url)"
        )


@contextmanager
def _foreign_keys_suspended(conn: Connection) -> Iterator[None]:
    """SQLite only: foreign keys off while migrating (checked by `_check_foreign_keys` before commit).

    Alembic's batch mode rebuilds a table by copy + DROP; with foreign keys on, dropping `identities` would
    cascade into `faces` and erase the gallery. The pragma cannot change inside a transaction, so it is set
    on the bare connection before BEGIN.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(conn: Connection) -> None:
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL enforces foreign keys during DDL itself
    problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise FailedPrecondition(f"the migration would leave dangling foreign keys (rolled back): {problems[:5]}")
