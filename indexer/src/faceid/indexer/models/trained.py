"""Trained models in the registry: model folders written by `faceid train`, found by model id like shipped ones.

A trained embedding model lives in `<dir>/<model id>/` of a model search folder (FACEID_MODEL_DIR entries, then
the user cache; `faceid train` writes to the cache by default) with a `card.json` of kind "embedding-model" whose
`spec` block holds every `ModelSpec` field and whose `weights.files` list each file's bytes and sha256. A Siamese
verification head lives in `<dir>/<head id>/` with a card of kind "siamese-verifier".

`resolve_model` is the one lookup for "a model id → (spec, verified folder)": the static registry first (fetching
when allowed), then trained folders, sha256-checked before anything loads them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceid.indexer.errors import InvalidRequest, ModelMissing, UnknownModel
from faceid.indexer.models.spec import MODELS, ModelSpec, WeightFile

CARD_FILE = "card.json"
EMBEDDING_KIND = "embedding-model"
HEAD_KIND = "siamese-verifier"


def read_card(folder: Path, kind: str) -> dict[str, Any]:
    """The parsed card.json of a model folder, which must describe a `kind`."""
    path = Path(folder) / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelMissing(f"{folder} holds no {CARD_FILE}: not a faceid model folder") from None
    except (OSError, ValueError) as exc:
        raise ModelMissing(f"{path} is unreadable or not JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("kind") != kind:
        found = card.get("kind") if isinstance(card, dict) else None
        raise InvalidRequest(f"{path} describes a {found!r}, expected a {kind!r}")
    return card


def trained_model_spec(folder: Path) -> ModelSpec:
    """The `ModelSpec` of a trained model folder (files with their sha256, from its card)."""
    card = read_card(folder, EMBEDDING_KIND)
    try:
        spec = dict(card["spec"])
        spec["files"] = tuple(WeightFile(f["file"], f["sha256"], f["bytes"]) for f in card["weights"]["files"])
        result = ModelSpec(**spec)
    except (KeyError, TypeError) as exc:
        raise ModelMissing(f"{Path(folder) / CARD_FILE} lacks a complete spec block ({exc}): rewrite it with faceid train")
    if result.name != Path(folder).name:
        raise InvalidRequest(f"{Path(folder) / CARD_FILE} names model {result.name!r} but lives in {Path(folder).name}/")
    return result


def find_trained_folder(model_id: str, kind: str, extra_dirs: Sequence[Path] = ()) -> Path | None:
    """The first `<dir>/<model_id>/` holding a card of `kind`, searching `extra_dirs` then the registry's folders."""
    from faceid.indexer.models.locations import model_search_dirs

    for root in [*map(Path, extra_dirs), *model_search_dirs()]:
        card = root / model_id / CARD_FILE
        if card.is_file():
            try:
                if json.loads(card.read_text(encoding="utf-8")).get("kind") == kind:
                    return root / model_id
            except (OSError, ValueError, AttributeError):
                continue  # not ours: another copy further down the search path may be
    return None


def resolve_model(
    model_id: str, *, model_dir: Path | None = None, allow_fetch: bool = True, progress: bool = True
) -> tuple[ModelSpec, Path]:
    """(spec, verified folder) of a registered model or of a trained one, sha256-checked.

    Registered ids go through `ensure_model` (fetching when allowed), with `model_dir` looked in first when given.
    Any other id is looked for as a trained model folder in `model_dir`, then FACEID_MODEL_DIR and the user cache.
    Raises UnknownModel (listing the registered ids and the searched folders), ChecksumMismatch or ModelMissing.
    """
    from faceid.indexer.models.fetch import ensure_model
    from faceid.indexer.models.locations import model_search_dirs, verify_model_files

    extra = [Path(model_dir)] if model_dir is not None else []
    spec = MODELS.get(model_id)
    if spec is not None:
        local = extra[0] / model_id if extra else None
        if local is not None and all((local / f.name).is_file() for f in spec.files):
            verify_model_files(spec, local)
            return spec, local
        return spec, ensure_model(model_id, allow_fetch=allow_fetch, progress=progress)
    folder = find_trained_folder(model_id, EMBEDDING_KIND, extra)
    if folder is None:
        searched = ", ".join(str(d) for d in [*extra, *model_search_dirs()])
        raise UnknownModel(
            f"unknown model {model_id!r}: not registered ({', '.join(sorted(MODELS))}) and no trained model folder "
            f"{model_id}/ with a card.json in {searched}"
        )
    trained = trained_model_spec(folder)
    verify_model_files(trained, folder)  # size and sha256 of every file, as for the shipped models
    return trained, folder
