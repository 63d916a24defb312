"""The gallery's tables as SQLAlchemy 2 mappings: the one schema for SQLite and PostgreSQL.

Alembic migrations (./migrations) create exactly these tables; tests/test_store.py checks that a database
upgraded to head has no difference from this metadata. Change a model → add a migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Face ids are int64 (FAISS ids, proto int64). On SQLite only "INTEGER PRIMARY KEY" is the 64-bit rowid that
# autoincrements, so the same column is INTEGER there and BIGINT (identity) everywhere else.
BigId = BigInteger().with_variant(Integer(), "sqlite")

MAX_NAME_LENGTH = 255
MAX_MODEL_ID_LENGTH = 128

# Stable constraint names: Alembic's batch mode on SQLite and later migrations refer to them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect.

    SQLite has no time zones and hands back naive values; PostgreSQL stores timestamptz. Both return aware
    UTC datetimes here, and naive inputs are refused so that local time never sneaks in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime (faceid stores UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON()}


class Identity(Base):
    """A named person (or any external id). Deleting one deletes its faces and their thumbnails."""

    __tablename__ = "identities"
    # AUTOINCREMENT on SQLite: ids of deleted identities are never handed out again (audit rows refer to them).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), unique=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Face(Base):
    """One stored face: its embedding under one model, where it came from, and (optionally) whose it is.

    `identity_id` NULL = unlabeled (bulk-indexed, waiting for clustering or naming). The unique key
    (model, image sha256, box rounded to whole pixels) makes re-enrolling the same face of the same photo a
    no-op that returns the existing row, whichever process or server tries it.
    """

    __tablename__ = "faces"
    __table_args__ = (
        UniqueConstraint("model_id", "image_sha256", "bx1", "by1", "bx2", "by2", name="uq_faces_model_image_box"),
        # AUTOINCREMENT on SQLite: a deleted face's id is never reused, so a stale index entry, cached report
        # or log line can never point at somebody else's face.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    identity_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(String(MAX_MODEL_ID_LENGTH), index=True)
    dim: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # dim float32, little-endian, L2-normalised
    image_sha256: Mapped[str] = mapped_column(String(64))
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    # The box rounded to whole pixels: the face's part of the unique key (floats make poor keys).
    bx1: Mapped[int] = mapped_column(Integer)
    by1: Mapped[int] = mapped_column(Integer)
    bx2: Mapped[int] = mapped_column(Integer)
    by2: Mapped[int] = mapped_column(Integer)
    detection_probability: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FaceChange(Base):
    """One add or remove of a face vector: the change log that other servers' in-memory indexes follow.

    Written by database triggers on `faces` (migration 0003), so every insert and delete, including the
    ON DELETE CASCADE of an identity erase, lands here in the same transaction: a committed face change is
    never missing from the log. Holds ids only, no personal data (an erase leaves nothing readable here).
    `seq` increases with every change; with several PostgreSQL writers seqs can COMMIT out of order
    (see faceid.indexer.index_follower for how followers handle that). A migration that rebuilds `faces`
    (SQLite batch mode) drops its triggers and must create them again.
    """

    __tablename__ = "face_changes"
    # AUTOINCREMENT on SQLite: a seq is never handed out twice, even after the newest rows are pruned.
    __table_args__ = (CheckConstraint("op IN ('add', 'remove')", name="op"), {"sqlite_autoincrement": True})

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    op: Mapped[str] = mapped_column(String(8))
    face_id: Mapped[int] = mapped_column(BigInteger)  # no foreign key: a removed face's row is gone
    model_id: Mapped[str] = mapped_column(String(MAX_MODEL_ID_LENGTH))
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Thumbnail(Base):
    """A small JPEG of a stored face, for reports; erased with its face."""

    __tablename__ = "thumbnails"

    face_id: Mapped[int] = mapped_column(BigId, ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)


class AuditEntry(Base):
    """Append-only record of who changed the gallery: the store inserts these rows and never updates them."""

    __tablename__ = "audit_log"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(1024))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ApiKey(Base):
    """An API key of the server. Only a salted slow hash of its secret is stored (see faceid.server.auth).

    `key_id` is the public part of the key a caller sends (fid_<key_id>_<secret>): a lookup is one
    primary-key read, never a hash computed against every stored key. Revoked keys stay (revoked_at set)
    so that their names in the audit log keep meaning one key.
    """

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    kdf: Mapped[str] = mapped_column(String(64))  # how secret_hash was made, e.g. "scrypt:n=16384,r=8,p=1"
    salt: Mapped[bytes] = mapped_column(LargeBinary)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class ModelCalibration(Base):
    """The decision threshold calibrated for one model on this deployment (overrides the model card's τ)."""

    __tablename__ = "model_calibration"

    model_id: Mapped[str] = mapped_column(String(MAX_MODEL_ID_LENGTH), primary_key=True)
    threshold: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(255))
    # P(same person | distance d) = 1 / (1 + exp(a * d + b)), when a calibration fitted one.
    logistic_a: Mapped[float | None] = mapped_column(Float)
    logistic_b: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
