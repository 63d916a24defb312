"""The typed client and the `faceid` CLI against a live server (one per module), plus the promise that the
client package imports without torch, faiss or numpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FACES_DIR, GROUP_DIR, NO_FACE_DIR, REPO_ROOT, person_photos
from faceid.client import (
    FaceIdClient,
    FaceIdError,
    ImageStatus,
    InvalidArgument,
    MultiFacePolicy,
    NotFound,
    Unavailable,
)
from faceid.client.cli import app as faceid_cli
from faceid.server import RunningServer
from server_harness import free_port, start_server
from typer.testing import CliRunner


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------ no heavy imports


def test_client_and_cli_import_without_torch_faiss_numpy() -> None:
    code = (
        "import sys, faceid.client, faceid.client.cli\n"
        "heavy = sorted(m for m in ('torch', 'faiss', 'numpy', 'faceid.indexer', 'faceid.server') if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == ""


def test_unreachable_server_is_unavailable() -> None:
    address = f"127.0.0.1:{free_port()}"
    with FaceIdClient(address, timeout=3) as client, pytest.raises(Unavailable) as info:
        client.stats()
    assert info.value.code.name == "UNAVAILABLE" and not info.value.client_fault
    result = CliRunner().invoke(faceid_cli, ["stats", "--server", address, "--timeout", "3"])
    assert result.exit_code == 1
    assert "UNAVAILABLE" in result.output


# ------------------------------------------------------------------------------ live server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("client") / "faceid.db")
    yield running
    running.stop(0)


@pytest.fixture()
def client(server: RunningServer) -> Iterator[FaceIdClient]:
    with FaceIdClient(server.address, timeout=120) as c:
        yield c


@pytest.mark.slow
def test_readme_example(server: RunningServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The README's five lines, run as written (the server found through FACEID_SERVER)."""
    monkeypatch.setenv("FACEID_SERVER", server.address)
    monkeypatch.chdir(tmp_path)
    for name, source in (("ada1.jpg", "01"), ("ada2.jpg", "02"), ("who.jpg", "04")):
        (tmp_path / name).write_bytes((FACES_DIR / "naomi_watts" / f"{source}.jpg").read_bytes())
    from faceid.client import FaceIdClient as ReadmeClient

    with ReadmeClient() as faceid:
        faceid.enroll("ada", "ada1.jpg", "ada2.jpg")
        identities = faceid.identify("who.jpg").identities
    assert identities == ["ada"]


@pytest.mark.slow
def test_enroll_accepts_paths_and_bytes(client: FaceIdClient) -> None:
    name = _unique("hugo")
    photos = person_photos("hugo_chavez")
    result = client.enroll(name, photos[0], photos[1].read_bytes(), metadata={"team": "x"})
    assert result.created and result.identity == name and result.faces_on_record == 2
    assert [r.status for r in result.results] == [ImageStatus.STORED, ImageStatus.STORED]
    assert all(r.accepted and r.face_id and len(r.image_sha256) == 64 for r in result.results)
    assert result.to_dict()["results"][0]["status"] == "stored"


@pytest.mark.slow
def test_enroll_stream_labeled_and_unlabeled(client: FaceIdClient) -> None:
    name = _unique("koizumi")
    photos = person_photos("junichiro_koizumi")
    unlabeled_before = client.stats().unlabeled_faces
    items = [(name, photos[0]), (name, photos[1].read_bytes()), (None, GROUP_DIR / "longoria-cooper.jpg")]
    results = list(client.enroll_stream(items))
    assert [r.client_ref for r in results] == [str(photos[0]), "#1", str(GROUP_DIR / "longoria-cooper.jpg")]
    assert [r.result.status for r in results] == [ImageStatus.STORED] * 3
    assert results[0].identity == name and results[0].identity_id == results[1].identity_id
    assert results[2].identity is None and results[2].identity_id is None
    assert len(results[2].result.face_ids) == 2  # unlabeled enrolment keeps every face of the photo
    assert client.stats().unlabeled_faces == unlabeled_before + 2
    assert client.get_identity(name).face_count == 2


@pytest.mark.slow
def test_typed_errors_carry_code_and_message(client: FaceIdClient) -> None:
    with pytest.raises(NotFound) as not_found:
        client.get_identity("nobody-at-all")
    assert not_found.value.client_fault and "nobody-at-all" in not_found.value.message
    with pytest.raises(InvalidArgument) as invalid:
        client.identify(NO_FACE_DIR / "eagle.jpg")
    assert isinstance(invalid.value, FaceIdError) and invalid.value.code.name == "INVALID_ARGUMENT"
    with pytest.raises(FileNotFoundError):
        client.identify("/nonexistent/photo.jpg")
    with pytest.raises(ValueError, match="exactly one"):
        client.verify(person_photos("naomi_watts")[0])


@pytest.mark.slow
def test_group_enrolment_policy(client: FaceIdClient) -> None:
    name = _unique("longoria")
    with pytest.raises(InvalidArgument, match="nothing was stored"):
        client.enroll(name, GROUP_DIR / "longoria-cooper.jpg")
    result = client.enroll(name, GROUP_DIR / "longoria-cooper.jpg", policy=MultiFacePolicy.LARGEST)
    assert result.results[0].status is ImageStatus.STORED and len(result.results[0].faces) == 2


@pytest.mark.slow
def test_pages_and_identities(client: FaceIdClient) -> None:
    prefix = _unique("page")
    photos = person_photos("serena_williams")
    for i in range(3):
        client.enroll(f"{prefix}-{i}", photos[i])
    pages = list(client.list_identities(prefix=prefix, page_size=2))
    assert [[i.name for i in p.identities] for p in pages] == [[f"{prefix}-0", f"{prefix}-1"], [f"{prefix}-2"]]
    assert pages[-1].next_page_token == "" and pages[0].total_count == 3
    assert [i.name for i in client.identities(prefix=prefix)] == [f"{prefix}-{i}" for i in range(3)]


# ------------------------------------------------------------------------------------ the CLI


def _cli(server: RunningServer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(faceid_cli, [*args, "--server", server.address])
    return result.exit_code, result.output


@pytest.mark.slow
def test_cli_enroll_identify_verify_list_delete(server: RunningServer) -> None:
    name = _unique("lula")
    photos = [str(p) for p in person_photos("luiz_inacio_lula_da_silva")]

    code, out = _cli(server, "enroll", name, photos[0], photos[1], "--meta", "role=president", "--json")
    assert code == 0, out
    enrolled = json.loads(out)
    assert enrolled["identity"] == name and [r["status"] for r in enrolled["results"]] == ["stored", "stored"]

    code, out = _cli(server, "identify", photos[2], "--json", "--top-k", "2")
    assert code == 0, out
    (face,) = json.loads(out)["faces"]
    assert face["identity"] == name and not face["unknown"] and len(face["candidates"]) <= 2

    code, out = _cli(server, "identify", photos[3])  # human output: a table naming the person
    assert code == 0 and name in out and "unknown" not in out

    code, out = _cli(server, "verify", photos[2], photos[3], "--json")
    assert code == 0 and json.loads(out)["match"] is True
    code, out = _cli(server, "verify", photos[2], str(FACES_DIR / "hugo_chavez" / "01.jpg"))
    assert code == 0 and "different people" in out
    code, out = _cli(server, "verify", photos[4], "--identity", name)
    assert code == 0 and "same person" in out

    code, out = _cli(server, "list", "--prefix", name, "--json")
    assert code == 0 and [(i["name"], i["face_count"], i["metadata"]) for i in json.loads(out)] == [
        (name, 2, {"role": "president"})
    ]
    code, out = _cli(server, "list", "--prefix", name)
    assert code == 0 and name in out

    code, out = _cli(server, "delete", name, "--json")
    assert code == 0 and json.loads(out)["faces_deleted"] == 2
    code, out = _cli(server, "identify", photos[2], "--json")
    assert code == 0 and json.loads(out)["faces"][0]["unknown"] is True


@pytest.mark.slow
def test_cli_rename(server: RunningServer) -> None:
    old, new, taken = _unique("savage"), _unique("John Savage"), _unique("harington")
    savage = [str(p) for p in person_photos("john_savage")]
    assert _cli(server, "enroll", old, savage[0], savage[1])[0] == 0
    assert _cli(server, "enroll", taken, str(person_photos("kit_harington")[0]))[0] == 0

    code, out = _cli(server, "rename", old, new, "--json")
    assert code == 0, out
    assert (json.loads(out)["name"], json.loads(out)["face_count"]) == (new, 2)
    code, out = _cli(server, "identify", savage[2], "--json")
    assert code == 0 and json.loads(out)["faces"][0]["identity"] == new

    code, out = _cli(server, "rename", new, taken)
    assert code == 2 and "ALREADY_EXISTS" in out
    code, out = _cli(server, "rename", old, "anyone", "--json")  # the old name is gone
    assert code == 2 and json.loads(out)["error"]["code"] == "NOT_FOUND"
    code, out = _cli(server, "rename", new, " padded")
    assert code == 2 and "INVALID_ARGUMENT" in out

    code, out = _cli(server, "rename", new, f"[red]{old}")  # human output; a name is text, never markup
    assert code == 0 and f"renamed {new!r} to '[red]{old}'" in out
    code, out = _cli(server, "list", "--prefix", "[red]", "--json")
    assert code == 0 and [(i["name"], i["face_count"]) for i in json.loads(out)] == [(f"[red]{old}", 2)]


@pytest.mark.slow
def test_cli_stats(server: RunningServer) -> None:
    code, out = _cli(server, "stats", "--json")
    assert code == 0, out
    stats = json.loads(out)
    assert stats["model"]["id"] == "facenet-20170512-128d" and stats["index"]["consistent"] is True
    code, out = _cli(server, "stats")
    assert code == 0 and "facenet-20170512-128d" in out and "consistent" in out


@pytest.mark.slow
def test_cli_errors_exit_non_zero_with_the_status(server: RunningServer) -> None:
    code, out = _cli(server, "delete", "nobody-at-all")
    assert code == 2 and "NOT_FOUND" in out and "nobody-at-all" in out
    code, out = _cli(server, "identify", str(NO_FACE_DIR / "rocket.jpg"), "--json")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "INVALID_ARGUMENT"
    code, out = _cli(server, "identify", str(FACES_DIR / "naomi_watts" / "01.jpg"), "--threshold", "3")
    assert code == 2 and "INVALID_ARGUMENT" in out and "threshold" in out
    code, out = _cli(server, "enroll", _unique("nobody"), str(NO_FACE_DIR / "rocket.jpg"))
    assert code == 2 and "INVALID_ARGUMENT" in out
    code, out = _cli(server, "identify", "/nonexistent/photo.jpg")
    assert code == 2  # typer refuses a missing file before any call


@pytest.mark.slow
def test_faceid_entry_point_uses_FACEID_SERVER(server: RunningServer) -> None:
    exe = Path(sys.executable).with_name("faceid")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "faceid.client.cli"]
    env = {**os.environ, "FACEID_SERVER": server.address}
    done = subprocess.run(
        [*command, "stats", "--json"], capture_output=True, text=True, env=env, timeout=120, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"]["id"] == "facenet-20170512-128d"
