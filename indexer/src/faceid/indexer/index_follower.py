"""Keeping one server's in-memory index equal to the store while OTHER servers write to the same database.

Several `faceid-server` processes on one database each hold their own FAISS index, derived from the store
(built at start). A server applies its own commits to its index itself, under the store's write lock, right
after the commit. What the other servers commit reaches it through the face change log (store.changes,
written by triggers in the same transaction as the face rows): `IndexFollower` polls it every `poll_s` from
a background thread and applies what is new.

Delay bound. A face acknowledged by server A (its transaction committed) is in server B's index at most
`poll_s` + two poll durations later: the poll running at the commit may have taken its snapshot just before
it, and the next one starts `poll_s` after that one ended. A poll is one primary-key range read of the log
plus the new faces' vectors (milliseconds; see docs/scale-out.md for what was measured). A delete on A is
gone from B's index within the same bound.

Out-of-order commits. A seq is drawn when the log row is inserted, but transactions commit in their own
order: on PostgreSQL, T1 may draw seq 10 and T2 seq 11, and T2 commit first. A follower that read 11 and
then asked only for "seq > 11" would never see 10. So the follower remembers every seq below its
high-water mark that it has not seen (a gap) and asks for those seqs again at every poll, until they appear
(applied then, same bound as above once committed) or `gap_timeout_s` has passed. A gap that never fills is
a rolled-back transaction (PostgreSQL sequences are not transactional) or, in theory, a transaction that
stayed open longer than the timeout after drawing its seq; the latter is caught by the periodic consistency
check (`check`, every `check_s`): it compares the index with the store within one snapshot and rebuilds on a
difference. SQLite serialises writers (BEGIN IMMEDIATE) and rolls a failed transaction's seq back with it,
so seqs commit in order and there are no gaps there.

Idempotent. The index must hold face f exactly when f exists in the store, and face ids are never reused, so
a remove is final and an add applies when the face still exists in the snapshot read and the index does not
hold it yet. Applying a change twice, or a server's own changes, changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from faceid.indexer.errors import Unavailable
from faceid.indexer.store import ChangeBatch, Checksum, GalleryStore
from faceid.indexer.store.changes import REMOVE
from faceid.indexer.vector_index import VectorIndex

log = logging.getLogger(__name__)

# Seqs below the high-water mark looked at when following starts (transactions in flight at that moment).
START_WINDOW = 10_000
# Log rows read per poll: bounds one poll's memory and write-lock time while catching up a large backlog.
POLL_BATCH = 10_000
# A failing database is reported once, then at most this often (the thread keeps retrying every poll).
_WARN_EVERY_S = 60.0


@dataclass(frozen=True)
class FollowerStatus:
    """Where a follower stands: `high` is the highest seq seen; `gaps` the lower seqs not seen yet."""

    high: int
    gaps: int
    adds: int  # faces added to the index from the log so far (other servers' writes)
    removes: int
    expired_gaps: int
    last_poll_age_s: float | None  # since the last successful poll (None: none yet)


class IndexFollower:
    """Applies the change log to `index` (one model's vectors); `mark()` before building the index, then `start()`.

    `poll()` and `check()` may also be called directly (tests, the admin Check RPC); they are serialised.
    """

    def __init__(
        self,
        store: GalleryStore,
        index: VectorIndex,
        *,
        poll_s: float = 0.5,
        gap_timeout_s: float = 30.0,
        check_s: float = 300.0,
        retention_s: float = 86_400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll_s <= 0 or gap_timeout_s < 0 or check_s <= 0 or retention_s < 0:
            raise ValueError("poll_s and check_s must be > 0, gap_timeout_s and retention_s ≥ 0")
        self._store = store
        self._index = index
        self._feed = store.change_feed()
        self.poll_s, self.gap_timeout_s, self.check_s, self.retention_s = poll_s, gap_timeout_s, check_s, retention_s
        self._clock = clock
        self._lock = threading.Lock()  # one poll or check at a time (follower state below)
        self._high = 0
        self._gaps: dict[int, float] = {}  # seq -> when it was first missed
        self._adds = self._removes = self._expired = 0
        self._last_poll: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------- state
    def mark(self) -> None:
        """Start from the log's present position. Call BEFORE the index is built from the store, so that
        every change the build's snapshot may lack has a seq above this position or is a remembered gap."""
        high, missing = self._feed.position(START_WINDOW)
        now = self._clock()
        with self._lock:
            self._high = high
            self._gaps = dict.fromkeys(missing, now)

    def status(self) -> FollowerStatus:
        with self._lock:
            age = None if self._last_poll is None else self._clock() - self._last_poll
            return FollowerStatus(self._high, len(self._gaps), self._adds, self._removes, self._expired, age)

    # ---------------------------------------------------------------------------------- work
    def poll(self) -> int:
        """Apply what was committed since the last poll; returns how many index entries changed."""
        # The store's write lock (this process's writers) is held from the read to the last index change:
        # every local commit in the snapshot is then already in the index, and none lands half-way.
        # Lock order everywhere: the store's write lock, then the follower's (FaceEngine.check_index holds the first).
        with self._store.write_lock, self._lock:
            batch = self._feed.read(self._index.model_id, after=self._high, also=tuple(self._gaps), limit=POLL_BATCH)
            changed = self._apply(batch)
            self._advance(batch)
        return changed

    def check(self, *, rebuild: bool = True) -> tuple[bool, Checksum]:
        """Catch up and compare the index with the store within ONE snapshot; rebuild on a difference.

        Returns (consistent after any rebuild, the store's checksum of that snapshot). Comparing against a
        separate checksum read would find every change other servers committed in between and rebuild for
        nothing; reading the log and the checksum together makes a difference mean a change was missed.
        """
        with self._store.write_lock, self._lock:
            consistent, expected = self._sync_and_compare()
            if not consistent and rebuild:
                log.warning(
                    "vector index of %s differs from the store after following the change log (%s vs %s): "
                    "rebuilding", self._index.model_id, _describe(self._index), expected,
                )
                self._index.rebuild_from(self._store)
                # Changes committed after the rebuild's snapshot are in the log: re-applying the rest is a no-op.
                consistent, expected = self._sync_and_compare()
            return consistent, expected

    def prune(self) -> int:
        """Delete log rows older than `retention_s` (every server does it; the deletes are idempotent)."""
        if self.retention_s <= 0:
            return 0
        return self._feed.prune(datetime.now(UTC) - timedelta(seconds=self.retention_s), keep_last=START_WINDOW)

    # ---------------------------------------------------------------------------------- thread
    def start(self, check: Callable[[], Any] | None = None) -> None:
        """Poll every `poll_s` in a daemon thread; every `check_s` run `check` (default: self.check) and prune."""
        if self._thread is not None:
            raise RuntimeError("the follower is already running")
        self._thread = threading.Thread(
            target=self._run, args=(check or self.check,), name="faceid-index-follower", daemon=True
        )
        self._thread.start()
        log.info("following the face change log from seq %d (%d awaited): poll every %.2f s, full check every %.0f s",
                 self._high, len(self._gaps), self.poll_s, self.check_s)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, check: Callable[[], Any]) -> None:
        next_check = self._clock() + self.check_s
        failing_since: float | None = None
        last_warning = float("-inf")
        while not self._stop.wait(self.poll_s):
            try:
                if self._clock() >= next_check:
                    # Scheduled first: a check that fails (database away, still inconsistent) is retried at the
                    # next interval, not at every poll (each try may rebuild the whole index).
                    next_check = self._clock() + self.check_s
                    check()
                    self.prune()
                else:
                    self.poll()
                if failing_since is not None:
                    log.info("index follower: the database answers again after %.0f s", self._clock() - failing_since)
                    failing_since = None
            except Exception as exc:
                # The thread must outlive any failure: a dead follower would leave this server answering from
                # a stale index without any error. A database outage is retried at every poll.
                now = self._clock()
                failing_since = failing_since if failing_since is not None else now
                if now - last_warning >= _WARN_EVERY_S:
                    last_warning = now
                    log.warning("index follower: could not read the change log (%s); retrying every %.1f s",
                                exc, self.poll_s, exc_info=not isinstance(exc, Unavailable))

    # ---------------------------------------------------------------------------------- internals
    def _apply(self, batch: ChangeBatch) -> int:
        model = self._index.model_id
        removed = sorted({c.face_id for c in batch.changes if c.model_id == model and c.op == REMOVE})
        changed = self._index.remove(np.array(removed, dtype=np.int64)) if removed else 0
        self._removes += changed
        if batch.vectors is not None:
            # Only faces that exist in the snapshot come with vectors; skip those the index holds already
            # (this server's own enrolments, or a change seen twice).
            fresh = ~np.isin(batch.vector_ids, self._index.present(batch.vector_ids))
            if fresh.any():
                self._index.add(batch.vector_ids[fresh], batch.vectors[fresh])
                changed += int(fresh.sum())
                self._adds += int(fresh.sum())
        return changed

    def _advance(self, batch: ChangeBatch) -> None:
        now = self._clock()
        self._last_poll = now
        seen = {c.seq for c in batch.changes}
        for seq in seen:
            self._gaps.pop(seq, None)
        new_high = max(seen, default=self._high)
        if new_high > self._high:
            # Seqs skipped between the old and the new mark belong to transactions still open (or rolled back).
            missing = [s for s in range(self._high + 1, new_high) if s not in seen]
            if len(missing) > START_WINDOW:
                log.info("change log jumped by %d seqs; following the newest %d (the periodic check covers the rest)",
                         len(missing), START_WINDOW)
                missing = missing[-START_WINDOW:]
            for seq in missing:
                self._gaps[seq] = now
            self._high = new_high
        expired = [s for s, since in self._gaps.items() if now - since >= self.gap_timeout_s]
        for seq in expired:
            del self._gaps[seq]
        if expired:
            self._expired += len(expired)
            log.debug("change log: %d seqs never committed within %.0f s (rolled back): no longer awaited",
                      len(expired), self.gap_timeout_s)

    def _sync_and_compare(self) -> tuple[bool, Checksum]:
        batch = self._feed.read(self._index.model_id, after=self._high, also=tuple(self._gaps), checksum=True)
        self._apply(batch)
        self._advance(batch)
        assert batch.checksum is not None
        try:
            return self._index.checksum() == batch.checksum, batch.checksum
        except ValueError:  # a face id held twice: certainly not equal
            return False, batch.checksum


def _describe(index: VectorIndex) -> str:
    try:
        return str(index.checksum())
    except ValueError as exc:
        return f"invalid ({exc})"
