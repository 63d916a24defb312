"""The gallery store: SQLAlchemy models, Alembic migrations and `GalleryStore`, the source of truth.

store = create_store("sqlite:///faceid.db")      # migrates to head, WAL, foreign keys on
stored = store.enroll(name="ada", faces=[NewFace(...)])
"""

from faceid.indexer.store.changes import Change, ChangeBatch, ChangeFeed
from faceid.indexer.store.database import (
    checkpoint_truncate,
    create_database_engine,
    current_revision,
    head_revision,
    upgrade_database,
)
from faceid.indexer.store.gallery import MAX_PAGE_SIZE, GalleryStore, create_store
from faceid.indexer.store.keys import ApiKeyRow, KeyStore
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
)
from faceid.indexer.store.vectors import Checksum, IdChecksum, id_checksum

__all__ = [
    "MAX_PAGE_SIZE",
    "AddStatus",
    "ApiKeyRow",
    "AssignResult",
    "AuditRecord",
    "Calibration",
    "Change",
    "ChangeBatch",
    "ChangeFeed",
    "Checksum",
    "DeletedIdentity",
    "EnrollStored",
    "FaceAdded",
    "FaceRow",
    "GalleryStore",
    "IdChecksum",
    "IdentityListing",
    "IdentityRow",
    "KeyStore",
    "MergeResult",
    "NewFace",
    "checkpoint_truncate",
    "create_database_engine",
    "create_store",
    "current_revision",
    "head_revision",
    "id_checksum",
    "upgrade_database",
]
