"""faceid.v1.Clustering: cluster the gallery (a stream of progress, thumbnails, one result), name faces or a
cluster, merge identities.

Like FaceIdServicer, each RPC converts the request (clustering_convert.py), makes one engine call and
converts the answer; engine errors become status codes in ErrorMappingInterceptor. The engine runs a
clustering as bulk accelerator work (the server's scheduler); here it runs on a worker thread so that its
progress can be streamed while it works. Cancellation and deadlines reach the job through
`context.add_callback`: the engine's next progress report raises, so the job stops at its next stage (or
next K), sends nothing and remembers no run.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from faceid.indexer import errors
from faceid.server import clustering_convert as convert
from faceid.server.auth import current_actor  # the API key's name: the audit log's "who"
from faceid.server.lifecycle import EngineSlot
from faceid.v1 import clustering_pb2 as pb
from faceid.v1 import clustering_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from faceid.indexer.clustering_service import GalleryClustering

CLUSTERING_SERVICE = pb.DESCRIPTOR.services_by_name["Clustering"].full_name  # "faceid.v1.Clustering"
MAX_CLUSTER_JOBS = 4  # running or waiting for the accelerator; more get RESOURCE_EXHAUSTED
_POLL_S = 0.5  # how often a waiting stream checks that its caller is still there


class _Stopped(Exception):
    """Raised inside the engine (from its progress callback) when the caller has gone."""


class ClusteringServicer(pb_grpc.ClusteringServicer):
    def __init__(self, slot: EngineSlot, *, max_jobs: int = MAX_CLUSTER_JOBS) -> None:
        self._slot = slot
        self._jobs = threading.BoundedSemaphore(max_jobs)
        self._max_jobs = max_jobs

    def Cluster(self, request: pb.ClusterRequest, context: grpc.ServicerContext) -> Iterator[pb.ClusterEvent]:
        args = convert.cluster_args(request)
        engine = self._slot.get()
        yield convert.progress(pb.CLUSTER_STAGE_LOADING, 0.0, "reading the embeddings in scope")
        started = time.perf_counter()
        run: GalleryClustering | None = yield from _stream_while_running(
            context,
            lambda report: engine.cluster(
                scope=args.scope, identities=args.identities, k=args.k, k_range=args.k_range,
                seed=args.seed, niter=args.niter, progress=report,
            ),
            self._jobs,
            self._max_jobs,
        )
        if run is None:  # cancelled or past its deadline: nobody to answer
            return
        seconds = time.perf_counter() - started
        if request.include_thumbnails:
            yield from convert.thumbnail_events(run.face_ids.tolist(), engine.face_thumbnails)
        yield pb.ClusterEvent(
            result=convert.cluster_result(run, scope=args.scope, threshold=engine.model.default_threshold, seconds=seconds)
        )

    def NameFaces(self, request: pb.NameFacesRequest, context: grpc.ServicerContext) -> pb.NameFacesResponse:
        face_ids, cluster = convert.name_target(request)
        engine = self._slot.get()
        if face_ids is not None:
            result = engine.name_faces(face_ids, request.name, actor=current_actor())
        else:
            assert cluster is not None
            run_id, index = cluster
            result = engine.name_cluster(
                run_id or None, index, request.name, unlabeled_only=request.unlabeled_only, actor=current_actor()
            )
        return convert.name_faces_response(result)

    def MergeIdentities(
        self, request: pb.MergeIdentitiesRequest, context: grpc.ServicerContext
    ) -> pb.MergeIdentitiesResponse:
        if not request.source or not request.target:
            raise errors.InvalidRequest("MergeIdentities needs both source and target identity names")
        result = self._slot.get().merge_identities(request.source, request.target, actor=current_actor())
        return convert.merge_response(result)


def _stream_while_running(
    context: grpc.ServicerContext,
    job: Callable[[Callable[[str, float], None]], Any],
    slots: threading.BoundedSemaphore,
    max_jobs: int,
) -> Iterator[pb.ClusterEvent]:  # returns job's result (`yield from` gives it to the caller)
    """Run job(progress) on a worker thread; yield its progress as events; return its result or re-raise."""
    if not slots.acquire(blocking=False):
        raise errors.QueueFull(f"{max_jobs} clustering jobs are already running or queued; retry later", retry_after_s=5.0)
    stop = threading.Event()
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def report(stage: str, fraction: float) -> None:
        if stop.is_set():
            raise _Stopped()
        code = convert.STAGES.get(stage, pb.CLUSTER_STAGE_UNSPECIFIED)
        events.put(("progress", convert.progress(code, fraction, stage.replace("_", " "))))

    def work() -> None:
        try:
            events.put(("done", job(report)))
        except BaseException as exc:  # handed to the RPC thread, which raises it (status mapping)
            events.put(("error", exc))
        finally:
            slots.release()  # only now: an abandoned job holds its slot until it has actually stopped

    if not context.add_callback(stop.set):  # the call already ended
        stop.set()
    threading.Thread(target=work, name="faceid-cluster", daemon=True).start()
    try:
        while True:
            try:
                kind, value = events.get(timeout=_POLL_S)
            except queue.Empty:
                if not context.is_active():
                    stop.set()
                    return None
                continue
            if kind == "progress":
                yield value
            elif kind == "done":
                return value
            else:
                raise value
    finally:
        stop.set()  # a no-op once the job is done; stops it if this stream was abandoned


def register(server: grpc.Server, slot: EngineSlot) -> Sequence[str]:
    """Add the Clustering servicer to `server`; returns its service name (for health and reflection)."""
    pb_grpc.add_ClusteringServicer_to_server(ClusteringServicer(slot), server)
    return (CLUSTERING_SERVICE,)
