"""The PostgreSQL server goes away and comes back: at start-up, and in the middle of serving.

This module runs its own PostgreSQL server (tests/postgres_server.py), since it stops and starts it.
- The store: calls while the database is down raise Unavailable (a retryable answer, nothing written);
  the same store works again once it is back, and every acknowledged write is still there, also after
  an "immediate" stop (a crash of the database server).
- The real faceid server: started while the database is down it stays up and NOT_SERVING, and turns
  SERVING once the database appears (no restart); the database lost while serving gives UNAVAILABLE to
  callers and NOT_SERVING in health, and SERVING again once it is back, with nothing acknowledged lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from conftest import person_photos
from grpc_health.v1 import health_pb2, health_pb2_grpc
from postgres_server import PostgresServer, PostgresUnavailable
from server_harness import server_settings, stub
from test_store import MODEL, new_face

from faceid.indexer.errors import Unavailable
from faceid.indexer.store import create_store
from faceid.server import create_server
from faceid.v1 import faceid_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        pytest.fail(f"these tests need a PostgreSQL server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_running(pg: PostgresServer) -> Iterator[PostgresServer]:
    """The module's server, running at the start and (whatever the test did) at the end."""
    if not pg.running:
        pg.start()
    yield pg
    if not pg.running:
        pg.start()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `condition()` held; fails the test after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if condition():
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_store_answers_unavailable_while_the_database_is_down_and_recovers(pg_running: PostgresServer, mode: str) -> None:
    url = pg_running.create_database()
    with create_store(url) as store:
        acked = [store.enroll(name=f"before-{i}", faces=[new_face(i)]).identity.id for i in range(3)]  # type: ignore[union-attr]
        pg_running.stop(mode)  # "immediate": no shutdown checkpoint, PostgreSQL recovers from its WAL
        with pytest.raises(Unavailable, match="unavailable"):
            store.enroll(name="during", faces=[new_face(50)])
        with pytest.raises(Unavailable):
            store.count_identities()
        with pytest.raises(Unavailable):
            store.ping()
        pg_running.start()
        # The same store, no restart: the pool drops its dead connections (pre-ping) and reconnects.
        store.ping()
        assert [store.get_identity(name=f"before-{i}").id for i in range(3)] == acked
        assert store.count_identities() == 3 and store.count_faces(MODEL) == 3  # nothing from "during"
        assert store.enroll(name="after", faces=[new_face(60)]).created


def test_database_down_mid_transaction_commits_nothing_half(pg_running: PostgresServer) -> None:
    """The connection dies between the identity's INSERT and the commit: nothing of it is stored."""
    from sqlalchemy import event

    url = pg_running.create_database()
    with create_store(url) as store:
        def stop_at_thumbnails(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
            if sql.startswith("INSERT INTO thumbnails"):
                pg_running.stop("immediate")

        event.listen(store._engine, "before_cursor_execute", stop_at_thumbnails)
        try:
            with pytest.raises(Unavailable):
                store.enroll(name="half", faces=[new_face(1), new_face(2)])
        finally:
            event.remove(store._engine, "before_cursor_execute", stop_at_thumbnails)
        pg_running.start()
        assert store.count_identities() == 0 and store.count_faces() == 0


@pytest.mark.slow
def test_server_outlives_the_database_at_start_up_and_while_serving(pg_running: PostgresServer, tmp_path: Path) -> None:
    url = pg_running.create_database()
    pg_running.stop("fast")
    settings = server_settings(tmp_path / "unused.db", database=url, workers=4)
    running = create_server(settings)  # the database is down: no exception, no exit
    channel, faceid = stub(running.address)
    health = health_pb2_grpc.HealthStub(channel)

    def status() -> int:
        return health.Check(health_pb2.HealthCheckRequest(service="faceid.v1.FaceId"), timeout=5).status

    try:
        time.sleep(1.5)  # at least one failed attempt to reach the database
        assert status() == NOT_SERVING and running.slot.error is None
        with pytest.raises(grpc.RpcError) as info:
            faceid.GetStats(pb.GetStatsRequest(), timeout=10)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "database" in (info.value.details() or "")

        pg_running.start()  # backoff: the next attempt comes within a few seconds
        wait_for(lambda: status() == SERVING, 300, "SERVING after the database appeared")

        photos = {p: person_photos(p)[0].read_bytes() for p in ("barack_obama", "joe_biden")}
        first = faceid.Enroll(pb.EnrollRequest(identity="barack_obama", images=[photos["barack_obama"]]), timeout=120)
        assert first.results[0].status == pb.IMAGE_STATUS_STORED

        pg_running.stop("fast")  # lost while serving
        wait_for(lambda: status() == NOT_SERVING, 15, "NOT_SERVING after the database went away")
        with pytest.raises(grpc.RpcError) as info:
            faceid.Enroll(pb.EnrollRequest(identity="joe_biden", images=[photos["joe_biden"]]), timeout=120)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE, info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            faceid.GetIdentity(pb.GetIdentityRequest(name="barack_obama"), timeout=30)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE

        pg_running.start()
        wait_for(lambda: status() == SERVING, 30, "SERVING again without a restart")
        stats = faceid.GetStats(pb.GetStatsRequest(), timeout=30)
        assert (stats.identities, stats.faces) == (1, 1) and stats.index.vectors == 1 and stats.index.consistent
        assert faceid.GetIdentity(pb.GetIdentityRequest(name="barack_obama"), timeout=30).face_count == 1
        answer = faceid.Identify(pb.IdentifyRequest(image=photos["barack_obama"]), timeout=120)
        assert answer.faces[0].identity == "barack_obama"
        # The refused enrolment can simply be sent again.
        again = faceid.Enroll(pb.EnrollRequest(identity="joe_biden", images=[photos["joe_biden"]]), timeout=120)
        assert again.results[0].status == pb.IMAGE_STATUS_STORED
    finally:
        channel.close()
        running.stop(1.0)
