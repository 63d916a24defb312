"""faceid.v1 clustering messages ↔ engine values (the Clustering servicer's only translation code).

Request shape checks that need no gallery state live here (k ≥ 1, the size of an automatic range, niter);
everything that depends on the faces in scope (k ≤ n, max_k ≤ n − 1, unknown identities, an empty scope)
is the engine's to check. Errors are faceid.indexer.errors classes, mapped to status codes by
ErrorMappingInterceptor like every other RPC's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from faceid.indexer import errors
from faceid.indexer.clustering import pipeline as stages
from faceid.indexer.clustering.outliers import RULE as OUTLIER_RULE
from faceid.indexer.clustering_service import GalleryClustering, Scope
from faceid.indexer.store import AssignResult, MergeResult
from faceid.v1 import clustering_pb2 as pb

DEFAULT_NITER = 20
MAX_NITER = 1000
MAX_K_VALUES = 256  # one full clustering per K: a wider automatic range is a mistake, not a request
THUMBNAIL_BATCH_BYTES = 1 << 20  # per `thumbnails` event, far below the 32 MiB message limit

_SCOPES = {
    pb.CLUSTER_SCOPE_UNSPECIFIED: Scope.ALL,
    pb.CLUSTER_SCOPE_ALL: Scope.ALL,
    pb.CLUSTER_SCOPE_UNLABELED: Scope.UNLABELED,
    pb.CLUSTER_SCOPE_IDENTITIES: Scope.IDENTITIES,
}
_SCOPE_TO_PROTO = {
    Scope.ALL: pb.CLUSTER_SCOPE_ALL,
    Scope.UNLABELED: pb.CLUSTER_SCOPE_UNLABELED,
    Scope.IDENTITIES: pb.CLUSTER_SCOPE_IDENTITIES,
}
ThumbnailFetch = Callable[[list[int]], Mapping[int, bytes]]  # FaceEngine.face_thumbnails

# The engine's stage names (clustering/pipeline.py) as proto stages.
STAGES = {
    stages.STAGE_CLUSTERING: pb.CLUSTER_STAGE_CLUSTERING,
    stages.STAGE_CHOOSING_K: pb.CLUSTER_STAGE_CHOOSING_K,
    stages.STAGE_SCORING: pb.CLUSTER_STAGE_SCORING,
    stages.STAGE_PROJECTING: pb.CLUSTER_STAGE_PROJECTING,
    stages.STAGE_NAMING: pb.CLUSTER_STAGE_NAMING,
}


@dataclass(frozen=True)
class ClusterArgs:
    """The engine's keyword arguments of one Cluster request."""

    scope: Scope
    identities: tuple[str, ...]
    k: int | None
    k_range: range | None
    seed: int
    niter: int


def cluster_args(request: pb.ClusterRequest) -> ClusterArgs:
    if request.scope not in _SCOPES:
        raise errors.InvalidRequest(f"scope: unknown value {request.scope}; use ALL, UNLABELED or IDENTITIES")
    choice = request.WhichOneof("k_choice")
    k: int | None = None
    k_range: range | None = None
    if choice is None:
        raise errors.InvalidRequest("give k (a number of clusters) or auto_k (a range of K to choose from)")
    if choice == "k":
        if request.k < 1:
            raise errors.InvalidRequest(f"k must be at least 1; got {request.k}")
        k = request.k
    else:
        lo, hi = request.auto_k.min_k, request.auto_k.max_k
        if lo < 2 or lo > hi:
            raise errors.InvalidRequest(f"auto_k needs 2 <= min_k <= max_k; got min_k={lo}, max_k={hi}")
        if hi - lo + 1 > MAX_K_VALUES:
            raise errors.InvalidRequest(
                f"auto_k tries one clustering per K: at most {MAX_K_VALUES} values; got {hi - lo + 1} ({lo}..{hi})"
            )
        k_range = range(lo, hi + 1)
    if not 0 <= request.niter <= MAX_NITER:
        raise errors.InvalidRequest(f"niter must be 0 (server default, {DEFAULT_NITER}) to {MAX_NITER}; got {request.niter}")
    return ClusterArgs(
        scope=_SCOPES[request.scope],
        identities=tuple(request.identities),
        k=k,
        k_range=k_range,
        seed=int(request.seed),
        niter=request.niter or DEFAULT_NITER,
    )


def progress(stage: int, fraction: float, message: str = "") -> pb.ClusterEvent:
    return pb.ClusterEvent(
        progress=pb.ClusterProgress(stage=stage, fraction=min(max(fraction, 0.0), 1.0), message=message)
    )


def thumbnail_events(face_ids: Sequence[int], fetch: ThumbnailFetch) -> Iterator[pb.ClusterEvent]:
    """`progress` (stage THUMBNAILS) + `thumbnails` events, each batch at most ~THUMBNAIL_BATCH_BYTES.

    Faces without a stored thumbnail are left out (the report shows a placeholder).
    """
    total = len(face_ids)
    step = 256  # ids per store read
    batch: list[pb.FaceThumbnail] = []
    size = 0
    for start in range(0, total, step):
        chunk = [int(i) for i in face_ids[start : start + step]]
        yield progress(pb.CLUSTER_STAGE_THUMBNAILS, start / total, f"thumbnails {start} of {total}")
        found = fetch(chunk)
        for face_id in chunk:
            jpeg = found.get(face_id)
            if jpeg is None:
                continue
            if batch and size + len(jpeg) > THUMBNAIL_BATCH_BYTES:
                yield pb.ClusterEvent(thumbnails=pb.FaceThumbnails(thumbnails=batch))
                batch, size = [], 0
            batch.append(pb.FaceThumbnail(face_id=face_id, jpeg=jpeg))
            size += len(jpeg)
    if batch:
        yield pb.ClusterEvent(thumbnails=pb.FaceThumbnails(thumbnails=batch))
    yield progress(pb.CLUSTER_STAGE_THUMBNAILS, 1.0, f"thumbnails {total} of {total}")


def cluster_result(
    run: GalleryClustering, *, scope: Scope, threshold: float, seconds: float
) -> pb.ClusterResult:
    """The final message of a Cluster stream."""
    result, km = run.result, run.result.kmeans
    msg = pb.ClusterResult(
        run_id=run.run_id,
        model=run.model_id,
        k=km.k,
        seed=result.seed,
        niter=km.iterations,
        scope=_SCOPE_TO_PROTO[scope],
        threshold=threshold,
        outlier_rule=OUTLIER_RULE,
        seconds=seconds,
        device=km.device,
    )
    m = result.metrics
    msg.metrics.inertia = m.inertia
    msg.metrics.labeled_faces = m.labeled_faces
    for name in ("silhouette", "purity", "nmi", "ari"):
        value = getattr(m, name)
        if value is not None:
            setattr(msg.metrics, name, value)
    for k, score in sorted(result.k_scores.items()):
        msg.k_scores.add(k=k, silhouette=score)
    sizes = km.sizes()
    for c in range(km.k):
        summary = msg.clusters.add(cluster=c, size=int(sizes[c]), outliers=int(result.outliers[km.assign == c].sum()))
        near = result.nearest[c] if result.nearest else None
        if near is not None and near.identity is not None:
            summary.nearest_identity = near.identity
            summary.nearest_identity_id = near.identity_id or 0
            summary.nearest_distance = near.distance or 0.0
            summary.within_threshold = near.within_threshold
    distance = km.distance
    for i, face_id in enumerate(run.face_ids.tolist()):
        owner = run.identity_ids[i]
        msg.faces.add(
            face_id=face_id,
            cluster=int(km.assign[i]),
            distance=float(distance[i]),
            outlier=bool(result.outliers[i]),
            identity=run.identity_names.get(owner, "") if owner is not None else "",
            identity_id=owner or 0,
            x=float(result.projection[i, 0]),
            y=float(result.projection[i, 1]),
        )
    return msg


def name_target(request: pb.NameFacesRequest) -> tuple[list[int] | None, tuple[str, int] | None]:
    """(face ids, None) or (None, (run id, cluster index)) of a NameFaces request."""
    target = request.WhichOneof("target")
    if target is None:
        raise errors.InvalidRequest("NameFaces needs a target: faces (face ids) or cluster (run id and cluster index)")
    if target == "faces":
        if request.unlabeled_only:
            raise errors.InvalidRequest("unlabeled_only applies to a cluster target; with face ids, list the faces to name")
        if not request.faces.face_ids:
            raise errors.InvalidRequest("faces: the list of face ids is empty")
        return list(request.faces.face_ids), None
    if request.cluster.cluster < 0:
        raise errors.InvalidRequest(f"cluster: the index must be >= 0; got {request.cluster.cluster}")
    return None, (request.cluster.run_id, request.cluster.cluster)


def name_faces_response(result: AssignResult) -> pb.NameFacesResponse:
    return pb.NameFacesResponse(
        identity=result.identity.name,
        identity_id=result.identity.id,
        created=result.created,
        face_ids=list(result.face_ids),
        face_count=result.identity.face_count,
    )


def merge_response(result: MergeResult) -> pb.MergeIdentitiesResponse:
    return pb.MergeIdentitiesResponse(
        identity=result.identity.name,
        identity_id=result.identity.id,
        moved_face_ids=list(result.moved_face_ids),
        removed_identity_id=result.removed_identity_id,
        face_count=result.identity.face_count,
    )
