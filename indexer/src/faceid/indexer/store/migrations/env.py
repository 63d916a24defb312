"""Alembic environment of the gallery store.

Normally run through `faceid.indexer.store.upgrade_database(url)`, which passes its own connection in
`config.attributes["connection"]` (already in a transaction, SQLite foreign keys suspended). A developer can
also call alembic's commands with a Config whose `sqlalchemy.url` is set (see `database.alembic_config`).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from faceid.indexer.store.database import create_database_engine
from faceid.indexer.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table (copy, drop, rename) instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url is not None and url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: set sqlalchemy.url or use faceid.indexer.store.upgrade_database(url)")
    engine = create_database_engine(url)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
