"""The acceptance scenario, over gRPC, on a real server: real weights, real photos, a real SQLite file.

Enrol several people (two photos each), identify their other photos, answer `unknown` for people never
enrolled, verify same / different people, identify every face of group photos (one identity per face at
most), restart on the same database and get the same answers from an index rebuilt from SQLite, delete
an identity and see its photos become unknown. Also: health goes NOT_SERVING → SERVING, reflection
lists the service, /metrics counts calls without naming anyone.
"""

from __future__ import annotations

import csv
import math
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import FACES_DIR, GROUP_DIR, NO_FACE_DIR, person_photos
from faceid.client import FaceIdClient, NotFound, Unavailable
from faceid.indexer.store.vectors import id_checksum
from faceid.server import RunningServer, create_server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from server_harness import LOAD_TIMEOUT_S, face_ids_in_sqlite, free_port, server_settings, side_by_side, start_server

pytestmark = pytest.mark.slow

PEOPLE = (
    "barack_obama",
    "joe_biden",
    "kit_harington",
    "gloria_macapagal_arroyo",
    "hugo_chavez",
    "john_salley",
    "john_simm",
    "serena_williams",
)
STRANGERS = ("junichiro_koizumi", "luiz_inacio_lula_da_silva", "alex_lacamoire", "naomi_watts")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def probes(person: str, limit: int = 2) -> list[Path]:
    """Photos of an enrolled person that were NOT used to enrol them."""
    return person_photos(person)[2 : 2 + limit]


@dataclass
class Gallery:
    server: RunningServer
    client: FaceIdClient
    db: Path
    metrics_port: int
    health_while_loading: dict[str, int]
    error_while_loading: Exception | None
    health_when_ready: dict[str, int]

    def restart(self) -> None:
        self.client.close()
        self.server.stop(2.0)
        self.server = start_server(self.db, metrics_port=self.metrics_port)
        self.client = FaceIdClient(self.server.address, timeout=120)


def _health(address: str) -> dict[str, int]:
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        return {
            name: health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
            for name in ("", "faceid.v1.FaceId")
        }


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gallery]:
    db = tmp_path_factory.mktemp("e2e") / "faceid.db"
    metrics_port = free_port()
    running = create_server(server_settings(db, metrics_port=metrics_port))
    g: Gallery | None = None
    try:
        # The port answers at once, before the model has loaded (a first start may fetch it).
        health_while_loading = _health(running.address)
        client = FaceIdClient(running.address, timeout=120)
        try:
            client.stats()
            error_while_loading = None
        except Unavailable as exc:
            error_while_loading = exc
        running.wait_ready(LOAD_TIMEOUT_S)
        g = Gallery(running, client, db, metrics_port, health_while_loading, error_while_loading,
                    _health(running.address))
        for person in PEOPLE:
            g.client.enroll(person, *person_photos(person)[:2], metadata={"source": "shared/data/faces"})
        yield g
    finally:
        if g is not None:
            g.client.close()
            g.server.stop(0)  # after a restart, not the one started here
        running.stop(0)


# ---------------------------------------------------------------------------------- start-up


def test_health_is_not_serving_until_the_model_is_loaded(gallery: Gallery) -> None:
    assert gallery.health_while_loading == {"": NOT_SERVING, "faceid.v1.FaceId": NOT_SERVING}
    assert isinstance(gallery.error_while_loading, Unavailable)
    assert "loading the model (facenet-20170512-128d)" in gallery.error_while_loading.message
    assert gallery.health_when_ready == {"": SERVING, "faceid.v1.FaceId": SERVING}


def test_reflection_describes_the_service(gallery: Gallery) -> None:
    with grpc.insecure_channel(gallery.server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = iter([
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="faceid.v1.FaceId"),
        ])
        listed, described = list(stub.ServerReflectionInfo(requests, timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"faceid.v1.FaceId", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert described.file_descriptor_response.file_descriptor_proto  # an independent client can build stubs


# --------------------------------------------------------------------------------- enrolment


def test_enrolment_stored_two_faces_per_person(gallery: Gallery) -> None:
    for person in PEOPLE:
        identity = gallery.client.get_identity(person)
        assert identity.face_count == 2
        assert identity.metadata == {"source": "shared/data/faces"}
        assert len(identity.faces) == 2 and all(f.model == "facenet-20170512-128d" for f in identity.faces)
        by_id = gallery.client.get_identity(id=identity.id)
        assert by_id.name == person


def test_listing_pages_through_every_identity(gallery: Gallery) -> None:
    pages = list(gallery.client.list_identities(page_size=3))
    names = [i.name for page in pages for i in page.identities]
    assert set(PEOPLE) <= set(names)
    assert names == sorted(names)
    assert len(pages) >= math.ceil(len(PEOPLE) / 3)
    assert all(p.total_count == len(names) for p in pages)
    assert [i.name for i in gallery.client.identities(prefix="john_")] == ["john_salley", "john_simm"]


# ---------------------------------------------------------------------------------- identify


@pytest.mark.parametrize("person", PEOPLE)
def test_identifies_other_photos_of_enrolled_people(gallery: Gallery, person: str) -> None:
    for photo in probes(person):
        result = gallery.client.identify(photo)
        assert len(result.faces) == 1, photo
        face = result.faces[0]
        assert (face.unknown, face.identity) == (False, person), f"{photo}: {face}"
        assert face.distance <= result.threshold
        assert face.candidates[0].identity == person
        assert result.model == "facenet-20170512-128d"


@pytest.mark.parametrize("person", STRANGERS)
def test_people_never_enrolled_are_unknown(gallery: Gallery, person: str) -> None:
    for photo in person_photos(person)[:1]:
        result = gallery.client.identify(photo, top_k=3)
        (face,) = result.faces
        assert face.unknown and face.identity is None and face.identity_id is None, f"{photo}: {face}"
        # Candidates are still listed, best first, and all farther than the threshold.
        assert 1 <= len(face.candidates) <= 3
        distances = [c.distance for c in face.candidates]
        assert distances == sorted(distances) and distances[0] > result.threshold


def test_group_photo_of_two_enrolled_people(gallery: Gallery) -> None:
    photo = side_by_side(FACES_DIR / "barack_obama" / "04.jpg", FACES_DIR / "joe_biden" / "02.jpg")
    result = gallery.client.identify(photo)
    assert sorted(f.identity or "?" for f in result.faces) == ["barack_obama", "joe_biden"]


def test_group_photos_one_entry_per_face_and_no_name_twice(gallery: Gallery) -> None:
    with open(GROUP_DIR / "counts.csv", newline="") as f:
        expected = {row["file"]: int(row["faces"]) for row in csv.DictReader(f)}
    for name, count in expected.items():
        result = gallery.client.identify(GROUP_DIR / name)
        assert len(result.faces) == count, name
        named = [f.identity for f in result.faces if not f.unknown]
        assert len(named) == len(set(named)), f"{name}: an identity was given twice: {named}"
        areas = [f.face.box.width * f.face.box.height for f in result.faces]
        assert areas == sorted(areas, reverse=True)  # largest first, as documented


# ------------------------------------------------------------------------------------ verify


def test_verify_same_and_different_people(gallery: Gallery) -> None:
    obama, biden = person_photos("barack_obama"), person_photos("joe_biden")
    same = gallery.client.verify(obama[2], obama[3])
    assert same.match and same.distance <= same.threshold
    assert same.similarity == pytest.approx(1 - same.distance**2 / 2, abs=1e-5)
    different = gallery.client.verify(obama[2], biden[2])
    assert not different.match and different.distance > different.threshold
    assert different.model == "facenet-20170512-128d"


def test_verify_against_an_enrolled_identity(gallery: Gallery) -> None:
    match = gallery.client.verify(person_photos("serena_williams")[4], identity="serena_williams")
    assert match.match and match.identity == "serena_williams" and match.matched_face_id
    stranger = gallery.client.verify(person_photos("naomi_watts")[0], identity="serena_williams")
    assert not stranger.match
    # A stricter threshold in the request turns the match down.
    strict = gallery.client.verify(
        person_photos("serena_williams")[4], identity="serena_williams", threshold=match.distance / 2
    )
    assert not strict.match and strict.threshold == pytest.approx(match.distance / 2)


def test_embed_returns_unit_vectors_of_the_model(gallery: Gallery) -> None:
    result = gallery.client.embed(GROUP_DIR / "longoria-cooper.jpg", all_faces=True)
    assert (result.model, result.dimension, len(result.faces)) == ("facenet-20170512-128d", 128, 2)
    for face in result.faces:
        assert len(face.embedding) == 128
        assert math.fsum(v * v for v in face.embedding) == pytest.approx(1.0, abs=1e-4)
    assert len(gallery.client.embed(GROUP_DIR / "longoria-cooper.jpg").faces) == 1


# ------------------------------------------------------------------------- restart and delete


def _answers(client: FaceIdClient) -> list[tuple[str | None, float]]:
    photos = [p for person in PEOPLE for p in probes(person, 1)] + [person_photos(s)[0] for s in STRANGERS]
    return [
        (f.identity, round(f.distance, 4)) for p in photos for f in client.identify(p).faces
    ]


def test_restart_gives_the_same_answers_from_an_index_rebuilt_from_sqlite(gallery: Gallery) -> None:
    before_answers, before = _answers(gallery.client), gallery.client.stats()
    gallery.restart()
    after_answers, after = _answers(gallery.client), gallery.client.stats()
    assert after_answers == before_answers
    assert (after.identities, after.faces, after.index.vectors) == (before.identities, before.faces, before.index.vectors)
    # The rebuilt index equals the store: same count and checksum as computed from the SQLite file itself.
    truth = id_checksum("facenet-20170512-128d", face_ids_in_sqlite(gallery.db, "facenet-20170512-128d"))
    assert after.index.consistent
    assert (after.index.vectors, after.index.checksum) == (truth.count, truth.digest)


def test_deleted_identity_is_gone_from_answers(gallery: Gallery) -> None:
    name = f"rose_leslie-{uuid.uuid4().hex[:8]}"
    photos = person_photos("rose_leslie")
    enrolled = gallery.client.enroll(name, photos[0], photos[1])
    assert gallery.client.identify(photos[2]).faces[0].identity == name

    deleted = gallery.client.delete_identity(name)
    assert (deleted.identity, deleted.identity_id, deleted.faces_deleted) == (name, enrolled.identity_id, 2)
    after = gallery.client.identify(photos[2]).faces[0]
    assert after.unknown and name not in [c.identity for c in after.candidates]
    with pytest.raises(NotFound):
        gallery.client.get_identity(name)
    with pytest.raises(NotFound):
        gallery.client.delete_identity(name)
    stored = set(face_ids_in_sqlite(gallery.db, "facenet-20170512-128d"))
    assert not stored & {r.face_id for r in enrolled.results}
    assert gallery.client.stats().index.consistent


# -------------------------------------------------------------------------------------- metrics


def test_metrics_count_calls_and_name_nobody(gallery: Gallery) -> None:
    gallery.client.identify(probes("john_simm", 1)[0])
    with pytest.raises(Exception):  # noqa: B017 - an INVALID_ARGUMENT, counted too
        gallery.client.identify(next(NO_FACE_DIR.glob("*.jpg")))
    with urllib.request.urlopen(f"http://127.0.0.1:{gallery.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'faceid_rpc_requests_total{code="OK",method="faceid.v1.FaceId/Identify"}' in text
    assert 'faceid_rpc_requests_total{code="INVALID_ARGUMENT",method="faceid.v1.FaceId/Identify"}' in text
    assert "faceid_gallery_identities{" in text and "faceid_index_consistent{" in text
    # how the accelerator is used: its slots, turns per priority, batches and cancelled photos per class
    assert f"faceid_accelerator_slots {float(gallery.server.scheduler.slots)}" in text
    assert 'faceid_accelerator_runs_total{priority="interactive"}' in text
    analysed = re.search(r'^faceid_batch_photos_total\{kind="interactive"\} ([0-9.e+]+)$', text, re.M)
    assert analysed is not None and float(analysed.group(1)) >= 2  # at least the two Identify photos above
    assert 'faceid_cancelled_photos_total{kind="bulk"}' in text
    for person in PEOPLE:
        assert person not in text


def test_stats_describe_the_server(gallery: Gallery) -> None:
    stats = gallery.client.stats()
    assert stats.model.id == "facenet-20170512-128d" and stats.model.dimension == 128
    assert stats.model.default_threshold == pytest.approx(1.02)
    assert stats.index.backend == "faiss" and stats.index.consistent
    assert stats.device in ("cpu", "cuda", "cuda:0")
    assert stats.database.startswith("sqlite") and "faceid.db" in stats.database
    assert stats.identities >= len(PEOPLE) and stats.faces >= 2 * len(PEOPLE)
    assert stats.version
