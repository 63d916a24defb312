"""Initial schema: identities, faces, thumbnails, audit log, model calibration.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Written out in full (no imports from the application): a migration describes the schema as it was at
this revision, whatever the models say later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# INTEGER on SQLite (the 64-bit autoincrementing rowid), BIGINT elsewhere.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identities")),
        sa.UniqueConstraint("name", name=op.f("uq_identities_name")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "faces",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("identity_id", _BIG_ID, nullable=True),
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("x1", sa.Float(), nullable=False),
        sa.Column("y1", sa.Float(), nullable=False),
        sa.Column("x2", sa.Float(), nullable=False),
        sa.Column("y2", sa.Float(), nullable=False),
        sa.Column("bx1", sa.Integer(), nullable=False),
        sa.Column("by1", sa.Integer(), nullable=False),
        sa.Column("bx2", sa.Integer(), nullable=False),
        sa.Column("by2", sa.Integer(), nullable=False),
        sa.Column("detection_probability", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_faces_identity_id_identities"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_faces")),
        sa.UniqueConstraint("model_id", "image_sha256", "bx1", "by1", "bx2", "by2", name="uq_faces_model_image_box"),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_faces_identity_id"), "faces", ["identity_id"], unique=False)
    op.create_index(op.f("ix_faces_model_id"), "faces", ["model_id"], unique=False)
    op.create_table(
        "thumbnails",
        sa.Column("face_id", _BIG_ID, nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["face_id"], ["faces.id"], name=op.f("fk_thumbnails_face_id_faces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("face_id", name=op.f("pk_thumbnails")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=1024), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"], unique=False)
    op.create_table(
        "model_calibration",
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("logistic_a", sa.Float(), nullable=True),
        sa.Column("logistic_b", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_model_calibration")),
    )


def downgrade() -> None:
    op.drop_table("model_calibration")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("thumbnails")
    op.drop_index(op.f("ix_faces_model_id"), table_name="faces")
    op.drop_index(op.f("ix_faces_identity_id"), table_name="faces")
    op.drop_table("faces")
    op.drop_table("identities")
