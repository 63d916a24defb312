"""KeyStore: the server's API keys in the gallery database (table `api_keys`), one transaction per call.

Only what identifies a key (key id, name, scope, dates) and a salted slow hash of its secret are stored;
making and checking those hashes is faceid.server.auth's job, this module only keeps the rows. Creating
and revoking a key are audited like gallery changes.

keys = KeyStore.open("sqlite:///faceid.db")
keys.add(key_id=..., name="door-camera", scope="read", kdf=..., salt=..., secret_hash=..., actor="cli")
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from faceid.indexer.errors import AlreadyExists, InvalidRequest, NotFound, Unavailable
from faceid.indexer.store.database import (
    WRITE_OPTION,
    create_database_engine,
    is_unreachable,
    require_head,
    upgrade_database,
)
from faceid.indexer.store.models import ApiKey, utcnow
from faceid.indexer.store.records import check_name
from faceid.indexer.store.writes import audit

SCOPES = ("read", "write", "admin")


@dataclass(frozen=True)
class ApiKeyRow:
    """One stored key. `salt` and `secret_hash` are kept out of repr: listings and logs never show them."""

    key_id: str
    name: str
    scope: str
    kdf: str
    created_at: datetime
    revoked_at: datetime | None
    salt: bytes = field(repr=False)
    secret_hash: bytes = field(repr=False)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyRow:
        return cls(
            row.key_id, row.name, row.scope, row.kdf, row.created_at, row.revoked_at, bytes(row.salt), bytes(row.secret_hash)
        )


class KeyStore:
    """API keys of one gallery database. Thread-safe (each call is its own session and transaction)."""

    def __init__(self, engine: Engine, *, migrate_on_first_use: bool = False) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self._schema_lock = threading.Lock()
        self._migrate_pending = migrate_on_first_use

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> KeyStore:
        """The key store of the database at `url`, migrating its schema to head first (like create_store)."""
        engine = create_database_engine(url)
        try:
            if migrate:
                upgrade_database(engine)
            else:
                require_head(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @classmethod
    def open_when_reachable(cls, url: str) -> KeyStore:
        """For a server starting while its database is unreachable: no connection now; the first call that
        reaches the database migrates it (like `open`), calls before that get `Unavailable`."""
        return cls(create_database_engine(url), migrate_on_first_use=True)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_schema(self) -> None:
        if not self._migrate_pending:
            return
        with self._schema_lock:
            if self._migrate_pending:
                upgrade_database(self._engine)
                self._migrate_pending = False

    @contextmanager
    def _session(self, *, write: bool) -> Iterator[Session]:
        try:
            self._ensure_schema()
            with Session(self._write_engine if write else self._engine, expire_on_commit=False) as session:
                with session.begin():
                    yield session
        except SQLAlchemyError as exc:
            if not is_unreachable(exc):
                raise
            orig = getattr(exc, "orig", None) or exc
            first_line = (str(orig).strip().splitlines() or [type(exc).__name__])[0]
            raise Unavailable(f"the gallery database (API keys) is unavailable ({first_line}); retry shortly") from exc

    # ------------------------------------------------------------------------------------- writes
    def add(
        self, *, key_id: str, name: str, scope: str, kdf: str, salt: bytes, secret_hash: bytes, actor: str
    ) -> ApiKeyRow:
        """Store a new key; AlreadyExists when its name is taken (also by a revoked key: names stay unique)."""
        name = check_name(name, "API key name")
        if scope not in SCOPES:
            raise InvalidRequest(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        try:
            with self._session(write=True) as session:
                if session.scalar(select(ApiKey.key_id).where(ApiKey.name == name)) is not None:
                    raise AlreadyExists(f"an API key called {name!r} already exists (maybe revoked); choose another name")
                row = ApiKey(key_id=key_id, name=name, scope=scope, kdf=kdf, salt=salt, secret_hash=secret_hash)
                session.add(row)
                session.flush()
                audit(session, actor, "key.create", f"key:{name}", {"key_id": key_id, "scope": scope})
                return ApiKeyRow.of(row)
        except IntegrityError as exc:  # same name or id created meanwhile by another process
            raise AlreadyExists(f"an API key called {name!r} (or with this id) already exists") from exc

    def revoke(self, ref: str, *, actor: str) -> ApiKeyRow:
        """Revoke the key with this key id or name (revoking twice is a no-op); NotFound if there is none."""
        with self._session(write=True) as session:
            row = session.get(ApiKey, ref) or session.scalar(select(ApiKey).where(ApiKey.name == ref))
            if row is None:
                raise NotFound(f"no API key with id or name {ref!r}: see `faceid-server keys list`")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                session.flush()
                audit(session, actor, "key.revoke", f"key:{row.name}", {"key_id": row.key_id})
            return ApiKeyRow.of(row)

    # -------------------------------------------------------------------------------------- reads
    def get(self, key_id: str) -> ApiKeyRow | None:
        with self._session(write=False) as session:
            row = session.get(ApiKey, key_id)
            return None if row is None else ApiKeyRow.of(row)

    def list(self, *, include_revoked: bool = True) -> list[ApiKeyRow]:
        stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.name)
        if not include_revoked:
            stmt = stmt.where(ApiKey.revoked_at.is_(None))
        with self._session(write=False) as session:
            return [ApiKeyRow.of(r) for r in session.scalars(stmt)]

    def count_active(self) -> int:
        with self._session(write=False) as session:
            return int(session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) or 0)
