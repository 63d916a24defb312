"""Plain parameters of the engine (the server builds them from its pydantic settings)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class AcceleratorRunner(Protocol):
    """Runs accelerator work; the server passes its priority scheduler, tools run it directly.

    `kind` is "interactive" (verify/identify/embed, unary enrol: a caller waits), "bulk" (streamed
    enrolment) or "bulk-exclusive" (clustering: bulk work that spreads over every core by itself, so it
    takes the whole accelerator rather than one of its slots).
    """

    def __call__(self, kind: str, fn: Callable[..., Any], /, *args: Any) -> Any: ...


def run_directly(kind: str, fn: Callable[..., Any], /, *args: Any) -> Any:
    return fn(*args)


@dataclass(frozen=True)
class EngineConfig:
    database_url: str = "sqlite:///faceid.db"
    model: str = "facenet-20170512-128d"
    device: str = "auto"  # "auto" = cuda when available, else cpu
    threshold: float | None = None  # None = calibration if stored, else the model card's tau
    # A Siamese head id (`faceid train siamese`) for the served model: Verify's match and probability come from it
    # unless a request gives a threshold (see verifier_head.py). None = the distance decides.
    verifier_head: str | None = None
    allow_model_fetch: bool = True
    # image limits (decompression bombs are refused from the header, before decoding)
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    # detection
    min_face_size: int = 20  # detection floor, pixels of the original image (MTCNN's own default)
    # Enrolment is a quality gate: a gallery face smaller than this is refused (FACE_TOO_SMALL), since a
    # blurry, upscaled reference face hurts every later match. Queries may be smaller (min_face_size).
    min_enroll_face_size: int = 40
    min_face_probability: float = 0.95
    # Detect on a copy no larger than this, crop from the original: every face of shared/data is still found
    # and large photos detect about 2x faster (bench/detection_throughput.py). None: full resolution.
    detect_max_side: int | None = 640
    max_faces_per_image: int = 64
    detect_batch_size: int = 16  # photos per detection batch (concurrent requests are batched together)
    # embedding
    embed_batch_size: int = 32
    # Worker threads per micro-batcher: the server sets it to its accelerator slots (server/scheduler.py),
    # so that as many batches as there are slots can run at once. 1 for tools running the engine directly.
    batch_workers: int = 1
    # identify
    default_top_k: int = 5
    max_top_k: int = 100
    # thumbnails of stored faces (for reports); 0 disables them
    thumbnail_size: int = 96
    # where the vectors live (vector_backend.py): "faiss" in this process, or "milvus" on a Milvus server
    # (one collection per model id) at milvus_uri; calls to it time out after milvus_timeout_s
    vector_backend: str = "faiss"
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_timeout_s: float = 10.0
    # An in-process index follows the database's face change log, so that faces enrolled or deleted through
    # OTHER servers on the same database reach this one's index within follow_poll_s (+ a poll's work); see
    # index_follower.py. On for every database (two servers can share one SQLite file too); a shared vector
    # backend (Milvus) needs no following and ignores it.
    follow_changes: bool = True
    follow_poll_s: float = 0.5
    follow_gap_timeout_s: float = 30.0  # how long a skipped seq (a transaction still open) is awaited
    follow_check_s: float = 300.0  # full consistency check (index vs store, one snapshot) this often
    change_log_retention_s: float = 86_400.0  # log rows older than this are pruned at each check (0 = keep)
    extra: dict[str, Any] = field(default_factory=dict)
