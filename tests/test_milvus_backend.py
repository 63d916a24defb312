"""The Milvus vector backend against a real Milvus (Milvus Lite's gRPC server, tests/milvus_server.py).

One real engine (real weights, a real SQLite gallery, real photos of 5 people) keeps its vectors in
Milvus; a FAISS index is built from the same store, so both backends answer the same probes:
- the same top-1 and distances within 1e-5, through the engine (aggregation, unknown policy) and raw;
- the store stays the truth: a vector deleted or added behind faceid's back is found by the check and
  put right by the rebuild; a hard delete removes the vectors from Milvus too;
- faults: Milvus away at start-up → NOT_SERVING with a clear reason, SERVING once it appears; lost while
  serving → UNAVAILABLE to callers and NOT_SERVING, then SERVING again with what was committed meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import MODELS_DIR, person_photos
from faceid.indexer.config import EngineConfig
from faceid.indexer.engine import FaceEngine
from faceid.indexer.milvus_index import PK_FIELD, VECTOR_FIELD, MilvusIndex, collection_name
from faceid.indexer.vector_index import VectorIndex
from faceid.v1 import faceid_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from milvus_server import MilvusLiteServer, MilvusUnavailable, free_port
from server_harness import server_settings, stub

pytest.importorskip("milvus_lite", reason="milvus-lite comes with the default faiss-cpu group (`uv sync`)")

ENROLLED = ["barack_obama", "serena_williams", "naomi_watts", "hugo_chavez", "john_simm"]
STRANGERS = ["joe_biden", "kit_harington"]  # never enrolled: must come back unknown from both backends
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not reached within {timeout} s: {what}")


@pytest.fixture(scope="module")
def milvus() -> Iterator[MilvusLiteServer]:
    server = MilvusLiteServer()
    try:
        server.start()
    except MilvusUnavailable as exc:
        pytest.fail(f"the Milvus backend tests need a Milvus server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def engine(milvus: MilvusLiteServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaceEngine]:
    """A Milvus-backed engine with 2 photos of each ENROLLED person."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FACEID_MODEL_DIR", str(MODELS_DIR))
    db = tmp_path_factory.mktemp("milvus-gallery") / "gallery.db"
    config = EngineConfig(database_url=f"sqlite:///{db}", device="cpu", allow_model_fetch=False,
                          vector_backend="milvus", milvus_uri=milvus.uri)
    eng = FaceEngine.open(config)
    for person in ENROLLED:
        eng.enroll(person, [p.read_bytes() for p in person_photos(person)[:2]])
    yield eng
    eng.close()
    mp.undo()


@pytest.fixture(scope="module")
def faiss_engine(engine: FaceEngine) -> FaceEngine:
    """The same store, model and pipeline, but a FAISS index built from the store (not closed: shares the store)."""
    index = VectorIndex(engine.model.dimension, engine.model.id, use_gpu=False)
    index.sync_from(engine.store)
    return FaceEngine(config=engine.config, store=engine.store, index=index, pipeline=engine.pipeline,
                      model=engine.model, device=engine.device)


def probes() -> list[tuple[str, bytes]]:
    """Unseen photos of the enrolled people, and photos of strangers."""
    return [(p, person_photos(p)[2].read_bytes()) for p in ENROLLED] + [(p, person_photos(p)[0].read_bytes()) for p in STRANGERS]


@pytest.mark.slow  # loads the model, enrols 10 photos
def test_collection_per_model_holds_the_store(engine: FaceEngine, milvus: MilvusLiteServer) -> None:
    assert isinstance(engine.index, MilvusIndex) and engine.index.kind == "milvus"
    name = collection_name(engine.model.id)
    client = milvus.client()
    try:
        desc = client.describe_collection(name)
        fields = {f["name"]: f for f in desc["fields"]}
        assert fields[PK_FIELD]["is_primary"] and not desc["auto_id"]
        assert int(fields[VECTOR_FIELD]["params"]["dim"]) == engine.model.dimension == 128  # from the model card
        assert str(client.describe_index(name, VECTOR_FIELD)["metric_type"]).upper() == "IP"
        held = sorted(int(r[PK_FIELD]) for r in client.query(name, filter=f"{PK_FIELD} >= 0", output_fields=[PK_FIELD]))
    finally:
        client.close()
    store_ids = sorted(int(i) for ids, _ in engine.store.iter_embeddings(engine.model.id) for i in ids)
    assert held == store_ids and len(held) == 2 * len(ENROLLED)
    status = engine.check_index(rebuild=False)
    assert status.consistent and status.backend == "milvus" and status.vectors == len(held)
    # Stored vectors are the store's vectors (float32 round trip).
    face_id, vector = next((int(ids[0]), vecs[0]) for ids, vecs in engine.store.iter_embeddings(engine.model.id))
    client = milvus.client()
    try:
        row = client.get(name, ids=[face_id], output_fields=[VECTOR_FIELD])[0]
    finally:
        client.close()
    np.testing.assert_array_equal(np.asarray(row[VECTOR_FIELD], np.float32), vector)


@pytest.mark.slow
def test_search_equals_faiss_on_the_same_gallery(engine: FaceEngine, faiss_engine: FaceEngine) -> None:
    queries = np.stack([engine.embed(photo).faces[0].embedding for _, photo in probes()])
    total = engine.store.count_faces(engine.model.id)
    for k in (1, 5, total, total + 3):  # deeper than the gallery: padded alike
        d_m, i_m = engine.index.search(queries, k)
        d_f, i_f = faiss_engine.index.search(queries, k)
        assert d_m.shape == d_f.shape == (len(queries), k) and d_m.dtype == d_f.dtype == np.float32
        np.testing.assert_array_equal(i_m[:, 0], i_f[:, 0])
        np.testing.assert_array_equal(np.isinf(d_m), np.isinf(d_f))  # padding beyond the gallery alike
        np.testing.assert_array_equal(i_m[np.isinf(d_m)], -1)
        finite = np.isfinite(d_f)
        # Both ascending: element-wise equal within 1e-5 even where two near-equal neighbours swap places.
        np.testing.assert_allclose(d_m[finite], d_f[finite], atol=1e-5, rtol=0)
        if k >= total:
            for row in range(len(queries)):
                assert sorted(i_m[row][finite[row]].tolist()) == sorted(i_f[row][finite[row]].tolist())


@pytest.mark.slow
def test_identify_answers_equal_faiss(engine: FaceEngine, faiss_engine: FaceEngine) -> None:
    named, unknown = 0, 0
    for person, photo in probes():
        via_milvus = engine.identify(photo, top_k=3).faces[0]
        via_faiss = faiss_engine.identify(photo, top_k=3).faces[0]
        assert (via_milvus.unknown, via_milvus.identity) == (via_faiss.unknown, via_faiss.identity), person
        assert abs(via_milvus.distance - via_faiss.distance) <= 1e-5
        assert [c.identity for c in via_milvus.candidates] == [c.identity for c in via_faiss.candidates]
        np.testing.assert_allclose([c.distance for c in via_milvus.candidates],
                                   [c.distance for c in via_faiss.candidates], atol=1e-5, rtol=0)
        if person in STRANGERS:
            assert via_milvus.unknown, f"a stranger ({person}) was named {via_milvus.identity}"
            unknown += 1
        elif via_milvus.identity == person:
            named += 1
    assert named >= len(ENROLLED) - 1 and unknown == len(STRANGERS)  # the comparison covered both outcomes


@pytest.mark.slow
def test_tampered_collection_is_detected_and_rebuilt(engine: FaceEngine, milvus: MilvusLiteServer) -> None:
    name = collection_name(engine.model.id)
    store_sum = engine.store.checksum(engine.model.id)
    victim = int(next(engine.store.iter_embeddings(engine.model.id))[0][1])
    stray = np.random.default_rng(7).standard_normal(engine.model.dimension).astype(np.float32)
    client = milvus.client()
    try:
        client.delete(name, ids=[victim])  # a vector lost behind faceid's back ...
        client.upsert(name, [{PK_FIELD: 10**9, VECTOR_FIELD: stray / np.linalg.norm(stray)}])  # ... and one it never had
        before = engine.check_index(rebuild=False)
        assert not before.consistent
        after = engine.check_index(rebuild=True)
        assert after.consistent and engine.index.checksum() == store_sum
        assert client.get(name, ids=[victim], output_fields=[PK_FIELD]) != []
        assert client.get(name, ids=[10**9], output_fields=[PK_FIELD]) == []
    finally:
        client.close()


@pytest.mark.slow
def test_hard_delete_removes_the_vectors_from_milvus(engine: FaceEngine, milvus: MilvusLiteServer) -> None:
    photo = person_photos("rose_leslie")[0].read_bytes()
    enrolled = engine.enroll("rose_leslie", [photo])
    face_ids = [fid for o in enrolled.outcomes for fid in o.face_ids]
    name = collection_name(engine.model.id)
    client = milvus.client()
    try:
        assert len(client.get(name, ids=face_ids, output_fields=[PK_FIELD])) == len(face_ids) == 1
        assert engine.identify(photo).faces[0].identity == "rose_leslie"
        engine.delete_identity(name="rose_leslie")
        assert client.get(name, ids=face_ids, output_fields=[PK_FIELD]) == []
    finally:
        client.close()
    assert engine.identify(photo).faces[0].identity != "rose_leslie"
    assert engine.check_index(rebuild=False).consistent


def test_milvus_settings_reach_the_engine_and_bad_uris_are_refused() -> None:
    from faceid.server.config import Settings
    from pydantic import ValidationError

    settings = Settings(vector_backend="milvus", milvus_uri="http://milvus.internal:19530")
    config = settings.to_engine_config()
    assert (config.vector_backend, config.milvus_uri) == ("milvus", "http://milvus.internal:19530")
    assert Settings().to_engine_config().vector_backend == "faiss"
    for bad in ("milvus.internal:19530", "http://milvus.internal", "ftp://h:1"):
        with pytest.raises(ValidationError, match="milvus_uri"):
            Settings(vector_backend="milvus", milvus_uri=bad)
    with pytest.raises(ValidationError, match="vector_backend"):
        Settings(vector_backend="annoy")


# ------------------------------------------------------------------------------------------ faults
def _health(channel: grpc.Channel) -> Callable[[], int]:
    health = health_pb2_grpc.HealthStub(channel)
    return lambda: health.Check(health_pb2.HealthCheckRequest(service="faceid.v1.FaceId"), timeout=5).status


@pytest.mark.slow
def test_milvus_away_at_start_up_then_appearing(tmp_path: Path) -> None:
    from faceid.server import create_server

    later = MilvusLiteServer(port=free_port(), data_dir=tmp_path / "milvus")  # nothing listens there yet
    running = create_server(server_settings(tmp_path / "g.db", workers=4, vector_backend="milvus",
                                            milvus_uri=later.uri, index_probe_s=0.5))
    channel, faceid = stub(running.address)
    status = _health(channel)
    photo = person_photos("naomi_watts")[0].read_bytes()
    try:
        running.wait_ready(300)  # the engine loads: no exception, no exit
        assert running.slot.error is None and status() == NOT_SERVING
        with pytest.raises(grpc.RpcError) as info:
            faceid.Enroll(pb.EnrollRequest(identity="naomi_watts", images=[photo]), timeout=120)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert f"Milvus at 127.0.0.1:{later.port}" in (info.value.details() or "")
        assert "saved" in (info.value.details() or "")  # the store took it; the index will catch up
        with pytest.raises(grpc.RpcError) as info:
            faceid.Identify(pb.IdentifyRequest(image=photo), timeout=120)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE and "unreachable" in (info.value.details() or "")

        later.start()
        wait_for(lambda: status() == SERVING, 60, "SERVING once Milvus answers, without a restart")
        answer = faceid.Identify(pb.IdentifyRequest(image=photo), timeout=120)  # the face stored meanwhile
        assert answer.faces[0].identity == "naomi_watts"
        stats = faceid.GetStats(pb.GetStatsRequest(), timeout=30)
        assert stats.index.vectors == stats.faces == 1 and stats.index.backend == "milvus"
    finally:
        channel.close()
        running.stop(1.0)
        later.close()


@pytest.mark.slow
def test_milvus_lost_while_serving_and_back(tmp_path: Path) -> None:
    from faceid.server import create_server

    # Its own Milvus: a collection per model id means one gallery per Milvus server (or database).
    milvus = MilvusLiteServer(data_dir=tmp_path / "milvus")
    milvus.start()
    running = create_server(server_settings(tmp_path / "g.db", workers=4, vector_backend="milvus",
                                            milvus_uri=milvus.uri, index_probe_s=0.5))
    channel, faceid = stub(running.address)
    status = _health(channel)
    photos = {p: person_photos(p)[1].read_bytes() for p in ("hugo_chavez", "serena_williams")}
    try:
        running.wait_ready(300)
        wait_for(lambda: status() == SERVING, 30, "SERVING with Milvus up")
        faceid.Enroll(pb.EnrollRequest(identity="hugo_chavez", images=[photos["hugo_chavez"]]), timeout=120)

        milvus.stop()
        with pytest.raises(grpc.RpcError) as info:
            faceid.Identify(pb.IdentifyRequest(image=photos["hugo_chavez"]), timeout=120)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE and "Milvus" in (info.value.details() or "")
        wait_for(lambda: status() == NOT_SERVING, 15, "NOT_SERVING after Milvus went away")
        with pytest.raises(grpc.RpcError) as info:  # committed to the store, not yet in Milvus
            faceid.Enroll(pb.EnrollRequest(identity="serena_williams", images=[photos["serena_williams"]]), timeout=120)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE

        milvus.start()
        wait_for(lambda: status() == SERVING, 60, "SERVING again without a restart")
        for person, photo in photos.items():  # including the face committed during the outage
            assert faceid.Identify(pb.IdentifyRequest(image=photo), timeout=120).faces[0].identity == person
        stats = faceid.GetStats(pb.GetStatsRequest(), timeout=30)
        assert stats.index.vectors == stats.faces == 2 and stats.index.consistent
    finally:
        channel.close()
        running.stop(1.0)
        milvus.close()
