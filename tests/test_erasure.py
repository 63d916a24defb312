"""DeleteIdentity is a hard erase down to the bytes of the SQLite files, and the audit log keeps no name.

The store is used directly (real SQLite files, synthetic embeddings): what matters is what remains in
the database file and its WAL after the delete, which no API call can show. The gRPC side (the photo
identifies as nobody afterwards, the audit log names the key) is in test_auth.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from faceid.indexer.store import NewFace, create_store
from faceid.indexer.store.vectors import to_blob

MODEL = "erase-test-32d"


def _face(seed: int, marker: bytes) -> NewFace:
    v = np.random.default_rng(seed).standard_normal(32).astype(np.float32)
    # A thumbnail large enough to need overflow pages, with a marker that cannot occur by chance.
    thumb = b"\xff\xd8" + marker * 400 + os.urandom(3000)
    return NewFace(MODEL, v / np.linalg.norm(v), hashlib.sha256(marker + bytes([seed])).hexdigest(), (1.0, 2.0, 50.0, 60.0), 0.99, thumb)


def _file_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(db.parent.iterdir()) if p.name.startswith(db.name))


def test_delete_leaves_no_trace_of_the_person_in_the_database_files(tmp_path: Path) -> None:
    db = tmp_path / "gallery.db"
    erased_name, kept_name = "Zebulon Quartermaine-Erased", "Kept Person"
    erased_faces = [_face(i, b"ERASE-ME-MARKER!") for i in range(3)]
    kept_faces = [_face(10 + i, b"KEEP-THIS-MARKER") for i in range(2)]
    with create_store(f"sqlite:///{db}") as store:
        store.enroll(name=erased_name, faces=erased_faces, metadata={"badge": "B-77331"}, actor="key:hr")
        store.enroll(name=kept_name, faces=kept_faces, actor="key:hr")
        store.rename_identity(name=erased_name, new_name=erased_name + " Jr", actor="key:hr")
        before = _file_bytes(db)
        secrets_of_erased = [erased_name.encode(), b"B-77331", b"ERASE-ME-MARKER!"] + [to_blob(f.embedding) for f in erased_faces]
        assert all(s in before for s in secrets_of_erased)  # the scan can see them while they exist

        deleted = store.delete_identity(name=erased_name + " Jr", actor="key:hr")
        assert len(deleted.face_ids) == 3

        after = _file_bytes(db)
        for secret in secrets_of_erased:
            assert secret not in after, secret[:40]
        # The other person is untouched, so the scan is not blind.
        assert kept_name.encode() in after and b"KEEP-THIS-MARKER" in after
        assert to_blob(kept_faces[0].embedding) in after

        audit = store.list_audit()
        assert [a.action for a in audit] == ["identity.enroll", "identity.enroll", "identity.rename", "identity.delete"]
        assert {a.actor for a in audit} == {"key:hr"}
        erased_id = deleted.identity.id
        assert [a.subject for a in audit if a.details.get("identity_id") == erased_id] == [f"identity:{erased_id}"] * 3
        assert not any(erased_name in (a.subject + repr(a.details)) for a in audit)


def test_migration_0002_rewrites_names_out_of_older_audit_rows(database_url: str) -> None:
    """A gallery written by 0001-era code (names in audit subjects and details) loses those names on upgrade.
    On SQLite and on PostgreSQL (conftest.py `database_url`)."""
    from faceid.indexer.store import upgrade_database
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    url = database_url
    assert upgrade_database(url, "0001") == "0001"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        rows = [
            ("identity.enroll", "Ada Lovelace", '{"identity_id": 1, "identity_created": true}'),
            ("identity.rename", "Ada L.", '{"identity_id": 1, "old_name": "Ada Lovelace"}'),
            ("identity.merge", "Bob", '{"source": "Ada L.", "source_id": 1, "target_id": 2, "faces_moved": 2}'),
            ("faces.add", "(unlabeled)", '{"identity_id": null, "faces": {}}'),
            ("calibration.set", "facenet", '{"threshold": 1.1}'),
        ]
        conn.execute(
            text("INSERT INTO audit_log (at, actor, action, subject, details) "
                 "VALUES ('2026-01-01 00:00:00+00', 'system', :a, :s, :d)"),
            [{"a": a, "s": s, "d": d} for a, s, d in rows],
        )
    assert upgrade_database(url, "0002") == "0002"
    with engine.connect() as conn:
        got = [tuple(r) for r in conn.execute(text("SELECT action, subject, details FROM audit_log ORDER BY id"))]
    engine.dispose()
    assert [(a, s) for a, s, _ in got] == [
        ("identity.enroll", "identity:1"),
        ("identity.rename", "identity:1"),
        ("identity.merge", "identity:2"),
        ("faces.add", "(unlabeled)"),
        ("calibration.set", "facenet"),
    ]
    dump = repr(got)
    assert "Ada" not in dump and "Bob" not in dump
