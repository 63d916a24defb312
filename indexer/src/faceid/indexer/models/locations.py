"""Where model folders are looked for, and checking that a folder holds the registered bytes.

Search order: every entry of FACEID_MODEL_DIR (os.pathsep separated), then the per-user cache
(`platformdirs.user_cache_dir("faceid")/models`, or `$FACEID_CACHE_DIR/models`). A model lives in
`<dir>/<model name>/` with the file names of its `ModelSpec`.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from pathlib import Path

import platformdirs

from faceid.indexer.errors import ChecksumMismatch, ModelMissing
from faceid.indexer.models.download import sha256_file
from faceid.indexer.models.spec import ModelSpec, WeightFile

log = logging.getLogger(__name__)

MODEL_DIR_ENV = "FACEID_MODEL_DIR"
CACHE_DIR_ENV = "FACEID_CACHE_DIR"
SIDECAR_SUFFIX = ".sha256"


def cache_dir() -> Path:
    """The per-user cache root (`FACEID_CACHE_DIR` overrides platformdirs' user cache dir)."""
    override = os.environ.get(CACHE_DIR_ENV)
    return Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("faceid"))


def model_cache_dir() -> Path:
    """Where fetched and converted models are written: `<cache_dir()>/models`."""
    return cache_dir() / "models"


def model_search_dirs() -> list[Path]:
    """Folders searched for models, in order: FACEID_MODEL_DIR entries, then the per-user cache."""
    entries = [e for e in os.environ.get(MODEL_DIR_ENV, "").split(os.pathsep) if e.strip()]
    dirs = [Path(e).expanduser() for e in entries]
    cached = model_cache_dir()
    return dirs if cached in dirs else [*dirs, cached]


def find_model(name: str, *, spec: ModelSpec | None = None) -> Path | None:
    """The first `<dir>/<name>/` of `model_search_dirs()` holding every file of the model, else None.

    Presence only (cheap, no hashing): a folder with the right names but wrong bytes is found here and
    rejected by `verify_model_files`, rather than silently skipped for another copy.
    """
    if spec is None:
        from faceid.indexer.models.spec import get_model_spec

        spec = get_model_spec(name)
    for root in model_search_dirs():
        folder = root / name
        if all((folder / f.name).is_file() for f in spec.files):
            return folder
    return None


def verify_model_files(spec: ModelSpec, path: Path) -> None:
    """Check every file of `spec` in `path`: present, size as registered, sha256 as registered.

    Files without a registered sha256 are checked against their `<file>.sha256` sidecar, written when
    the file was downloaded; with no sidecar either, the file is trusted on first use and a sidecar is
    written (when the folder is writable) so that later changes are caught. Hashes are memoised per
    process by (path, size, mtime, inode): a restart rehashes (~0.1-0.3 s for 90 MB), a second
    verification in the same process does not.
    """
    path = Path(path)
    for wf in spec.files:
        file = path / wf.name
        try:
            stat = file.stat()
        except FileNotFoundError:
            raise ModelMissing(f"model {spec.name!r} in {path} lacks {wf.name}") from None
        if wf.size is not None and stat.st_size != wf.size:
            raise ChecksumMismatch(
                f"{file} has {stat.st_size} bytes, the registry says {wf.size}: corrupt or truncated, not loaded; "
                f"delete it and run `faceid-server models fetch {spec.name}`"
            )
        expected = wf.sha256 or _read_sidecar(file)
        actual = _memo_sha256(str(file.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if expected is None:
            log.warning("no published sha256 for %s: trusting it on first use (sha256 %s)", file, actual)
            _write_sidecar(file, actual)
        elif actual != expected:
            raise ChecksumMismatch(
                f"sha256 of {file} is {actual}, expected {expected}: corrupt or tampered, not loaded; "
                f"delete it and run `faceid-server models fetch {spec.name}`"
            )


def weight_file_sidecar(file: Path) -> Path:
    """The sidecar holding the trusted-on-first-use sha256 of a file without a registered checksum."""
    return file.with_name(file.name + SIDECAR_SUFFIX)


def _read_sidecar(file: Path) -> str | None:
    sidecar = weight_file_sidecar(file)
    try:
        text = sidecar.read_text(encoding="ascii").split()
    except FileNotFoundError:
        return None
    return text[0] if text else None


def _write_sidecar(file: Path, sha256: str) -> None:
    """Record a computed checksum beside the file (atomic); a read-only folder only loses the record."""
    sidecar = weight_file_sidecar(file)
    try:
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{sidecar.name}.")
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(f"{sha256}  {file.name}\n")  # sha256sum format, so `sha256sum -c` can check it too
        os.replace(tmp, sidecar)
    except OSError as exc:
        log.warning("could not record the sha256 of %s in %s: %s", file, sidecar, exc)


def record_downloaded(file: Path, wf: WeightFile, sha256: str) -> None:
    """After a download of a file without a registered checksum, keep what we got as its sidecar."""
    if wf.sha256 is None:
        _write_sidecar(file, sha256)


@functools.lru_cache(maxsize=64)
def _memo_sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    # size/mtime/inode are part of the key only, so that a replaced or rewritten file is hashed again.
    return sha256_file(Path(path))
