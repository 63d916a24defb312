"""The engine facade: enrol, verify, identify, embed and manage identities for one active model.

One call here is one unit of work: validate everything first, compute (accelerator work through the
runner), then write to the store in one transaction and only then update the derived vector index.
A rejected request never writes anything. A call whose caller has gone (cancelled, deadline passed:
cancellation.py) stops between stages and before its commit, never after it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from datetime import datetime, timezone

import numpy as np

from faceid.indexer import errors
from faceid.indexer.bulk import on_record
from faceid.indexer.cancellation import raise_if_cancelled
from faceid.indexer.clustering import Progress
from faceid.indexer.clustering_service import ClusteringRuns, GalleryClustering, Scope, run_clustering
from faceid.indexer.config import AcceleratorRunner, EngineConfig, run_directly
from faceid.indexer.gallery_rules import validate_identity_name, validate_metadata
from faceid.indexer.matching import (
    MAX_DISTANCE,
    aggregate_by_identity,
    assign_identities,
    l2_distances,
    validate_threshold,
    validate_top_k,
)
from faceid.indexer.pipeline import AnalyzedImage, FacePipeline, box_side, thumbnail_jpeg, to_detected_face
from faceid.indexer.results import (
    Candidate,
    FaceInfo,
    DeleteResult,
    EmbeddedFace,
    EmbedResult,
    EnrollResult,
    GalleryStats,
    IdentifiedFace,
    IdentifyResult,
    IdentityInfo,
    IdentityPage,
    ImageOutcome,
    ImageStatus,
    IndexStatus,
    ModelSummary,
    MultiFacePolicy,
    StreamEnrollResult,
    VerifyResult,
    similarity_from_distance,
)
from faceid.indexer.runtime import resolve_device
from faceid.indexer.store import AddStatus, AssignResult, Calibration, FaceAdded, MergeResult, FaceRow, GalleryStore, IdentityRow, NewFace, create_store
from faceid.indexer.index_follower import IndexFollower
from faceid.indexer.vector_backend import VectorBackend, open_vector_backend
from faceid.indexer.vector_index import VectorIndex
from faceid.indexer.verifier_head import DECISION_THRESHOLD as HEAD_DECISION_THRESHOLD
from faceid.indexer.verifier_head import VerifierHead, load_verifier_head

log = logging.getLogger(__name__)

MAX_IMAGES_PER_ENROLL = 64
CALIBRATION_TTL_S = 2.0  # how soon a calibration stored by `faceid calibrate` reaches a serving engine


class FaceEngine:
    """See the module docstring. Build it with `FaceEngine.open(config)`."""

    def __init__(
        self,
        *,
        config: EngineConfig,
        store: GalleryStore,
        index: VectorBackend,
        pipeline: FacePipeline,
        model: ModelSummary,
        device: str,
        verifier: VerifierHead | None = None,
        card_threshold: tuple[float, str] | None = None,
    ) -> None:
        self.config = config
        self.verifier = verifier  # a Siamese head deciding Verify instead of the distance (verifier_head.py)
        self.store = store
        self.index = index
        self.pipeline = pipeline
        self.model = model
        self.device = device
        # One writer path: the store's write lock (re-entrant) also covers the index update after each
        # commit, so a consistency check never sees a commit whose vectors are not yet in the index.
        self._write_lock = store.write_lock
        self._index_status: IndexStatus | None = None
        self.clustering_runs = ClusteringRuns()  # the last runs, in memory, for name_cluster
        self.follower: IndexFollower | None = None  # applies other servers' commits (index_follower.py)
        # The last outage of the vector backend not yet recovered from (a Milvus server away): see probe_index.
        self._index_outage: errors.Unavailable | None = None
        self._outage_seq = 0
        self._outage_lock = threading.Lock()
        # The stored calibration (faceid calibrate), re-read at most every CALIBRATION_TTL_S (see _calibration).
        self._card_threshold = card_threshold or (model.default_threshold, model.threshold_source)
        self._calibration_lock = threading.Lock()
        self._calibration_cached: Calibration | None = None
        self._calibration_until = float("-inf")

    # ----------------------------------------------------------------------------------- lifecycle
    @classmethod
    def open(cls, config: EngineConfig, *, runner: AcceleratorRunner = run_directly) -> FaceEngine:
        """Load (or fetch) the model, upgrade the database schema, build and verify the index."""
        from faceid.indexer.detection import FaceDetector
        from faceid.indexer.embedding import Embedder
        from faceid.indexer.models import load_embedding_network
        from faceid.indexer.models.trained import resolve_model

        # Registered models and trained ones (`faceid train`, found by id in the model folders), sha256-checked.
        spec, model_dir = resolve_model(config.model, allow_fetch=config.allow_model_fetch)
        device = resolve_device(config.device)
        network = load_embedding_network(spec, model_dir, device)
        detector = FaceDetector(
            device=device,
            image_size=spec.image_size,
            margin=spec.margin,
            min_face_size=config.min_face_size,
            min_probability=config.min_face_probability,
            detect_max_side=config.detect_max_side,
        )
        embedder = Embedder(network, spec.preprocessing, device=device, batch_size=config.embed_batch_size)
        pipeline = FacePipeline(detector=detector, embedder=embedder, config=config, runner=runner)
        store = create_store(config.database_url)
        threshold, source = cls._default_threshold(config, store, spec.name, spec.default_threshold)
        model = ModelSummary(
            id=spec.name,
            architecture=spec.architecture,
            dimension=spec.dimension,
            default_threshold=threshold,
            threshold_source=source,
            preprocessing=spec.preprocessing,
        )
        verifier = load_verifier_head(config.verifier_head, spec.name) if config.verifier_head else None
        _warn_other_models(store, spec.name)
        index = open_vector_backend(config, spec.dimension, spec.name)
        engine = cls(config=config, store=store, index=index, pipeline=pipeline, model=model, device=device,
                     verifier=verifier, card_threshold=(spec.default_threshold, "model card"))
        follower = _follower(config, store, index)  # marks the change log's position BEFORE the build
        engine.follower = follower
        try:
            # The index is derived from the store at every start: FAISS loads it all, Milvus writes what differs.
            loaded = index.sync_from(store)
            log.info("vector index built from the store: %d faces of model %s on %s", loaded, spec.name, index.device)
            engine.check_index(rebuild=True)
        except errors.Unavailable as exc:
            # A vector server away at start-up is no reason to exit (a restart loop): the engine comes up,
            # health stays NOT_SERVING, and probe_index builds the index once the server answers.
            engine._note_outage(exc)
        if follower is not None:
            follower.start(check=lambda: engine.check_index(rebuild=True))
        return engine

    @staticmethod
    def _default_threshold(config: EngineConfig, store: GalleryStore, model_id: str, card_tau: float) -> tuple[float, str]:
        if config.threshold is not None:
            validate_threshold(config.threshold)
            return config.threshold, "server config"
        calibration = store.get_calibration(model_id)
        if calibration is not None:
            return float(calibration.threshold), "calibration"
        return card_tau, "model card"

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        self.pipeline.close()
        self.index.close()
        self.store.close()

    # ------------------------------------------------------------------------- vector backend health
    def probe_index(self) -> bool:
        """Can the vector index answer? Polled by the server, whose health follows the answer.

        After an outage (seen here, at start-up, or by any call) the index is first brought back to the
        store (check, rebuild on a difference), since commits made meanwhile may not have reached it.
        """
        with self._outage_lock:
            seq, down = self._outage_seq, self._index_outage is not None
        try:
            self.index.ping()
            if down:
                self.check_index(rebuild=True)
        except errors.Unavailable as exc:
            self._note_outage(exc)
            return False
        if down:
            with self._outage_lock:
                if self._outage_seq != seq:  # a call failed again meanwhile: not recovered yet
                    return False
                self._index_outage = None
            log.warning("vector index %s answers again and equals the gallery: serving", self.index.device)
        return True

    def _note_outage(self, exc: errors.Unavailable) -> None:
        with self._outage_lock:
            first = self._index_outage is None
            self._index_outage = exc
            self._outage_seq += 1
        if first:
            log.error("vector index unavailable: %s; NOT_SERVING until it answers again (no restart needed)", exc)

    @contextmanager
    def _index_call(self, *, after_commit: bool = False) -> Iterator[None]:
        """Around a call of the vector index: an outage is noted for probe_index, and a caller whose
        change was committed to the store before the index failed is told that it was kept."""
        try:
            yield
        except errors.Unavailable as exc:
            self._note_outage(exc)
            if after_commit:
                raise errors.Unavailable(
                    f"{exc} (the gallery change was saved; the index catches up from the gallery when it is back)"
                ) from None
            raise

    # ------------------------------------------------------------------------------------ helpers
    def _threshold(self, requested: float | None) -> float:
        validate_threshold(requested)
        if requested is not None:
            return float(requested)
        self._calibration()  # a calibration stored since the last look becomes the default τ
        return self.model.default_threshold

    def _calibration(self) -> Calibration | None:
        """The active model's stored calibration, re-read at most every CALIBRATION_TTL_S.

        Why not once at start-up: `faceid calibrate` may run while servers are up (several on one database),
        and τ and the match probability must change together, within a bounded delay, without a restart.
        Why not on every call: an Identify asks once per face and candidate; that must cost no database read.
        """
        now = time.monotonic()
        with self._calibration_lock:
            if now < self._calibration_until:
                return self._calibration_cached
        calibration = self.store.get_calibration(self.model.id)
        with self._calibration_lock:
            self._calibration_cached, self._calibration_until = calibration, now + CALIBRATION_TTL_S
            if self.config.threshold is None:  # a τ given in the server config always wins
                tau, source = (float(calibration.threshold), "calibration") if calibration else self._card_threshold
                if (tau, source) != (self.model.default_threshold, self.model.threshold_source):
                    log.info("default threshold of model %s is now %.4f (%s)", self.model.id, tau, source)
                    self.model = replace(self.model, default_threshold=tau, threshold_source=source)
        return calibration

    def _probability(self, distance: float) -> float | None:
        calibration = self._calibration()
        if calibration is None or calibration.logistic_a is None:
            return None
        z = calibration.logistic_a + calibration.logistic_b * distance
        return float(1.0 / (1.0 + np.exp(-z)))

    def _decode_for_query(self, data: bytes, what: str) -> AnalyzedImage:
        """Decode + detect + embed a query photo; it must show at least one usable face."""
        return self._decode_queries([(data, what)])[0]

    def _decode_queries(self, photos: Sequence[tuple[bytes, str]]) -> list[AnalyzedImage]:
        """Decode every photo first (bad bytes fail before any accelerator work), then analyze them together."""
        t0 = time.perf_counter()
        decoded = [self.pipeline.decode(data) for data, _ in photos]
        decode_s = (time.perf_counter() - t0) / len(photos)
        analyzed = self.pipeline.analyze(decoded, kind="interactive")
        # The batch may have run while the call was cancelled (too late to drop it): stop before the search.
        raise_if_cancelled()
        for item, (_, what) in zip(analyzed, photos, strict=True):
            item.timings["decode"] = decode_s
            if not item.detections:
                raise errors.NoFaceFound(
                    f"no face found in {what} ({item.image.width}x{item.image.height} px): send a photo where a "
                    f"face is at least {self.config.min_face_size} px high and clearly visible"
                )
        return analyzed

    # ----------------------------------------------------------------------------------- enrolment
    def _outcome_for(
        self, index: int, analyzed: AnalyzedImage, *, labeled: bool, policy: MultiFacePolicy
    ) -> tuple[ImageOutcome, list[int]]:
        """Decide which faces of an enrolment photo to store; returns the outcome and the chosen rows."""
        faces = tuple(analyzed.faces)
        sha = analyzed.image.sha256
        if not analyzed.detections:
            return ImageOutcome(index, ImageStatus.NO_FACE, "no face found in the photo", sha), []
        usable = [i for i, d in enumerate(analyzed.detections) if box_side(d) >= self.config.min_enroll_face_size]
        if not usable:
            side = max(box_side(d) for d in analyzed.detections)
            return (
                ImageOutcome(
                    index,
                    ImageStatus.FACE_TOO_SMALL,
                    f"the face is {side:.0f} px; enrolment needs faces of at least "
                    f"{self.config.min_enroll_face_size} px (send a larger or closer photo)",
                    sha,
                    faces=faces,
                ),
                [],
            )
        if not labeled:
            return ImageOutcome(index, ImageStatus.STORED, "", sha, faces=faces), usable
        if len(analyzed.detections) > 1 and policy == MultiFacePolicy.REJECT:
            return (
                ImageOutcome(
                    index,
                    ImageStatus.MULTIPLE_FACES,
                    f"{len(analyzed.detections)} faces found; a labeled enrolment photo must show one person "
                    "(crop it, or ask for the LARGEST multi-face policy)",
                    sha,
                    faces=faces,
                ),
                [],
            )
        return ImageOutcome(index, ImageStatus.STORED, "", sha, faces=faces), [usable[0]]

    def _new_faces(self, analyzed: AnalyzedImage, rows: list[int]) -> list[NewFace]:
        assert analyzed.embeddings is not None
        new = []
        for i in rows:
            d = analyzed.detections[i]
            thumb = None
            if self.config.thumbnail_size > 0 and analyzed.crops is not None:
                thumb = thumbnail_jpeg(analyzed.crops[i], self.config.thumbnail_size)
            new.append(
                NewFace(
                    model_id=self.model.id,
                    embedding=analyzed.embeddings[i],
                    image_sha256=analyzed.image.sha256,
                    box=tuple(float(v) for v in d.box),
                    probability=float(d.probability),
                    thumbnail=thumb,
                )
            )
        return new

    def _analyze_uploads(self, images: Sequence[bytes], *, kind: str) -> list[tuple[int, AnalyzedImage | ImageOutcome]]:
        """Decode every upload (refusals become outcomes), then detect + embed the rest in one batch.

        kind: the accelerator class (see FacePipeline.analyze): "interactive" for a unary Enroll, whose
        caller waits for the answer like a Verify's; "bulk" for streamed enrolment, which yields to them.
        """
        decoded = []
        prepared: list[tuple[int, AnalyzedImage | ImageOutcome]] = []
        for i, data in enumerate(images):
            raise_if_cancelled()  # up to 64 photos: a cancelled call stops decoding them
            try:
                decoded.append((i, self.pipeline.decode(data)))
            except errors.ImageTooLarge as exc:
                prepared.append((i, ImageOutcome(i, ImageStatus.TOO_LARGE, str(exc))))
            except errors.InvalidImage as exc:
                prepared.append((i, ImageOutcome(i, ImageStatus.UNREADABLE, str(exc))))
        analyzed = self.pipeline.analyze([d for _, d in decoded], kind=kind) if decoded else []
        prepared.extend((i, a) for (i, _), a in zip(decoded, analyzed, strict=True))
        return sorted(prepared, key=lambda p: p[0])

    def enroll(
        self,
        identity: str,
        images: Sequence[bytes],
        *,
        metadata: Mapping[str, str] | None = None,
        policy: MultiFacePolicy = MultiFacePolicy.REJECT,
        actor: str = "",
    ) -> EnrollResult:
        name = validate_identity_name(identity)
        meta = validate_metadata(metadata or {})
        if not images:
            raise errors.InvalidRequest("no images: send 1 to 64 photos of the person")
        if len(images) > MAX_IMAGES_PER_ENROLL:
            raise errors.InvalidRequest(f"{len(images)} images in one request; send at most {MAX_IMAGES_PER_ENROLL} (use EnrollStream for bulk)")
        prepared = self._analyze_uploads(images, kind="interactive")
        outcomes: list[ImageOutcome] = []
        to_store: list[tuple[int, ImageOutcome, list[NewFace]]] = []
        for i, item in prepared:
            if isinstance(item, ImageOutcome):
                outcomes.append(item)
                continue
            outcome, rows = self._outcome_for(i, item, labeled=True, policy=policy)
            if rows:
                to_store.append((len(outcomes), outcome, self._new_faces(item, rows)))
            outcomes.append(outcome)
        if not to_store:
            return self._nothing_enrolled(name, outcomes)
        new_faces = [f for _, _, fs in to_store for f in fs]
        with self._write_lock:
            # The last point where a cancelled call stops (the write lock may have been waited for): once
            # committed, an enrolment is kept, and the client's retry is answered DUPLICATE.
            raise_if_cancelled()
            stored = self.store.enroll(name=name, metadata=meta, faces=new_faces, actor=actor or "system")
            self._index_added(new_faces, stored.faces)
        if stored.identity is None:  # every face is already someone else's
            outcomes = self._apply_stored(outcomes, to_store, stored.faces)
            return self._nothing_enrolled(name, outcomes)
        outcomes = self._apply_stored(outcomes, to_store, stored.faces)
        faces_on_record = len(self.store.faces_of_identity(stored.identity.id, self.model.id))
        return EnrollResult(stored.identity.id, name, stored.created, tuple(outcomes), faces_on_record, self.model.id)

    def _nothing_enrolled(self, name: str, outcomes: list[ImageOutcome]) -> EnrollResult:
        """No face of this request belongs to `name` now: fine for an existing identity, an error for a new one."""
        try:
            existing = self.store.get_identity(name=name, model_id=self.model.id)
        except errors.UnknownIdentity:
            reasons = "; ".join(f"image {o.index}: {o.message}" for o in outcomes)
            raise errors.InvalidRequest(f"no face could be enrolled for '{name}', nothing was stored ({reasons})") from None
        return EnrollResult(existing.id, existing.name, False, tuple(outcomes), existing.face_count, self.model.id)

    def _apply_stored(
        self, outcomes: list[ImageOutcome], to_store: list[tuple[int, ImageOutcome, list[NewFace]]], added: Sequence[FaceAdded]
    ) -> list[ImageOutcome]:
        """Turn the store's per-face answers (in input order) into per-image outcomes."""
        outcomes = list(outcomes)
        owners = self.store.identity_names({a.identity_id for a in added if a.status is AddStatus.CONFLICT and a.identity_id})
        pos = 0
        for index, outcome, faces in to_store:
            records = list(added[pos : pos + len(faces)])
            pos += len(faces)
            outcomes[index] = self._stored_outcome(outcome, records, owners)
        return outcomes

    @staticmethod
    def _stored_outcome(outcome: ImageOutcome, records: list[FaceAdded], owners: dict[int, str]) -> ImageOutcome:
        """STORED when a face is new (or was unlabeled and now named), DUPLICATE when all were on record."""
        ids = tuple(r.face_id for r in records)
        conflicts = [r for r in records if r.status is AddStatus.CONFLICT]
        if conflicts and len(conflicts) == len(records):
            other = owners.get(conflicts[0].identity_id or 0, "another identity")
            return replace(
                outcome,
                status=ImageStatus.INVALID,
                message=f"this face is already enrolled as '{other}'; delete or rename that identity first",
                face_id=conflicts[0].face_id,
                face_ids=ids,
            )
        changed = any(r.status in (AddStatus.CREATED, AddStatus.LABELED) for r in records)
        return replace(
            outcome,
            status=ImageStatus.STORED if changed else ImageStatus.DUPLICATE,
            message="" if changed else "this image and face are already on record: nothing added",
            face_id=records[0].face_id,
            face_ids=ids,
        )

    def _index_added(self, faces: Sequence[NewFace], added: Sequence[FaceAdded]) -> None:
        """Add the newly created rows' vectors to the index (called under the write lock, after the commit)."""
        created = [(a.face_id, f.embedding) for f, a in zip(faces, added, strict=True) if a.status is AddStatus.CREATED]
        if created:
            with self._index_call(after_commit=True):
                self.index.add(np.array([c[0] for c in created], dtype=np.int64), np.stack([c[1] for c in created]))

    def enroll_image(
        self,
        identity: str | None,
        image: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
        policy: MultiFacePolicy = MultiFacePolicy.REJECT,
        actor: str = "",
    ) -> StreamEnrollResult:
        """One image of a bulk enrolment. Per-image problems are outcomes, not exceptions."""
        labeled = bool(identity)
        try:
            name = validate_identity_name(identity) if labeled else None
            meta = validate_metadata(metadata or {})
        except errors.InvalidRequest as exc:
            return StreamEnrollResult(ImageOutcome(0, ImageStatus.INVALID, str(exc)), None, identity or None, self.model.id)
        if not meta:  # a photo already on record is not analysed again (bulk.py says why); with metadata the full path runs, to merge it
            done = on_record(self.store, self.model.id, hashlib.sha256(image).hexdigest(), name)
            if done is not None:
                return StreamEnrollResult(done[0], done[1], name, self.model.id)
        ((_, item),) = self._analyze_uploads([image], kind="bulk")
        if isinstance(item, ImageOutcome):
            return StreamEnrollResult(item, None, name, self.model.id)
        outcome, rows = self._outcome_for(0, item, labeled=labeled, policy=policy)
        if not rows:
            return StreamEnrollResult(outcome, None, name, self.model.id)
        faces = self._new_faces(item, rows)
        with self._write_lock:
            raise_if_cancelled()  # never after the commit (see enroll)
            if labeled:
                stored = self.store.enroll(name=name, metadata=meta, faces=faces, actor=actor or "system")
                added: Sequence[FaceAdded] = stored.faces
                identity_id = stored.identity.id if stored.identity is not None else None
            else:
                added = self.store.add_faces(identity_id=None, faces=faces, actor=actor or "system")
                identity_id = None
            self._index_added(faces, added)
        (result,) = self._apply_stored([outcome], [(0, outcome, faces)], added)
        return StreamEnrollResult(result, identity_id, name, self.model.id)

    # -------------------------------------------------------------------------------------- verify
    def verify(
        self,
        image_a: bytes,
        *,
        image_b: bytes | None = None,
        identity: str | None = None,
        threshold: float | None = None,
    ) -> VerifyResult:
        tau = self._threshold(threshold)
        if (image_b is None) == (identity is None):
            raise errors.InvalidRequest("give exactly one of image_b or identity to compare image_a with")
        target = None
        if identity is not None:
            target = self._find(validate_identity_name(identity), None)
        if image_b is not None:
            a, b = self._decode_queries([(image_a, "image_a"), (image_b, "image_b")])
        else:
            a = self._decode_for_query(image_a, "image_a")
        assert a.embeddings is not None
        va = a.embeddings[0]
        # A configured Siamese head decides unless the request asked for a distance threshold.
        head = self.verifier if threshold is None else None
        head_p: float | None = None
        if image_b is not None:
            assert b.embeddings is not None
            distance = float(l2_distances(va, b.embeddings[:1])[0])
            if head is not None:
                head_p = float(head.probabilities(va, b.embeddings[:1])[0])
            other: dict = {"face_b": to_detected_face(b.detections[0]), "faces_in_b": len(b.detections)}
        else:
            assert target is not None
            face_ids, vectors = self.store.embeddings_of_identity(target.id, self.model.id)
            if vectors is None:
                raise errors.FailedPrecondition(
                    f"identity '{target.name}' has no faces embedded by model {self.model.id}; enrol photos of them first"
                )
            dists = l2_distances(va, vectors)
            best = int(np.argmin(dists))  # the identity's closest face decides
            if head is not None:  # ... or the face the head finds most likely the same person
                probs = head.probabilities(va, vectors)
                best = int(np.argmax(probs))
                head_p = float(probs[best])
            distance = float(dists[best])
            other = {"identity": target.name, "matched_face_id": int(face_ids[best])}
        if head is not None:
            assert head_p is not None
            return VerifyResult(
                match=head_p >= HEAD_DECISION_THRESHOLD,
                distance=distance,
                similarity=similarity_from_distance(distance),
                threshold=tau,
                model=self.model.id,
                face_a=to_detected_face(a.detections[0]),
                faces_in_a=len(a.detections),
                probability=head_p,
                decided_by=head.decided_by,
                **other,
            )
        return VerifyResult(
            match=distance <= tau,
            distance=distance,
            similarity=similarity_from_distance(distance),
            threshold=tau,
            model=self.model.id,
            face_a=to_detected_face(a.detections[0]),
            faces_in_a=len(a.detections),
            probability=self._probability(distance),
            **other,
        )

    # ------------------------------------------------------------------------------------ identify
    def identify(self, image: bytes, *, top_k: int = 0, threshold: float | None = None) -> IdentifyResult:
        tau = self._threshold(threshold)
        k = validate_top_k(top_k, default=self.config.default_top_k, maximum=self.config.max_top_k)
        # The request is checked first (a bad image is the caller's to fix whatever the gallery holds),
        # then the gallery's state.
        analyzed = self._decode_for_query(image, "the image")
        with self._index_call():
            gallery = len(self.index)
        if gallery == 0 or self.store.count_faces(self.model.id, labeled=True) == 0:
            raise errors.EmptyGallery(
                f"the gallery has no enrolled faces for model {self.model.id}: enrol people before identifying"
            )
        assert analyzed.embeddings is not None
        t0 = time.perf_counter()
        per_face = self._search_identities(analyzed.embeddings, k)
        assigned = assign_identities(per_face, tau)
        names = self.store.identity_names({h.identity_id for hits in per_face for h in hits})
        faces = []
        for det, hits, chosen in zip(analyzed.detections, per_face, assigned, strict=True):
            candidates = tuple(
                Candidate(
                    identity=names[h.identity_id],
                    identity_id=h.identity_id,
                    distance=h.distance,
                    similarity=similarity_from_distance(h.distance),
                    face_id=h.face_id,
                    probability=self._probability(h.distance),
                )
                for h in hits[:k]
                if h.identity_id in names
            )
            if chosen is not None and chosen.identity_id in names:
                distance = chosen.distance
                faces.append(
                    IdentifiedFace(to_detected_face(det), False, names[chosen.identity_id], chosen.identity_id,
                                   distance, similarity_from_distance(distance), candidates, self._probability(distance))
                )
            else:
                distance = candidates[0].distance if candidates else MAX_DISTANCE
                faces.append(
                    IdentifiedFace(to_detected_face(det), True, None, None, distance,
                                   similarity_from_distance(distance), candidates, self._probability(distance))
                )
        timings = dict(analyzed.timings)
        timings["search"] = time.perf_counter() - t0
        return IdentifyResult(tuple(faces), self.model.id, tau, gallery, timings)

    def _search_identities(self, queries: np.ndarray, k: int) -> list[list]:
        """Top identities per query face. Search deeper until k identities are found or the index ends:
        one person may own many faces, and unlabeled faces take slots too."""
        with self._index_call():
            total = len(self.index)
        depth = min(total, max(4 * k, 32))
        while True:
            with self._index_call():
                distances, ids = self.index.search(queries, depth)
            face_map = self.store.face_identity_map({int(i) for i in ids.ravel() if i >= 0})
            per_face = [aggregate_by_identity(distances[q], ids[q], face_map) for q in range(len(queries))]
            if depth >= total or all(len(h) >= k for h in per_face):
                return per_face
            depth = min(total, depth * 4)

    # ---------------------------------------------------------------------------------- clustering
    def cluster(
        self,
        *,
        scope: Scope = Scope.ALL,
        identities: Sequence[str] = (),
        k: int | None = None,
        k_range: Sequence[int] | range | None = None,
        seed: int = 0,
        niter: int = 20,
        progress: Progress | None = None,
    ) -> GalleryClustering:
        """Cluster the active model's stored faces (clustering_service.py); the run is remembered in memory.

        Runs as exclusive bulk accelerator work (FAISS GEMMs on all cores, or on the GPU: every slot is
        held): interactive calls queued meanwhile go first once it ends. An exception raised by `progress`
        stops the run (nothing remembered).
        """
        run: GalleryClustering = self.pipeline.runner(
            "bulk-exclusive",
            partial(
                run_clustering,
                self.store,
                self.index,
                self.model.id,
                scope=scope,
                identities=identities,
                k=k,
                k_range=k_range,
                seed=seed,
                niter=niter,
                threshold=self._threshold(None),
                progress=progress,
            ),
        )
        self.clustering_runs.add(run)
        return run

    def face_thumbnails(self, face_ids: Sequence[int]) -> dict[int, bytes]:
        """face id -> stored JPEG thumbnail, for the faces that have one (clustering reports)."""
        return self.store.get_thumbnails(face_ids)

    def name_faces(self, face_ids: Sequence[int], name: str, *, actor: str = "") -> AssignResult:
        """Give faces (e.g. unlabeled ones) an identity, created if new. Vectors, so the index, are unchanged."""
        with self._write_lock:
            return self.store.assign_faces(face_ids=face_ids, identity_name=name, actor=actor or "system")

    def name_cluster(
        self, run_id: str | None, cluster_index: int, name: str, *, unlabeled_only: bool = False, actor: str = ""
    ) -> AssignResult:
        """Name every face of one cluster of a remembered run (None/"" = the latest run); unlabeled_only
        leaves the faces that had an identity when the run was made where they are."""
        faces = self.clustering_runs.get(run_id).faces_of(cluster_index, unlabeled_only=unlabeled_only)
        return self.name_faces(faces, name, actor=actor)

    def merge_identities(self, source: str, target: str, *, actor: str = "") -> MergeResult:
        """Move every face of `source` to `target` and delete `source` (index unchanged: same vectors)."""
        with self._write_lock:
            return self.store.merge_identities(source=source, target=target, actor=actor or "system")

    # --------------------------------------------------------------------------------------- embed
    def embed(self, image: bytes, *, all_faces: bool = False) -> EmbedResult:
        analyzed = self._decode_for_query(image, "the image")
        assert analyzed.embeddings is not None
        count = len(analyzed.detections) if all_faces else 1
        faces = tuple(
            EmbeddedFace(to_detected_face(analyzed.detections[i]), analyzed.embeddings[i].copy()) for i in range(count)
        )
        return EmbedResult(faces, self.model.id, self.model.dimension)

    # ---------------------------------------------------------------------------------- identities
    def _find(self, name: str | None, identity_id: int | None) -> IdentityRow:
        if (name is None) == (identity_id is None):
            raise errors.InvalidRequest("name the identity by exactly one of name or id")
        return self.store.get_identity(name=name, id=identity_id, model_id=self.model.id)

    def _info(self, row: IdentityRow, faces: Sequence[FaceRow] = ()) -> IdentityInfo:
        return IdentityInfo(
            id=row.id,
            name=row.name,
            metadata=dict(row.metadata),
            face_count=row.face_count,
            created_at=row.created_at,
            updated_at=row.updated_at,
            faces=tuple(
                FaceInfo(f.id, f.model_id, f.image_sha256, f.box, f.probability, f.created_at, f.identity_id) for f in faces
            ),
        )

    def get_identity(self, *, name: str | None = None, identity_id: int | None = None) -> IdentityInfo:
        row = self._find(name, identity_id)
        return self._info(row, self.store.faces_of_identity(row.id, self.model.id))

    def list_identities(self, *, page_size: int = 0, page_token: str = "", name_prefix: str = "") -> IdentityPage:
        if page_size < 0 or page_size > 1000:
            raise errors.InvalidRequest(f"page_size {page_size} is outside [0, 1000] (0 means 100)")
        listing = self.store.list_identities(
            page_size=page_size or 100,
            after_name=_decode_page_token(page_token),
            name_prefix=name_prefix or None,
            model_id=self.model.id,
        )
        token = _encode_page_token(listing.next_after_name) if listing.next_after_name is not None else ""
        return IdentityPage(tuple(self._info(r) for r in listing.identities), token, listing.total_count)

    def delete_identity(self, *, name: str | None = None, identity_id: int | None = None, actor: str = "") -> DeleteResult:
        if (name is None) == (identity_id is None):
            raise errors.InvalidRequest("name the identity by exactly one of name or id")
        with self._write_lock:
            deleted = self.store.delete_identity(name=name, id=identity_id, actor=actor or "system")
            with self._index_call(after_commit=True):
                self.index.remove(np.array(deleted.faces_by_model.get(self.model.id, ()), dtype=np.int64))
        return DeleteResult(deleted.identity.id, deleted.identity.name, len(deleted.face_ids))

    def rename_identity(
        self, *, name: str | None = None, identity_id: int | None = None, new_name: str, actor: str = ""
    ) -> IdentityInfo:
        """Give an identity a new name (validated like an enrolment's); id, faces and vectors stay.

        Nothing to do in the vector index: it holds face ids only, and every answer looks names up in the
        store (identity_names), so the next Identify already answers with the new name.
        """
        if (name is None) == (identity_id is None):
            raise errors.InvalidRequest("name the identity by exactly one of name or id")
        new = validate_identity_name(new_name)
        with self._write_lock:
            row = self.store.rename_identity(
                name=name, id=identity_id, new_name=new, actor=actor or "system", model_id=self.model.id
            )
        return self._info(row)

    # --------------------------------------------------------------------------------------- stats
    def stats(self) -> GalleryStats:
        status = self._index_status or self.check_index(rebuild=False)
        self._calibration()  # the model's τ as the next query would use it
        return GalleryStats(
            identities=self.store.count_identities(),
            faces=self.store.count_faces(self.model.id),
            unlabeled_faces=self.store.count_faces(self.model.id, labeled=False),
            model=self.model,
            # Live count and checksum; `consistent` is the verdict of the last full check against the store.
            index=self._live_index_status(status),
            device=self.device,
            database=_describe_database(self.store.url),
        )

    def _live_index_status(self, status: IndexStatus) -> IndexStatus:
        with self._index_call():
            return replace(status, vectors=len(self.index), checksum=self.index.checksum().digest)

    def check_index(self, *, rebuild: bool = True) -> IndexStatus:
        """Compare the index with the store (count + checksum over face ids); rebuild on mismatch."""
        with self._write_lock:
            if self.follower is not None:
                # Other servers may write meanwhile: catch up and compare within one snapshot (index_follower.py).
                consistent, store_sum = self.follower.check(rebuild=rebuild)
            else:
                store_sum = self.store.checksum(self.model.id)
                consistent = self.index.checksum() == store_sum
                if not consistent and rebuild:
                    log.warning("vector index differs from the store (%s vs %s): rebuilding", self.index.checksum(), store_sum)
                    self.index.rebuild_from(self.store)
                    consistent = self.index.checksum() == store_sum
            if not consistent and rebuild:
                raise errors.IndexInconsistent("the vector index still differs from the store after a rebuild")
            self._index_status = IndexStatus(
                backend=self.index.kind,
                device=self.index.device,
                vectors=len(self.index),
                consistent=consistent,
                checksum=store_sum.digest,
                checked_at=datetime.now(timezone.utc),
            )
            return self._index_status


def _follower(config: EngineConfig, store: GalleryStore, index: object) -> IndexFollower | None:
    """A follower of the change log for an in-process index (None when off, or the index is shared: Milvus)."""
    if not config.follow_changes or not isinstance(index, VectorIndex):
        return None
    follower = IndexFollower(
        store,
        index,
        poll_s=config.follow_poll_s,
        gap_timeout_s=config.follow_gap_timeout_s,
        check_s=config.follow_check_s,
        retention_s=config.change_log_retention_s,
    )
    follower.mark()
    return follower


def _warn_other_models(store: GalleryStore, model_id: str) -> None:
    """Faces of other models are never served (one model per index): say so, and how to move them over."""
    others = {m: n for m, n in store.face_counts_by_model().items() if m != model_id and n}
    if others:
        log.warning(
            "the gallery holds faces of other models that model %s does not serve: %s; "
            "re-embed them with `faceid reindex --model %s` (server stopped)",
            model_id, ", ".join(f"{n} of {m}" for m, n in sorted(others.items())), model_id,
        )


def _describe_database(url: str) -> str:
    """Dialect and database name for humans: never a password or a full path of the server's disk."""
    from pathlib import PurePath

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = PurePath(parsed.database).name if parsed.database else ""
    return f"{parsed.get_backend_name()}:{name}" if name else parsed.get_backend_name()


def _encode_page_token(last_name: str) -> str:
    return base64.urlsafe_b64encode(last_name.encode()).decode()


def _decode_page_token(token: str) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidRequest("page_token is not one this server issued; start again without it") from exc
