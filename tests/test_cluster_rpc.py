"""faceid.v1.Clustering over gRPC and the `faceid cluster / name / merge` CLI, against a real server (real
weights, a SQLite file in tmp, real photos of 6 people: 4 enrolled by name, 2 stored unlabeled).

The server checks API keys (loopback with keys in the database): an admin key clusters, a write key names
and merges, so the audit log's "who" and the scope table are exercised on the way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import person_photos
from faceid.client import FaceIdClient, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from faceid.client.cli import app as faceid_cli
from faceid.client.cluster_cmd import parse_target, report_data
from faceid.client.cluster_types import ClusterResult, ClusterScope
from faceid.client.report import result_from_proto
from faceid.server import RunningServer
from faceid.server.auth import Scope, create_key
from faceid.v1 import admin_pb2, admin_pb2_grpc
from faceid.v1 import clustering_pb2 as pb
from faceid.v1 import clustering_pb2_grpc as pb_grpc
from server_harness import sqlite_tables, start_server
from typer.testing import CliRunner

LABELED = ["barack_obama", "serena_williams", "naomi_watts", "hugo_chavez"]
UNLABELED = ["joe_biden", "kit_harington"]
PEOPLE = LABELED + UNLABELED

pytestmark = pytest.mark.slow  # one model load and 26 real enrolments for the module


@dataclass(frozen=True)
class Setup:
    server: RunningServer
    db: Path
    admin_key: str
    write_key: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    db = tmp_path_factory.mktemp("cluster-rpc") / "faceid.db"
    running = start_server(db, auth={"mode": "required"})
    assert running.keys is not None
    admin = create_key(running.keys, scope=Scope.ADMIN, name="curator-admin", actor="test").key
    write = create_key(running.keys, scope=Scope.WRITE, name="curator-writer", actor="test").key
    yield Setup(running, db, admin, write)
    running.stop(0)


@pytest.fixture(scope="module")
def admin(setup: Setup) -> Iterator[FaceIdClient]:
    with FaceIdClient(setup.server.address, timeout=300, api_key=setup.admin_key) as client:
        yield client


@pytest.fixture(scope="module")
def writer(setup: Setup) -> Iterator[FaceIdClient]:
    with FaceIdClient(setup.server.address, timeout=300, api_key=setup.write_key) as client:
        yield client


@pytest.fixture(scope="module")
def gallery(admin: FaceIdClient) -> dict[str, list[int]]:
    """person -> stored face ids; the unlabeled people's last photo is kept back as a query."""
    faces: dict[str, list[int]] = {}
    for person in LABELED:
        result = admin.enroll(person, *person_photos(person))
        faces[person] = [r.face_id for r in result.results if r.face_id is not None]
        assert len(faces[person]) == len(person_photos(person)), result
    items = [(None, photo) for person in UNLABELED for photo in person_photos(person)[:-1]]
    owners = [person for person in UNLABELED for _ in person_photos(person)[:-1]]
    for person, response in zip(owners, admin.enroll_stream(items), strict=True):
        assert len(response.result.face_ids) == 1, response
        faces.setdefault(person, []).append(response.result.face_ids[0])
    return faces


def _faces(gallery: dict[str, list[int]]) -> int:
    return sum(len(v) for v in gallery.values())


def _cluster_of(result: ClusterResult, face_id: int) -> int:
    return next(f.cluster for f in result.faces if f.face_id == face_id)


# -------------------------------------------------------------------------------------------- cluster
def test_empty_gallery_is_failed_precondition(admin: FaceIdClient) -> None:
    # Runs before `gallery` fills the store (tests of a module run in file order).
    assert admin.stats().faces == 0
    for scope in (ClusterScope.ALL, ClusterScope.UNLABELED):
        with pytest.raises(FailedPrecondition) as info:
            admin.cluster(2, scope=scope)
        assert "no faces to cluster" in info.value.message


def test_k_equal_to_people_recovers_them(admin: FaceIdClient, gallery: dict[str, list[int]]) -> None:
    events = []
    run = admin.cluster(len(PEOPLE), seed=0, progress=events.append)
    result = run.result
    assert result.k == len(PEOPLE) and result.scope is ClusterScope.ALL and result.run_id
    assert [f.face_id for f in result.faces] == sorted(f for v in gallery.values() for f in v)
    assert sum(c.size for c in result.clusters) == _faces(gallery)
    m = result.metrics
    assert m.labeled_faces == sum(len(gallery[p]) for p in LABELED)
    assert m.nmi is not None and m.nmi >= 0.9, m
    assert m.purity is not None and m.ari is not None and m.silhouette is not None and m.inertia > 0
    assert all(math.isfinite(f.x) and math.isfinite(f.y) for f in result.faces)
    # Progress: loading first, then the engine's stages in order.
    stages = list(dict.fromkeys(e.stage for e in events))
    assert stages == ["loading", "clustering", "scoring", "projecting", "naming"], stages
    assert run.thumbnails == {}  # not asked for
    for person in LABELED:
        (cluster,) = {_cluster_of(result, f) for f in gallery[person]}
        summary = result.clusters[cluster]
        assert summary.nearest_identity == person and summary.within_threshold, summary
        assert summary.nearest_distance is not None and summary.nearest_distance <= result.threshold
    for person in UNLABELED:
        assert len({_cluster_of(result, f) for f in gallery[person]}) == 1, person
        assert all(f.identity is None for f in result.faces if f.face_id in gallery[person])


def test_raw_stream_matches_the_typed_client_and_the_report_dict(
    setup: Setup, admin: FaceIdClient, gallery: dict[str, list[int]]
) -> None:
    """Thumbnails come before the one result; same seed, same clusters; the CLI's report dict is the one
    report.result_from_proto makes from the same message."""
    request = pb.ClusterRequest(k=len(PEOPLE), seed=3, include_thumbnails=True)
    with grpc.insecure_channel(setup.server.address) as channel:
        events = list(pb_grpc.ClusteringStub(channel).Cluster(request, metadata=(("x-api-key", setup.admin_key),), timeout=300))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert "thumbnails" in kinds and kinds.index("thumbnails") < len(kinds) - 1
    thumbs = {t.face_id: t.jpeg for e in events if e.HasField("thumbnails") for t in e.thumbnails.thumbnails}
    assert set(thumbs) == {f for v in gallery.values() for f in v} and all(j[:2] == b"\xff\xd8" for j in thumbs.values())
    message = events[-1].result
    typed = admin.cluster(len(PEOPLE), seed=3).result
    assert [f.cluster for f in typed.faces] == [f.cluster for f in message.faces]
    assert typed.run_id != message.run_id  # each call is its own run
    expected = result_from_proto(message)
    mine = report_data(ClusterResult.from_proto(message))
    for key in ("created_at",):
        expected.pop(key), mine.pop(key)  # type: ignore[misc]
    for key, value in expected.items():
        if isinstance(value, list):
            assert [{k: row[k] for k in item} for item, row in zip(value, mine[key], strict=True)] == value, key
        else:
            assert mine[key] == value, key


def test_auto_k_is_within_one_of_the_number_of_people(admin: FaceIdClient, gallery: dict[str, list[int]]) -> None:
    events = []
    result = admin.cluster(auto=(2, 12), seed=0, progress=events.append).result
    assert abs(result.k - len(PEOPLE)) <= 1, [(s.k, round(s.silhouette, 3)) for s in result.k_scores]
    scores = {s.k: s.silhouette for s in result.k_scores}
    assert sorted(scores) == list(range(2, 13))
    assert scores[result.k] == max(scores.values()) and result.metrics.silhouette == pytest.approx(scores[result.k])
    assert "choosing_k" in {e.stage for e in events} and "clustering" not in {e.stage for e in events}


def test_identities_scope_clusters_only_those_faces(admin: FaceIdClient, gallery: dict[str, list[int]]) -> None:
    two = ["barack_obama", "serena_williams"]
    result = admin.cluster(2, scope=ClusterScope.IDENTITIES, identities=two).result
    assert result.scope is ClusterScope.IDENTITIES
    assert sorted(f.face_id for f in result.faces) == sorted(gallery[two[0]] + gallery[two[1]])
    assert result.metrics.nmi == pytest.approx(1.0)


def test_bad_arguments_get_precise_statuses_and_change_nothing(
    setup: Setup, admin: FaceIdClient, writer: FaceIdClient, gallery: dict[str, list[int]]
) -> None:
    n = _faces(gallery)
    before = sqlite_tables(setup.db)
    cases = [
        (lambda: admin.cluster(0), InvalidArgument, "k must be at least 1"),
        (lambda: admin.cluster(n + 1), InvalidArgument, f"({n})"),
        (lambda: admin.cluster(auto=(1, 4)), InvalidArgument, "min_k"),
        (lambda: admin.cluster(auto=(5, 4)), InvalidArgument, "min_k"),
        (lambda: admin.cluster(auto=(2, n)), InvalidArgument, f"{n - 1}"),
        (lambda: admin.cluster(auto=(2, 400)), InvalidArgument, "at most 256"),
        (lambda: admin.cluster(2, niter=-1), InvalidArgument, "niter"),
        (lambda: admin.cluster(2, niter=5000), InvalidArgument, "niter"),
        (lambda: admin.cluster(2, scope=ClusterScope.IDENTITIES), InvalidArgument, "at least one identity"),
        (lambda: admin.cluster(2, identities=["barack_obama"]), InvalidArgument, "scope 'identities'"),
        (
            lambda: admin.cluster(2, scope=ClusterScope.IDENTITIES, identities=["barack_obama", "nobody_here"]),
            NotFound,
            "nobody_here",
        ),
        (lambda: writer.name_faces("x", [10**9]), NotFound, str(10**9)),
        (lambda: writer.name_faces("x", []), InvalidArgument, "empty"),
        (lambda: writer.name_faces("", gallery["joe_biden"][:1]), InvalidArgument, ""),
        (lambda: writer.name_cluster("x", 0, run_id="no-such-run"), NotFound, "no-such-run"),
        (lambda: writer.name_cluster("x", 99), InvalidArgument, "no cluster 99"),
        (lambda: writer.merge_identities("nobody_here", "barack_obama"), NotFound, "nobody_here"),
        (lambda: writer.merge_identities("barack_obama", "barack_obama"), InvalidArgument, "itself"),
    ]
    for call, error, text in cases:
        with pytest.raises(error) as info:
            call()
        assert text in info.value.message, (text, info.value.message)
    # A request with neither k nor auto_k (the typed client cannot send one).
    with grpc.insecure_channel(setup.server.address) as channel:
        stub = pb_grpc.ClusteringStub(channel)
        with pytest.raises(grpc.RpcError) as raw:
            list(stub.Cluster(pb.ClusterRequest(), metadata=(("x-api-key", setup.admin_key),), timeout=60))
        assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "auto_k" in raw.value.details()
        # A write key may name and merge, not cluster (the scope table).
        with pytest.raises(grpc.RpcError) as denied:
            list(stub.Cluster(pb.ClusterRequest(k=2), metadata=(("x-api-key", setup.write_key),), timeout=60))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert sqlite_tables(setup.db) == before


def test_naming_a_cluster_and_faces_then_merging_is_audited(
    setup: Setup, admin: FaceIdClient, writer: FaceIdClient, gallery: dict[str, list[int]]
) -> None:
    run = admin.cluster(2, scope=ClusterScope.UNLABELED, seed=0).result
    joe, kit = gallery["joe_biden"], gallery["kit_harington"]
    joe_cluster = _cluster_of(run, joe[0])
    named = writer.name_cluster("joe_biden", joe_cluster, run_id=run.run_id)
    assert named.created and sorted(named.face_ids) == sorted(joe) and named.face_count == len(joe)
    query = person_photos("joe_biden")[-1]  # never stored
    assert writer.identify(query).identities == ["joe_biden"]

    one = writer.name_faces("kit_one", kit[:1])
    assert one.created and one.face_ids == (kit[0],)
    # run_id "" = the latest run (still `run`). unlabeled_only goes by the labels at run time: kit[0] was
    # unlabeled then, so it moves from "kit_one" too.
    rest = writer.name_cluster("kit_harington", _cluster_of(run, kit[0]), unlabeled_only=True)
    assert sorted(rest.face_ids) == sorted(kit)
    writer.name_faces("kit_one", kit[:1])  # move one back, to merge it
    merged = writer.merge_identities("kit_one", "kit_harington")
    assert merged.moved_face_ids == (kit[0],) and merged.face_count == len(kit)
    with pytest.raises(NotFound):
        writer.get_identity("kit_one")
    # A labeled-only cluster under unlabeled_only: nothing to name, refused.
    labeled = admin.cluster(1, scope=ClusterScope.IDENTITIES, identities=["barack_obama"]).result
    with pytest.raises(InvalidArgument, match="no unlabeled face"):
        writer.name_cluster("x", 0, run_id=labeled.run_id, unlabeled_only=True)

    with grpc.insecure_channel(setup.server.address) as channel:
        audit = admin_pb2_grpc.AdminStub(channel).ListAuditLog(
            admin_pb2.ListAuditLogRequest(page_size=1000), metadata=(("x-api-key", setup.admin_key),), timeout=60
        )
    mine = [(e.action, e.actor) for e in audit.entries if e.actor == "key:curator-writer"]
    assert mine == [("faces.assign", "key:curator-writer")] * 4 + [("identity.merge", "key:curator-writer")], mine


# ------------------------------------------------------------------------------------------------ CLI
def test_name_target_syntax() -> None:
    assert parse_target("42").face_ids == (42,)
    assert parse_target("42, 43,57").face_ids == (42, 43, 57)
    assert (parse_target("3f2a9c01b7de:4").run_id, parse_target("3f2a9c01b7de:4").cluster) == ("3f2a9c01b7de", 4)
    assert (parse_target(":4").run_id, parse_target(":4").cluster) == ("", 4)
    assert (parse_target("last:0").run_id, parse_target("last:0").cluster) == ("", 0)
    for bad in ("abc", "1:x", "", "4,", "-3"):
        with pytest.raises(Exception, match="face id"):
            parse_target(bad)


def test_cli_cluster_report_name_and_merge(
    setup: Setup, gallery: dict[str, list[int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    address = ["--server", setup.server.address]
    monkeypatch.setenv("FACEID_API_KEY", setup.admin_key)
    report = tmp_path / "report.html"
    done = runner.invoke(faceid_cli, ["cluster", "--k", str(len(PEOPLE)), "--report", str(report), *address])
    assert done.exit_code == 0, done.output
    assert "NMI" in done.output and "faceid name" in done.output
    data = json.loads(report.with_suffix(".json").read_text())
    assert data["k"] == len(PEOPLE) and len(data["faces"]) == _faces(gallery) and data["metrics"]["nmi"] >= 0.9
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/jpeg;base64,") == _faces(gallery)

    # --auto without --max-k: up to the faces in scope - 1 (the earlier tests named every unlabeled face).
    three = ["barack_obama", "serena_williams", "naomi_watts"]
    flags = [arg for name in three for arg in ("-i", name)]
    done = runner.invoke(faceid_cli, ["cluster", "--auto", *flags, "--json", *address])
    assert done.exit_code == 0, done.output
    auto = json.loads(done.stdout)
    in_scope = sum(len(gallery[p]) for p in three)
    assert auto["scope"] == "identities" and [s["k"] for s in auto["k_scores"]] == list(range(2, in_scope))
    assert auto["k"] == 3 and auto["metrics"]["nmi"] == pytest.approx(1.0)
    # Bad flags and server refusals exit 2 with the status in the message.
    assert runner.invoke(faceid_cli, ["cluster", "--k", "0", *address]).exit_code == 2
    refused = runner.invoke(faceid_cli, ["cluster", "--k", "2", "-i", "nobody_here", *address])
    assert refused.exit_code == 2 and "NOT_FOUND" in refused.output

    monkeypatch.setenv("FACEID_API_KEY", setup.write_key)
    cluster = data["faces"][0]["cluster"]
    members = sorted(f["face_id"] for f in data["faces"] if f["cluster"] == cluster)
    done = runner.invoke(faceid_cli, ["name", f"{data['run_id']}:{cluster}", "cli_person", "--json", *address])
    assert done.exit_code == 0, done.output
    assert sorted(json.loads(done.stdout)["face_ids"]) == members
    done = runner.invoke(faceid_cli, ["name", str(members[0]), "cli_other", *address])
    assert done.exit_code == 0 and "cli_other" in done.output, done.output
    done = runner.invoke(faceid_cli, ["merge", "cli_other", "cli_person", "--json", *address])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["face_count"] == len(members)
    assert runner.invoke(faceid_cli, ["merge", "cli_other", "cli_person", *address]).exit_code == 2  # gone now

    _screenshot_shows_faces(report, tmp_path)


def _screenshot_shows_faces(report: Path, tmp_path: Path) -> None:
    """The CLI's report, in headless Chromium, shows the stored face thumbnails (test_report's check)."""
    from test_report import CHROMIUM, GRID_BACKGROUND, screenshot, textured_blocks

    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    real = screenshot(report, tmp_path)
    grid_rgb = np.array([int(GRID_BACKGROUND[i : i + 2], 16) for i in (1, 3, 5)])
    on_grid = np.abs(real.astype(int) - grid_rgb).max(axis=2) <= 3
    rows = np.flatnonzero(on_grid.any(axis=1))
    assert rows.size, "no thumbnail grid on the page"
    textured, skin = textured_blocks(real[rows.min() : rows.max() + 1])
    # ~100 textured 8×8 blocks per thumbnail; 26 thumbnails, most of them above the fold.
    assert textured >= 1000, textured
    assert skin > 0.3, f"only {skin:.0%} of the textured blocks are skin-coloured"


# ------------------------------------------------------------------------------------ cancellation
def test_deadline_and_cancellation_stop_the_job_and_remember_no_run(
    setup: Setup, admin: FaceIdClient, gallery: dict[str, list[int]]
) -> None:
    """Last in the module: it adds 6,000 synthetic unlabeled faces, so that automatic K over them takes
    far longer (one K-means and one silhouette per K) than the calls below wait."""
    from faceid.client import DeadlineExceeded
    from faceid.indexer.clustering import spherical_blobs
    from faceid.indexer.store import NewFace

    engine = setup.server.wait_ready()
    blobs = spherical_blobs(6000, engine.model.dimension, 40, seed=1)
    engine.store.add_faces(
        identity_id=None,
        faces=[
            NewFace(engine.model.id, v, f"{i:064x}", (0.0, 0.0, 50.0, 50.0), 0.99) for i, v in enumerate(blobs.x)
        ],
    )
    assert engine.check_index(rebuild=True).consistent
    big = {"auto": (2, 60), "scope": ClusterScope.UNLABELED}
    runs_before = engine.clustering_runs.run_ids()

    with pytest.raises(DeadlineExceeded):
        admin.cluster(**big, timeout=3.0)

    class GiveUp(Exception):
        pass

    def give_up(event) -> None:  # noqa: ANN001
        if event.stage == "choosing_k" and event.fraction > 0:  # one K done: the job is well under way
            raise GiveUp

    with pytest.raises(GiveUp):
        admin.cluster(**big, progress=give_up, timeout=600)  # the client cancels the stream

    # Clustering is bulk accelerator work: this call waits until the abandoned jobs have let go of it.
    small = admin.cluster(1, scope=ClusterScope.IDENTITIES, identities=["serena_williams"], timeout=600).result
    runs_after = engine.clustering_runs.run_ids()
    assert runs_after[-1] == small.run_id
    assert runs_after[:-1] == runs_before[-(len(runs_after) - 1):], "a stopped job left a run behind"
