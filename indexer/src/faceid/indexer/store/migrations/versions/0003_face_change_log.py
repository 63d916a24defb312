"""Face change log: every add and remove of a face vector, for servers whose index follows the others'.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

- `face_changes` (seq, op 'add'/'remove', face_id, model_id, at): one row per inserted or deleted `faces`
  row. Several `faceid-server` processes on one database each hold an in-memory index; each follows this
  log to apply the changes the others committed (faceid.indexer.index_follower).
- The rows are written by AFTER INSERT / AFTER DELETE triggers on `faces`, not by application code: the log
  entry is part of the same transaction as the face change whichever code path made it (enrolment, identity
  erase through ON DELETE CASCADE, the model switch of `faceid reindex`, a manual fix in SQL). A committed
  face change is therefore never missing from the log.
- Faces that exist when this migration runs are not logged: a server builds its index from `faces` at
  start, and only changes made while it runs need following.

SQLite caveat for later migrations: batch mode rebuilds a table by copy + DROP + rename, and DROP removes
the table's triggers. A migration that batch-alters `faces` must create these triggers again.

Written out in full (no imports from the application): a migration describes the schema as it was at
this revision, whatever the models say later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# SQLite: the text form SQLAlchemy's DateTime reads back (6 fractional digits; %f gives milliseconds, so
# three zeros complete the microseconds). UTC, as every faceid timestamp.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"

_SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER trg_faces_log_add AFTER INSERT ON faces
BEGIN
    INSERT INTO face_changes (op, face_id, model_id, at) VALUES ('add', NEW.id, NEW.model_id, {_SQLITE_NOW});
END""",
    f"""CREATE TRIGGER trg_faces_log_remove AFTER DELETE ON faces
BEGIN
    INSERT INTO face_changes (op, face_id, model_id, at) VALUES ('remove', OLD.id, OLD.model_id, {_SQLITE_NOW});
END""",
)

# PostgreSQL: one row-level trigger function for both operations. now() is the transaction's start time.
_POSTGRES_FUNCTION = """CREATE FUNCTION faceid_log_face_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO face_changes (op, face_id, model_id, at) VALUES ('add', NEW.id, NEW.model_id, now());
        RETURN NEW;
    END IF;
    INSERT INTO face_changes (op, face_id, model_id, at) VALUES ('remove', OLD.id, OLD.model_id, now());
    RETURN OLD;
END
$$"""
_POSTGRES_TRIGGERS = (
    "CREATE TRIGGER trg_faces_log_add AFTER INSERT ON faces FOR EACH ROW EXECUTE FUNCTION faceid_log_face_change()",
    "CREATE TRIGGER trg_faces_log_remove AFTER DELETE ON faces FOR EACH ROW EXECUTE FUNCTION faceid_log_face_change()",
)


def upgrade() -> None:
    op.create_table(
        "face_changes",
        sa.Column("seq", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("face_id", sa.BigInteger(), nullable=False),
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("op IN ('add', 'remove')", name=op.f("ck_face_changes_op")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_face_changes")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_face_changes_at"), "face_changes", ["at"], unique=False)
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        statements: Sequence[str] = _SQLITE_TRIGGERS
    elif dialect == "postgresql":
        statements = (_POSTGRES_FUNCTION, *_POSTGRES_TRIGGERS)
    else:
        raise NotImplementedError(f"the face change log triggers are written for SQLite and PostgreSQL, not {dialect}")
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS trg_faces_log_add" + (" ON faces" if _is_postgres() else ""))
    op.execute("DROP TRIGGER IF EXISTS trg_faces_log_remove" + (" ON faces" if _is_postgres() else ""))
    if _is_postgres():
        op.execute("DROP FUNCTION IF EXISTS faceid_log_face_change()")
    op.drop_index(op.f("ix_face_changes_at"), table_name="face_changes")
    op.drop_table("face_changes")


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"
