import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MultiFacePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MULTI_FACE_POLICY_UNSPECIFIED: _ClassVar[MultiFacePolicy]
    MULTI_FACE_POLICY_REJECT: _ClassVar[MultiFacePolicy]
    MULTI_FACE_POLICY_LARGEST: _ClassVar[MultiFacePolicy]

class ImageStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_STATUS_UNSPECIFIED: _ClassVar[ImageStatus]
    IMAGE_STATUS_STORED: _ClassVar[ImageStatus]
    IMAGE_STATUS_DUPLICATE: _ClassVar[ImageStatus]
    IMAGE_STATUS_NO_FACE: _ClassVar[ImageStatus]
    IMAGE_STATUS_MULTIPLE_FACES: _ClassVar[ImageStatus]
    IMAGE_STATUS_FACE_TOO_SMALL: _ClassVar[ImageStatus]
    IMAGE_STATUS_UNREADABLE: _ClassVar[ImageStatus]
    IMAGE_STATUS_TOO_LARGE: _ClassVar[ImageStatus]
    IMAGE_STATUS_INVALID: _ClassVar[ImageStatus]
MULTI_FACE_POLICY_UNSPECIFIED: MultiFacePolicy
MULTI_FACE_POLICY_REJECT: MultiFacePolicy
MULTI_FACE_POLICY_LARGEST: MultiFacePolicy
IMAGE_STATUS_UNSPECIFIED: ImageStatus
IMAGE_STATUS_STORED: ImageStatus
IMAGE_STATUS_DUPLICATE: ImageStatus
IMAGE_STATUS_NO_FACE: ImageStatus
IMAGE_STATUS_MULTIPLE_FACES: ImageStatus
IMAGE_STATUS_FACE_TOO_SMALL: ImageStatus
IMAGE_STATUS_UNREADABLE: ImageStatus
IMAGE_STATUS_TOO_LARGE: ImageStatus
IMAGE_STATUS_INVALID: ImageStatus

class BoundingBox(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class DetectedFace(_message.Message):
    __slots__ = ("box", "probability", "landmarks")
    BOX_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    box: BoundingBox
    probability: float
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    def __init__(self, box: _Optional[_Union[BoundingBox, _Mapping]] = ..., probability: _Optional[float] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "architecture", "dimension", "default_threshold", "threshold_source", "preprocessing")
    ID_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    id: str
    architecture: str
    dimension: int
    default_threshold: float
    threshold_source: str
    preprocessing: str
    def __init__(self, id: _Optional[str] = ..., architecture: _Optional[str] = ..., dimension: _Optional[int] = ..., default_threshold: _Optional[float] = ..., threshold_source: _Optional[str] = ..., preprocessing: _Optional[str] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("identity", "images", "metadata", "multi_face_policy")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MULTI_FACE_POLICY_FIELD_NUMBER: _ClassVar[int]
    identity: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    metadata: _containers.ScalarMap[str, str]
    multi_face_policy: MultiFacePolicy
    def __init__(self, identity: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., multi_face_policy: _Optional[_Union[MultiFacePolicy, str]] = ...) -> None: ...

class ImageResult(_message.Message):
    __slots__ = ("index", "status", "message", "image_sha256", "face_id", "faces", "faces_stored", "face_ids")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    FACES_STORED_FIELD_NUMBER: _ClassVar[int]
    FACE_IDS_FIELD_NUMBER: _ClassVar[int]
    index: int
    status: ImageStatus
    message: str
    image_sha256: str
    face_id: int
    faces: _containers.RepeatedCompositeFieldContainer[DetectedFace]
    faces_stored: int
    face_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, index: _Optional[int] = ..., status: _Optional[_Union[ImageStatus, str]] = ..., message: _Optional[str] = ..., image_sha256: _Optional[str] = ..., face_id: _Optional[int] = ..., faces: _Optional[_Iterable[_Union[DetectedFace, _Mapping]]] = ..., faces_stored: _Optional[int] = ..., face_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("identity_id", "identity", "results", "faces_on_record", "model", "created")
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    FACES_ON_RECORD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    identity_id: int
    identity: str
    results: _containers.RepeatedCompositeFieldContainer[ImageResult]
    faces_on_record: int
    model: str
    created: bool
    def __init__(self, identity_id: _Optional[int] = ..., identity: _Optional[str] = ..., results: _Optional[_Iterable[_Union[ImageResult, _Mapping]]] = ..., faces_on_record: _Optional[int] = ..., model: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class EnrollStreamRequest(_message.Message):
    __slots__ = ("identity", "image", "metadata", "multi_face_policy", "client_ref")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MULTI_FACE_POLICY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REF_FIELD_NUMBER: _ClassVar[int]
    identity: str
    image: bytes
    metadata: _containers.ScalarMap[str, str]
    multi_face_policy: MultiFacePolicy
    client_ref: str
    def __init__(self, identity: _Optional[str] = ..., image: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., multi_face_policy: _Optional[_Union[MultiFacePolicy, str]] = ..., client_ref: _Optional[str] = ...) -> None: ...

class EnrollStreamResponse(_message.Message):
    __slots__ = ("client_ref", "result", "identity_id", "identity", "model")
    CLIENT_REF_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    client_ref: str
    result: ImageResult
    identity_id: int
    identity: str
    model: str
    def __init__(self, client_ref: _Optional[str] = ..., result: _Optional[_Union[ImageResult, _Mapping]] = ..., identity_id: _Optional[int] = ..., identity: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("image_a", "image_b", "identity", "threshold")
    IMAGE_A_FIELD_NUMBER: _ClassVar[int]
    IMAGE_B_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    image_a: bytes
    image_b: bytes
    identity: str
    threshold: float
    def __init__(self, image_a: _Optional[bytes] = ..., image_b: _Optional[bytes] = ..., identity: _Optional[str] = ..., threshold: _Optional[float] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("match", "distance", "similarity", "threshold", "model", "face_a", "face_b", "matched_face_id", "identity", "faces_in_image_a", "faces_in_image_b", "probability", "decided_by")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FACE_A_FIELD_NUMBER: _ClassVar[int]
    FACE_B_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FACE_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    FACES_IN_IMAGE_A_FIELD_NUMBER: _ClassVar[int]
    FACES_IN_IMAGE_B_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    match: bool
    distance: float
    similarity: float
    threshold: float
    model: str
    face_a: DetectedFace
    face_b: DetectedFace
    matched_face_id: int
    identity: str
    faces_in_image_a: int
    faces_in_image_b: int
    probability: float
    decided_by: str
    def __init__(self, match: _Optional[bool] = ..., distance: _Optional[float] = ..., similarity: _Optional[float] = ..., threshold: _Optional[float] = ..., model: _Optional[str] = ..., face_a: _Optional[_Union[DetectedFace, _Mapping]] = ..., face_b: _Optional[_Union[DetectedFace, _Mapping]] = ..., matched_face_id: _Optional[int] = ..., identity: _Optional[str] = ..., faces_in_image_a: _Optional[int] = ..., faces_in_image_b: _Optional[int] = ..., probability: _Optional[float] = ..., decided_by: _Optional[str] = ...) -> None: ...

class IdentifyRequest(_message.Message):
    __slots__ = ("image", "top_k", "threshold")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    top_k: int
    threshold: float
    def __init__(self, image: _Optional[bytes] = ..., top_k: _Optional[int] = ..., threshold: _Optional[float] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("identity", "identity_id", "distance", "similarity", "face_id", "probability")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    identity: str
    identity_id: int
    distance: float
    similarity: float
    face_id: int
    probability: float
    def __init__(self, identity: _Optional[str] = ..., identity_id: _Optional[int] = ..., distance: _Optional[float] = ..., similarity: _Optional[float] = ..., face_id: _Optional[int] = ..., probability: _Optional[float] = ...) -> None: ...

class IdentifiedFace(_message.Message):
    __slots__ = ("face", "unknown", "identity", "identity_id", "distance", "similarity", "candidates", "probability")
    FACE_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    face: DetectedFace
    unknown: bool
    identity: str
    identity_id: int
    distance: float
    similarity: float
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    probability: float
    def __init__(self, face: _Optional[_Union[DetectedFace, _Mapping]] = ..., unknown: _Optional[bool] = ..., identity: _Optional[str] = ..., identity_id: _Optional[int] = ..., distance: _Optional[float] = ..., similarity: _Optional[float] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., probability: _Optional[float] = ...) -> None: ...

class IdentifyResponse(_message.Message):
    __slots__ = ("faces", "model", "threshold", "gallery_faces")
    FACES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    GALLERY_FACES_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[IdentifiedFace]
    model: str
    threshold: float
    gallery_faces: int
    def __init__(self, faces: _Optional[_Iterable[_Union[IdentifiedFace, _Mapping]]] = ..., model: _Optional[str] = ..., threshold: _Optional[float] = ..., gallery_faces: _Optional[int] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("image", "all_faces")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ALL_FACES_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    all_faces: bool
    def __init__(self, image: _Optional[bytes] = ..., all_faces: _Optional[bool] = ...) -> None: ...

class EmbeddedFace(_message.Message):
    __slots__ = ("face", "embedding")
    FACE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    face: DetectedFace
    embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, face: _Optional[_Union[DetectedFace, _Mapping]] = ..., embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("faces", "model", "dimension")
    FACES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[EmbeddedFace]
    model: str
    dimension: int
    def __init__(self, faces: _Optional[_Iterable[_Union[EmbeddedFace, _Mapping]]] = ..., model: _Optional[str] = ..., dimension: _Optional[int] = ...) -> None: ...

class FaceRecord(_message.Message):
    __slots__ = ("id", "model", "image_sha256", "box", "detection_probability", "created_at", "identity_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    DETECTION_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    model: str
    image_sha256: str
    box: BoundingBox
    detection_probability: float
    created_at: _timestamp_pb2.Timestamp
    identity_id: int
    def __init__(self, id: _Optional[int] = ..., model: _Optional[str] = ..., image_sha256: _Optional[str] = ..., box: _Optional[_Union[BoundingBox, _Mapping]] = ..., detection_probability: _Optional[float] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., identity_id: _Optional[int] = ...) -> None: ...

class Identity(_message.Message):
    __slots__ = ("id", "name", "metadata", "face_count", "created_at", "updated_at", "faces")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FACE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    metadata: _containers.ScalarMap[str, str]
    face_count: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    faces: _containers.RepeatedCompositeFieldContainer[FaceRecord]
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., face_count: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., faces: _Optional[_Iterable[_Union[FaceRecord, _Mapping]]] = ...) -> None: ...

class GetIdentityRequest(_message.Message):
    __slots__ = ("name", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ...) -> None: ...

class ListIdentitiesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "name_prefix")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    name_prefix: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., name_prefix: _Optional[str] = ...) -> None: ...

class ListIdentitiesResponse(_message.Message):
    __slots__ = ("identities", "next_page_token", "total_count")
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    identities: _containers.RepeatedCompositeFieldContainer[Identity]
    next_page_token: str
    total_count: int
    def __init__(self, identities: _Optional[_Iterable[_Union[Identity, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_count: _Optional[int] = ...) -> None: ...

class DeleteIdentityRequest(_message.Message):
    __slots__ = ("name", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ...) -> None: ...

class DeleteIdentityResponse(_message.Message):
    __slots__ = ("identity_id", "identity", "faces_deleted")
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    FACES_DELETED_FIELD_NUMBER: _ClassVar[int]
    identity_id: int
    identity: str
    faces_deleted: int
    def __init__(self, identity_id: _Optional[int] = ..., identity: _Optional[str] = ..., faces_deleted: _Optional[int] = ...) -> None: ...

class RenameIdentityRequest(_message.Message):
    __slots__ = ("name", "id", "new_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NEW_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    new_name: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ..., new_name: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IndexInfo(_message.Message):
    __slots__ = ("backend", "device", "vectors", "consistent", "checksum", "checked_at")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    backend: str
    device: str
    vectors: int
    consistent: bool
    checksum: str
    checked_at: _timestamp_pb2.Timestamp
    def __init__(self, backend: _Optional[str] = ..., device: _Optional[str] = ..., vectors: _Optional[int] = ..., consistent: _Optional[bool] = ..., checksum: _Optional[str] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("identities", "faces", "unlabeled_faces", "model", "index", "device", "version", "database")
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    UNLABELED_FACES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    identities: int
    faces: int
    unlabeled_faces: int
    model: ModelInfo
    index: IndexInfo
    device: str
    version: str
    database: str
    def __init__(self, identities: _Optional[int] = ..., faces: _Optional[int] = ..., unlabeled_faces: _Optional[int] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ..., index: _Optional[_Union[IndexInfo, _Mapping]] = ..., device: _Optional[str] = ..., version: _Optional[str] = ..., database: _Optional[str] = ...) -> None: ...
