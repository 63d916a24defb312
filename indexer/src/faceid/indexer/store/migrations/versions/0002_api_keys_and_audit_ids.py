"""API keys; audit rows name people by identity id only.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

- `api_keys`: the server's API keys, each stored as a salted scrypt hash of its secret (never the secret).
- Audit rows written by 0001-era code named people in `subject` ("Ada Lovelace") and in details
  (`old_name` of a rename, `source` of a merge). DeleteIdentity is a hard erase, so names must not outlive
  it in an append-only log: those rows are rewritten once to `identity:<id>` and the names dropped.

Written out in full (no imports from the application): a migration describes the schema as it was at
this revision, whatever the models say later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Actions whose subject was a person's name, and the details key that holds that person's id.
_IDENTITY_ACTIONS = {
    "identity.create": "identity_id",
    "identity.delete": "identity_id",
    "identity.rename": "identity_id",
    "identity.merge": "target_id",
    "identity.enroll": "identity_id",
    "faces.add": "identity_id",
    "faces.assign": "identity_id",
}
_NAME_DETAILS = ("old_name", "source")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("kdf", sa.String(length=64), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
    )
    _pseudonymise_audit_subjects()


def _pseudonymise_audit_subjects() -> None:
    audit = sa.table(
        "audit_log",
        sa.column("id", sa.Integer()),
        sa.column("action", sa.String()),
        sa.column("subject", sa.String()),
        sa.column("details", sa.JSON()),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(audit.c.id, audit.c.action, audit.c.details).where(audit.c.action.in_(list(_IDENTITY_ACTIONS)))
    ).all()
    for row in rows:
        details: dict[str, Any] = dict(row.details or {})
        person = details.get(_IDENTITY_ACTIONS[row.action])
        subject = "(unlabeled)" if person is None else f"identity:{int(person)}"
        for key in _NAME_DETAILS:
            details.pop(key, None)
        conn.execute(sa.update(audit).where(audit.c.id == row.id).values(subject=subject, details=details))


def downgrade() -> None:
    # The names removed from old audit rows are gone for good (that was the point); only the table goes.
    op.drop_table("api_keys")
