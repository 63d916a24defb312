"""What the clustering calls return: frozen dataclasses mirroring faceid.v1 Clustering answers (no numpy).

`ClusterResult.to_dict()` has the shape of `faceid.client.report.ClusterReport` (plus run and identity
ids), so the CLI writes the report from it; optional metrics are None when the server left them out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from faceid.client.types import _opt, _Record
from faceid.v1 import clustering_pb2 as pb


class ClusterScope(enum.Enum):
    ALL = "all"  # every face of the active model
    UNLABELED = "unlabeled"  # faces stored without an identity (bulk-indexed folders)
    IDENTITIES = "identities"  # the faces of the identities listed in the request

    def to_proto(self) -> int:
        return {
            ClusterScope.ALL: pb.CLUSTER_SCOPE_ALL,
            ClusterScope.UNLABELED: pb.CLUSTER_SCOPE_UNLABELED,
            ClusterScope.IDENTITIES: pb.CLUSTER_SCOPE_IDENTITIES,
        }[self]

    @classmethod
    def from_proto(cls, value: int) -> ClusterScope:
        name = pb.ClusterScope.Name(value).removeprefix("CLUSTER_SCOPE_")
        return cls[name] if name in cls.__members__ else cls.ALL


@dataclass(frozen=True)
class ClusterProgress(_Record):
    stage: str  # loading, clustering, choosing_k, scoring, projecting, naming, thumbnails
    fraction: float  # of this stage, 0..1
    message: str

    @classmethod
    def from_proto(cls, m: pb.ClusterProgress) -> ClusterProgress:
        stage = pb.ClusterStage.Name(m.stage).removeprefix("CLUSTER_STAGE_").lower()
        return cls(stage, m.fraction, m.message)


@dataclass(frozen=True)
class ClusterMetrics(_Record):
    inertia: float  # Σ squared distance of each face to its unit centroid
    silhouette: float | None  # cosine, −1..1; None when K < 2 or K = n
    purity: float | None  # over the labeled faces in scope; None when none is labeled
    nmi: float | None
    ari: float | None
    labeled_faces: int

    @classmethod
    def from_proto(cls, m: pb.ClusterMetrics) -> ClusterMetrics:
        return cls(
            m.inertia, _opt(m, "silhouette"), _opt(m, "purity"), _opt(m, "nmi"), _opt(m, "ari"), m.labeled_faces
        )


@dataclass(frozen=True)
class KScore(_Record):
    k: int
    silhouette: float


@dataclass(frozen=True)
class ClusterSummary(_Record):
    cluster: int
    size: int
    nearest_identity: str | None  # the enrolled identity nearest to the centroid (a naming suggestion)
    nearest_identity_id: int | None
    nearest_distance: float | None
    within_threshold: bool  # nearest_distance <= threshold: the model would name the centroid so
    outliers: int

    @classmethod
    def from_proto(cls, m: pb.ClusterSummary) -> ClusterSummary:
        named = bool(m.nearest_identity)
        return cls(
            m.cluster, m.size, m.nearest_identity or None, m.nearest_identity_id if named else None,
            m.nearest_distance if named else None, m.within_threshold, m.outliers,
        )


@dataclass(frozen=True)
class ClusterFace(_Record):
    face_id: int
    cluster: int
    distance: float  # to its cluster's centroid
    outlier: bool
    identity: str | None  # the face's own label; None when unlabeled
    identity_id: int | None
    x: float  # 2-D projection (PCA), for plots
    y: float

    @classmethod
    def from_proto(cls, m: pb.ClusterFace) -> ClusterFace:
        return cls(m.face_id, m.cluster, m.distance, m.outlier, m.identity or None, m.identity_id or None, m.x, m.y)


@dataclass(frozen=True)
class ClusterResult(_Record):
    run_id: str  # for naming a cluster later: name_cluster(..., run_id=...) / `faceid name RUN:CLUSTER NAME`
    model: str
    k: int
    seed: int
    niter: int
    scope: ClusterScope
    threshold: float
    device: str
    seconds: float
    outlier_rule: str
    metrics: ClusterMetrics
    k_scores: tuple[KScore, ...]  # automatic K only, by K
    clusters: tuple[ClusterSummary, ...]
    faces: tuple[ClusterFace, ...]  # ordered by face id

    @classmethod
    def from_proto(cls, m: pb.ClusterResult) -> ClusterResult:
        return cls(
            m.run_id, m.model, m.k, m.seed, m.niter, ClusterScope.from_proto(m.scope), m.threshold, m.device,
            m.seconds, m.outlier_rule, ClusterMetrics.from_proto(m.metrics),
            tuple(KScore(s.k, s.silhouette) for s in m.k_scores),
            tuple(ClusterSummary.from_proto(c) for c in m.clusters),
            tuple(ClusterFace.from_proto(f) for f in m.faces),
        )

    def faces_of(self, cluster: int) -> list[ClusterFace]:
        return [f for f in self.faces if f.cluster == cluster]


@dataclass(frozen=True)
class ClusterRun:
    """A finished Cluster call: the result, and the stored thumbnails (JPEG by face id) when asked for."""

    result: ClusterResult
    thumbnails: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class NamedFaces(_Record):
    identity: str
    identity_id: int
    created: bool  # the identity was created by this call
    face_ids: tuple[int, ...]  # the faces named
    face_count: int  # faces the identity holds now

    @classmethod
    def from_proto(cls, m: pb.NameFacesResponse) -> NamedFaces:
        return cls(m.identity, m.identity_id, m.created, tuple(m.face_ids), m.face_count)


@dataclass(frozen=True)
class MergeResult(_Record):
    identity: str  # the target
    identity_id: int
    moved_face_ids: tuple[int, ...]
    removed_identity_id: int  # the source's former id
    face_count: int

    @classmethod
    def from_proto(cls, m: pb.MergeIdentitiesResponse) -> MergeResult:
        return cls(m.identity, m.identity_id, tuple(m.moved_face_ids), m.removed_identity_id, m.face_count)
