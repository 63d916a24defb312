"""The gallery store on real databases: schema = migrations, units of work, idempotence, erasure, paging.

Every test that takes `database_url` runs twice: on a temp SQLite file and on a fresh database of a real
PostgreSQL server (conftest.py, tests/postgres_server.py). Races that only PostgreSQL sees (several servers
writing at once) are in test_store_postgres.py.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from faceid.indexer.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidRequest,
    Unavailable,
    UnknownFace,
    UnknownIdentity,
)
from faceid.indexer.store import (
    AddStatus,
    GalleryStore,
    NewFace,
    create_database_engine,
    create_store,
    current_revision,
    head_revision,
    id_checksum,
    upgrade_database,
)
from faceid.indexer.store import database as store_database
from faceid.indexer.store.models import Base

DIM = 16
MODEL = "test-model-16d"


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def new_face(
    seed: int,
    image: str | None = None,
    box: tuple[float, float, float, float] = (10.0, 12.0, 60.0, 80.0),
    model: str = MODEL,
    dim: int = DIM,
    thumbnail: bytes | None = b"\xff\xd8thumb",
) -> NewFace:
    return NewFace(model, unit(seed, dim), sha(image or f"img-{seed}"), box, 0.99, thumbnail)


@pytest.fixture
def store(database_url: str):
    with create_store(database_url) as s:
        yield s


def raw_count(url: str, table: str) -> int:
    """Rows of a table, counted over a connection of its own (not the store's code or pool)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


# ------------------------------------------------------------------ schema and connection settings
def test_fresh_database_upgraded_to_head_has_exactly_the_models_tables(database_url: str) -> None:
    assert upgrade_database(database_url) == head_revision()
    engine = create_database_engine(database_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            assert diffs == []
            tables = set(inspect(conn).get_table_names())
            assert tables - {"alembic_version", "sqlite_sequence"} == set(Base.metadata.tables)
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
            else:
                # Face ids are int64 on both (FAISS and proto ids): BIGINT identity columns here.
                columns = {c["name"]: c for c in inspect(conn).get_columns("faces")}
                assert str(columns["id"]["type"]) == "BIGINT" and str(columns["identity_id"]["type"]) == "BIGINT"
                assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
    finally:
        engine.dispose()
    # Upgrading again is a no-op at head.
    assert upgrade_database(database_url) == head_revision()


def test_migrations_go_down_to_nothing_and_up_again(database_url: str) -> None:
    """Every migration's downgrade and upgrade run on this dialect, and data written at head survives none
    of the way down but the schema comes back identical."""
    from alembic import command

    from faceid.indexer.store.database import alembic_config

    assert upgrade_database(database_url, "0001") == "0001"
    assert upgrade_database(database_url) == head_revision()
    engine = create_database_engine(database_url)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) - {"alembic_version", "sqlite_sequence"} == set()
        assert current_revision(engine) is None
        assert upgrade_database(engine) == head_revision()
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
    finally:
        engine.dispose()


def test_unmigrated_database_is_refused_unless_migrations_run(database_url: str) -> None:
    with pytest.raises(FailedPrecondition, match="schema is at revision none"):
        create_store(database_url, migrate=False)
    with create_store(database_url) as s:
        assert s.count_identities() == 0
    with create_store(database_url, migrate=False) as s:  # now at head: accepted
        engine = create_database_engine(database_url)
        assert current_revision(engine) == head_revision()
        engine.dispose()
        assert s.url == database_url


# ------------------------------------------------------------------ enrolment, reads
def test_enroll_then_read_back_everything(store: GalleryStore) -> None:
    faces = [new_face(1), new_face(2), new_face(3, thumbnail=None)]
    stored = store.enroll(name="Ada Lovelace", faces=faces, metadata={"team": "analytical"}, actor="key:ops")
    assert stored.created and stored.identity is not None
    assert [f.status for f in stored.faces] == [AddStatus.CREATED] * 3
    ident = stored.identity
    assert (ident.name, ident.metadata, ident.face_count) == ("Ada Lovelace", {"team": "analytical"}, 3)
    assert ident.created_at.tzinfo is not None

    assert store.get_identity(name="Ada Lovelace") == store.get_identity(id=ident.id)
    assert store.get_identity(id=ident.id, model_id="other-model").face_count == 0
    assert store.count_identities() == 1
    assert store.count_faces(MODEL) == 3 and store.count_faces("other-model") == 0
    assert store.count_faces(MODEL, labeled=False) == 0 and store.count_faces(labeled=True) == 3
    assert store.identity_names([ident.id, 999]) == {ident.id: "Ada Lovelace"}

    ids, vectors = store.embeddings_of_identity(ident.id, MODEL)
    assert ids.tolist() == stored.new_face_ids
    np.testing.assert_array_equal(vectors, np.stack([f.embedding for f in faces]))  # bit-exact round trip

    rows = store.faces_of_identity(ident.id, MODEL)
    assert [r.box for r in rows] == [f.box for f in faces]
    assert {r.image_sha256 for r in rows} == {f.image_sha256 for f in faces}
    assert store.get_faces([*ids.tolist(), 12345]).keys() == set(ids.tolist())
    assert store.face_identity_map(ids.tolist()) == dict.fromkeys(ids.tolist(), ident.id)
    assert store.get_thumbnails(ids.tolist()) == {ids[0]: b"\xff\xd8thumb", ids[1]: b"\xff\xd8thumb"}

    # Re-enrolling merges metadata and adds only the new face.
    again = store.enroll(name="Ada Lovelace", faces=[new_face(1), new_face(4)], metadata={"born": "1815"})
    assert not again.created
    assert [f.status for f in again.faces] == [AddStatus.EXISTING, AddStatus.CREATED]
    assert again.identity is not None and again.identity.metadata == {"team": "analytical", "born": "1815"}
    assert again.identity.face_count == 4

    audit = store.list_audit()
    assert [a.action for a in audit] == ["identity.enroll", "identity.enroll"]
    assert [a.details["identity_created"] for a in audit] == [True, False]
    assert audit[0].actor == "key:ops" and audit[0].details["faces"]["created"] == stored.new_face_ids


def test_same_image_and_face_is_stored_once(store: GalleryStore, database_url: str) -> None:
    first = store.enroll(name="bob", faces=[new_face(1, "photo")])
    # Same photo, same face, boxes that round to the same pixels (a re-detection): the existing row.
    again = store.enroll(name="bob", faces=[new_face(1, "photo", box=(10.3, 11.8, 59.6, 80.4))])
    assert again.faces[0].status is AddStatus.EXISTING
    assert again.faces[0].face_id == first.faces[0].face_id
    # Duplicates inside one batch too.
    batch = store.add_faces(identity_id=None, faces=[new_face(7, "group"), new_face(7, "group")])
    assert [b.status for b in batch] == [AddStatus.CREATED, AddStatus.EXISTING]
    assert batch[0].face_id == batch[1].face_id
    # Another face of the same photo, or the same face under another model, is a new row.
    other_box = store.add_faces(identity_id=None, faces=[new_face(8, "group", box=(100.0, 10.0, 150.0, 70.0))])
    other_model = store.add_faces(identity_id=None, faces=[new_face(7, "group", model="other", dim=8)])
    assert other_box[0].created and other_model[0].created
    assert raw_count(database_url, "faces") == 4


def test_adding_faces_already_on_record_writes_nothing(store: GalleryStore, database_url: str) -> None:
    """A photo sent again (unlabeled, or for its own identity) changes no row: no audit entry, no new date."""
    carol = store.enroll(name="carol", faces=[new_face(1)])
    loose = store.add_faces(identity_id=None, faces=[new_face(2)])
    before = (store.list_audit(limit=1000), store.get_identity(name="carol"), raw_count(database_url, "faces"))
    again = store.add_faces(identity_id=None, faces=[new_face(1), new_face(2)])  # carol's face, the loose one
    assert [(a.status, a.face_id) for a in again] == [
        (AddStatus.EXISTING, carol.faces[0].face_id), (AddStatus.EXISTING, loose[0].face_id)
    ]
    own = store.add_faces(identity_id=carol.identity.id, faces=[new_face(1)])
    assert own[0].status is AddStatus.EXISTING
    enrolled_again = store.enroll(name="carol", faces=[new_face(1)])
    assert enrolled_again.identity is not None and enrolled_again.identity.id == carol.identity.id
    assert [a.status for a in enrolled_again.faces] == [AddStatus.EXISTING] and not enrolled_again.created
    assert (store.list_audit(limit=1000), store.get_identity(name="carol"), raw_count(database_url, "faces")) == before
    # A real change is still audited: new metadata for the same faces, a new face.
    with_badge = store.enroll(name="carol", faces=[new_face(1)], metadata={"badge": "7"})
    assert with_badge.identity is not None and with_badge.identity.metadata == {"badge": "7"}
    store.add_faces(identity_id=None, faces=[new_face(3)])
    assert [a.action for a in store.list_audit(limit=1000)[len(before[0]):]] == ["identity.enroll", "faces.add"]


def test_labeling_and_conflicts_of_already_stored_faces(store: GalleryStore, database_url: str) -> None:
    unlabeled = store.add_faces(identity_id=None, faces=[new_face(1), new_face(2)])
    assert all(a.created and a.identity_id is None for a in unlabeled)
    assert store.count_faces(MODEL, labeled=False) == 2

    carol = store.enroll(name="carol", faces=[new_face(1)])  # a labeled enrolment names the unlabeled face
    assert carol.faces[0].status is AddStatus.LABELED and carol.faces[0].face_id == unlabeled[0].face_id
    assert carol.identity is not None and carol.identity.face_count == 1

    # The same face claimed for somebody else is left alone, and a new identity without faces is not created.
    before = raw_count(database_url, "identities"), raw_count(database_url, "audit_log")
    dave = store.enroll(name="dave", faces=[new_face(1)], metadata={"x": "y"})
    assert dave.identity is None and not dave.created
    assert dave.faces[0].status is AddStatus.CONFLICT and dave.faces[0].identity_id == carol.identity.id
    assert (raw_count(database_url, "identities"), raw_count(database_url, "audit_log")) == before
    # An existing identity whose faces all conflict keeps its metadata unchanged.
    store.enroll(name="erin", faces=[new_face(5)])
    erin = store.enroll(name="erin", faces=[new_face(1)], metadata={"changed": "yes"})
    assert erin.identity is not None and erin.identity.metadata == {} and erin.identity.face_count == 1
    # Nothing to enrol: nothing written.
    assert store.enroll(name="frank", faces=[]).identity is None
    with pytest.raises(UnknownIdentity):
        store.get_identity(name="frank")


def test_enrolment_failing_midway_leaves_nothing_behind(store: GalleryStore, database_url: str) -> None:
    store.enroll(name="existing", faces=[new_face(100)])
    snapshot = {t: raw_count(database_url, t) for t in ("identities", "faces", "thumbnails", "audit_log")}

    def fail_at_thumbnails(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        # A fault after the identity and its faces were inserted, before the transaction could commit.
        if statement.startswith("INSERT INTO thumbnails"):
            raise RuntimeError("disk unplugged")

    event.listen(Engine, "before_cursor_execute", fail_at_thumbnails)
    try:
        with pytest.raises(RuntimeError, match="disk unplugged"):
            store.enroll(name="half", faces=[new_face(1), new_face(2), new_face(3)], metadata={"a": "b"})
    finally:
        event.remove(Engine, "before_cursor_execute", fail_at_thumbnails)
    assert {t: raw_count(database_url, t) for t in snapshot} == snapshot
    with pytest.raises(UnknownIdentity):
        store.get_identity(name="half")
    # The store is still usable, and the same enrolment now succeeds whole.
    ok = store.enroll(name="half", faces=[new_face(1), new_face(2), new_face(3)])
    assert ok.identity is not None and ok.identity.face_count == 3


@pytest.mark.slow
def test_acknowledged_enrolments_survive_sigkill(database_url: str) -> None:
    """A writer process killed mid-stream: every enrolment it reported committed is there, whole."""
    url = database_url
    create_store(url).close()
    script = f"""
import hashlib, sys, numpy as np
from faceid.indexer.store import create_store, NewFace
store = create_store({url!r})
for i in range(100000):
    faces = []
    for j in range(3):
        v = np.random.default_rng(i * 3 + j).standard_normal({DIM}).astype(np.float32)
        faces.append(NewFace({MODEL!r}, v / np.linalg.norm(v), hashlib.sha256(b"%d-%d" % (i, j)).hexdigest(),
                             (1.0, 1.0, 50.0, 50.0), 0.9))
    store.enroll(name=f"person-{{i}}", faces=faces)
    print(i, flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked: list[int] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while len(acked) < 20 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(acked) >= 20, "the writer process did not get going"
    with create_store(url) as s:
        for i in acked:
            assert s.get_identity(name=f"person-{i}").face_count == 3
        # Whatever else got in is whole too: no identity without its three faces.
        listing = s.list_identities(page_size=1000)
        assert {r.face_count for r in listing.identities} == {3}
        assert s.count_faces(MODEL) == 3 * listing.total_count
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _new_file_held_by_another_writer(path: Path) -> sqlite3.Connection:
    """A second process's view of a new gallery file: its write transaction open, the file not yet WAL."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE other_writer (x INTEGER)")
    return other


def test_new_file_switches_to_wal_once_the_other_starting_server_commits(tmp_path: Path) -> None:
    """Two servers started together on a new SQLite file: the one that loses the race to switch it to WAL waits.

    SQLite answers that switch with "database is locked" at once, without its busy handler, while another
    connection writes (CI saw one of two servers exit at start); the store retries it for up to busy_timeout.
    """
    path = tmp_path / "gallery.db"
    other = _new_file_held_by_another_writer(path)
    commit = threading.Timer(0.3, other.execute, ("COMMIT",))
    commit.start()
    engine = create_database_engine(f"sqlite:///{path}")
    t0 = time.monotonic()
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        waited = time.monotonic() - t0
        assert upgrade_database(engine) == head_revision()
    finally:
        engine.dispose()
        commit.join()
        other.close()
    assert waited >= 0.25, "it did not wait for the other writer"


def test_new_file_held_past_busy_timeout_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_database, "BUSY_TIMEOUT_MS", 300)
    path = tmp_path / "gallery.db"
    other = _new_file_held_by_another_writer(path)
    engine = create_database_engine(f"sqlite:///{path}")
    t0 = time.monotonic()
    try:
        with pytest.raises(OperationalError, match="database is locked") as caught, engine.connect():
            pass
        assert store_database.is_unreachable(caught.value)  # Unavailable to a caller, retryable
        assert 0.25 <= time.monotonic() - t0 < 5
    finally:
        engine.dispose()
        other.execute("ROLLBACK")
        other.close()


# ------------------------------------------------------------------ deletion, naming
def test_delete_identity_erases_faces_and_thumbnails(store: GalleryStore, database_url: str) -> None:
    gone = store.enroll(name="gone", faces=[new_face(1), new_face(2), new_face(3, model="m2", dim=8)])
    kept = store.enroll(name="kept", faces=[new_face(4)])
    loose = store.add_faces(identity_id=None, faces=[new_face(5)])
    assert raw_count(database_url, "thumbnails") == 5

    deleted = store.delete_identity(name="gone", actor="key:admin")
    assert deleted.identity.name == "gone" and deleted.identity.face_count == 3
    assert deleted.faces_by_model == {MODEL: tuple(gone.new_face_ids[:2]), "m2": (gone.new_face_ids[2],)}
    assert deleted.face_ids == sorted(gone.new_face_ids)
    with pytest.raises(UnknownIdentity):
        store.get_identity(name="gone")
    assert store.get_faces(gone.new_face_ids) == {} and store.get_thumbnails(gone.new_face_ids) == {}
    assert raw_count(database_url, "faces") == 2 and raw_count(database_url, "thumbnails") == 2
    assert kept.identity is not None and store.get_identity(name="kept").face_count == 1
    assert store.face_identity_map([loose[0].face_id]) == {loose[0].face_id: None}
    assert store.list_audit()[-1].action == "identity.delete"
    with pytest.raises(UnknownIdentity):
        store.delete_identity(name="gone")
    # Ids are never handed out again (AUTOINCREMENT), so nothing stale can point at a new face.
    fresh = store.add_faces(identity_id=None, faces=[new_face(1)])
    assert fresh[0].face_id > max(loose[0].face_id, *gone.new_face_ids)


def test_database_cascade_alone_erases_faces_and_thumbnails(store: GalleryStore, database_url: str) -> None:
    stored = store.enroll(name="x", faces=[new_face(1), new_face(2)])
    assert stored.identity is not None
    engine = create_database_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM identities WHERE id = :id"), {"id": stored.identity.id})
    finally:
        engine.dispose()
    assert raw_count(database_url, "faces") == 0 and raw_count(database_url, "thumbnails") == 0


def test_rename_merge_and_assign(store: GalleryStore) -> None:
    a = store.enroll(name="a", faces=[new_face(1)], metadata={"k": "from-a", "only_a": "1"})
    b = store.enroll(name="b", faces=[new_face(2), new_face(3)], metadata={"k": "from-b"})
    with pytest.raises(AlreadyExists):
        store.rename_identity(name="a", new_name="b")
    renamed = store.rename_identity(name="a", new_name="a2")
    assert renamed.name == "a2" and renamed.id == a.identity.id  # type: ignore[union-attr]
    with pytest.raises(UnknownIdentity):
        store.rename_identity(name="a", new_name="zz")

    merged = store.merge_identities(source="a2", target="b")
    assert merged.identity.name == "b" and merged.identity.face_count == 3
    assert merged.moved_face_ids == tuple(a.new_face_ids)
    assert merged.identity.metadata == {"k": "from-b", "only_a": "1"}  # target wins
    with pytest.raises(UnknownIdentity):
        store.get_identity(name="a2")
    with pytest.raises(InvalidRequest):
        store.merge_identities(source="b", target="b")

    loose = store.add_faces(identity_id=None, faces=[new_face(10), new_face(11)])
    loose_ids = [f.face_id for f in loose]
    with pytest.raises(UnknownFace, match="99999"):
        store.assign_faces(face_ids=[*loose_ids, 99999], identity_name="cluster-7")
    with pytest.raises(UnknownIdentity):
        store.get_identity(name="cluster-7")  # nothing was created
    assigned = store.assign_faces(face_ids=loose_ids, identity_name="cluster-7", actor="key:curator")
    assert assigned.created and assigned.identity.face_count == 2
    assert store.face_identity_map(loose_ids) == dict.fromkeys(loose_ids, assigned.identity.id)
    assert store.count_faces(MODEL, labeled=False) == 0
    actions = [a.action for a in store.list_audit()]
    assert [a for a in actions if a.startswith(("identity.r", "identity.m", "faces.as"))] == [
        "identity.rename",
        "identity.merge",
        "faces.assign",
    ]
    assert b.identity is not None


def test_bad_arguments_are_refused_before_anything_is_written(store: GalleryStore, database_url: str) -> None:
    with pytest.raises(InvalidRequest, match="L2-normalised"):
        NewFace(MODEL, unit(1) * 3, sha("x"), (0.0, 0.0, 5.0, 5.0), 0.9)
    with pytest.raises(InvalidRequest, match="float32"):
        NewFace(MODEL, unit(1).astype(np.float64), sha("x"), (0.0, 0.0, 5.0, 5.0), 0.9)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="sha256"):
        NewFace(MODEL, unit(1), "not-a-hash", (0.0, 0.0, 5.0, 5.0), 0.9)
    with pytest.raises(InvalidRequest, match="x2 > x1"):
        NewFace(MODEL, unit(1), sha("x"), (5.0, 0.0, 5.0, 5.0), 0.9)
    with pytest.raises(InvalidRequest):
        store.enroll(name="x" * 256, faces=[new_face(1)])
    with pytest.raises(InvalidRequest):
        store.enroll(name="nul\x00", faces=[new_face(1)])
    with pytest.raises(InvalidRequest):
        store.enroll(name="ok", faces=[new_face(1)], metadata={"k": 3})  # type: ignore[dict-item]
    with pytest.raises(InvalidRequest):
        store.get_identity(name="a", id=1)
    with pytest.raises(UnknownIdentity):
        store.add_faces(identity_id=424242, faces=[new_face(1)])
    with pytest.raises(InvalidRequest):
        store.set_calibration(model_id=MODEL, threshold=2.5, source="test")
    assert raw_count(database_url, "identities") == raw_count(database_url, "faces") == raw_count(database_url, "audit_log") == 0


# ------------------------------------------------------------------ listing
def test_keyset_pagination_by_name(store: GalleryStore) -> None:
    names = [f"user-{i:02d}" for i in range(25)] + ["User-upper", "zed"]
    for i, name in enumerate(names):
        store.enroll(name=name, faces=[new_face(i)])
    seen, after, pages = [], None, 0
    while True:
        page = store.list_identities(page_size=10, after_name=after, model_id=MODEL)
        assert page.total_count == len(names) + (2 if pages else 0)
        seen += [r.name for r in page.identities]
        assert all(r.face_count == 1 for r in page.identities)
        pages += 1
        if page.next_after_name is None:
            break
        after = page.next_after_name
        if pages == 1:
            store.enroll(name="user-00b", faces=[new_face(500)])  # lands behind the cursor: not on later pages
            store.enroll(name="zz-new", faces=[new_face(501)])  # lands ahead: shows up
    assert pages == 3
    assert seen == sorted([*names, "zz-new"])

    prefix = store.list_identities(page_size=5, name_prefix="user-1")
    assert [r.name for r in prefix.identities] == [f"user-{i}" for i in range(10, 15)]
    assert prefix.total_count == 10 and prefix.next_after_name == "user-14"
    assert [r.name for r in store.list_identities(name_prefix="User").identities] == ["User-upper"]  # case-sensitive
    assert store.list_identities(name_prefix="100%").total_count == 0
    with pytest.raises(InvalidRequest):
        store.list_identities(page_size=0)
    with pytest.raises(InvalidRequest):
        store.list_identities(page_size=1001)


# ------------------------------------------------------------------ streaming, checksum, calibration
def test_iter_embeddings_streams_one_model_in_id_order(store: GalleryStore) -> None:
    ada = store.enroll(name="ada", faces=[new_face(i) for i in range(7)])
    loose = store.add_faces(identity_id=None, faces=[new_face(i) for i in range(7, 10)])
    store.add_faces(identity_id=None, faces=[new_face(i, model="m8", dim=8) for i in range(4)])
    batches = list(store.iter_embeddings(MODEL, batch=3))
    assert [len(ids) for ids, _ in batches] == [3, 3, 3, 1]
    ids = np.concatenate([b[0] for b in batches])
    vectors = np.concatenate([b[1] for b in batches])
    assert ids.dtype == np.int64 and vectors.dtype == np.float32 and vectors.shape == (10, DIM)
    assert ids.tolist() == sorted(ada.new_face_ids + [f.face_id for f in loose])
    np.testing.assert_array_equal(vectors, np.stack([unit(i) for i in range(10)]))
    assert [v.shape for _, v in store.iter_embeddings("m8")] == [(4, 8)]
    unl = np.concatenate([b[0] for b in store.iter_embeddings(MODEL, unlabeled_only=True)])
    assert unl.tolist() == [f.face_id for f in loose]
    assert ada.identity is not None
    only_ada = np.concatenate([b[0] for b in store.iter_embeddings(MODEL, identity_ids=[ada.identity.id])])
    assert only_ada.tolist() == ada.new_face_ids
    assert list(store.iter_embeddings("no-such-model")) == []
    assert store.face_counts_by_model() == {MODEL: 10, "m8": 4}


def test_checksum_follows_adds_and_deletes(store: GalleryStore) -> None:
    empty = store.checksum(MODEL)
    assert empty == id_checksum(MODEL, [])
    a = store.enroll(name="a", faces=[new_face(1), new_face(2)])
    b = store.add_faces(identity_id=None, faces=[new_face(3)])
    store.add_faces(identity_id=None, faces=[new_face(4, model="m8", dim=8)])
    ids = [*a.new_face_ids, b[0].face_id]
    assert store.checksum(MODEL) == id_checksum(MODEL, ids[::-1]) and store.checksum(MODEL).count == 3
    assert store.checksum(MODEL) != id_checksum("m8", ids)  # the model is part of it
    store.delete_identity(name="a")
    assert store.checksum(MODEL) == id_checksum(MODEL, [b[0].face_id])


def test_calibration_and_audit(store: GalleryStore) -> None:
    assert store.get_calibration(MODEL) is None
    cal = store.set_calibration(model_id=MODEL, threshold=1.05, source="calibration", logistic_a=9.0, logistic_b=-10.0)
    assert store.get_calibration(MODEL) == cal
    cal2 = store.set_calibration(model_id=MODEL, threshold=1.1, source="operator")
    assert (cal2.threshold, cal2.source, cal2.logistic_a) == (1.1, "operator", None)
    rec = store.append_audit(actor="key:ops", action="index.rebuild", subject=MODEL, details={"vectors": 3})
    assert store.list_audit(after_id=rec.id - 1) == [rec]
    assert [a.action for a in store.list_audit()] == ["calibration.set", "calibration.set", "index.rebuild"]


# ------------------------------------------------------------------ concurrency
def test_concurrent_writers_in_threads_and_in_a_second_connection_pool(database_url: str) -> None:
    """One store's threads share its writer lock; a second store on the same database is like another
    process: SQLite's own lock (BEGIN IMMEDIATE + busy_timeout) or PostgreSQL's row locks order them.
    Nothing fails, nothing is lost."""
    store_a, store_b = create_store(database_url), create_store(database_url)
    errors: list[BaseException] = []

    def writer(store: GalleryStore, tag: str) -> None:
        try:
            for i in range(15):
                store.enroll(name=f"{tag}-{i}", faces=[new_face(hash((tag, i)) % 10**6, f"{tag}-{i}")])
                store.count_faces(MODEL)  # reads interleaved with other writers
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(s, f"{s is store_a}-{t}")) for s in (store_a, store_b) for t in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert store_a.count_identities() == 60 and store_b.count_faces(MODEL) == 60
    finally:
        store_a.close()
        store_b.close()


def test_write_blocked_past_busy_timeout_is_unavailable(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process holds a write lock: the write fails as Unavailable after the timeout, never hangs
    (SQLite busy_timeout, PostgreSQL lock_timeout); reads go on meanwhile."""
    monkeypatch.setattr(store_database, "BUSY_TIMEOUT_MS", 200)
    with create_store(database_url) as s:
        release: list[Callable[[], object]]
        if database_url.startswith("sqlite"):
            lite = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
            lite.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            release = [lambda: lite.execute("ROLLBACK"), lite.close]
        else:
            pg = create_engine(database_url, poolclass=NullPool).connect()
            pg.execute(text("LOCK TABLE identities IN EXCLUSIVE MODE"))  # another session blocks writers, not readers
            release = [pg.rollback, pg.close]
        try:
            t0 = time.monotonic()
            with pytest.raises(Unavailable, match="lock"):  # "database is locked" / "canceling ... lock timeout"
                s.enroll(name="late", faces=[new_face(1)])
            assert time.monotonic() - t0 < 5.0  # the 200 ms timeout, not the default or forever
            assert s.count_identities() == 0  # reads go on meanwhile (WAL / MVCC)
        finally:
            for step in release:
                step()
        assert s.enroll(name="late", faces=[new_face(1)]).created
