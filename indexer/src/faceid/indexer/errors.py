"""Every exception the engine raises on purpose, in one place.

The server maps these classes to gRPC status codes in one table (faceid.server.status); anything else
is a server fault (INTERNAL + a log line). Messages are written for the person who reads them: they say
what was wrong and what to do about it, and never contain secrets or stack traces.
"""

from __future__ import annotations


class FaceIdError(Exception):
    """Base class of the engine's deliberate errors."""


# --- the request is wrong (INVALID_ARGUMENT) --------------------------------------------------------
class InvalidRequest(FaceIdError):
    """A request field is out of range or malformed (top_k, threshold, names, metadata, page tokens)."""


class InvalidImage(InvalidRequest):
    """Empty bytes, not an image, an unsupported format, a truncated file."""


class ImageTooLarge(InvalidRequest):
    """More bytes or pixels than the configured limits (decompression bombs land here, before decoding)."""


class NoFaceFound(InvalidRequest):
    """The photo has no face the detector accepts."""


class FaceTooSmall(InvalidRequest):
    """A face was found but it is smaller than the configured minimum size."""


class MultipleFaces(InvalidRequest):
    """An enrolment photo of a named person shows several faces under the REJECT policy."""


# --- something named does not exist (NOT_FOUND) ------------------------------------------------------
class NotFound(FaceIdError):
    """Base of the NOT_FOUND family."""


class UnknownIdentity(NotFound):
    """No identity with that name or id."""


class UnknownFace(NotFound):
    """No face with that id."""


class UnknownModel(NotFound):
    """A model id that is not in the registry (the message lists the known ones)."""


# --- already exists (ALREADY_EXISTS) -----------------------------------------------------------------
class AlreadyExists(FaceIdError):
    """A rename or merge would give two identities the same name."""


# --- state does not allow it (FAILED_PRECONDITION) -----------------------------------------------------
class FailedPrecondition(FaceIdError):
    """The request is valid but the server's state does not allow it."""


class EmptyGallery(FailedPrecondition):
    """Identify or cluster with nothing enrolled for the active model."""


class ModelMissing(FailedPrecondition):
    """A model's weights are in none of the search places and could not be fetched (names the fetch command)."""


class ChecksumMismatch(FailedPrecondition):
    """A weights file's sha256 differs from the registry's: corrupt or tampered, never loaded."""


class IndexInconsistent(FailedPrecondition):
    """The vector index does not match the store (count or checksum) and could not be rebuilt."""


# --- try later (RESOURCE_EXHAUSTED / UNAVAILABLE) ----------------------------------------------------
class QueueFull(FaceIdError):
    """A bounded queue is full; `retry_after_s` hints when to retry."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(FaceIdError):
    """Starting, loading or shutting down; the same request will work later."""


# --- the caller has gone (CANCELLED / DEADLINE_EXCEEDED) ----------------------------------------------
class Cancelled(FaceIdError):
    """The call was cancelled by its client: its work stopped before the next stage (cancellation.py)."""


class DeadlineExceeded(Cancelled):
    """The call's deadline passed: its work stopped before the next stage, nothing was committed after it."""
