"""`FaceIdClient`: the faceid.v1 API as typed Python calls.

    from faceid.client import FaceIdClient

    with FaceIdClient("127.0.0.1:50051") as faceid:
        faceid.enroll("ada", "ada1.jpg", "ada2.jpg")
        print(faceid.identify("group.jpg").identities)   # ['ada', None]

Images are file paths or the file's bytes (JPEG, PNG, WebP), read here and sent as uploaded. Failed
calls raise `faceid.client.errors.FaceIdError` subclasses (`InvalidArgument`, `NotFound`, ...).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from faceid.client import types as t
from faceid.client.errors import FaceIdError, Unavailable, from_rpc_error
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc

SERVER_ENV = "FACEID_SERVER"
DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 60.0
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # the server's default limit

ImageSource = str | os.PathLike[str] | bytes
T = TypeVar("T")


def default_target() -> str:
    return os.environ.get(SERVER_ENV) or DEFAULT_SERVER


def read_image(image: ImageSource) -> bytes:
    """The bytes to upload: `image` itself, or the contents of the file it names."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    path = Path(image)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read image {path}: {exc.strerror or exc}") from exc


def _ref(image: ImageSource, position: int) -> str:
    return str(image) if not isinstance(image, bytes | bytearray | memoryview) else f"#{position}"


class FaceIdClient:
    """A connection to a faceid server. Thread-safe; close it (or use `with`) when done.

    target: HOST:PORT (default: $FACEID_SERVER, else 127.0.0.1:50051).
    timeout: seconds per call (None = no deadline); streaming enrolment has no deadline by default.
    metadata: sent with every call, e.g. (("x-api-key", key),).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        metadata: Sequence[tuple[str, str]] | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = target or default_target()
        self.timeout = timeout
        self._metadata = tuple(metadata or ())
        self._channel = channel or grpc.insecure_channel(
            self.target,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._stub = pb_grpc.FaceIdStub(self._channel)

    # ----------------------------------------------------------------------------------- plumbing
    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> FaceIdClient:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    def wait_ready(self, timeout: float = 30.0) -> t.Stats:
        """Wait until the server answers (it reports UNAVAILABLE while loading its model); returns its stats."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.stats(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            except FaceIdError as exc:
                retryable = isinstance(exc, Unavailable) or exc.code == grpc.StatusCode.DEADLINE_EXCEEDED
                if not retryable or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    # ---------------------------------------------------------------------------------- enrolment
    def enroll(
        self,
        identity: str,
        *images: ImageSource,
        metadata: Mapping[str, str] | None = None,
        policy: t.MultiFacePolicy = t.MultiFacePolicy.REJECT,
        timeout: float | None = None,
    ) -> t.EnrollResult:
        """Add photos of one person (created on first use). One result per image, in order."""
        request = pb.EnrollRequest(
            identity=identity,
            images=[read_image(i) for i in images],
            metadata=dict(metadata or {}),
            multi_face_policy=policy.to_proto(),
        )
        return t.EnrollResult.from_proto(self._call(self._stub.Enroll, request, timeout))

    def enroll_stream(
        self,
        items: Iterable[tuple[str | None, ImageSource]],
        *,
        metadata: Mapping[str, str] | None = None,
        policy: t.MultiFacePolicy = t.MultiFacePolicy.REJECT,
        timeout: float | None = None,
    ) -> Iterator[t.StreamEnrollResult]:
        """Bulk enrolment of (identity, image) pairs; identity None or "" stores the faces unlabeled.

        Yields one result per item, in order, each after the server committed it. Files are read lazily,
        so a long list never sits in memory. `client_ref` of each result is the path (or "#position").
        """

        def requests() -> Iterator[pb.EnrollStreamRequest]:
            for position, (identity, image) in enumerate(items):
                yield pb.EnrollStreamRequest(
                    identity=identity or "",
                    image=read_image(image),
                    metadata=dict(metadata or {}) if identity else {},
                    multi_face_policy=policy.to_proto(),
                    client_ref=_ref(image, position),
                )

        responses = self._stub.EnrollStream(requests(), timeout=timeout, metadata=self._metadata)
        try:
            for response in responses:
                yield t.StreamEnrollResult.from_proto(response)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            responses.cancel()  # no-op when complete; stops the upload if the caller stops iterating

    # ----------------------------------------------------------------------------------- matching
    def verify(
        self,
        image_a: ImageSource,
        image_b: ImageSource | None = None,
        *,
        identity: str | None = None,
        threshold: float | None = None,
        timeout: float | None = None,
    ) -> t.VerifyResult:
        """Is the face in image_a the same person as in image_b, or as the enrolled `identity`?"""
        if (image_b is None) == (identity is None):
            raise ValueError("give exactly one of image_b or identity")
        request = pb.VerifyRequest(image_a=read_image(image_a))
        if image_b is not None:
            request.image_b = read_image(image_b)
        else:
            request.identity = identity  # type: ignore[assignment]
        if threshold is not None:
            request.threshold = threshold
        return t.VerifyResult.from_proto(self._call(self._stub.Verify, request, timeout))

    def identify(
        self, image: ImageSource, *, top_k: int = 0, threshold: float | None = None, timeout: float | None = None
    ) -> t.IdentifyResult:
        """Who is each face in the photo? top_k = candidates per face (0 = server default, 5)."""
        request = pb.IdentifyRequest(image=read_image(image), top_k=top_k)
        if threshold is not None:
            request.threshold = threshold
        return t.IdentifyResult.from_proto(self._call(self._stub.Identify, request, timeout))

    def embed(self, image: ImageSource, *, all_faces: bool = False, timeout: float | None = None) -> t.EmbedResult:
        request = pb.EmbedRequest(image=read_image(image), all_faces=all_faces)
        return t.EmbedResult.from_proto(self._call(self._stub.Embed, request, timeout))

    # --------------------------------------------------------------------------------- identities
    def get_identity(self, name: str | None = None, *, id: int | None = None) -> t.Identity:
        """One identity with its faces, by name or id."""
        return t.Identity.from_proto(self._call(self._stub.GetIdentity, _ref_request(pb.GetIdentityRequest, name, id)))

    def list_identities(self, *, prefix: str = "", page_size: int = 0) -> Iterator[t.IdentityPage]:
        """Pages of identities ordered by name (page_size 0 = the server's default, 100)."""
        token = ""
        while True:
            request = pb.ListIdentitiesRequest(page_size=page_size, page_token=token, name_prefix=prefix)
            page = t.IdentityPage.from_proto(self._call(self._stub.ListIdentities, request))
            yield page
            token = page.next_page_token
            if not token:
                return

    def identities(self, *, prefix: str = "") -> list[t.Identity]:
        """Every identity (whose name starts with prefix), all pages."""
        return [identity for page in self.list_identities(prefix=prefix) for identity in page.identities]

    def delete_identity(self, name: str | None = None, *, id: int | None = None) -> t.DeleteResult:
        """Erase an identity, its faces and vectors."""
        request = _ref_request(pb.DeleteIdentityRequest, name, id)
        return t.DeleteResult.from_proto(self._call(self._stub.DeleteIdentity, request))

    def stats(self, *, timeout: float | None = None) -> t.Stats:
        return t.Stats.from_proto(self._call(self._stub.GetStats, pb.GetStatsRequest(), timeout))


def _ref_request(cls: type[T], name: str | None, identity_id: int | None) -> T:
    if (name is None) == (identity_id is None):
        raise ValueError("give exactly one of name or id")
    return cls(name=name) if name is not None else cls(id=identity_id)  # type: ignore[call-arg]
