from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClusterScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLUSTER_SCOPE_UNSPECIFIED: _ClassVar[ClusterScope]
    CLUSTER_SCOPE_ALL: _ClassVar[ClusterScope]
    CLUSTER_SCOPE_UNLABELED: _ClassVar[ClusterScope]
    CLUSTER_SCOPE_IDENTITIES: _ClassVar[ClusterScope]

class ClusterStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLUSTER_STAGE_UNSPECIFIED: _ClassVar[ClusterStage]
    CLUSTER_STAGE_LOADING: _ClassVar[ClusterStage]
    CLUSTER_STAGE_CLUSTERING: _ClassVar[ClusterStage]
    CLUSTER_STAGE_CHOOSING_K: _ClassVar[ClusterStage]
    CLUSTER_STAGE_SCORING: _ClassVar[ClusterStage]
    CLUSTER_STAGE_PROJECTING: _ClassVar[ClusterStage]
    CLUSTER_STAGE_NAMING: _ClassVar[ClusterStage]
    CLUSTER_STAGE_THUMBNAILS: _ClassVar[ClusterStage]
CLUSTER_SCOPE_UNSPECIFIED: ClusterScope
CLUSTER_SCOPE_ALL: ClusterScope
CLUSTER_SCOPE_UNLABELED: ClusterScope
CLUSTER_SCOPE_IDENTITIES: ClusterScope
CLUSTER_STAGE_UNSPECIFIED: ClusterStage
CLUSTER_STAGE_LOADING: ClusterStage
CLUSTER_STAGE_CLUSTERING: ClusterStage
CLUSTER_STAGE_CHOOSING_K: ClusterStage
CLUSTER_STAGE_SCORING: ClusterStage
CLUSTER_STAGE_PROJECTING: ClusterStage
CLUSTER_STAGE_NAMING: ClusterStage
CLUSTER_STAGE_THUMBNAILS: ClusterStage

class KRange(_message.Message):
    __slots__ = ("min_k", "max_k")
    MIN_K_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    min_k: int
    max_k: int
    def __init__(self, min_k: _Optional[int] = ..., max_k: _Optional[int] = ...) -> None: ...

class ClusterRequest(_message.Message):
    __slots__ = ("scope", "identities", "k", "auto_k", "seed", "niter", "include_thumbnails")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    AUTO_K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NITER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    scope: ClusterScope
    identities: _containers.RepeatedScalarFieldContainer[str]
    k: int
    auto_k: KRange
    seed: int
    niter: int
    include_thumbnails: bool
    def __init__(self, scope: _Optional[_Union[ClusterScope, str]] = ..., identities: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., auto_k: _Optional[_Union[KRange, _Mapping]] = ..., seed: _Optional[int] = ..., niter: _Optional[int] = ..., include_thumbnails: _Optional[bool] = ...) -> None: ...

class ClusterProgress(_message.Message):
    __slots__ = ("stage", "fraction", "message")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    stage: ClusterStage
    fraction: float
    message: str
    def __init__(self, stage: _Optional[_Union[ClusterStage, str]] = ..., fraction: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class FaceThumbnail(_message.Message):
    __slots__ = ("face_id", "jpeg")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    JPEG_FIELD_NUMBER: _ClassVar[int]
    face_id: int
    jpeg: bytes
    def __init__(self, face_id: _Optional[int] = ..., jpeg: _Optional[bytes] = ...) -> None: ...

class FaceThumbnails(_message.Message):
    __slots__ = ("thumbnails",)
    THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    thumbnails: _containers.RepeatedCompositeFieldContainer[FaceThumbnail]
    def __init__(self, thumbnails: _Optional[_Iterable[_Union[FaceThumbnail, _Mapping]]] = ...) -> None: ...

class ClusterFace(_message.Message):
    __slots__ = ("face_id", "cluster", "distance", "outlier", "identity", "identity_id", "x", "y")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    OUTLIER_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    face_id: int
    cluster: int
    distance: float
    outlier: bool
    identity: str
    identity_id: int
    x: float
    y: float
    def __init__(self, face_id: _Optional[int] = ..., cluster: _Optional[int] = ..., distance: _Optional[float] = ..., outlier: _Optional[bool] = ..., identity: _Optional[str] = ..., identity_id: _Optional[int] = ..., x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class ClusterSummary(_message.Message):
    __slots__ = ("cluster", "size", "nearest_identity", "nearest_identity_id", "nearest_distance", "within_threshold", "outliers")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    NEAREST_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NEAREST_IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    NEAREST_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    WITHIN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    OUTLIERS_FIELD_NUMBER: _ClassVar[int]
    cluster: int
    size: int
    nearest_identity: str
    nearest_identity_id: int
    nearest_distance: float
    within_threshold: bool
    outliers: int
    def __init__(self, cluster: _Optional[int] = ..., size: _Optional[int] = ..., nearest_identity: _Optional[str] = ..., nearest_identity_id: _Optional[int] = ..., nearest_distance: _Optional[float] = ..., within_threshold: _Optional[bool] = ..., outliers: _Optional[int] = ...) -> None: ...

class ClusterMetrics(_message.Message):
    __slots__ = ("inertia", "silhouette", "purity", "nmi", "ari", "labeled_faces")
    INERTIA_FIELD_NUMBER: _ClassVar[int]
    SILHOUETTE_FIELD_NUMBER: _ClassVar[int]
    PURITY_FIELD_NUMBER: _ClassVar[int]
    NMI_FIELD_NUMBER: _ClassVar[int]
    ARI_FIELD_NUMBER: _ClassVar[int]
    LABELED_FACES_FIELD_NUMBER: _ClassVar[int]
    inertia: float
    silhouette: float
    purity: float
    nmi: float
    ari: float
    labeled_faces: int
    def __init__(self, inertia: _Optional[float] = ..., silhouette: _Optional[float] = ..., purity: _Optional[float] = ..., nmi: _Optional[float] = ..., ari: _Optional[float] = ..., labeled_faces: _Optional[int] = ...) -> None: ...

class KScore(_message.Message):
    __slots__ = ("k", "silhouette")
    K_FIELD_NUMBER: _ClassVar[int]
    SILHOUETTE_FIELD_NUMBER: _ClassVar[int]
    k: int
    silhouette: float
    def __init__(self, k: _Optional[int] = ..., silhouette: _Optional[float] = ...) -> None: ...

class ClusterResult(_message.Message):
    __slots__ = ("model", "k", "seed", "niter", "scope", "threshold", "faces", "clusters", "metrics", "k_scores", "outlier_rule", "seconds", "device", "run_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NITER_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    K_SCORES_FIELD_NUMBER: _ClassVar[int]
    OUTLIER_RULE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    k: int
    seed: int
    niter: int
    scope: ClusterScope
    threshold: float
    faces: _containers.RepeatedCompositeFieldContainer[ClusterFace]
    clusters: _containers.RepeatedCompositeFieldContainer[ClusterSummary]
    metrics: ClusterMetrics
    k_scores: _containers.RepeatedCompositeFieldContainer[KScore]
    outlier_rule: str
    seconds: float
    device: str
    run_id: str
    def __init__(self, model: _Optional[str] = ..., k: _Optional[int] = ..., seed: _Optional[int] = ..., niter: _Optional[int] = ..., scope: _Optional[_Union[ClusterScope, str]] = ..., threshold: _Optional[float] = ..., faces: _Optional[_Iterable[_Union[ClusterFace, _Mapping]]] = ..., clusters: _Optional[_Iterable[_Union[ClusterSummary, _Mapping]]] = ..., metrics: _Optional[_Union[ClusterMetrics, _Mapping]] = ..., k_scores: _Optional[_Iterable[_Union[KScore, _Mapping]]] = ..., outlier_rule: _Optional[str] = ..., seconds: _Optional[float] = ..., device: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class ClusterEvent(_message.Message):
    __slots__ = ("progress", "thumbnails", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: ClusterProgress
    thumbnails: FaceThumbnails
    result: ClusterResult
    def __init__(self, progress: _Optional[_Union[ClusterProgress, _Mapping]] = ..., thumbnails: _Optional[_Union[FaceThumbnails, _Mapping]] = ..., result: _Optional[_Union[ClusterResult, _Mapping]] = ...) -> None: ...

class ClusterRef(_message.Message):
    __slots__ = ("run_id", "cluster")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    cluster: int
    def __init__(self, run_id: _Optional[str] = ..., cluster: _Optional[int] = ...) -> None: ...

class FaceIdList(_message.Message):
    __slots__ = ("face_ids",)
    FACE_IDS_FIELD_NUMBER: _ClassVar[int]
    face_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, face_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class NameFacesRequest(_message.Message):
    __slots__ = ("name", "faces", "cluster", "unlabeled_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    UNLABELED_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    faces: FaceIdList
    cluster: ClusterRef
    unlabeled_only: bool
    def __init__(self, name: _Optional[str] = ..., faces: _Optional[_Union[FaceIdList, _Mapping]] = ..., cluster: _Optional[_Union[ClusterRef, _Mapping]] = ..., unlabeled_only: _Optional[bool] = ...) -> None: ...

class NameFacesResponse(_message.Message):
    __slots__ = ("identity", "identity_id", "created", "face_ids", "face_count")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    FACE_IDS_FIELD_NUMBER: _ClassVar[int]
    FACE_COUNT_FIELD_NUMBER: _ClassVar[int]
    identity: str
    identity_id: int
    created: bool
    face_ids: _containers.RepeatedScalarFieldContainer[int]
    face_count: int
    def __init__(self, identity: _Optional[str] = ..., identity_id: _Optional[int] = ..., created: _Optional[bool] = ..., face_ids: _Optional[_Iterable[int]] = ..., face_count: _Optional[int] = ...) -> None: ...

class MergeIdentitiesRequest(_message.Message):
    __slots__ = ("source", "target")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class MergeIdentitiesResponse(_message.Message):
    __slots__ = ("identity", "identity_id", "moved_face_ids", "removed_identity_id", "face_count")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    MOVED_FACE_IDS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_COUNT_FIELD_NUMBER: _ClassVar[int]
    identity: str
    identity_id: int
    moved_face_ids: _containers.RepeatedScalarFieldContainer[int]
    removed_identity_id: int
    face_count: int
    def __init__(self, identity: _Optional[str] = ..., identity_id: _Optional[int] = ..., moved_face_ids: _Optional[_Iterable[int]] = ..., removed_identity_id: _Optional[int] = ..., face_count: _Optional[int] = ...) -> None: ...
