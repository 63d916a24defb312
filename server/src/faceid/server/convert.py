"""Engine results ↔ faceid.v1 messages. Pure functions, no engine calls, no validation of business rules."""

from __future__ import annotations

from datetime import UTC, datetime

from faceid.indexer import errors
from faceid.indexer import results as r
from faceid.v1 import faceid_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

# ------------------------------------------------------------------------------------------- requests

_POLICIES = {
    pb.MULTI_FACE_POLICY_UNSPECIFIED: r.MultiFacePolicy.REJECT,  # the documented default
    pb.MULTI_FACE_POLICY_REJECT: r.MultiFacePolicy.REJECT,
    pb.MULTI_FACE_POLICY_LARGEST: r.MultiFacePolicy.LARGEST,
}


def policy_from_proto(value: int) -> r.MultiFacePolicy:
    try:
        return _POLICIES[value]
    except KeyError:
        raise errors.InvalidRequest(
            f"unknown multi_face_policy {value}; use MULTI_FACE_POLICY_REJECT or MULTI_FACE_POLICY_LARGEST"
        ) from None


def optional_float(message: object, field: str) -> float | None:
    """A proto3 `optional` scalar: None when absent (so that absent differs from 0)."""
    return getattr(message, field) if message.HasField(field) else None  # type: ignore[attr-defined]


def oneof_ref(message: object, group: str, what: str) -> tuple[str | None, int | None]:
    """(name, id) of a `oneof ref { string name; int64 id; }`, exactly one set; InvalidRequest otherwise."""
    which = message.WhichOneof(group)  # type: ignore[attr-defined]
    if which == "name":
        return message.name, None  # type: ignore[attr-defined]
    if which == "id":
        return None, message.id  # type: ignore[attr-defined]
    raise errors.InvalidRequest(f"{what}: set `name` or `id` to say which identity")


# -------------------------------------------------------------------------------------------- results

_IMAGE_STATUS = {
    r.ImageStatus.STORED: pb.IMAGE_STATUS_STORED,
    r.ImageStatus.DUPLICATE: pb.IMAGE_STATUS_DUPLICATE,
    r.ImageStatus.NO_FACE: pb.IMAGE_STATUS_NO_FACE,
    r.ImageStatus.MULTIPLE_FACES: pb.IMAGE_STATUS_MULTIPLE_FACES,
    r.ImageStatus.FACE_TOO_SMALL: pb.IMAGE_STATUS_FACE_TOO_SMALL,
    r.ImageStatus.UNREADABLE: pb.IMAGE_STATUS_UNREADABLE,
    r.ImageStatus.TOO_LARGE: pb.IMAGE_STATUS_TOO_LARGE,
    r.ImageStatus.INVALID: pb.IMAGE_STATUS_INVALID,
}

# A per-image rejection in a stream is reported in the response, not as the stream's status.
_REJECTION_STATUS: tuple[tuple[type[errors.InvalidRequest], r.ImageStatus], ...] = (
    (errors.InvalidImage, r.ImageStatus.UNREADABLE),
    (errors.ImageTooLarge, r.ImageStatus.TOO_LARGE),
    (errors.NoFaceFound, r.ImageStatus.NO_FACE),
    (errors.FaceTooSmall, r.ImageStatus.FACE_TOO_SMALL),
    (errors.MultipleFaces, r.ImageStatus.MULTIPLE_FACES),
    (errors.InvalidRequest, r.ImageStatus.INVALID),
)


def rejected_outcome(index: int, exc: errors.InvalidRequest) -> r.ImageOutcome:
    status = next(s for cls, s in _REJECTION_STATUS if isinstance(exc, cls))
    return r.ImageOutcome(index=index, status=status, message=str(exc))


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite returns naive datetimes; the store writes UTC
        value = value.replace(tzinfo=UTC)
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def box(value: r.BoxTuple) -> pb.BoundingBox:
    x1, y1, x2, y2 = value
    return pb.BoundingBox(x1=x1, y1=y1, x2=x2, y2=y2)


def detected_face(face: r.DetectedFace) -> pb.DetectedFace:
    return pb.DetectedFace(
        box=box(face.box),
        probability=face.probability,
        landmarks=[pb.Point(x=x, y=y) for x, y in face.landmarks],
    )


def image_result(outcome: r.ImageOutcome) -> pb.ImageResult:
    return pb.ImageResult(
        index=outcome.index,
        status=_IMAGE_STATUS[outcome.status],
        message=outcome.message,
        image_sha256=outcome.image_sha256,
        face_id=outcome.face_id or 0,
        faces=[detected_face(f) for f in outcome.faces],
        faces_stored=len(outcome.face_ids) if outcome.status is r.ImageStatus.STORED else 0,
        face_ids=list(outcome.face_ids),
    )


def enroll_response(result: r.EnrollResult) -> pb.EnrollResponse:
    return pb.EnrollResponse(
        identity_id=result.identity_id,
        identity=result.identity,
        results=[image_result(o) for o in result.outcomes],
        faces_on_record=result.faces_on_record,
        model=result.model,
        created=result.created,
    )


def enroll_stream_response(result: r.StreamEnrollResult, client_ref: str) -> pb.EnrollStreamResponse:
    return pb.EnrollStreamResponse(
        client_ref=client_ref,
        result=image_result(result.outcome),
        identity_id=result.identity_id or 0,
        identity=result.identity or "",
        model=result.model,
    )


def verify_response(result: r.VerifyResult) -> pb.VerifyResponse:
    response = pb.VerifyResponse(
        match=result.match,
        distance=result.distance,
        similarity=result.similarity,
        threshold=result.threshold,
        model=result.model,
        face_a=detected_face(result.face_a),
        faces_in_image_a=result.faces_in_a,
        faces_in_image_b=result.faces_in_b,
        matched_face_id=result.matched_face_id or 0,
        identity=result.identity or "",
        decided_by=result.decided_by,
    )
    if result.face_b is not None:
        response.face_b.CopyFrom(detected_face(result.face_b))
    if result.probability is not None:
        response.probability = result.probability
    return response


def candidate(value: r.Candidate) -> pb.Candidate:
    message = pb.Candidate(
        identity=value.identity,
        identity_id=value.identity_id,
        distance=value.distance,
        similarity=value.similarity,
        face_id=value.face_id,
    )
    if value.probability is not None:
        message.probability = value.probability
    return message


def identified_face(value: r.IdentifiedFace) -> pb.IdentifiedFace:
    message = pb.IdentifiedFace(
        face=detected_face(value.face),
        unknown=value.unknown,
        identity=value.identity or "",
        identity_id=value.identity_id or 0,
        distance=value.distance,
        similarity=value.similarity,
        candidates=[candidate(c) for c in value.candidates],
    )
    if value.probability is not None:
        message.probability = value.probability
    return message


def timing_header(timings: dict[str, float]) -> str:
    """{"detect": 0.0481, ...} seconds -> "detect=48.10,..." milliseconds (a metadata value)."""
    return ",".join(f"{stage}={seconds * 1e3:.2f}" for stage, seconds in timings.items())


def identify_response(result: r.IdentifyResult) -> pb.IdentifyResponse:
    return pb.IdentifyResponse(
        faces=[identified_face(f) for f in result.faces],
        model=result.model,
        threshold=result.threshold,
        gallery_faces=result.gallery_faces,
    )


def embed_response(result: r.EmbedResult) -> pb.EmbedResponse:
    return pb.EmbedResponse(
        faces=[pb.EmbeddedFace(face=detected_face(f.face), embedding=f.embedding.tolist()) for f in result.faces],
        model=result.model,
        dimension=result.dimension,
    )


def face_record(face: r.FaceInfo) -> pb.FaceRecord:
    return pb.FaceRecord(
        id=face.id,
        model=face.model,
        image_sha256=face.image_sha256,
        box=box(face.box),
        detection_probability=face.probability,
        created_at=timestamp(face.created_at),
        identity_id=face.identity_id or 0,
    )


def identity(info: r.IdentityInfo) -> pb.Identity:
    return pb.Identity(
        id=info.id,
        name=info.name,
        metadata=info.metadata,
        face_count=info.face_count,
        created_at=timestamp(info.created_at),
        updated_at=timestamp(info.updated_at),
        faces=[face_record(f) for f in info.faces],
    )


def identities_response(page: r.IdentityPage) -> pb.ListIdentitiesResponse:
    return pb.ListIdentitiesResponse(
        identities=[identity(i) for i in page.identities],
        next_page_token=page.next_page_token,
        total_count=page.total_count,
    )


def delete_response(result: r.DeleteResult) -> pb.DeleteIdentityResponse:
    return pb.DeleteIdentityResponse(
        identity_id=result.identity_id, identity=result.identity, faces_deleted=result.faces_deleted
    )


def model_info(model: r.ModelSummary) -> pb.ModelInfo:
    return pb.ModelInfo(
        id=model.id,
        architecture=model.architecture,
        dimension=model.dimension,
        default_threshold=model.default_threshold,
        threshold_source=model.threshold_source,
        preprocessing=model.preprocessing,
    )


def index_info(index: r.IndexStatus) -> pb.IndexInfo:
    return pb.IndexInfo(
        backend=index.backend,
        device=index.device,
        vectors=index.vectors,
        consistent=index.consistent,
        checksum=index.checksum,
        checked_at=timestamp(index.checked_at),
    )


def stats(value: r.GalleryStats, version: str) -> pb.Stats:
    return pb.Stats(
        identities=value.identities,
        faces=value.faces,
        unlabeled_faces=value.unlabeled_faces,
        model=model_info(value.model),
        index=index_info(value.index),
        device=value.device,
        version=version,
        database=value.database,
    )
