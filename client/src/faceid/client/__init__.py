"""faceid.client: a typed Python client for the faceid gRPC service, and the `faceid` CLI.

Depends only on grpcio, protobuf and the generated faceid.v1 code (no torch, faiss or numpy).
"""

from faceid.client.client import DEFAULT_SERVER, SERVER_ENV, FaceIdClient, ImageSource
from faceid.client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FaceIdError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from faceid.client.types import (
    Candidate,
    EnrollResult,
    IdentifiedFace,
    IdentifyResult,
    Identity,
    ImageStatus,
    MultiFacePolicy,
    Stats,
    VerifyResult,
)

__all__ = [
    "DEFAULT_SERVER",
    "SERVER_ENV",
    "AlreadyExists",
    "Candidate",
    "DeadlineExceeded",
    "EnrollResult",
    "FaceIdClient",
    "FaceIdError",
    "FailedPrecondition",
    "IdentifiedFace",
    "IdentifyResult",
    "Identity",
    "ImageSource",
    "ImageStatus",
    "Internal",
    "InvalidArgument",
    "MultiFacePolicy",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Stats",
    "Unauthenticated",
    "Unavailable",
    "VerifyResult",
]
