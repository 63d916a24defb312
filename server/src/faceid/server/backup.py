"""`faceid-server backup` / `restore`: consistent copies of a SQLite gallery, taken while the server runs.

Backup uses SQLite's online backup API in ONE step: it reads every page inside one read transaction, i.e.
one snapshot, and in WAL mode writers go on meanwhile (a stepwise backup would restart whenever another
connection writes, and could starve under steady enrolment). The copy is written beside the target as
`<name>.partial`, converted to a self-contained rollback-journal file, integrity-checked, fsynced, and
only then renamed over the target: a backup file that exists is complete.

Restore checks the backup (integrity, a schema revision this faceid knows) and copies it into the target
database with the same API, in one transaction. Stop the server first: a running server keeps serving
its old vector index until it restarts or an admin CheckIndex rebuilds it. PostgreSQL galleries are
backed up with pg_dump / pg_restore instead.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from alembic.script import ScriptDirectory
from faceid.indexer.errors import FailedPrecondition, InvalidRequest
from faceid.indexer.store.database import BUSY_TIMEOUT_MS, alembic_config
from sqlalchemy.engine import make_url


@dataclass(frozen=True)
class CopyReport:
    path: Path
    bytes: int
    seconds: float
    revision: str | None  # Alembic schema revision of the copy
    identities: int
    faces: int


def sqlite_file(url: str) -> Path:
    """The file behind a sqlite:/// URL; InvalidRequest for anything else."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise InvalidRequest(
            f"backup/restore handle SQLite galleries; for {parsed.get_backend_name()} use its own tools (pg_dump)"
        )
    if not parsed.database or parsed.database == ":memory:":
        raise InvalidRequest(f"{url!r} names no database file; use sqlite:///path/to/faceid.db")
    return Path(parsed.database).expanduser().resolve()


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def _describe(conn: sqlite3.Connection) -> tuple[str | None, int, int]:
    """(schema revision, identities, faces) of a gallery database."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] if "alembic_version" in tables else None
    count = (lambda t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) if t in tables else 0)  # noqa: E731
    return revision, count("identities"), count("faces")


def _integrity_ok(conn: sqlite3.Connection) -> str:
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    return "ok" if rows == ["ok"] else "; ".join(rows[:5])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_database(url: str, out: Path) -> CopyReport:
    """Copy the live gallery at `url` into the file `out` (replaced if it exists)."""
    source = sqlite_file(url)
    if not source.is_file():
        raise FailedPrecondition(f"no database file at {source}: check --database")
    out = out.expanduser().resolve()
    if out == source:
        raise InvalidRequest("the backup file must not be the database itself")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    t0 = time.perf_counter()
    src = _connect(source)
    try:
        dst = sqlite3.connect(partial, isolation_level=None)
        try:
            src.backup(dst, pages=-1)  # one step = one snapshot; WAL writers are not blocked
            dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file, no -wal beside it
            problem = _integrity_ok(dst)
            if problem != "ok":
                raise FailedPrecondition(f"the backup copy failed its integrity check ({problem}); nothing was replaced")
            revision, identities, faces = _describe(dst)
        finally:
            dst.close()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    _fsync(partial)
    os.replace(partial, out)
    _fsync(out.parent)
    return CopyReport(out, out.stat().st_size, time.perf_counter() - t0, revision, identities, faces)


def check_backup(backup: Path) -> tuple[str | None, int, int]:
    """(revision, identities, faces) of a backup file after checking it; FailedPrecondition if unusable."""
    if not backup.is_file():
        raise FailedPrecondition(f"no backup file at {backup}")
    try:
        conn = _connect(backup, read_only=True)
        try:
            problem = _integrity_ok(conn)
            described = _describe(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise FailedPrecondition(f"{backup} is not a SQLite database ({exc})") from None
    if problem != "ok":
        raise FailedPrecondition(f"{backup} fails its integrity check ({problem}); use another backup")
    revision = described[0]
    if revision is None:
        raise FailedPrecondition(f"{backup} is not a faceid gallery (no schema revision)")
    script = ScriptDirectory.from_config(alembic_config())
    if revision not in {s.revision for s in script.walk_revisions()}:
        raise FailedPrecondition(
            f"{backup} has schema revision {revision}, unknown to this faceid (made by a newer version?)"
        )
    return described


def restore_database(backup: Path, url: str, *, force: bool = False) -> CopyReport:
    """Replace the gallery at `url` with the backup's content (in one transaction)."""
    backup = backup.expanduser().resolve()
    target = sqlite_file(url)
    if backup == target:
        raise InvalidRequest("the backup file and the target database are the same file")
    revision, identities, faces = check_backup(backup)
    t0 = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    dst = _connect(target)
    try:
        _, now_identities, now_faces = _describe(dst)
        if (now_identities or now_faces) and not force:
            raise FailedPrecondition(
                f"{target} holds {now_identities} identities and {now_faces} faces; stop the server and pass "
                "--force to replace them with the backup"
            )
        src = _connect(backup, read_only=True)
        try:
            src.backup(dst, pages=-1)
        finally:
            src.close()
        dst.execute("PRAGMA journal_mode=WAL")  # the server's mode (the backup file is in rollback mode)
        problem = _integrity_ok(dst)
        if problem != "ok":
            raise FailedPrecondition(f"the restored database fails its integrity check ({problem})")
    finally:
        dst.close()
    return CopyReport(target, target.stat().st_size, time.perf_counter() - t0, revision, identities, faces)
