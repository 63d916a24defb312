"""Reading the face change log (table `face_changes`, written by triggers: see migration 0003).

A server whose vector index lives in its own memory follows this log to learn what the other servers on
the same database committed (faceid.indexer.index_follower). Every read here is one snapshot, so a batch
of changes, the vectors of the faces it adds and (for a consistency check) the checksum of the faces all
describe the same database state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, Engine, Row, delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from faceid.indexer.errors import Unavailable
from faceid.indexer.store.database import is_unreachable
from faceid.indexer.store.models import Face, FaceChange
from faceid.indexer.store.vectors import Checksum, IdChecksum, from_blobs

ADD, REMOVE = "add", "remove"
_IN_CHUNK = 500


@dataclass(frozen=True)
class Change:
    """One row of the log: `op` ("add" or "remove") of face `face_id` of `model_id`, committed at `at`."""

    seq: int
    op: str
    face_id: int
    model_id: str
    at: datetime


@dataclass(frozen=True)
class ChangeBatch:
    """What one snapshot holds: the changes asked for, in seq order, and for the faces of `model_id` that
    they add and that still exist, their ids (n,) int64 and vectors (n, d) float32 (None when n = 0).
    `checksum`: the model's face ids in that snapshot, when asked for (see ChangeFeed.read)."""

    changes: tuple[Change, ...]
    vector_ids: NDArray[np.int64]
    vectors: NDArray[np.float32] | None
    checksum: Checksum | None = None


class ChangeFeed:
    """The change log of one gallery database. Build it with `GalleryStore.change_feed()`. Thread-safe."""

    def __init__(self, read_engine: Engine, write_engine: Engine) -> None:
        self._read_engine = read_engine  # snapshot reads (REPEATABLE READ on PostgreSQL)
        self._write_engine = write_engine

    def position(self, window: int) -> tuple[int, list[int]]:
        """(highest seq committed, the seqs within `window` below it that are not committed yet or never will).

        Read before an index is built from the store: changes committing later have a seq above the first
        value, or are among the second (transactions still in flight; on PostgreSQL also rolled back ones).
        """
        with self._snapshot() as conn:
            high = int(conn.scalar(select(func.max(FaceChange.seq))) or 0)
            low = max(0, high - window)
            present = set(conn.scalars(select(FaceChange.seq).where(FaceChange.seq > low)))
        # `prune` keeps the newest `window` seqs, so a seq missing in there was never committed (yet).
        return high, [s for s in range(low + 1, high + 1) if s not in present]

    def read(
        self,
        model_id: str,
        *,
        after: int,
        also: Sequence[int] = (),
        limit: int | None = None,
        checksum: bool = False,
    ) -> ChangeBatch:
        """Changes with seq > `after` (at most `limit`, lowest first) plus those among the seqs `also`.

        For `model_id`'s adds, the vectors of the faces that still exist in this snapshot come along; a face
        added and deleted since has its remove in the log too. `checksum=True` (use with limit=None) adds the
        model's face-id checksum of the same snapshot, for the follower's consistency check.
        """
        with self._snapshot() as conn:
            stmt = _COLUMNS.where(FaceChange.seq > after).order_by(FaceChange.seq)
            if limit is not None:
                stmt = stmt.limit(limit)
            rows = {c.seq: c for c in map(_change, conn.execute(stmt))}
            wanted = sorted({int(s) for s in also} - rows.keys())
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = _COLUMNS.where(FaceChange.seq.in_(wanted[start : start + _IN_CHUNK]))
                rows.update((c.seq, c) for c in map(_change, conn.execute(chunk)))
            changes = tuple(rows[s] for s in sorted(rows))
            adds = sorted({c.face_id for c in changes if c.op == ADD and c.model_id == model_id})
            ids, vectors = _vectors(conn, model_id, adds)
            total = _checksum(conn, model_id) if checksum else None
        return ChangeBatch(changes, ids, vectors, total)

    def prune(self, older_than: datetime, *, keep_last: int) -> int:
        """Delete log rows committed before `older_than` (aware UTC), except the newest `keep_last` seqs.

        Only running followers read the log (a starting server builds its index from `faces`), so rows
        older than any follower can lag are dead weight: ~60 bytes per face ever added or removed otherwise.
        The newest seqs stay whatever their age: `position(window=keep_last)` must be able to tell a seq
        that was never committed (a gap) from one pruned.
        """
        newest = select(func.max(FaceChange.seq)).scalar_subquery()
        stmt = delete(FaceChange).where(FaceChange.at < older_than, FaceChange.seq <= newest - keep_last)
        try:
            with self._write_engine.connect() as conn, conn.begin():
                return int(conn.execute(stmt).rowcount or 0)
        except SQLAlchemyError as exc:
            if not is_unreachable(exc):
                raise
            raise _unavailable(exc) from exc

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        try:
            with self._read_engine.connect() as conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            if not is_unreachable(exc):
                raise
            raise _unavailable(exc) from exc


_COLUMNS = select(FaceChange.seq, FaceChange.op, FaceChange.face_id, FaceChange.model_id, FaceChange.at)


def _change(row: Row[Any]) -> Change:
    return Change(int(row.seq), row.op, int(row.face_id), row.model_id, row.at)


def _vectors(conn: Connection, model_id: str, face_ids: list[int]) -> tuple[NDArray[np.int64], NDArray[np.float32] | None]:
    found: list[tuple[int, int, bytes]] = []
    for start in range(0, len(face_ids), _IN_CHUNK):
        stmt = select(Face.id, Face.dim, Face.embedding).where(
            Face.model_id == model_id, Face.id.in_(face_ids[start : start + _IN_CHUNK])
        )
        found.extend((int(r[0]), int(r[1]), bytes(r[2])) for r in conn.execute(stmt))
    if not found:
        return np.empty(0, dtype=np.int64), None
    found.sort()
    dims = {r[1] for r in found}
    if len(dims) != 1:
        raise ValueError(f"model {model_id!r} has embeddings of several sizes {sorted(dims)}")
    return np.array([r[0] for r in found], dtype=np.int64), from_blobs((r[2] for r in found), dims.pop())


def _checksum(conn: Connection, model_id: str) -> Checksum:
    acc = IdChecksum(model_id)
    stmt = select(Face.id).where(Face.model_id == model_id).order_by(Face.id)
    for part in conn.execution_options(yield_per=100_000).execute(stmt).scalars().partitions():
        acc.update(np.fromiter(part, dtype=np.int64, count=len(part)))
    return acc.result()


def _unavailable(exc: SQLAlchemyError) -> Unavailable:
    # The database is down, unreachable or locked past busy_timeout: the follower retries at its next poll.
    orig = getattr(exc, "orig", None) or exc
    first_line = (str(orig).strip().splitlines() or [type(exc).__name__])[0]
    return Unavailable(f"the gallery database is unavailable ({first_line}); retry shortly")
