"""Nothing acknowledged is lost: SIGKILL a real `faceid-server` process in the middle of a bulk enrolment.

The server runs as its own process (the installed `faceid-server` command) on a temp SQLite file, and
again on a fresh database of a real PostgreSQL server (conftest.py `database_url`). A
client streams real photos through EnrollStream and records every response it got (an acknowledged
face); after a few acknowledgements the server is killed with SIGKILL while the next images are in
flight. After a restart on the same file:
- every acknowledged face is in the store under the acknowledged identity, and in the index;
- no identity is half-written (an identity row without faces, a face without its identity);
- the index equals the store (count and checksum, recomputed here from the database), also through
  Admin.CheckIndex, and an acknowledged photo identifies as its person.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from conftest import FACES_DIR, MODELS_DIR
from faceid.indexer.store import id_checksum
from faceid.v1 import admin_pb2, admin_pb2_grpc
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_harness import free_port

pytestmark = pytest.mark.slow
MODEL = "facenet-20170512-128d"
START_TIMEOUT_S = 400.0
ACKS_BEFORE_KILL = 6


def _server_command() -> list[str]:
    script = Path(sys.executable).with_name("faceid-server")
    return [str(script)] if script.exists() else [sys.executable, "-m", "faceid.server.cli"]


def _start(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FACEID_MODEL_DIR": str(MODELS_DIR),
        "FACEID_STYLE__ENABLED": "false",
        "FACEID_SCHEDULER__TORCH_THREADS": "1",  # the machine is shared; one core is plenty here
    }
    args = [*_server_command(), "--listen", f"127.0.0.1:{port}", "--database", url, "--no-fetch",
            "--workers", "4", "--grace", "1"]
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait_serving(channel: grpc.Channel, process: subprocess.Popen[bytes], log: Path) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"faceid-server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            status = health.Check(health_pb2.HealthCheckRequest(service="faceid.v1.FaceId"), timeout=2).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"faceid-server did not become SERVING in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _photos() -> list[tuple[str, Path]]:
    """(person, photo) pairs, interleaved across people so that a kill lands between identities too."""
    by_person = {p.name: sorted(p.glob("*.jpg")) for p in sorted(FACES_DIR.iterdir()) if p.is_dir()}
    out = []
    for i in range(max(len(v) for v in by_person.values())):
        out += [(person, photos[i]) for person, photos in by_person.items() if i < len(photos)]
    return out


def _rows(url: str) -> tuple[dict[int, str], dict[int, int | None], str]:
    """identities (id -> name), faces (id -> identity id), integrity check, read over a connection of our own
    (SQLite: the file itself, read-only)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True) as conn:
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    else:
        integrity = "ok"  # a PostgreSQL server checks its own pages (and was never killed here)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            identities = {int(i): n for i, n in conn.execute(text("SELECT id, name FROM identities"))}
            faces = {int(i): o for i, o in conn.execute(text("SELECT id, identity_id FROM faces WHERE model_id = :m"),
                                                          {"m": MODEL})}
    finally:
        engine.dispose()
    return identities, faces, integrity


@pytest.fixture
def server_files(tmp_path: Path, database_url: str) -> Iterator[tuple[str, Path, list[subprocess.Popen[bytes]]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield database_url, tmp_path / "server.log", started
    for process in started:  # never leave a server behind, whatever failed
        if process.poll() is None:
            process.kill()
            process.wait(30)


def test_sigkill_during_bulk_enrolment_loses_nothing_acknowledged(server_files) -> None:  # type: ignore[no-untyped-def]
    db, log, started = server_files
    port = free_port()
    first = _start(db, port, log)
    started.append(first)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    _wait_serving(channel, first, log)

    photos = _photos()
    acknowledged: dict[str, tuple[str, tuple[int, ...]]] = {}  # client_ref -> (identity, face ids)
    killed = threading.Event()

    def requests() -> Iterator[pb.EnrollStreamRequest]:
        for i, (person, path) in enumerate(photos):
            # Every fifth photo goes in unlabeled (bulk indexing for clustering), the rest under a name.
            name = "" if i % 5 == 4 else person
            yield pb.EnrollStreamRequest(identity=name, image=path.read_bytes(), client_ref=f"{i}:{path.name}")

    stream = pb_grpc.FaceIdStub(channel).EnrollStream(requests(), timeout=600)
    with pytest.raises(grpc.RpcError) as info:
        for response in stream:
            if response.result.status in (pb.IMAGE_STATUS_STORED, pb.IMAGE_STATUS_DUPLICATE):
                acknowledged[response.client_ref] = (response.identity, tuple(response.result.face_ids))
            if len(acknowledged) == ACKS_BEFORE_KILL and not killed.is_set():
                killed.set()
                first.send_signal(signal.SIGKILL)  # mid-stream: the next images are being processed
    assert killed.is_set() and info.value.code() is grpc.StatusCode.UNAVAILABLE
    first.wait(30)
    assert first.returncode == -signal.SIGKILL
    channel.close()

    # Straight from the database, before any server touches it again.
    identities, faces, integrity = _rows(db)
    assert integrity == "ok"
    for ref, (name, face_ids) in acknowledged.items():
        for face_id in face_ids:
            assert face_id in faces, f"acknowledged face {face_id} ({ref}) is missing"
            owner = faces[face_id]
            assert (identities.get(owner) if owner is not None else "") == name, ref
    assert set(identities) <= {i for i in faces.values() if i is not None}, "an identity without faces"
    assert {i for i in faces.values() if i is not None} <= set(identities), "a face of a missing identity"

    # Restart on the same database: the index is rebuilt from the store and equals it.
    second = _start(db, port, log)
    started.append(second)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        _wait_serving(channel, second, log)
        faceid = pb_grpc.FaceIdStub(channel)
        stats = faceid.GetStats(pb.GetStatsRequest(), timeout=30)
        assert stats.faces == len(faces) and stats.index.vectors == len(faces) and stats.index.consistent
        assert stats.index.checksum == id_checksum(MODEL, sorted(faces)).digest
        check = admin_pb2_grpc.AdminStub(channel).CheckIndex(admin_pb2.CheckIndexRequest(check_only=True), timeout=60)
        assert check.consistent_before and check.consistent and check.vectors == check.store_faces == len(faces)
        # An acknowledged, labeled photo identifies as its person.
        ref, (name, _) = next((r, v) for r, v in acknowledged.items() if v[0])
        index, file_name = ref.split(":")
        person_photo = photos[int(index)][1]
        assert person_photo.name == file_name
        answer = faceid.Identify(pb.IdentifyRequest(image=person_photo.read_bytes()), timeout=120)
        assert answer.faces[0].identity == name
    finally:
        channel.close()
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0  # SIGTERM: drained and exited cleanly
