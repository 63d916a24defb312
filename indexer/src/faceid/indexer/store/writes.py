"""The write steps that GalleryStore's units of work are made of (each runs inside the caller's transaction).

Races between servers sharing one PostgreSQL database (two enrol the same new identity or the same image at
once) end in one row and no error: the unique constraints refuse the second INSERT (PostgreSQL makes it wait
for the first transaction, then fails it), its savepoint rolls back, and the step is retried; under READ
COMMITTED the retry's SELECT sees the winner's row, so it is reported EXISTING / LABELED / CONFLICT like any
face stored earlier. Writers of one identity take its row first (SELECT ... FOR UPDATE; nothing on
SQLite), so they queue instead of locking each other's faces in opposite orders; a deadlock PostgreSQL
still finds (two identities, overlapping photos in opposite orders) is retried like a lost race. Labeling
an unlabeled face only happens while it is still unlabeled (a conditional UPDATE), so two servers naming
the same face never overwrite each other. Within one process writes are serialised anyway, and on
SQLite BEGIN IMMEDIATE serialises processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from faceid.indexer.errors import Unavailable
from faceid.indexer.store.database import is_retryable_conflict
from faceid.indexer.store.models import AuditEntry, Face, Identity, Thumbnail, utcnow
from faceid.indexer.store.records import AddStatus, FaceAdded, NewFace, box_key
from faceid.indexer.store.vectors import to_blob

_RACE_RETRIES = 5
_IN_CHUNK = 500

_Key = tuple[str, str, int, int, int, int]  # NewFace.key: model, image sha256, rounded box


def get_or_create_identity(session: Session, name: str, metadata: dict[str, str]) -> tuple[Identity, bool]:
    """The identity called `name` (created if missing) with `metadata` merged in; (identity, created)."""
    for attempt in range(_RACE_RETRIES):
        # FOR UPDATE: a writer of this identity holds its row before it inserts faces (see module docstring).
        ident = session.scalar(select(Identity).where(Identity.name == name).with_for_update())
        if ident is not None:
            merged = {**ident.metadata_, **metadata}
            if merged != ident.metadata_:
                ident.metadata_, ident.updated_at = merged, utcnow()
            return ident, False
        try:
            with session.begin_nested():
                ident = Identity(name=name, metadata_=metadata)
                session.add(ident)
                session.flush()
            return ident, True
        except DBAPIError as exc:
            if not _lost_race(exc) or attempt == _RACE_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


class _LabelRace(Exception):
    """An unlabeled face got labeled by another server between our SELECT and our UPDATE."""


def _lost_race(exc: DBAPIError) -> bool:
    # Another transaction stored the same unique key first, or PostgreSQL broke a lock cycle with us.
    return isinstance(exc, IntegrityError) or is_retryable_conflict(exc)


def store_faces(session: Session, identity_id: int | None, faces: Sequence[NewFace]) -> list[FaceAdded]:
    """Insert the faces not stored yet (one multi-row INSERT), report the others; results in input order."""
    for attempt in range(_RACE_RETRIES):
        try:
            with session.begin_nested():
                return _store_batch(session, identity_id, faces)
        except (DBAPIError, _LabelRace) as exc:
            # Another server stored or labeled some of these faces after our SELECT; visible on retry.
            if isinstance(exc, DBAPIError) and not _lost_race(exc):
                raise
            if attempt == _RACE_RETRIES - 1:
                raise Unavailable("other servers kept changing these faces meanwhile; retry the request") from exc
    raise AssertionError("unreachable")


def _store_batch(session: Session, identity_id: int | None, faces: Sequence[NewFace]) -> list[FaceAdded]:
    existing = _existing_rows(session, faces)
    fresh: dict[_Key, NewFace] = {}  # the first occurrence of each key not stored yet
    for face in faces:
        if face.key not in existing:
            fresh.setdefault(face.key, face)
    created = dict(zip(fresh, _insert_faces(session, identity_id, list(fresh.values())), strict=True))

    results: list[FaceAdded] = []
    reported: set[int] = set()
    to_label: list[int] = []
    for face in faces:
        key = face.key
        if key in created:
            face_id = created[key]
            # A key repeated within the batch: created once, the repeats are that same row.
            status = AddStatus.EXISTING if face_id in reported else AddStatus.CREATED
            reported.add(face_id)
            results.append(FaceAdded(face_id, status, identity_id))
            continue
        face_id, owner = existing[key]
        if identity_id is None or owner == identity_id:
            results.append(FaceAdded(face_id, AddStatus.EXISTING, owner))
        elif owner is None:
            to_label.append(face_id)
            existing[key] = (face_id, identity_id)
            results.append(FaceAdded(face_id, AddStatus.LABELED, identity_id))
        else:
            results.append(FaceAdded(face_id, AddStatus.CONFLICT, owner))
    for start in range(0, len(to_label), _IN_CHUNK):
        chunk = to_label[start : start + _IN_CHUNK]
        # Only faces still unlabeled: if another server labeled one meanwhile, fewer rows change and the
        # whole step is retried, now seeing that face's owner (CONFLICT or EXISTING instead of LABELED).
        stmt = update(Face).where(Face.id.in_(chunk), Face.identity_id.is_(None)).values(identity_id=identity_id)
        if session.execute(stmt).rowcount != len(chunk):
            raise _LabelRace()
    return results


def _existing_rows(session: Session, faces: Sequence[NewFace]) -> dict[_Key, tuple[int, int | None]]:
    """key → (face id, identity id) of the faces already stored, looked up by (model, image) in bulk."""
    wanted = {face.key for face in faces}
    shas_by_model: dict[str, set[str]] = {}
    for face in faces:
        shas_by_model.setdefault(face.model_id, set()).add(face.image_sha256)
    found: dict[_Key, tuple[int, int | None]] = {}
    for model, shas in shas_by_model.items():
        ordered = sorted(shas)
        for start in range(0, len(ordered), _IN_CHUNK):
            # (model_id, image_sha256) lead the unique index: this is an index range scan.
            stmt = select(Face.id, Face.identity_id, Face.image_sha256, Face.bx1, Face.by1, Face.bx2, Face.by2).where(
                Face.model_id == model, Face.image_sha256.in_(ordered[start : start + _IN_CHUNK])
            )
            for row in session.execute(stmt):
                key = (model, row.image_sha256, row.bx1, row.by1, row.bx2, row.by2)
                if key in wanted:
                    found[key] = (row.id, row.identity_id)
    return found


def _insert_faces(session: Session, identity_id: int | None, faces: list[NewFace]) -> list[int]:
    if not faces:
        return []
    now = utcnow()
    rows = []
    for face in faces:
        bx1, by1, bx2, by2 = box_key(face.box)
        rows.append(
            {
                "identity_id": identity_id,
                "model_id": face.model_id,
                "dim": int(face.embedding.shape[0]),
                "embedding": to_blob(face.embedding),
                "image_sha256": face.image_sha256,
                "x1": float(face.box[0]),
                "y1": float(face.box[1]),
                "x2": float(face.box[2]),
                "y2": float(face.box[3]),
                "bx1": bx1,
                "by1": by1,
                "bx2": bx2,
                "by2": by2,
                "detection_probability": float(face.probability),
                "created_at": now,
            }
        )
    # One multi-row INSERT ... RETURNING (SQLite ≥ 3.35, PostgreSQL), ids in the order of `rows`.
    ids = list(session.scalars(insert(Face).returning(Face.id, sort_by_parameter_order=True), rows))
    thumbs = [{"face_id": i, "jpeg": f.thumbnail} for i, f in zip(ids, faces, strict=True) if f.thumbnail]
    if thumbs:
        session.execute(insert(Thumbnail), thumbs)
    return ids


def identity_subject(identity_id: int | None) -> str:
    """How an audit row names a person: by identity id, never by name.

    DeleteIdentity is a hard erase, and the audit log is append-only: a name written here would outlive
    the erasure. An id points at nothing once the identity is gone (ids are never reused); while it
    exists, readers of the log resolve it to the current name. No hash of the name either: names are
    guessable, so a hash is one dictionary lookup away from the name (see docs/security.md).
    """
    return "(unlabeled)" if identity_id is None else f"identity:{identity_id}"


def audit(session: Session, actor: str, action: str, subject: str, details: dict[str, Any]) -> AuditEntry:
    entry = AuditEntry(actor=actor[:255], action=action, subject=subject[:1024], details=details)
    session.add(entry)
    session.flush()
    return entry


def audit_faces(
    session: Session,
    actor: str,
    action: str,
    subject: str,
    identity_id: int | None,
    added: Sequence[FaceAdded],
    *,
    created: bool = False,
) -> None:
    by_status: dict[str, list[int]] = {}
    for a in added:
        by_status.setdefault(a.status.value, []).append(a.face_id)
    details: dict[str, Any] = {"identity_id": identity_id, "identity_created": created, "faces": by_status}
    audit(session, actor, action, subject, details)
