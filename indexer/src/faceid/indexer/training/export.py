"""Save trained networks and Siamese heads as new model ids, in the model folder layout of the registry.

An embedding model goes to ``<root>/<model id>/`` like the shipped default: safetensors weights with a
``model.safetensors.index.json`` shard index (so `models.facenet.read_state_dict` reads it unchanged), a
``card.json`` whose ``weights.files`` list each file's bytes and sha256, and a ``SHA256SUMS`` file that
``sha256sum -c`` checks. The card's ``spec`` block holds every `ModelSpec` field, so `trained_model_spec`
rebuilds the spec and `models.verify_model_files` checks the bytes before anything loads them.
A Siamese head goes to ``<root>/<head id>/head.safetensors`` + card + SHA256SUMS and names its base model.
The folder is written under a temporary name and renamed into place: a crash leaves no half model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from faceid.indexer.errors import AlreadyExists, ChecksumMismatch, InvalidRequest
from faceid.indexer.models.download import sha256_file
from faceid.indexer.models.spec import ModelSpec
from faceid.indexer.models.trained import CARD_FILE, HEAD_KIND, read_card, trained_model_spec
from faceid.indexer.training.siamese import SiameseVerifier

MODEL_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
WEIGHTS_FILE = "model-00001-of-00001.safetensors"
INDEX_FILE = "model.safetensors.index.json"
HEAD_FILE = "head.safetensors"
SUMS_FILE = "SHA256SUMS"


def check_model_id(model_id: str) -> str:
    if not MODEL_ID_PATTERN.match(model_id):
        raise InvalidRequest(
            f"model id {model_id!r} must be 1-100 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )
    return model_id


def save_embedding_model(
    network: Any,
    base: ModelSpec,
    model_id: str,
    root: Path,
    *,
    default_threshold: float,
    threshold_source: str,
    training: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write `network` (an InceptionResnetV1 with `base`'s tail) as model `model_id` under `root`; returns the folder.

    The network keeps `base`'s preprocessing, crop size and margin: fine-tuning changed weights, not inputs.
    """
    from safetensors.torch import save_file

    check_model_id(model_id)
    if model_id == base.name:
        raise InvalidRequest(f"a trained model needs a new id, not its base's {base.name!r}")
    # BatchNorm's num_batches_tracked counters are unused in eval mode; the shipped shards leave them out too.
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()
             if not k.endswith("num_batches_tracked")}

    def write(tmp: Path) -> list[str]:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "faceid_model": model_id})
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": {k: WEIGHTS_FILE for k in sorted(state)}}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        files = [_file_entry(tmp / WEIGHTS_FILE), _file_entry(tmp / INDEX_FILE)]
        spec = {
            **{k: v for k, v in asdict(base).items() if k not in ("files", "sdist")},
            "name": model_id,
            "default_threshold": float(default_threshold),
            "threshold_source": threshold_source,
            "weights_format": "safetensors",
            "fetch": "url",  # nothing to fetch: the folder itself is the only copy (see the card's derived_from)
            "source": f"fine-tuned from {base.name} by faceid train triplet",
            "sdist": None,
        }
        card = {
            "name": model_id,
            "kind": "embedding-model",
            "summary": f"{base.name} fine-tuned with triplet loss on the user's labeled photos (faceid train triplet)",
            "derived_from": base.name,
            "embedding_dim": base.dimension,
            "preprocessing": {"name": base.preprocessing},
            "detector": {"image_size": base.image_size, "margin": base.margin},
            "default_threshold": {"tau": float(default_threshold), "how_chosen": threshold_source,
                                  "distance": "Euclidean (L2, not squared) distance between L2-normalised embeddings"},
            "weights": {"format": "safetensors, float32, Hugging Face sharded layout", "index": INDEX_FILE,
                        "files": files},
            "spec": spec,
            "training": training,
        }
        _write_card(tmp, card)
        return [WEIGHTS_FILE, INDEX_FILE]

    return _atomic_folder(Path(root), model_id, overwrite, write)


def save_siamese_head(
    verifier: SiameseVerifier, base_model: str, model_id: str, root: Path, *, training: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write a Siamese head as `<root>/<model_id>/head.safetensors` + card.json + SHA256SUMS; returns the folder."""
    import torch
    from safetensors.torch import save_file

    check_model_id(model_id)

    def write(tmp: Path) -> list[str]:
        tensors = {"weight": torch.from_numpy(np.ascontiguousarray(verifier.weight, dtype=np.float64)),
                   "bias": torch.tensor([verifier.bias], dtype=torch.float64)}
        save_file(tensors, str(tmp / HEAD_FILE), metadata={"faceid_model": model_id})
        card = {
            "name": model_id,
            "kind": "siamese-verifier",
            "summary": "binary verification head on embedding pairs (faceid train siamese)",
            "base_model": base_model,
            "feature": verifier.kind,
            "eps": verifier.eps,
            "formula": ("P(same) = sigmoid(sum_k w_k * phi_k + b); l1: phi_k = |f_ik - f_jk|; chi2: g = (1 + f) / 2, "
                        "phi_k = (g_ik - g_jk)^2 / (g_ik + g_jk + eps)"),
            "embedding_dim": int(verifier.weight.shape[0]),
            "weights": {"format": "safetensors, float64 tensors weight (d,) and bias (1,)",
                        "files": [_file_entry(tmp / HEAD_FILE)]},
            "training": training,
        }
        _write_card(tmp, card)
        return [HEAD_FILE]

    return _atomic_folder(Path(root), model_id, overwrite, write)


def load_siamese_head(folder: Path) -> tuple[SiameseVerifier, str]:
    """(verifier, base model id) from a folder written by `save_siamese_head`, sha256 checked first."""
    from safetensors.numpy import load_file

    card = read_card(folder, HEAD_KIND)
    (entry,) = card["weights"]["files"]
    path = Path(folder) / entry["file"]
    if sha256_file(path) != entry["sha256"]:
        raise ChecksumMismatch(f"sha256 of {path} differs from its card: corrupt or tampered, not loaded")
    tensors = load_file(str(path))
    verifier = SiameseVerifier(card["feature"], tensors["weight"].astype(np.float64), float(tensors["bias"][0]),
                               float(card["eps"]))
    return verifier, str(card["base_model"])


def _file_entry(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _write_card(tmp: Path, card: dict[str, Any]) -> None:
    (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _atomic_folder(root: Path, model_id: str, overwrite: bool, write: Any) -> Path:
    """Run `write(tmp)` in a temporary sibling folder, add SHA256SUMS, then rename it to `root/model_id`."""
    final = root / model_id
    if final.exists() and not overwrite:
        raise AlreadyExists(f"model folder {final} exists; choose another model id or pass overwrite")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{model_id}."))
    try:
        names = write(tmp)
        sums = "".join(f"{sha256_file(tmp / n)}  {n}\n" for n in [*names, CARD_FILE])
        (tmp / SUMS_FILE).write_text(sums, encoding="ascii")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a model folder is read by the server's user too
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=root, prefix=f".{model_id}.old."))
            os.replace(final, old / model_id)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
