"""Several servers on one database: each server's in-memory index follows what the others commit.

- The follower on its own (no models, fast): two GalleryStores on one database stand for two servers; the
  follower of "B" applies what "A" commits, skips B's own commits, handles seqs that commit out of order
  (real concurrent PostgreSQL transactions) and, past the gap timeout, relies on the consistency check.
- Two real `faceid-server` processes on free localhost ports and one database (a SQLite file in WAL mode,
  then a PostgreSQL database, then a PostgreSQL database with one shared Milvus as the vector backend; one
  pair at a time, module-scoped: a pair takes ~40 s to load its models on an idle 2-core machine, minutes
  on a busy one): an enrolment acknowledged by A is identified by B, a delete on A is gone from B's
  answers, within the documented delay (FAISS: follow.poll_s + two polls' work,
  faceid.indexer.index_follower; Milvus: none, both search the one collection).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import MODELS_DIR, person_photos
from faceid.indexer.index_follower import IndexFollower
from faceid.indexer.store import GalleryStore, NewFace, create_database_engine, create_store
from faceid.indexer.store.writes import store_faces
from faceid.indexer.vector_index import VectorIndex
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_harness import free_port
from sqlalchemy import text
from sqlalchemy.orm import Session

MODEL, DIM = "m-test", 16
POLL_S = 0.2  # the servers' follow.poll_s in the process tests (default 0.5)
# A deadline, not a timing target: generous for a loaded 2-core machine; the bound itself is poll_s + two
# polls' work (milliseconds), and the measured delays are printed (pytest -s) and reported in docs/scale-out.md.
CONVERGE_DEADLINE_S = 15.0


# ------------------------------------------------------------------------------- the follower alone
def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def face(seed: int, model: str = MODEL) -> NewFace:
    return NewFace(model, unit(seed), hashlib.sha256(f"img-{seed}".encode()).hexdigest(), (1.0, 2.0, 60.0, 80.0), 0.99)


class Pair:
    """Stores A and B on one database; B's index, built as FaceEngine.open builds it, follows the log."""

    def __init__(self, url: str, **follow: float) -> None:
        self.a, self.b = create_store(url), create_store(url)
        self.index = VectorIndex(DIM, MODEL, use_gpu=False)
        self.follower = IndexFollower(self.b, self.index, **follow)
        self.follower.mark()  # before the build, as the engine does
        self.index.rebuild_from(self.b)

    def enroll_on_b(self, name: str, *faces: NewFace) -> list[int]:
        """B's own write path (FaceEngine.enroll): commit, then add to its index under the write lock."""
        with self.b.write_lock:
            stored = self.b.enroll(name=name, faces=list(faces))
            ids = [a.face_id for a in stored.faces]
            self.index.add(np.array(ids, dtype=np.int64), np.stack([f.embedding for f in faces]))
        return ids

    def in_sync(self) -> bool:
        return self.index.checksum() == self.b.checksum(MODEL)

    def close(self) -> None:
        self.follower.stop()
        self.a.close()
        self.b.close()


@pytest.fixture
def pair(database_url: str) -> Iterator[Pair]:
    p = Pair(database_url, poll_s=0.05)
    yield p
    p.close()


def test_follower_applies_what_other_servers_commit_and_skips_its_own(pair: Pair) -> None:
    ada = pair.a.enroll(name="ada", faces=[face(1), face(2)])
    pair.a.add_faces(identity_id=None, faces=[face(3, model="another-model")])  # not this index's model
    bob = pair.enroll_on_b("bob", face(4))
    assert len(pair.index) == 1 and not pair.in_sync()

    assert pair.follower.poll() == 2  # ada's two faces; bob's is B's own, already there
    assert pair.in_sync()
    assert set(pair.index.ids().tolist()) == {a.face_id for a in ada.faces} | set(bob)
    assert pair.follower.poll() == 0  # nothing new; applying again changes nothing

    pair.a.delete_identity(name="ada")  # faces go by ON DELETE CASCADE: the trigger logs them all the same
    assert pair.follower.poll() == 2
    assert pair.in_sync() and pair.index.ids().tolist() == bob
    consistent, checksum = pair.follower.check()
    assert consistent and checksum == pair.b.checksum(MODEL)
    status = pair.follower.status()
    assert (status.adds, status.removes, status.gaps) == (2, 2, 0)


def test_background_follower_converges_within_the_deadline(pair: Pair) -> None:
    pair.follower.start()
    ada = pair.a.enroll(name="ada", faces=[face(11), face(12)])
    added = wait_for(pair.in_sync)
    assert {a.face_id for a in ada.faces} <= set(pair.index.ids().tolist())
    pair.a.delete_identity(name="ada")
    removed = wait_for(pair.in_sync)
    assert len(pair.index) == 0
    print(f"\nfollower delay, poll_s=0.05: add {added * 1e3:.0f} ms, remove {removed * 1e3:.0f} ms")


def test_a_change_missed_past_the_gap_timeout_is_repaired_by_the_check(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    p = Pair(database_url, gap_timeout_s=0.0)
    try:
        (x,) = [a.face_id for a in p.a.add_faces(identity_id=None, faces=[face(21)])]
        # As if X's transaction stayed open past the timeout: its log row is not there when B polls.
        raw = create_database_engine(database_url)
        with raw.begin() as conn:
            conn.execute(text("DELETE FROM face_changes WHERE face_id = :x"), {"x": x})
        raw.dispose()
        p.a.add_faces(identity_id=None, faces=[face(22)])
        p.follower.poll()
        assert p.follower.status().expired_gaps == 1 and not p.in_sync()  # X missed
        with caplog.at_level(logging.WARNING, logger="faceid.indexer.index_follower"):
            consistent, _ = p.follower.check()
        assert consistent and p.in_sync() and x in p.index.ids().tolist()
        assert any("rebuilding" in r.getMessage() for r in caplog.records)
    finally:
        p.close()


def test_pruning_keeps_young_rows_and_the_newest_seqs(pair: Pair) -> None:
    feed = pair.a.change_feed()
    pair.a.add_faces(identity_id=None, faces=[face(41), face(42), face(43)])
    assert feed.prune(datetime.now(UTC) - timedelta(hours=1), keep_last=0) == 0  # all younger than that
    assert feed.prune(datetime.now(UTC) + timedelta(seconds=1), keep_last=2) == 1  # old, but the newest 2 stay
    assert feed.position(window=2) == (3, [])  # nothing pruned inside the window looks like a gap
    assert [c.seq for c in feed.read(MODEL, after=0).changes] == [2, 3]


def test_seqs_committed_out_of_order_are_applied(postgres) -> None:  # type: ignore[no-untyped-def]
    """Real concurrent PostgreSQL transactions: one draws its seq first and commits last."""
    url = postgres.create_database()
    a, b = create_store(url), create_store(url)
    late = create_store(url)  # a third writer whose transactions we hold open
    index = VectorIndex(DIM, MODEL, use_gpu=False)
    follower = IndexFollower(b, index, poll_s=0.05)
    try:
        # 1. A transaction open while the follower starts: seq 1 drawn, seq 2 committed, then mark + build.
        with held_open(late, face(31)) as commit_first:
            a.add_faces(identity_id=None, faces=[face(32)])
            follower.mark()
            index.rebuild_from(b)
            assert follower.status().gaps == 1 and len(index) == 1
            commit_first()
        assert follower.poll() == 1 and index.checksum() == b.checksum(MODEL)

        # 2. The same while following: the poll sees the later seq, remembers the gap, fills it next time.
        with held_open(late, face(33)) as commit_second:
            a.add_faces(identity_id=None, faces=[face(34)])
            assert follower.poll() == 1 and follower.status().gaps == 1
            commit_second()
        assert follower.poll() == 1 and follower.status().gaps == 0
        assert index.checksum() == b.checksum(MODEL) and follower.check()[0]
    finally:
        for s in (a, b, late):
            s.close()


class held_open:  # noqa: N801 - reads as a context manager
    """Insert a face in a transaction left open; the callable it yields commits it."""

    def __init__(self, store: GalleryStore, new: NewFace) -> None:
        self._session = Session(store._write_engine)  # noqa: SLF001 - a transaction the test controls
        self._new = new

    def __enter__(self) -> Callable[[], None]:
        self._session.begin()
        store_faces(self._session, None, [self._new])
        self._session.flush()
        return self._session.commit

    def __exit__(self, *exc: object) -> None:
        self._session.close()


def wait_for(condition: Callable[[], bool], deadline_s: float = CONVERGE_DEADLINE_S) -> float:
    """Seconds until `condition()` held (polled every 10 ms); fails after `deadline_s`."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > deadline_s:
            pytest.fail(f"not converged within {deadline_s} s")
        time.sleep(0.01)
    return time.monotonic() - t0


# ------------------------------------------------------------------------ two real server processes
def _server_command() -> list[str]:
    exe = Path(sys.executable).with_name("faceid-server")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "faceid.server.cli"]


def _wait_serving(address: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"faceid-server at {address} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                request = health_pb2.HealthCheckRequest(service="faceid.v1.FaceId")
                if health.Check(request, timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    pytest.fail(f"faceid-server at {address} was not SERVING within {timeout} s")


class ServerProcess:
    def __init__(self, name: str, database: str, folder: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.log = folder / f"{name}.log"
        env = {**os.environ, "FACEID_FOLLOW__POLL_S": str(POLL_S), "FACEID_STYLE__ENABLED": "false"}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*_server_command(), "--listen", self.address, "--database", database, "--model-dir", str(MODELS_DIR),
                 "--no-fetch", "--torch-threads", "1", "--workers", "4", "--grace", "2", *extra_args],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder,
            )
        self.backend = "milvus" if "milvus" in extra_args else "faiss"
        self.channel: grpc.Channel | None = None
        self.stub: pb_grpc.FaceIdStub

    def connect(self) -> None:
        _wait_serving(self.address, self.process, self.log)
        self.channel = grpc.insecure_channel(self.address, options=[("grpc.max_send_message_length", 64 << 20)])
        self.stub = pb_grpc.FaceIdStub(self.channel)

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "postgresql-milvus"])
def servers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    folder = tmp_path_factory.mktemp(f"two-servers-{request.param}")
    if request.param == "sqlite":
        database = f"sqlite:///{folder / 'gallery.db'}"  # one file, WAL mode: readers never block the writer
    else:
        database = request.getfixturevalue("postgres").create_database()
    extra: tuple[str, ...] = ()
    with contextlib.ExitStack() as cleanup:
        if request.param == "postgresql-milvus":
            # One Milvus shared by both servers (their follower is off: nothing to follow).
            pytest.importorskip("milvus_lite", reason="milvus-lite comes with the default faiss-cpu group (`uv sync`)")
            from milvus_server import MilvusLiteServer, MilvusUnavailable

            milvus = MilvusLiteServer(data_dir=folder / "milvus")
            cleanup.callback(milvus.close)
            try:
                milvus.start()
            except MilvusUnavailable as exc:
                pytest.fail(f"the two-server Milvus test needs a Milvus server: {exc}", pytrace=False)
            extra = ("--vector-backend", "milvus", "--milvus-uri", milvus.uri)
        # Started together: both migrate the new database at once (SQLite's write lock, PostgreSQL's advisory
        # lock make one of them do it) and load their models side by side.
        a, b = ServerProcess("a", database, folder, extra), ServerProcess("b", database, folder, extra)
        cleanup.callback(b.stop)  # stopped before Milvus (callbacks run last in, first out)
        cleanup.callback(a.stop)
        a.connect()
        b.connect()
        yield a, b


def _index_matches_store(server: ServerProcess, expected_faces: int) -> Callable[[], bool]:
    def check() -> bool:
        stats = server.stub.GetStats(pb.GetStatsRequest(), timeout=30)
        return stats.faces == expected_faces and stats.index.vectors == expected_faces

    return check


@pytest.mark.slow
def test_enrolment_on_a_is_identified_by_b_and_a_delete_is_gone(servers: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = servers
    stayer, leaver = person_photos("john_savage"), person_photos("serena_williams")
    a.stub.Enroll(pb.EnrollRequest(identity="john_savage", images=[p.read_bytes() for p in stayer[:2]]), timeout=300)
    enrolled = a.stub.Enroll(pb.EnrollRequest(identity="serena_williams", images=[p.read_bytes() for p in leaver[:2]]),
                             timeout=300)
    assert all(r.status == pb.IMAGE_STATUS_STORED for r in enrolled.results)

    # Enrolled on A, acknowledged: B's index holds the four faces within the delay, and B names them.
    added = wait_for(_index_matches_store(b, 4))
    a_stats, b_stats = (s.stub.GetStats(pb.GetStatsRequest(), timeout=30) for s in (a, b))
    assert b_stats.index.checksum == a_stats.index.checksum
    assert a_stats.index.backend == b_stats.index.backend == a.backend  # the pair runs the backend meant
    for person, photos in (("john_savage", stayer), ("serena_williams", leaver)):
        answer = b.stub.Identify(pb.IdentifyRequest(image=photos[2].read_bytes()), timeout=120)
        assert answer.gallery_faces == 4
        assert (answer.faces[0].unknown, answer.faces[0].identity) == (False, person)

    # Deleted on A: gone from B's index within the delay, and from B's answers.
    a.stub.DeleteIdentity(pb.DeleteIdentityRequest(name="serena_williams"), timeout=60)
    removed = wait_for(_index_matches_store(b, 2))
    answer = b.stub.Identify(pb.IdentifyRequest(image=leaver[2].read_bytes(), top_k=5), timeout=120)
    assert answer.gallery_faces == 2
    face_b = answer.faces[0]
    assert face_b.unknown and "serena_williams" not in [c.identity for c in face_b.candidates]
    print(f"\ntwo processes, follow.poll_s={POLL_S}: A's enrolment in B's index after {added * 1e3:.0f} ms, "
          f"A's delete after {removed * 1e3:.0f} ms (each includes GetStats round trips)")
