"""A real server under the conditions that decide its availability and fairness (one module-scoped server).

- Health is NOT_SERVING while Admin.CheckIndex rebuilds the vector index, SERVING again afterwards (unless
  another condition, e.g. the database being away, is still down meanwhile). The
  index is made to drift from the store (a face removed from it, as a lost update would), then CheckIndex
  repairs it. To observe the state *during* the rebuild without racing a sub-second operation, the test
  gates the index's real `rebuild_from` on an event: the rebuild starts, health is read from another
  channel, then the rebuild is let go.
- A unary Enroll is interactive accelerator work (its caller waits, like a Verify's); only EnrollStream
  is bulk. Measured by the server's scheduler counters.
- Concurrent Identify calls share detection and embedding batches: while the test holds the accelerator,
  the calls pile up in the interactive micro-batcher and then run as (at most) two batches.
- Deadlines and cancellation stop the work: while the test holds the accelerator, Identify, Enroll and
  EnrollStream calls with a 1 s deadline (or an Identify the client cancels) wait in the micro-batchers;
  the server ends them (its per-RPC metrics show the code) before the accelerator is released, and then
  their photos are never detected or embedded (the batchers' `items` and `cancelled` counters) and the
  Enroll stores nothing, while a normal call that follows is answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from conftest import person_photos
from faceid.indexer.batching import MicroBatcher
from faceid.server import RunningServer
from faceid.server.scheduler import Priority
from faceid.v1 import admin_pb2, admin_pb2_grpc
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_harness import served

pytestmark = pytest.mark.slow
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", "faceid.v1.FaceId", "faceid.v1.Admin")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with served(tmp_path_factory.mktemp("health") / "faceid.db") as running:
        yield running


def _health(address: str) -> dict[str, int]:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {name: stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status for name in SERVICES}


def test_health_is_not_serving_during_an_index_rebuild(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = server.wait_ready(1)
    with grpc.insecure_channel(server.address) as channel:
        faceid, admin = pb_grpc.FaceIdStub(channel), admin_pb2_grpc.AdminStub(channel)
        photos = [p.read_bytes() for p in person_photos("junichiro_koizumi")[:2]]
        enrolled = faceid.Enroll(pb.EnrollRequest(identity="junichiro_koizumi", images=photos), timeout=120)
        assert _health(server.address) == dict.fromkeys(SERVICES, SERVING)

        # The index drifts from the store. The change-log follower re-applies log entries it has not read
        # yet (the enrolment's may be one of them), so tamper until a check-only call sees the drift.
        for _ in range(5):
            engine.index.remove([enrolled.results[0].face_id])
            if not admin.CheckIndex(admin_pb2.CheckIndexRequest(check_only=True), timeout=60).consistent_before:
                break
        else:
            pytest.fail("could not make the index differ from the store")
        started, release = threading.Event(), threading.Event()
        real_rebuild: Callable[..., int] = engine.index.rebuild_from

        def gated_rebuild(*args: Any, **kwargs: Any) -> int:
            started.set()
            assert release.wait(60), "the test never released the rebuild"
            return real_rebuild(*args, **kwargs)

        monkeypatch.setattr(engine.index, "rebuild_from", gated_rebuild)
        with ThreadPoolExecutor(1) as pool:
            repair = pool.submit(admin.CheckIndex, admin_pb2.CheckIndexRequest(), timeout=120)
            try:
                assert started.wait(60), "CheckIndex did not start a rebuild"
                during = _health(server.address)
                # The database watch sees the database go away meanwhile (as database_health would report it).
                server.gate.set("database", False)
            finally:
                release.set()
            answer = repair.result(120)

        assert during == dict.fromkeys(SERVICES, NOT_SERVING)
        assert not answer.consistent_before and answer.rebuilt and answer.consistent
        assert answer.vectors == answer.store_faces == 2
        # The rebuild's end must not hide the database still being away: one gate decides health.
        assert _health(server.address) == dict.fromkeys(SERVICES, NOT_SERVING)
        server.gate.set("database", True)
        assert _health(server.address) == dict.fromkeys(SERVICES, SERVING)
        # A consistent index is only checked: no rebuild, and health never leaves SERVING.
        started.clear()
        again = admin.CheckIndex(admin_pb2.CheckIndexRequest(), timeout=60)
        assert again.consistent_before and not again.rebuilt and not started.is_set()
        assert _health(server.address) == dict.fromkeys(SERVICES, SERVING)


def _runs(server: RunningServer) -> dict[str, int]:
    return server.scheduler.stats().runs


def test_unary_enroll_is_interactive_and_enroll_stream_is_bulk(server: RunningServer) -> None:
    photos = [p.read_bytes() for p in person_photos("kit_harington")]
    with grpc.insecure_channel(server.address) as channel:
        faceid = pb_grpc.FaceIdStub(channel)
        before = _runs(server)
        faceid.Enroll(pb.EnrollRequest(identity="kit_harington", images=photos[:2]), timeout=120)
        after_unary = _runs(server)
        streamed = list(faceid.EnrollStream(iter([pb.EnrollStreamRequest(identity="kit_harington", image=photos[2])]), timeout=120))
        after_stream = _runs(server)
        faceid.DeleteIdentity(pb.DeleteIdentityRequest(name="kit_harington"), timeout=60)
    assert streamed[0].result.status == pb.IMAGE_STATUS_STORED
    assert after_unary["INTERACTIVE"] > before["INTERACTIVE"] and after_unary["BULK"] == before["BULK"]
    assert after_stream["BULK"] > after_unary["BULK"] and after_stream["INTERACTIVE"] == after_unary["INTERACTIVE"]


def test_concurrent_identify_calls_share_batches(server: RunningServer) -> None:
    engine = server.wait_ready(1)
    batcher = engine.pipeline.batcher("interactive")
    photos = [p.read_bytes() for p in person_photos("rose_leslie")]
    queries = [photos[i % len(photos)] for i in range(6)]
    with grpc.insecure_channel(server.address) as channel:
        faceid = pb_grpc.FaceIdStub(channel)
        faceid.Enroll(pb.EnrollRequest(identity="rose_leslie", images=photos[:1]), timeout=120)
        submitted, batches, items = batcher.submitted, batcher.batches, batcher.items
        with ThreadPoolExecutor(len(queries)) as pool:
            # every slot of the accelerator is busy: calls must wait
            with server.scheduler.hold(Priority.INTERACTIVE, exclusive=True):
                answers = [pool.submit(faceid.Identify, pb.IdentifyRequest(image=q), timeout=120) for q in queries]
                deadline = time.monotonic() + 60
                while batcher.submitted - submitted < len(queries):  # every call's photo is handed in
                    assert time.monotonic() < deadline, "the Identify calls never reached the batcher"
                    time.sleep(0.01)
            named = [a.result(120).faces[0].identity for a in answers]
        faceid.DeleteIdentity(pb.DeleteIdentityRequest(name="rose_leslie"), timeout=60)
    assert named == ["rose_leslie"] * len(queries)
    assert batcher.items - items == len(queries)
    # Each of the batcher's workers (one per slot) may have taken photo(s) before the rest arrived; everything
    # else is one batch.
    assert batcher.batches - batches <= server.scheduler.slots + 1


# ------------------------------------------------------------------------ deadlines and cancellation
def _ended_with(server: RunningServer, method: str, code: grpc.StatusCode) -> float:
    """How many calls of `method` the server itself has ended with `code` (its per-RPC metrics)."""
    labels = {"method": f"faceid.v1.FaceId/{method}", "code": code.name}
    return server.metrics.registry.get_sample_value("faceid_rpc_requests_total", labels) or 0.0


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _counters(batcher: MicroBatcher[Any, Any]) -> tuple[int, int, int]:
    return batcher.submitted, batcher.items, batcher.cancelled


def test_calls_past_their_deadline_are_never_analysed_and_store_nothing(server: RunningServer) -> None:
    engine = server.wait_ready(1)
    interactive, bulk = engine.pipeline.batcher("interactive"), engine.pipeline.batcher("bulk")
    known = [p.read_bytes() for p in person_photos("serena_williams")]
    late = [p.read_bytes() for p in person_photos("naomi_watts")]
    expired = grpc.StatusCode.DEADLINE_EXCEEDED
    with grpc.insecure_channel(server.address) as channel:
        faceid = pb_grpc.FaceIdStub(channel)
        faceid.Enroll(pb.EnrollRequest(identity="serena_williams", images=known[:1]), timeout=120)
        faces_before = faceid.GetStats(pb.GetStatsRequest(), timeout=30).faces
        ended = {m: _ended_with(server, m, expired) for m in ("Identify", "Enroll", "EnrollStream")}
        (sub_i, items_i, dropped_i), (sub_b, items_b, dropped_b) = _counters(interactive), _counters(bulk)
        with server.scheduler.hold(Priority.INTERACTIVE, exclusive=True):  # every slot busy: every call waits
            identify = faceid.Identify.future(pb.IdentifyRequest(image=known[1]), timeout=1.0)
            enroll = faceid.Enroll.future(pb.EnrollRequest(identity="naomi_watts", images=late[:2]), timeout=1.0)
            stream = faceid.EnrollStream(
                iter([pb.EnrollStreamRequest(identity="naomi_watts", image=photo) for photo in late[2:4]]), timeout=1.0
            )
            _wait_for(lambda: interactive.submitted - sub_i == 3 and bulk.submitted - sub_b == 2,
                      "the calls' photos never reached the batchers")
            with pytest.raises(grpc.RpcError) as streamed:
                list(stream)
            assert streamed.value.code() is expired
            assert identify.exception(30).code() is expired and enroll.exception(30).code() is expired
            # The server ends the calls itself while the accelerator is still held: it does not wait for it.
            _wait_for(lambda: all(_ended_with(server, m, expired) - n == 1 for m, n in ended.items()),
                      "the server went on with calls past their deadline")
        # A normal call after them is answered, which also means that the batches before it have been handled.
        answer = faceid.Identify(pb.IdentifyRequest(image=known[2]), timeout=120)
        assert answer.faces[0].identity == "serena_williams"
        assert faceid.GetStats(pb.GetStatsRequest(), timeout=30).faces == faces_before
        with pytest.raises(grpc.RpcError) as missing:
            faceid.GetIdentity(pb.GetIdentityRequest(name="naomi_watts"), timeout=30)
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        _wait_for(lambda: bulk.cancelled - dropped_b == 2, "the stream's photos were not dropped")
        faceid.DeleteIdentity(pb.DeleteIdentityRequest(name="serena_williams"), timeout=60)
    # Of the interactive photos only the last Identify's was detected and embedded; the expired ones were dropped.
    assert (interactive.items - items_i, interactive.cancelled - dropped_i) == (1, 3)
    assert bulk.items == items_b


def test_a_cancelled_identify_is_never_analysed(server: RunningServer) -> None:
    engine = server.wait_ready(1)
    batcher = engine.pipeline.batcher("interactive")
    photos = [p.read_bytes() for p in person_photos("hugo_chavez")]
    with grpc.insecure_channel(server.address) as channel:
        faceid = pb_grpc.FaceIdStub(channel)
        faceid.Enroll(pb.EnrollRequest(identity="hugo_chavez", images=photos[:1]), timeout=120)
        cancelled = _ended_with(server, "Identify", grpc.StatusCode.CANCELLED)
        submitted, items, dropped = _counters(batcher)
        with server.scheduler.hold(Priority.INTERACTIVE, exclusive=True):  # every slot busy
            call = faceid.Identify.future(pb.IdentifyRequest(image=photos[1]))  # no deadline: only the cancel ends it
            _wait_for(lambda: batcher.submitted - submitted == 1, "the call's photo never reached the batcher")
            assert call.cancel()
            _wait_for(lambda: _ended_with(server, "Identify", grpc.StatusCode.CANCELLED) - cancelled == 1,
                      "the server went on with a cancelled call")
        answer = faceid.Identify(pb.IdentifyRequest(image=photos[2]), timeout=120)
        faceid.DeleteIdentity(pb.DeleteIdentityRequest(name="hugo_chavez"), timeout=60)
    assert answer.faces[0].identity == "hugo_chavez"
    assert (batcher.items - items, batcher.cancelled - dropped) == (1, 1)
