"""`faceid-server backup` / `restore`: SQLite's online backup API, taken while another writer keeps committing.

A writer thread enrols identities (each one = identity + 3 faces + thumbnails in ONE transaction) through
a real GalleryStore while the backup runs. The backup must be one consistent snapshot (every identity it
holds has all 3 faces; checksums match its own rows), the writer must have gone on committing during it,
and a restore must give back exactly the backup's rows.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from faceid.indexer.errors import FailedPrecondition, InvalidRequest
from faceid.indexer.store import KeyStore, NewFace, create_store, head_revision
from faceid.server.auth import KeyVerifier, Scope, create_key
from faceid.server.backup import backup_database, check_backup, restore_database
from faceid.server.cli import app as server_cli
from typer.testing import CliRunner

MODEL = "backup-test-64d"
FACES_PER_IDENTITY = 3


def _faces(n: int, rng: np.random.Generator) -> list[NewFace]:
    out = []
    for i in range(FACES_PER_IDENTITY):
        v = rng.standard_normal(64).astype(np.float32)
        sha = hashlib.sha256(f"{n}-{i}".encode()).hexdigest()
        out.append(NewFace(MODEL, v / np.linalg.norm(v), sha, (1.0, 1.0, 90.0, 90.0), 0.99, rng.bytes(8000)))
    return out


def _rows(db: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {
            t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in ("identities", "faces", "thumbnails", "api_keys")
        }


def _faces_per_identity(db: Path) -> list[int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [n for (n,) in conn.execute("SELECT count(f.id) FROM identities i LEFT JOIN faces f ON f.identity_id = i.id GROUP BY i.id")]


@pytest.mark.slow
def test_backup_while_writes_continue_then_restore(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    url = f"sqlite:///{db}"
    rng = np.random.default_rng(7)
    with create_store(url) as store, KeyStore.open(url) as keys:
        key = create_key(keys, scope=Scope.WRITE, name="ingest", actor="cli")
        for n in range(300):  # ~7 MB to copy
            store.enroll(name=f"person-{n:04d}", faces=_faces(n, rng))

        committed = [300]
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            wrng = np.random.default_rng(8)
            try:
                while not stop.is_set():
                    n = committed[0]
                    store.enroll(name=f"person-{n:04d}", faces=_faces(n, wrng))
                    committed[0] = n + 1
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(0.3)
            during: list[int] = []
            reports = []
            for i in range(3):  # several backups, each racing the writer
                start = committed[0]
                reports.append(backup_database(url, tmp_path / f"backup-{i}.db"))
                during.append(committed[0] - start)
                time.sleep(0.2)
        finally:
            stop.set()
            thread.join(30)
        assert not errors, errors
        assert sum(during) > 0, "the writer should have committed while backups ran"
        print(f"commits during each backup: {during}; backup seconds: {[round(r.seconds, 3) for r in reports]}")

    for report in reports:
        assert report.revision == head_revision()
        assert 300 <= report.identities <= committed[0]
        assert report.faces == FACES_PER_IDENTITY * report.identities  # no half-written identity in a snapshot
        assert set(_faces_per_identity(report.path)) == {FACES_PER_IDENTITY}
        assert not Path(str(report.path) + "-wal").exists()  # a self-contained file
        assert check_backup(report.path) == (head_revision(), report.identities, report.faces)
    assert not list(tmp_path.glob("*.partial"))

    # Restore the middle backup into a fresh file: exactly its rows, usable by the store and the key check.
    chosen = reports[1].path
    target = tmp_path / "restored.db"
    restored = restore_database(chosen, f"sqlite:///{target}")
    assert (restored.identities, restored.faces) == (reports[1].identities, reports[1].faces)
    assert _rows(target) == _rows(chosen)
    with create_store(f"sqlite:///{target}") as again:
        assert again.count_identities() == reports[1].identities
        assert again.checksum(MODEL).count == reports[1].faces
    with KeyStore.open(f"sqlite:///{target}") as keys:
        assert KeyVerifier(keys).verify(key.key) is not None  # keys travel with the gallery
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_restore_refuses_what_it_should(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    with create_store(f"sqlite:///{live}") as store:
        store.enroll(name="someone", faces=_faces(1, np.random.default_rng(1)))
    good = backup_database(f"sqlite:///{live}", tmp_path / "good.db").path

    with pytest.raises(FailedPrecondition, match="--force"):  # would overwrite a gallery that holds people
        restore_database(good, f"sqlite:///{live}")
    assert restore_database(good, f"sqlite:///{live}", force=True).identities == 1

    corrupt = tmp_path / "corrupt.db"
    data = bytearray(good.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\x00" * 4096
    corrupt.write_bytes(bytes(data[: len(data) - 1000]))
    with pytest.raises(FailedPrecondition):
        restore_database(corrupt, f"sqlite:///{tmp_path / 'x.db'}")
    stranger = tmp_path / "stranger.db"
    with sqlite3.connect(stranger) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(FailedPrecondition, match="not a faceid gallery"):
        restore_database(stranger, f"sqlite:///{tmp_path / 'y.db'}")
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello" * 1000)
    with pytest.raises(FailedPrecondition):
        restore_database(not_sqlite, f"sqlite:///{tmp_path / 'z.db'}")
    with pytest.raises(InvalidRequest, match="pg_dump"):
        backup_database("postgresql+psycopg://u@localhost/faceid", tmp_path / "pg.db")
    with pytest.raises(FailedPrecondition, match="no database file"):
        backup_database(f"sqlite:///{tmp_path / 'missing.db'}", tmp_path / "m.db")
    assert not (tmp_path / "x.db").exists() or _faces_per_identity(tmp_path / "x.db") == []


def test_cli_backup_and_restore(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    with create_store(f"sqlite:///{live}") as store:
        store.enroll(name="someone", faces=_faces(2, np.random.default_rng(2)))
    runner = CliRunner()
    out = tmp_path / "backups" / "b.db"
    made = runner.invoke(server_cli, ["backup", str(out), "--database", f"sqlite:///{live}"])
    assert made.exit_code == 0, made.output
    assert "1 identities, 3 faces" in made.stdout and out.is_file()
    target = f"sqlite:///{tmp_path / 'new.db'}"
    restored = runner.invoke(server_cli, ["restore", str(out), "--database", target])
    assert restored.exit_code == 0, restored.output
    refused = runner.invoke(server_cli, ["restore", str(out), "--database", target])
    assert refused.exit_code == 1 and "--force" in refused.output
    assert runner.invoke(server_cli, ["restore", str(out), "--database", target, "--force"]).exit_code == 0
