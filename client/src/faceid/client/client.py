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
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from faceid.client import cluster_types as ct
from faceid.client import types as t
from faceid.client.errors import FaceIdError, Unavailable, from_rpc_error
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import clustering_pb2 as cpb
from faceid.v1 import clustering_pb2_grpc as cpb_grpc
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


def open_channel(target: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    """A channel to `target` with the server's message-size limits; TLS when `credentials` are given."""
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)


def tls_credentials(
    ca_file: str | os.PathLike[str] | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials from PEM files.

    ca_file: the CA bundle that signed the server's certificate (None: the system's trusted roots).
    cert_file, key_file: this client's certificate chain and private key, for a server that requires
        mutual TLS; give both or neither. FileNotFoundError names the unreadable file; ValueError says
        what is missing or not PEM.
    """
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate and its private key go together: give both (mutual TLS) or neither")

    def pem(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
        if path is None:
            return None
        try:
            data = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise FileNotFoundError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
        if b"-----BEGIN " not in data:
            raise ValueError(f"the {what} {path} is not a PEM file (expected a '-----BEGIN ...' block)")
        return data

    return grpc.ssl_channel_credentials(
        root_certificates=pem(ca_file, "TLS CA file"),
        private_key=pem(key_file, "TLS client key"),
        certificate_chain=pem(cert_file, "TLS client certificate"),
    )


def _ref(image: ImageSource, position: int) -> str:
    return str(image) if not isinstance(image, bytes | bytearray | memoryview) else f"#{position}"


class FaceIdClient:
    """A connection to a faceid server. Thread-safe; close it (or use `with`) when done.

    target: HOST:PORT (default: $FACEID_SERVER, else 127.0.0.1:50051).
    timeout: seconds per call (None = no deadline); streaming enrolment has no deadline by default.
    api_key: sent as `x-api-key` metadata with every call, streams included (see docs/security.md).
    credentials: TLS for the channel, e.g. `tls_credentials(ca_file, cert_file, key_file)`; None = plaintext.
    metadata: further metadata sent with every call.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = target or default_target()
        self.timeout = timeout
        self._metadata = (*(metadata or ()), *((("x-api-key", api_key),) if api_key else ()))
        self._channel = channel or open_channel(self.target, credentials)
        self._stub = pb_grpc.FaceIdStub(self._channel)
        self._clustering = cpb_grpc.ClusteringStub(self._channel)

    def __repr__(self) -> str:  # never the metadata: it holds the API key
        return f"FaceIdClient({self.target!r}, timeout={self.timeout})"

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
        window: int = 0,
    ) -> Iterator[t.StreamEnrollResult]:
        """Bulk enrolment of (identity, image) pairs; identity None or "" stores the faces unlabeled.

        Yields one result per item, in order, each after the server committed it. Files are read lazily,
        so a long list never sits in memory. `client_ref` of each result is the path (or "#position").
        window: at most this many images sent and not yet answered (0 = as many as gRPC's flow control
        lets through); bounds the client's memory and how much a stop leaves unanswered.
        """
        slots = threading.Semaphore(window) if window > 0 else None
        done = threading.Event()

        def requests() -> Iterator[pb.EnrollStreamRequest]:
            for position, (identity, image) in enumerate(items):
                # Wait for a free slot BEFORE reading the next file: only `window` images are ever held.
                while slots is not None and not slots.acquire(timeout=0.2):
                    if done.is_set():
                        return
                if done.is_set():
                    return
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
                if slots is not None:
                    slots.release()
                yield t.StreamEnrollResult.from_proto(response)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            done.set()
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

    def rename_identity(self, name: str | None = None, *, new_name: str, id: int | None = None) -> t.Identity:
        """Give an identity (by name or id) a new name; its faces stay. AlreadyExists if the name is taken."""
        request = _ref_request(pb.RenameIdentityRequest, name, id)
        request.new_name = new_name
        return t.Identity.from_proto(self._call(self._stub.RenameIdentity, request))

    def stats(self, *, timeout: float | None = None) -> t.Stats:
        return t.Stats.from_proto(self._call(self._stub.GetStats, pb.GetStatsRequest(), timeout))

    # --------------------------------------------------------------------------------- clustering
    def cluster(
        self,
        k: int | None = None,
        *,
        auto: tuple[int, int] | None = None,
        scope: ct.ClusterScope = ct.ClusterScope.ALL,
        identities: Sequence[str] = (),
        seed: int = 0,
        niter: int = 0,
        thumbnails: bool = False,
        progress: Callable[[ct.ClusterProgress], None] | None = None,
        timeout: float | None = None,
    ) -> ct.ClusterRun:
        """Cluster the stored faces into k clusters, or into the best K of auto = (min_k, max_k).

        scope: every face, the unlabeled ones, or those of `identities` (scope IDENTITIES). niter 0 = the
        server's default (20). thumbnails: also fetch the stored face thumbnails (for reports).
        progress: called with each progress event. timeout: seconds for the whole run (None = no deadline).
        Needs an admin key when the server checks keys.
        """
        if (k is None) == (auto is None):
            raise ValueError("give exactly one of k or auto=(min_k, max_k)")
        request = cpb.ClusterRequest(
            scope=scope.to_proto(), identities=list(identities), seed=seed, niter=niter, include_thumbnails=thumbnails
        )
        if k is not None:
            request.k = k
        else:
            assert auto is not None
            request.auto_k.min_k, request.auto_k.max_k = auto
        events = self._clustering.Cluster(request, timeout=timeout, metadata=self._metadata)
        thumbs: dict[int, bytes] = {}
        try:
            for event in events:
                kind = event.WhichOneof("event")
                if kind == "progress" and progress is not None:
                    progress(ct.ClusterProgress.from_proto(event.progress))
                elif kind == "thumbnails":
                    thumbs.update((th.face_id, th.jpeg) for th in event.thumbnails.thumbnails)
                elif kind == "result":
                    return ct.ClusterRun(ct.ClusterResult.from_proto(event.result), thumbs)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            events.cancel()  # no-op when complete; stops the server's job if the caller gave up
        raise FaceIdError("the server ended the Cluster stream without a result", grpc.StatusCode.INTERNAL)

    def name_faces(self, name: str, face_ids: Iterable[int], *, timeout: float | None = None) -> ct.NamedFaces:
        """Give faces (e.g. unlabeled ones) the identity `name`, created if new."""
        request = cpb.NameFacesRequest(name=name, faces=cpb.FaceIdList(face_ids=list(face_ids)))
        return ct.NamedFaces.from_proto(self._call(self._clustering.NameFaces, request, timeout))

    def name_cluster(
        self, name: str, cluster: int, *, run_id: str = "", unlabeled_only: bool = False, timeout: float | None = None
    ) -> ct.NamedFaces:
        """Name every face of one cluster of a clustering run (run_id "" = the server's latest run);
        unlabeled_only leaves faces that already had an identity with it."""
        request = cpb.NameFacesRequest(
            name=name, cluster=cpb.ClusterRef(run_id=run_id, cluster=cluster), unlabeled_only=unlabeled_only
        )
        return ct.NamedFaces.from_proto(self._call(self._clustering.NameFaces, request, timeout))

    def merge_identities(self, source: str, target: str, *, timeout: float | None = None) -> ct.MergeResult:
        """Move every face of `source` to `target` and delete `source`."""
        request = cpb.MergeIdentitiesRequest(source=source, target=target)
        return ct.MergeResult.from_proto(self._call(self._clustering.MergeIdentities, request, timeout))


def _ref_request(cls: type[T], name: str | None, identity_id: int | None) -> T:
    if (name is None) == (identity_id is None):
        raise ValueError("give exactly one of name or id")
    return cls(name=name) if name is not None else cls(id=identity_id)  # type: ignore[call-arg]
