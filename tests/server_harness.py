"""Helpers for tests that run the real server: start it on 127.0.0.1:0, snapshot its SQLite store.

The model comes from MODELS_DIR (../shared/models) through FACEID_MODEL_DIR, as in production; the
database is a real SQLite file under the test's tmp dir.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from conftest import MODELS_DIR
from faceid.server import RunningServer, Settings, create_server
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc

LOAD_TIMEOUT_S = 300.0


def server_settings(db_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "database": f"sqlite:///{db_path}",
        "model_dir": MODELS_DIR,
        "allow_model_fetch": False,  # the tests must use the shipped weights, never a network fetch
        "workers": 8,
        "grace_s": 2.0,
        "style": {"enabled": False},
    }
    values.update(overrides)
    return Settings(**values)


def start_server(db_path: Path, **overrides: Any) -> RunningServer:
    """A running, loaded server (blocks until SERVING)."""
    running = create_server(server_settings(db_path, **overrides))
    try:
        running.wait_ready(LOAD_TIMEOUT_S)
    except BaseException:
        running.stop(0)
        raise
    return running


@contextmanager
def served(db_path: Path, **overrides: Any) -> Iterator[RunningServer]:
    running = start_server(db_path, **overrides)
    try:
        yield running
    finally:
        running.stop(1.0)


def stub(address: str) -> tuple[grpc.Channel, pb_grpc.FaceIdStub]:
    channel = grpc.insecure_channel(
        address,
        options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)],
    )
    return channel, pb_grpc.FaceIdStub(channel)


@dataclass(frozen=True)
class StoreSnapshot:
    """Everything stored: every row of every table of the SQLite file, plus what the API reports."""

    tables: dict[str, list[tuple[Any, ...]]]
    stats: tuple[int, int, int, int, str]  # identities, faces, unlabeled, index vectors, index checksum
    identities: tuple[tuple[str, int], ...]


def sqlite_tables(db_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    # Read-only connection: the server keeps the file open in WAL mode; readers see committed data.
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {n: sorted(con.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}
    finally:
        con.close()


def snapshot(db_path: Path, faceid: pb_grpc.FaceIdStub) -> StoreSnapshot:
    stats = faceid.GetStats(pb.GetStatsRequest())
    listing = faceid.ListIdentities(pb.ListIdentitiesRequest(page_size=1000))
    return StoreSnapshot(
        tables=sqlite_tables(db_path),
        stats=(stats.identities, stats.faces, stats.unlabeled_faces, stats.index.vectors, stats.index.checksum),
        identities=tuple((i.name, i.face_count) for i in listing.identities),
    )


def rpc_status(call: Any) -> tuple[grpc.StatusCode, str]:
    """Make the gRPC call `call()`; its status code and details (OK and "" when it succeeds)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def free_port() -> int:
    """A port that was free a moment ago (for servers that cannot bind port 0 themselves, like /metrics)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def side_by_side(*paths: Path, height: int = 400) -> bytes:
    """A JPEG of several photos next to each other, each scaled to `height` (a real multi-face photo)."""
    import io

    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as im:
            im = im.convert("RGB")
            images.append(im.resize((round(im.width * height / im.height), height), Image.Resampling.LANCZOS))
    canvas = Image.new("RGB", (sum(i.width for i in images), height), "white")
    x = 0
    for im in images:
        canvas.paste(im, (x, 0))
        x += im.width
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=92)
    return out.getvalue()


def face_ids_in_sqlite(db_path: Path, model_id: str) -> list[int]:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT id FROM faces WHERE model_id = ? ORDER BY id", (model_id,))]
    finally:
        con.close()
