"""GalleryStore: the gallery's source of truth, one domain method = one transaction (a unit of work).

Writes go through one path: an in-process lock around write transactions (plus BEGIN IMMEDIATE on SQLite,
so another process waits for the write lock instead of failing; on PostgreSQL, where other servers write
at the same time, unique constraints and row locks settle races, see store.writes), each commit atomic.
Reads run concurrently, each in its own snapshot. A database that is down, unreachable or locked surfaces
as `Unavailable` (retry), never as a driver exception. A face is acknowledged only after its transaction committed; the
vector index is derived from these rows (see faceid.indexer.vector_index).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from faceid.indexer.errors import AlreadyExists, InvalidRequest, Unavailable, UnknownFace, UnknownIdentity
from faceid.indexer.store.changes import ChangeFeed
from faceid.indexer.store.database import (
    WRITE_OPTION,
    checkpoint_truncate,
    create_database_engine,
    is_unreachable,
    ping,
    read_engine,
    require_head,
    upgrade_database,
)
from faceid.indexer.store.model_switch import ModelSwitch, SourceFace, source_faces, switch_model
from faceid.indexer.store.models import AuditEntry, Face, Identity, ModelCalibration, Thumbnail, utcnow
from faceid.indexer.store.records import (
    AddStatus,
    AssignResult,
    AuditRecord,
    Calibration,
    DeletedIdentity,
    EnrollStored,
    FaceAdded,
    FaceRow,
    IdentityListing,
    IdentityRow,
    MergeResult,
    NewFace,
    check_metadata,
    check_name,
)
from faceid.indexer.store.vectors import Checksum, IdChecksum, from_blobs
from faceid.indexer.store.writes import audit, audit_faces, get_or_create_identity, identity_subject, store_faces

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
_IN_CHUNK = 500  # ids per IN (...) list: far below every dialect's bound-parameter limit
SYSTEM_ACTOR = "system"


class _NothingToStore(Exception):
    """Raised inside an enrolment transaction to roll it back when no face would belong to the identity."""


def create_store(url: str, *, migrate: bool = True) -> GalleryStore:
    """Open the gallery at `url`, migrating its schema to head first (or refusing an old one if not `migrate`)."""
    engine = create_database_engine(url)
    try:
        if migrate:
            upgrade_database(engine)
        else:
            require_head(engine)
    except BaseException:
        engine.dispose()
        raise
    return GalleryStore(engine)


class GalleryStore:
    """Identities, faces, thumbnails, audit log and calibration of one gallery database.

    Thread-safe. Hold `write_lock` to pause every writer of this process, e.g. while the vector index is
    rebuilt or verified, so that no commit lands between the store's snapshot and the index's. It is
    re-entrant: the holder may still call the store's write methods.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._read_engine = read_engine(engine)
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self.write_lock = threading.RLock()

    # ---------------------------------------------------------------- plumbing
    @property
    def url(self) -> str:
        """The database URL with any password masked (fit for logs and stats)."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def ping(self) -> None:
        """One round trip to the database; `Unavailable` when it is down or unreachable (health checks)."""
        try:
            ping(self._engine)
        except SQLAlchemyError as exc:
            if not is_unreachable(exc):
                raise
            raise _unavailable(exc) from exc

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self.write_lock:
            try:
                with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
                    yield session
            except SQLAlchemyError as exc:
                if not is_unreachable(exc):
                    raise
                raise _unavailable(exc) from exc

    @contextmanager
    def _read(self) -> Iterator[Session]:
        try:
            with Session(self._read_engine) as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            if not is_unreachable(exc):
                raise
            raise _unavailable(exc) from exc

    # ---------------------------------------------------------------- identities
    def get_or_create_identity(
        self, *, name: str, metadata: dict[str, str] | None = None, actor: str = SYSTEM_ACTOR
    ) -> tuple[IdentityRow, bool]:
        """The identity called `name`, created if missing; `metadata` is merged into what is stored."""
        name, meta = check_name(name), check_metadata(metadata)
        with self._write() as session:
            ident, created = get_or_create_identity(session, name, meta)
            if created:
                audit(session, actor, "identity.create", identity_subject(ident.id), {"identity_id": ident.id})
            return _identity_row(session, ident, None), created

    def get_identity(
        self, *, name: str | None = None, id: int | None = None, model_id: str | None = None
    ) -> IdentityRow:
        """One identity by name or id (exactly one of them); face_count counts faces of `model_id` (or all)."""
        with self._read() as session:
            return _identity_row(session, _find_identity(session, name, id), model_id)

    def list_identities(
        self,
        *,
        page_size: int = 100,
        after_name: str | None = None,
        name_prefix: str | None = None,
        model_id: str | None = None,
    ) -> IdentityListing:
        """One page of identities ordered by name (keyset pagination: stable while others are added)."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidRequest(f"page size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        where = []
        if name_prefix:
            # substr, not LIKE: LIKE is case-insensitive on SQLite, case-sensitive on PostgreSQL.
            where.append(func.substr(Identity.name, 1, len(name_prefix)) == name_prefix)
        with self._read() as session:
            total = session.scalar(select(func.count()).select_from(Identity).where(*where)) or 0
            stmt = select(Identity).where(*where).order_by(Identity.name).limit(page_size + 1)
            if after_name is not None:
                stmt = stmt.where(Identity.name > after_name)
            idents = list(session.scalars(stmt))
            more = len(idents) > page_size
            idents = idents[:page_size]
            counts = _face_counts(session, [i.id for i in idents], model_id)
            rows = tuple(IdentityRow.of(i, counts.get(i.id, 0)) for i in idents)
        return IdentityListing(rows, rows[-1].name if more else None, int(total))

    def count_identities(self) -> int:
        with self._read() as session:
            return int(session.scalar(select(func.count()).select_from(Identity)) or 0)

    def identity_names(self, ids: Iterable[int]) -> dict[int, str]:
        """id → name for the ids that exist (missing ids are left out)."""
        out: dict[int, str] = {}
        with self._read() as session:
            for chunk in _chunks(ids):
                stmt = select(Identity.id, Identity.name).where(Identity.id.in_(chunk))
                out.update({row.id: row.name for row in session.execute(stmt)})
        return out

    def delete_identity(
        self, *, name: str | None = None, id: int | None = None, actor: str = SYSTEM_ACTOR
    ) -> DeletedIdentity:
        """Hard erase: the identity, its faces (every model) and their thumbnails, in one transaction."""
        with self._write() as session:
            ident = _find_identity(session, name, id)
            faces = session.execute(
                select(Face.model_id, Face.id).where(Face.identity_id == ident.id).order_by(Face.id)
            )
            by_model: dict[str, list[int]] = {}
            for model, face_id in faces:
                by_model.setdefault(model, []).append(face_id)
            row = IdentityRow.of(ident, sum(len(v) for v in by_model.values()))
            # Faces and thumbnails go by ON DELETE CASCADE, inside the database, in the same statement.
            session.execute(delete(Identity).where(Identity.id == ident.id))
            audit(
                session,
                actor,
                "identity.delete",
                identity_subject(row.id),
                {"identity_id": row.id, "faces_deleted": row.face_count},
            )
        # Hard erase down to the bytes: secure_delete zeroed the rows in the pages; drop the WAL's older copies.
        if not checkpoint_truncate(self._engine):
            log.warning("identity %d erased, but a long reader kept its old pages in the WAL for now", row.id)
        return DeletedIdentity(row, {m: tuple(ids) for m, ids in by_model.items()})

    def rename_identity(
        self,
        *,
        name: str | None = None,
        id: int | None = None,
        new_name: str,
        actor: str = SYSTEM_ACTOR,
        model_id: str | None = None,
    ) -> IdentityRow:
        """Rename the identity called `name` (or with `id`); face_count counts faces of `model_id` (or all)."""
        new_name = check_name(new_name)
        with self._write() as session:
            ident = _find_identity(session, name, id)
            if new_name == ident.name:
                return _identity_row(session, ident, model_id)
            if session.scalar(select(Identity.id).where(Identity.name == new_name)) is not None:
                raise AlreadyExists(f"an identity called {new_name!r} already exists: merge the two instead")
            try:
                # The change is made inside the savepoint: begin_nested() flushes pending changes *before*
                # the SAVEPOINT, where a unique violation would abort the whole transaction on PostgreSQL.
                with session.begin_nested():
                    ident.name, ident.updated_at = new_name, utcnow()
                    session.flush()
            except IntegrityError as exc:  # created meanwhile by another server
                raise AlreadyExists(f"an identity called {new_name!r} already exists") from exc
            audit(session, actor, "identity.rename", identity_subject(ident.id), {"identity_id": ident.id})
            return _identity_row(session, ident, model_id)

    def merge_identities(self, *, source: str, target: str, actor: str = SYSTEM_ACTOR) -> MergeResult:
        """Move every face of `source` to `target`, merge metadata (target's values win), delete `source`."""
        if source == target:
            raise InvalidRequest(f"cannot merge identity {source!r} into itself")
        with self._write() as session:
            src, dst = _find_identity(session, source, None), _find_identity(session, target, None)
            moved = tuple(session.scalars(select(Face.id).where(Face.identity_id == src.id).order_by(Face.id)))
            session.execute(update(Face).where(Face.identity_id == src.id).values(identity_id=dst.id))
            dst.metadata_ = {**src.metadata_, **dst.metadata_}
            dst.updated_at = utcnow()
            removed = src.id
            session.execute(delete(Identity).where(Identity.id == src.id))
            audit(
                session,
                actor,
                "identity.merge",
                identity_subject(dst.id),
                {"source_id": removed, "target_id": dst.id, "faces_moved": len(moved)},
            )
            return MergeResult(_identity_row(session, dst, None), moved, removed)

    # ---------------------------------------------------------------- faces
    def add_faces(
        self, *, identity_id: int | None, faces: Sequence[NewFace], actor: str = SYSTEM_ACTOR
    ) -> list[FaceAdded]:
        """Store `faces` for an identity (or unlabeled, None) atomically: all of them or, on error, none.

        Idempotent: a face already stored under the same (model, image sha256, rounded box) is returned
        with status EXISTING / LABELED / CONFLICT instead of stored twice (see AddStatus).
        """
        with self._write() as session:
            # Locked like get_or_create_identity does (see store.writes): one lock order for every writer.
            ident = None if identity_id is None else session.get(Identity, identity_id, with_for_update=True)
            if identity_id is not None and ident is None:
                raise UnknownIdentity(f"no identity with id {identity_id}")
            added = store_faces(session, identity_id, faces)
            # Only a real change is audited (and dates the identity): a re-sent photo whose faces are all on
            # record already (EXISTING, or CONFLICT under someone else) must leave the store as it was.
            if any(a.status in (AddStatus.CREATED, AddStatus.LABELED) for a in added):
                if ident is not None:
                    ident.updated_at = utcnow()
                audit_faces(session, actor, "faces.add", identity_subject(identity_id), identity_id, added)
            return added

    def enroll(
        self,
        *,
        name: str,
        faces: Sequence[NewFace],
        metadata: dict[str, str] | None = None,
        actor: str = SYSTEM_ACTOR,
    ) -> EnrollStored:
        """Identity + faces in ONE transaction, so no identity is ever half-written.

        Writes nothing unless at least one face ends up belonging to the identity: a new identity whose
        faces were all refused (or all stored under someone else) is not created, and an existing one's
        metadata is left unchanged. Nor when nothing would change (the faces are all this identity's
        already and the metadata adds nothing): a photo sent again leaves the store as it was.
        """
        name, meta = check_name(name), check_metadata(metadata)
        try:
            with self._write() as session:
                ident, created = get_or_create_identity(session, name, meta)
                metadata_changed = not created and session.is_modified(ident)
                added = tuple(store_faces(session, ident.id, faces))
                if not any(a.status is not AddStatus.CONFLICT for a in added):
                    raise _NothingToStore(added)
                if not (created or metadata_changed or any(a.status in (AddStatus.CREATED, AddStatus.LABELED) for a in added)):
                    raise _NothingToStore(added)  # every face is this identity's already: no audit row, no new date
                ident.updated_at = utcnow()
                audit_faces(session, actor, "identity.enroll", identity_subject(ident.id), ident.id, added, created=created)
                return EnrollStored(_identity_row(session, ident, None), created, added)
        except _NothingToStore as nothing:
            # Rolled back. CONFLICT results point at rows that exist independently of this transaction.
            existing: IdentityRow | None
            try:
                existing = self.get_identity(name=name)
            except UnknownIdentity:
                existing = None
            return EnrollStored(existing, False, nothing.args[0])

    def assign_faces(
        self,
        *,
        face_ids: Sequence[int],
        identity_name: str,
        metadata: dict[str, str] | None = None,
        actor: str = SYSTEM_ACTOR,
    ) -> AssignResult:
        """Name faces (unlabeled or not, e.g. a whole cluster): they now belong to `identity_name` (created if new)."""
        ids = sorted({int(i) for i in face_ids})
        if not ids:
            raise InvalidRequest("no face ids to assign")
        name, meta = check_name(identity_name), check_metadata(metadata)
        with self._write() as session:
            found: set[int] = set()
            for chunk in _chunks(ids):
                found.update(session.scalars(select(Face.id).where(Face.id.in_(chunk))))
            missing = [i for i in ids if i not in found]
            if missing:
                raise UnknownFace(f"no face with id {', '.join(map(str, missing[:10]))}; nothing was assigned")
            ident, created = get_or_create_identity(session, name, meta)
            for chunk in _chunks(ids):
                session.execute(update(Face).where(Face.id.in_(chunk)).values(identity_id=ident.id))
            ident.updated_at = utcnow()
            audit(session, actor, "faces.assign", identity_subject(ident.id), {"identity_id": ident.id, "created": created, "face_ids": ids})
            return AssignResult(_identity_row(session, ident, None), created, tuple(ids))

    def count_faces(self, model_id: str | None = None, *, labeled: bool | None = None) -> int:
        """Faces of `model_id` (or all); labeled=False counts the unlabeled ones only, True the labeled."""
        stmt = select(func.count()).select_from(Face)
        if model_id is not None:
            stmt = stmt.where(Face.model_id == model_id)
        if labeled is not None:
            stmt = stmt.where(Face.identity_id.is_not(None) if labeled else Face.identity_id.is_(None))
        with self._read() as session:
            return int(session.scalar(stmt) or 0)

    def face_counts_by_model(self) -> dict[str, int]:
        with self._read() as session:
            rows = session.execute(select(Face.model_id, func.count()).group_by(Face.model_id))
            return {model: int(n) for model, n in rows}

    def get_faces(self, face_ids: Iterable[int]) -> dict[int, FaceRow]:
        """face id → FaceRow for the ids that exist."""
        out: dict[int, FaceRow] = {}
        with self._read() as session:
            for chunk in _chunks(face_ids):
                out.update((f.id, FaceRow.of(f)) for f in session.scalars(select(Face).where(Face.id.in_(chunk))))
        return out

    def faces_of_identity(self, identity_id: int, model_id: str | None = None) -> tuple[FaceRow, ...]:
        stmt = select(Face).where(Face.identity_id == identity_id).order_by(Face.id)
        if model_id is not None:
            stmt = stmt.where(Face.model_id == model_id)
        with self._read() as session:
            return tuple(FaceRow.of(f) for f in session.scalars(stmt))

    def faces_of_image(self, image_sha256: str, model_id: str) -> tuple[FaceRow, ...]:
        """The faces stored from one photo (by the sha256 of its bytes) under `model_id`, by id.

        An index range scan: (model_id, image_sha256) lead the unique key. Bulk indexing asks this before
        analysing a photo again, so that a re-run skips what is already on record.
        """
        stmt = select(Face).where(Face.model_id == model_id, Face.image_sha256 == image_sha256).order_by(Face.id)
        with self._read() as session:
            return tuple(FaceRow.of(f) for f in session.scalars(stmt))

    def embeddings_of_identity(
        self, identity_id: int, model_id: str
    ) -> tuple[NDArray[np.int64], NDArray[np.float32] | None]:
        """An identity's faces under `model_id`: ids (n,) int64 and vectors (n, d) float32 (None when n = 0)."""
        stmt = (
            select(Face.id, Face.dim, Face.embedding)
            .where(Face.identity_id == identity_id, Face.model_id == model_id)
            .order_by(Face.id)
        )
        with self._read() as session:
            rows = session.execute(stmt).all()
        if not rows:
            return np.empty(0, dtype=np.int64), None
        return np.array([r[0] for r in rows], dtype=np.int64), from_blobs((r[2] for r in rows), rows[0][1])

    def face_identity_map(self, face_ids: Iterable[int]) -> dict[int, int | None]:
        """face id → identity id (None = unlabeled) for the faces that exist."""
        out: dict[int, int | None] = {}
        with self._read() as session:
            for chunk in _chunks(face_ids):
                stmt = select(Face.id, Face.identity_id).where(Face.id.in_(chunk))
                out.update({row.id: row.identity_id for row in session.execute(stmt)})
        return out

    def get_thumbnails(self, face_ids: Iterable[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        with self._read() as session:
            for chunk in _chunks(face_ids):
                stmt = select(Thumbnail.face_id, Thumbnail.jpeg).where(Thumbnail.face_id.in_(chunk))
                out.update({row.face_id: bytes(row.jpeg) for row in session.execute(stmt)})
        return out

    def iter_embeddings(
        self,
        model_id: str,
        batch: int = 100_000,
        *,
        identity_ids: Sequence[int] | None = None,
        unlabeled_only: bool = False,
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """Stream a model's faces in ascending id order: (ids (n,) int64, vectors (n, d) float32), n ≤ batch.

        All batches come from one read transaction, i.e. one consistent snapshot, however long the
        consumer takes (WAL lets writers go on meanwhile). Optionally only some identities or the unlabeled.
        """
        if batch < 1:
            raise ValueError("batch must be ≥ 1")
        stmt = select(Face.id, Face.dim, Face.embedding).where(Face.model_id == model_id).order_by(Face.id)
        if unlabeled_only:
            stmt = stmt.where(Face.identity_id.is_(None))
        if identity_ids is not None:
            # A list of identities is short (a clustering request), unlike the face ids elsewhere.
            stmt = stmt.where(Face.identity_id.in_([int(i) for i in identity_ids]))
        try:
            with self._read_engine.connect() as conn, conn.begin():
                result = conn.execution_options(yield_per=batch).execute(stmt)
                for part in result.partitions():
                    dims = {row[1] for row in part}
                    if len(dims) != 1:
                        raise ValueError(f"model {model_id!r} has embeddings of several sizes {sorted(dims)}")
                    ids = np.fromiter((row[0] for row in part), dtype=np.int64, count=len(part))
                    yield ids, from_blobs((row[2] for row in part), dims.pop())
        except SQLAlchemyError as exc:
            if not is_unreachable(exc):
                raise
            raise _unavailable(exc) from exc

    def checksum(self, model_id: str) -> Checksum:
        """Count and checksum of `model_id`'s face ids (the definition in store.vectors, shared with indexes)."""
        acc = IdChecksum(model_id)
        stmt = select(Face.id).where(Face.model_id == model_id).order_by(Face.id)
        try:
            with self._read_engine.connect() as conn, conn.begin():
                for part in conn.execution_options(yield_per=100_000).execute(stmt).scalars().partitions():
                    acc.update(np.fromiter(part, dtype=np.int64, count=len(part)))
        except SQLAlchemyError as exc:
            if not is_unreachable(exc):
                raise
            raise _unavailable(exc) from exc
        return acc.result()

    # ---------------------------------------------------------------- model switch (faceid reindex)
    def reindex_sources(self, model_id: str) -> list[SourceFace]:
        """Every face of `model_id` with its box and thumbnail, from one snapshot (see store.model_switch)."""
        with self._read() as session:
            return source_faces(session, model_id)

    def switch_model(
        self,
        *,
        source_model: str,
        target_model: str,
        replacements: Mapping[int, NewFace],
        dropped: Sequence[int] = (),
        actor: str = SYSTEM_ACTOR,
    ) -> ModelSwitch:
        """Replace every face of `source_model` by its re-embedded twin under `target_model`, in one transaction."""
        with self._write() as session:
            return switch_model(session, source_model=source_model, target_model=target_model,
                                replacements=replacements, dropped=dropped, actor=actor)

    # ---------------------------------------------------------------- face change log (store.changes)
    def change_feed(self) -> ChangeFeed:
        """The face change log, for an index that follows other servers' writes (faceid.indexer.index_follower)."""
        return ChangeFeed(self._read_engine, self._write_engine)

    # ---------------------------------------------------------------- audit and calibration
    def append_audit(
        self, *, actor: str, action: str, subject: str, details: dict[str, Any] | None = None
    ) -> AuditRecord:
        """Append one audit record in its own transaction (the store's own changes write theirs in theirs)."""
        with self._write() as session:
            return AuditRecord.of(audit(session, actor, action, subject, details or {}))

    def list_audit(self, *, after_id: int = 0, limit: int = 100, action_prefix: str | None = None) -> list[AuditRecord]:
        """Audit records in the order they were written, after `after_id` (optionally of some actions only)."""
        stmt = select(AuditEntry).where(AuditEntry.id > after_id).order_by(AuditEntry.id).limit(limit)
        if action_prefix:
            stmt = stmt.where(func.substr(AuditEntry.action, 1, len(action_prefix)) == action_prefix)
        with self._read() as session:
            return [AuditRecord.of(a) for a in session.scalars(stmt)]

    def get_calibration(self, model_id: str) -> Calibration | None:
        with self._read() as session:
            row = session.get(ModelCalibration, model_id)
            return None if row is None else Calibration.of(row)

    def set_calibration(
        self,
        *,
        model_id: str,
        threshold: float,
        source: str,
        logistic_a: float | None = None,
        logistic_b: float | None = None,
        actor: str = SYSTEM_ACTOR,
    ) -> Calibration:
        if not 0.0 < threshold < 2.0:
            raise InvalidRequest(f"a distance threshold between unit vectors is in (0, 2), got {threshold}")
        with self._write() as session:
            row = session.get(ModelCalibration, model_id)
            if row is None:
                row = ModelCalibration(model_id=model_id)
                session.add(row)
            row.threshold, row.source, row.updated_at = float(threshold), source, utcnow()
            row.logistic_a, row.logistic_b = logistic_a, logistic_b
            session.flush()
            audit(session, actor, "calibration.set", model_id, {"threshold": threshold, "source": source})
            return Calibration.of(row)


# -------------------------------------------------------------------- helpers (inside a transaction)
def _find_identity(session: Session, name: str | None, id: int | None) -> Identity:
    if (name is None) == (id is None):
        raise InvalidRequest("name an identity by exactly one of name or id")
    if name is not None:
        ident = session.scalar(select(Identity).where(Identity.name == name))
        if ident is None:
            raise UnknownIdentity(f"no identity called {name!r}: see the list of identities")
    else:
        ident = session.get(Identity, id)
        if ident is None:
            raise UnknownIdentity(f"no identity with id {id}")
    return ident


def _face_counts(session: Session, identity_ids: Sequence[int], model_id: str | None) -> dict[int, int]:
    if not identity_ids:
        return {}
    stmt = select(Face.identity_id, func.count()).where(Face.identity_id.in_(identity_ids)).group_by(Face.identity_id)
    if model_id is not None:
        stmt = stmt.where(Face.model_id == model_id)
    return {int(i): int(n) for i, n in session.execute(stmt) if i is not None}


def _identity_row(session: Session, ident: Identity, model_id: str | None) -> IdentityRow:
    return IdentityRow.of(ident, _face_counts(session, [ident.id], model_id).get(ident.id, 0))


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    chunk: list[int] = []
    for i in ids:
        chunk.append(int(i))
        if len(chunk) == _IN_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _unavailable(exc: SQLAlchemyError) -> Unavailable:
    # Locked by another process past busy_timeout, or the database server unreachable: retryable.
    orig = getattr(exc, "orig", None) or exc
    first_line = (str(orig).strip().splitlines() or [type(exc).__name__])[0]
    return Unavailable(f"the gallery database is unavailable ({first_line}); retry shortly")
