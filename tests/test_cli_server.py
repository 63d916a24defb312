"""`faceid-server` as a process: it starts from flags, logs JSON lines, drains in-flight calls on SIGTERM,
and refuses to start (exit 1, naming the fetch command) when the model is nowhere to be found."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from conftest import MODELS_DIR, REPO_ROOT, person_photos
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_harness import free_port

pytestmark = pytest.mark.slow


def _server_command() -> list[str]:
    exe = Path(sys.executable).with_name("faceid-server")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "faceid.server.cli"]


def _wait_serving(address: str, process: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert process.poll() is None, f"faceid-server exited early with {process.returncode}"
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service="faceid.v1.FaceId"), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    raise TimeoutError(f"faceid-server at {address} was not SERVING within {timeout} s")


def test_serves_logs_json_and_drains_on_sigterm(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "FACEID_DATABASE": f"sqlite:///{tmp_path / 'env-loses.db'}"}
    process = subprocess.Popen(
        [
            *_server_command(),
            "--listen", address,
            "--database", f"sqlite:///{tmp_path / 'faceid.db'}",  # the flag wins over FACEID_DATABASE
            "--model-dir", str(MODELS_DIR),
            "--no-fetch",
            "--log-format", "json",
            "--grace", "30",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        _wait_serving(address, process)
        channel = grpc.insecure_channel(address)
        faceid = pb_grpc.FaceIdStub(channel)
        photos = [p.read_bytes() for p in person_photos("john_savage")]
        faceid.Enroll(pb.EnrollRequest(identity="john_savage", images=photos[:2]), timeout=120)

        # A bulk enrolment in flight when SIGTERM arrives is finished, not cut off: the first image is
        # sent before the signal, the rest after it, on the same stream.
        responses: list[pb.EnrollStreamResponse] = []
        errors: list[grpc.RpcError] = []
        started, signalled = threading.Event(), threading.Event()

        def requests():
            for i, photo in enumerate(photos[2:]):
                if i == 1:
                    started.set()
                    signalled.wait(60)
                yield pb.EnrollStreamRequest(identity="john_savage", image=photo, client_ref=str(i))

        def consume() -> None:
            try:
                responses.extend(faceid.EnrollStream(requests(), timeout=120))
            except grpc.RpcError as exc:
                errors.append(exc)

        worker = threading.Thread(target=consume)
        worker.start()
        assert started.wait(60)
        process.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # the server has begun its shutdown
        signalled.set()
        worker.join(120)
        assert not errors, errors
        assert [r.client_ref for r in responses] == ["0", "1", "2", "3"]
        assert all(r.result.status == pb.IMAGE_STATUS_STORED for r in responses)
        _, stderr = process.communicate(timeout=120)
        channel.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    messages = [entry["msg"] for entry in lines]
    assert all({"ts", "level", "logger", "msg"} <= entry.keys() for entry in lines)
    assert any(m.startswith("received SIGTERM") for m in messages)
    assert any(m.startswith("SERVING model=facenet-20170512-128d") for m in messages)
    assert messages[-1] == "server stopped"
    assert (tmp_path / "faceid.db").exists() and not (tmp_path / "env-loses.db").exists()


def test_missing_model_stops_with_the_fetch_command(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FACEID_MODEL_DIR": str(tmp_path / "no-models-here"),
        "FACEID_CACHE_DIR": str(tmp_path / "empty-cache"),
    }
    done = subprocess.run(
        [*_server_command(), "--listen", f"127.0.0.1:{free_port()}", "--database",
         f"sqlite:///{tmp_path / 'faceid.db'}", "--no-fetch"],
        capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT,
    )
    assert done.returncode == 1
    assert "faceid-server models fetch facenet-20170512-128d" in done.stderr
