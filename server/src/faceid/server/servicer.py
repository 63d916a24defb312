"""faceid.v1.FaceId: each RPC checks the request's shape, makes one engine call and converts the answer.

No status handling here: malformed requests raise faceid.indexer.errors classes like the engine does,
and ErrorMappingInterceptor (status.py) turns every one of them into a status in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING

import grpc
from faceid.indexer import errors
from faceid.indexer.bulk import ordered_map, stream_window
from faceid.server import convert
from faceid.server.auth import current_actor  # the API key's name: the audit log's "who"
from faceid.server.lifecycle import EngineSlot
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from faceid.indexer.engine import FaceEngine

MAX_CLIENT_REF = 4096
TIMING_KEY = "faceid-timing-ms"  # trailing metadata of Identify: "decode=1.2,detect=48.0,..."


def server_version() -> str:
    try:
        return importlib_metadata.version("faceid-server")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


class FaceIdServicer(pb_grpc.FaceIdServicer):
    """Translates faceid.v1 requests to FaceEngine calls; `engine` may be a slot still loading."""

    def __init__(self, engine: FaceEngine | EngineSlot) -> None:
        self._slot = engine if isinstance(engine, EngineSlot) else EngineSlot(engine.model.id, engine)
        self._version = server_version()

    @property
    def _engine(self) -> FaceEngine:
        return self._slot.get()  # raises Unavailable while loading / closing

    # --------------------------------------------------------------------------------- enrolment
    def Enroll(self, request: pb.EnrollRequest, context: grpc.ServicerContext) -> pb.EnrollResponse:
        result = self._engine.enroll(
            request.identity,
            list(request.images),
            metadata=dict(request.metadata),
            policy=convert.policy_from_proto(request.multi_face_policy),
            actor=current_actor(),
        )
        return convert.enroll_response(result)

    def EnrollStream(
        self, request_iterator: Iterator[pb.EnrollStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.EnrollStreamResponse]:
        engine = self._engine
        actor = current_actor()  # read once here (bulk.ordered_map also hands the RPC's context to its workers)

        def enroll_one(request: pb.EnrollStreamRequest) -> pb.EnrollStreamResponse:
            # The engine commits before returning, so each response acknowledges a durable face.
            try:
                if len(request.client_ref) > MAX_CLIENT_REF:
                    raise errors.InvalidRequest(f"client_ref is longer than {MAX_CLIENT_REF} characters")
                result = engine.enroll_image(
                    request.identity or None,
                    request.image,
                    metadata=dict(request.metadata) if request.identity else None,
                    policy=convert.policy_from_proto(request.multi_face_policy),
                    actor=actor,
                )
            except errors.InvalidRequest as exc:  # one bad image does not end the stream
                return pb.EnrollStreamResponse(
                    client_ref=request.client_ref[:MAX_CLIENT_REF],
                    result=convert.image_result(convert.rejected_outcome(0, exc)),
                    identity=request.identity,
                    model=engine.model.id,
                )
            return convert.enroll_stream_response(result, request.client_ref)

        # Several messages in flight at once, so that one stream fills whole detection and embedding batches
        # (faceid.indexer.bulk); answers still leave in the order of the requests.
        yield from ordered_map(enroll_one, request_iterator, window=stream_window(engine.config), name="faceid-stream")

    # ---------------------------------------------------------------------------------- matching
    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext) -> pb.VerifyResponse:
        target = request.WhichOneof("target")
        if target is None:
            raise errors.InvalidRequest("Verify needs a target: set image_b (a second photo) or identity (a name)")
        result = self._engine.verify(
            request.image_a,
            image_b=request.image_b if target == "image_b" else None,
            identity=request.identity if target == "identity" else None,
            threshold=convert.optional_float(request, "threshold"),
        )
        return convert.verify_response(result)

    def Identify(self, request: pb.IdentifyRequest, context: grpc.ServicerContext) -> pb.IdentifyResponse:
        result = self._engine.identify(
            request.image, top_k=request.top_k, threshold=convert.optional_float(request, "threshold")
        )
        if result.timings:  # like HTTP's Server-Timing: where the time went, no request data
            context.set_trailing_metadata(((TIMING_KEY, convert.timing_header(result.timings)),))
        return convert.identify_response(result)

    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        return convert.embed_response(self._engine.embed(request.image, all_faces=request.all_faces))

    # -------------------------------------------------------------------------------- identities
    def GetIdentity(self, request: pb.GetIdentityRequest, context: grpc.ServicerContext) -> pb.Identity:
        name, identity_id = convert.oneof_ref(request, "ref", "GetIdentity")
        return convert.identity(self._engine.get_identity(name=name, identity_id=identity_id))

    def ListIdentities(
        self, request: pb.ListIdentitiesRequest, context: grpc.ServicerContext
    ) -> pb.ListIdentitiesResponse:
        page = self._engine.list_identities(
            page_size=request.page_size, page_token=request.page_token, name_prefix=request.name_prefix
        )
        return convert.identities_response(page)

    def DeleteIdentity(
        self, request: pb.DeleteIdentityRequest, context: grpc.ServicerContext
    ) -> pb.DeleteIdentityResponse:
        name, identity_id = convert.oneof_ref(request, "ref", "DeleteIdentity")
        result = self._engine.delete_identity(name=name, identity_id=identity_id, actor=current_actor())
        return convert.delete_response(result)

    def RenameIdentity(self, request: pb.RenameIdentityRequest, context: grpc.ServicerContext) -> pb.Identity:
        name, identity_id = convert.oneof_ref(request, "ref", "RenameIdentity")
        result = self._engine.rename_identity(
            name=name, identity_id=identity_id, new_name=request.new_name, actor=current_actor()
        )
        return convert.identity(result)

    def GetStats(self, request: pb.GetStatsRequest, context: grpc.ServicerContext) -> pb.Stats:
        return convert.stats(self._engine.stats(), self._version)
