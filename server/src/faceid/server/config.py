"""The server's configuration: one pydantic-settings object, read from FACEID_* env vars and CLI flags.

Built once in `main()` (flags override the environment, which overrides the defaults) and passed down;
the engine receives plain parameters (`Settings.to_engine_config()`). Validators refuse bad values at
start-up with a message naming the setting, so a typo never surfaces as a failure in the first request.

Nested groups are set from the environment with a double underscore, e.g. FACEID_LIMITS__MAX_TOP_K=50,
FACEID_STYLE__ENABLED=false.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from faceid.indexer.config import EngineConfig
from faceid.indexer.runtime import available_cores
from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MODEL_DIR_ENV = "FACEID_MODEL_DIR"  # read by faceid.indexer.models


def _default_workers() -> int:
    # Accelerator work goes through the scheduler's few slots, so most worker threads wait on it or on the network;
    # several per core keep the queue fed (and give later micro-batching something to batch).
    return min(64, max(8, 8 * available_cores()))


def split_host_port(address: str) -> tuple[str, int]:
    """'127.0.0.1:50051' / '[::]:0' / 'localhost:80' -> (host, port); ValueError with the reason otherwise."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:50051 or [::]:50051, got {address!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535 (0 = any free port), got {port}")
    return host, port


class LimitsSettings(BaseModel):
    """What one request may carry (the engine enforces the image limits before decoding)."""

    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="gRPC message size, both ways")
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_faces_per_image: int = Field(64, ge=1)
    min_face_size: int = Field(20, ge=1, description="detection floor: pixels, shorter side of the face box")
    min_enroll_face_size: int = Field(40, ge=1, description="smaller faces are refused at enrolment")
    default_top_k: int = Field(5, ge=1)
    max_top_k: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> LimitsSettings:
        if self.default_top_k > self.max_top_k:
            raise ValueError(f"limits.default_top_k ({self.default_top_k}) exceeds limits.max_top_k ({self.max_top_k})")
        if self.max_image_bytes > self.max_message_bytes:
            raise ValueError(
                f"limits.max_image_bytes ({self.max_image_bytes}) exceeds limits.max_message_bytes "
                f"({self.max_message_bytes}): such images could never arrive; raise the message limit"
            )
        return self


class SchedulerSettings(BaseModel):
    """The accelerator scheduler (faceid.server.scheduler)."""

    torch_threads: int = Field(
        0, ge=0, description="torch threads per accelerator slot for CPU inference; 0 = cores / slots"
    )
    slots: int = Field(
        0, ge=0, le=256,
        description="computations on the accelerator at once; 0 = 1 on a GPU, cores / torch_threads on the CPU "
        "(one 1-thread slot per core when neither is given; faceid.server.scheduler)",
    )
    embed_batch_size: int = Field(32, ge=1)


class StyleSettings(BaseModel):
    """Neural style transfer (background work on the shared accelerator)."""

    enabled: bool = True
    queue_size: int = Field(8, ge=1)
    concurrency: int = Field(1, ge=1)
    max_pixels: int = Field(512 * 512, ge=64 * 64)
    max_steps: int = Field(300, ge=1)


class FollowSettings(BaseModel):
    """How this server's in-memory index follows what OTHER servers on the same database commit.

    Faces enrolled or deleted through another server reach this one's index within poll_s plus two polls'
    work (milliseconds); see faceid.indexer.index_follower and docs/scale-out.md. On by default for every
    database: two servers can share one SQLite file as well as one PostgreSQL. A Milvus backend is shared
    by all servers and ignores this. Env: FACEID_FOLLOW__POLL_S=0.2, FACEID_FOLLOW__ENABLED=false.
    """

    enabled: bool = True
    poll_s: float = Field(0.5, gt=0, le=60, description="seconds between two reads of the change log")
    gap_timeout_s: float = Field(30.0, ge=0, le=3600, description="how long a skipped seq (open transaction) is awaited")
    check_s: float = Field(300.0, ge=1, description="seconds between full consistency checks (index vs store)")
    retention_h: float = Field(24.0, ge=0, description="change log rows older than this are pruned; 0 = keep all")

    @model_validator(mode="after")
    def _consistent(self) -> FollowSettings:
        if self.retention_h and self.retention_h * 3600 <= max(self.gap_timeout_s, self.check_s):
            raise ValueError(
                f"follow.retention_h ({self.retention_h} h) must exceed follow.gap_timeout_s and follow.check_s: "
                "followers still read change log rows that young"
            )
        return self


# --- auth / tls (faceid.server.auth, faceid.server.tls; rules in docs/security.md) -------------------
class AuthSettings(BaseModel):
    """API keys. mode: auto (required beyond loopback; on loopback once a key exists), required, disabled."""

    mode: Literal["auto", "required", "disabled"] = "auto"
    style_scope: Literal["read", "write", "admin"] = Field("write", description="scope StyleTransfer needs")


class TlsSettings(BaseModel):
    """TLS from PEM files; client_ca_file makes it mutual TLS (clients need a certificate it signed)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together: give both (PEM files) or neither")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("tls.client_ca_file (mutual TLS) needs tls.cert_file and tls.key_file as well")
        for name in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).expanduser().is_file():
                raise ValueError(f"tls.{name} {path} is not a file")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class Settings(BaseSettings):
    """Every setting of `faceid-server`; env FACEID_<NAME>, nested FACEID_<GROUP>__<NAME>."""

    model_config = SettingsConfigDict(
        env_prefix="FACEID_",
        env_nested_delimiter="__",
        extra="ignore",  # other FACEID_* variables (FACEID_SERVER for the client, ...) are not ours
        protected_namespaces=(),  # a field named `model` is intended
    )

    listen: str = "127.0.0.1:50051"
    database: str = "sqlite:///faceid.db"
    model: str = "facenet-20170512-128d"
    model_dir: Path | None = Field(None, description="where model folders live (exported as FACEID_MODEL_DIR)")
    allow_model_fetch: bool = True
    device: str = "auto"
    threshold: float | None = Field(None, description="distance threshold; None = calibration or model card")
    verifier_head: str | None = Field(
        None, description="Siamese head id (faceid train siamese) deciding Verify instead of the distance threshold"
    )
    # Reports (`faceid cluster --report`) show faces from these; an operator who must not keep face images
    # beyond the embeddings turns them off. Changes apply to faces enrolled from then on.
    thumbnail_size: int = Field(
        96, ge=0, le=512, description="side in px of the JPEG thumbnail stored with each enrolled face; 0 = none"
    )
    workers: int = Field(default_factory=_default_workers, ge=1, le=1024)
    grace_s: float = Field(10.0, ge=0, description="how long SIGTERM waits for in-flight calls")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port; 0 = off")
    metrics_addr: str = "127.0.0.1"
    # --- vector backend (faceid.indexer.vector_backend; docs/scale-out.md "Milvus")
    vector_backend: Literal["faiss", "milvus"] = Field(
        "faiss", description="faiss: in this process; milvus: a Milvus server at milvus_uri, shared by every server"
    )
    milvus_uri: str = Field("http://127.0.0.1:19530", description="Milvus server, http(s)://HOST:PORT")
    milvus_timeout_s: float = Field(10.0, gt=0, le=300, description="seconds one Milvus call may take")
    index_probe_s: float = Field(2.0, gt=0, le=300, description="seconds between two reachability checks of the index")

    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    style: StyleSettings = Field(default_factory=StyleSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    follow: FollowSettings = Field(default_factory=FollowSettings)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_host_port(value)
        return value

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(
                f"not a database URL: {value!r}; use sqlite:///path/to/faceid.db (three slashes + relative path, "
                "four for an absolute one)"
            ) from None
        return value

    @field_validator("milvus_uri")
    @classmethod
    def _milvus_uri(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise ValueError(f"milvus_uri must be http(s)://HOST:PORT (e.g. http://127.0.0.1:19530), got {value!r}")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and 0.0 < value <= 2.0):
            raise ValueError(
                f"threshold is an L2 distance between unit vectors and must be in (0, 2], got {value}; "
                "leave it unset to use the model card's value"
            )
        return value

    @field_validator("model_dir")
    @classmethod
    def _model_dir(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        if value.exists() and not value.is_dir():
            raise ValueError(f"model_dir {value} exists but is not a directory")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.listen)

    @property
    def database_for_logs(self) -> str:
        """The database URL with any password masked: the only form of it in logs and error messages."""
        from sqlalchemy.engine import make_url

        return make_url(self.database).render_as_string(hide_password=True)

    def export_environment(self) -> None:
        """Make `model_dir` visible to faceid.indexer.models, which reads FACEID_MODEL_DIR."""
        if self.model_dir is not None:
            os.environ[MODEL_DIR_ENV] = str(self.model_dir)

    def to_engine_config(self) -> EngineConfig:
        return EngineConfig(
            database_url=self.database,
            model=self.model,
            device=self.device,
            threshold=self.threshold,
            verifier_head=self.verifier_head,
            allow_model_fetch=self.allow_model_fetch,
            max_image_bytes=self.limits.max_image_bytes,
            max_image_pixels=self.limits.max_image_pixels,
            min_face_size=self.limits.min_face_size,
            min_enroll_face_size=self.limits.min_enroll_face_size,
            max_faces_per_image=self.limits.max_faces_per_image,
            embed_batch_size=self.scheduler.embed_batch_size,
            default_top_k=self.limits.default_top_k,
            max_top_k=self.limits.max_top_k,
            thumbnail_size=self.thumbnail_size,
            vector_backend=self.vector_backend,
            milvus_uri=self.milvus_uri,
            milvus_timeout_s=self.milvus_timeout_s,
            follow_changes=self.follow.enabled,
            follow_poll_s=self.follow.poll_s,
            follow_gap_timeout_s=self.follow.gap_timeout_s,
            follow_check_s=self.follow.check_s,
            change_log_retention_s=self.follow.retention_h * 3600,
        )
