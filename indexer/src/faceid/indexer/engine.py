"""The engine facade: enrol, verify, identify, embed and manage identities for one active model.

One call here is one unit of work: validate everything first, compute (accelerator work through the
runner), then write to the store in one transaction and only then update the derived vector index.
A rejected request never writes anything.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np

from faceid.indexer import errors
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
from faceid.indexer.store import GalleryStore, NewFace, create_store
from faceid.indexer.vector_index import VectorIndex

log = logging.getLogger(__name__)

MAX_IMAGES_PER_ENROLL = 64


class FaceEngine:
    """See the module docstring. Build it with `FaceEngine.open(config)`."""

    def __init__(
        self,
        *,
        config: EngineConfig,
        store: GalleryStore,
        index: VectorIndex,
        pipeline: FacePipeline,
        model: ModelSummary,
        device: str,
    ) -> None:
        self.config = config
        self.store = store
        self.index = index
        self.pipeline = pipeline
        self.model = model
        self.device = device
        self._write_lock = threading.Lock()  # one writer path: store commit + index update stay in step
        self._index_status: IndexStatus | None = None

    # ----------------------------------------------------------------------------------- lifecycle
    @classmethod
    def open(cls, config: EngineConfig, *, runner: AcceleratorRunner = run_directly) -> FaceEngine:
        """Load (or fetch) the model, upgrade the database schema, build and verify the index."""
        from faceid.indexer.detection import FaceDetector
        from faceid.indexer.embedding import Embedder
        from faceid.indexer.models import ensure_model, get_model_spec, load_embedding_network

        spec = get_model_spec(config.model)
        device = resolve_device(config.device)
        model_dir = ensure_model(spec.name, allow_fetch=config.allow_model_fetch)
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
        index = VectorIndex(spec.dimension, spec.name)
        engine = cls(config=config, store=store, index=index, pipeline=pipeline, model=model, device=device)
        engine.check_index(rebuild=True)
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
        self.store.close()

    # ------------------------------------------------------------------------------------ helpers
    def _threshold(self, requested: float | None) -> float:
        validate_threshold(requested)
        return self.model.default_threshold if requested is None else float(requested)

    def _probability(self, distance: float) -> float | None:
        calibration = self.store.get_calibration(self.model.id)
        if calibration is None or calibration.logistic_a is None:
            return None
        z = calibration.logistic_a + calibration.logistic_b * distance
        return float(1.0 / (1.0 + np.exp(-z)))

    def _decode_for_query(self, data: bytes, what: str) -> AnalyzedImage:
        """Decode + detect + embed a query photo; it must show at least one usable face."""
        t0 = time.perf_counter()
        decoded = self.pipeline.decode(data)
        decode_s = time.perf_counter() - t0
        (analyzed,) = self.pipeline.analyze([decoded], kind="interactive")
        analyzed.timings["decode"] = decode_s
        if not analyzed.detections:
            raise errors.NoFaceFound(
                f"no face found in {what} ({decoded.width}x{decoded.height} px): send a photo where a face is "
                f"at least {self.config.min_face_size} px high and clearly visible"
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

    def _analyze_uploads(self, images: Sequence[bytes]) -> list[tuple[int, AnalyzedImage | ImageOutcome]]:
        """Decode every upload (refusals become outcomes), then detect + embed the rest in one batch."""
        decoded = []
        prepared: list[tuple[int, AnalyzedImage | ImageOutcome]] = []
        for i, data in enumerate(images):
            try:
                decoded.append((i, self.pipeline.decode(data)))
            except errors.ImageTooLarge as exc:
                prepared.append((i, ImageOutcome(i, ImageStatus.TOO_LARGE, str(exc))))
            except errors.InvalidImage as exc:
                prepared.append((i, ImageOutcome(i, ImageStatus.UNREADABLE, str(exc))))
        analyzed = self.pipeline.analyze([d for _, d in decoded], kind="bulk", keep_crops=True) if decoded else []
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
        prepared = self._analyze_uploads(images)
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
            existing = self.store.find_identity(name)
            if existing is None:
                reasons = "; ".join(f"image {o.index}: {o.message}" for o in outcomes)
                raise errors.InvalidRequest(f"no face could be enrolled for '{name}', nothing was stored ({reasons})")
            return EnrollResult(existing.id, existing.name, False, tuple(outcomes), self.store.count_faces(self.model.id, identity_id=existing.id), self.model.id)
        with self._write_lock:
            written = self.store.enroll(
                name=name,
                metadata=meta,
                faces=[f for _, _, fs in to_store for f in fs],
                actor=actor,
            )
            self._index_added(written.added)
        by_key = {(a.image_sha256, a.box_key): a for a in written.added + written.existing}
        for pos, outcome, faces in to_store:
            records = [by_key[(f.image_sha256, f.box_key)] for f in faces]
            outcomes[pos] = self._stored_outcome(outcome, records, name)
        faces_on_record = self.store.count_faces(self.model.id, identity_id=written.identity_id)
        return EnrollResult(written.identity_id, name, written.created, tuple(outcomes), faces_on_record, self.model.id)

    def _stored_outcome(self, outcome: ImageOutcome, records: list, identity: str | None) -> ImageOutcome:
        """STORED when any face is new; DUPLICATE when every face was already on record for this identity."""
        conflicting = [r for r in records if not r.created and identity is not None and r.identity_name not in (None, identity)]
        if conflicting:
            other = conflicting[0].identity_name
            return replace(
                outcome,
                status=ImageStatus.INVALID,
                message=f"this face is already enrolled as '{other}'; delete or rename that identity first",
                face_id=conflicting[0].face_id,
                face_ids=tuple(r.face_id for r in records),
            )
        new = any(r.created for r in records)
        return replace(
            outcome,
            status=ImageStatus.STORED if new else ImageStatus.DUPLICATE,
            message="" if new else "this image and face are already on record: nothing added",
            face_id=records[0].face_id,
            face_ids=tuple(r.face_id for r in records),
        )

    def _index_added(self, added: list) -> None:
        if not added:
            return
        ids = np.array([a.face_id for a in added], dtype=np.int64)
        vectors = np.stack([a.embedding for a in added]).astype(np.float32)
        self.index.add(ids, vectors)

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
        ((_, item),) = self._analyze_uploads([image])
        if isinstance(item, ImageOutcome):
            return StreamEnrollResult(item, None, name, self.model.id)
        outcome, rows = self._outcome_for(0, item, labeled=labeled, policy=policy)
        if not rows:
            return StreamEnrollResult(outcome, None, name, self.model.id)
        faces = self._new_faces(item, rows)
        with self._write_lock:
            if labeled:
                written = self.store.enroll(name=name, metadata=meta, faces=faces, actor=actor)
                identity_id: int | None = written.identity_id
            else:
                written = self.store.add_unlabeled(faces=faces, actor=actor)
                identity_id = None
            self._index_added(written.added)
        by_key = {(a.image_sha256, a.box_key): a for a in written.added + written.existing}
        records = [by_key[(f.image_sha256, f.box_key)] for f in faces]
        return StreamEnrollResult(self._stored_outcome(outcome, records, name), identity_id, name, self.model.id)

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
            target = self.store.find_identity(validate_identity_name(identity))
            if target is None:
                raise errors.UnknownIdentity(f"no identity named '{identity}' is enrolled (see ListIdentities)")
        a = self._decode_for_query(image_a, "image_a")
        va = a.embeddings[0]
        if image_b is not None:
            b = self._decode_for_query(image_b, "image_b")
            distance = float(l2_distances(va, b.embeddings[:1])[0])
            return VerifyResult(
                match=distance <= tau,
                distance=distance,
                similarity=similarity_from_distance(distance),
                threshold=tau,
                model=self.model.id,
                face_a=to_detected_face(a.detections[0]),
                faces_in_a=len(a.detections),
                face_b=to_detected_face(b.detections[0]),
                faces_in_b=len(b.detections),
                probability=self._probability(distance),
            )
        assert target is not None
        face_ids, vectors = self.store.embeddings_of_identity(target.id, self.model.id)
        if len(face_ids) == 0:
            raise errors.FailedPrecondition(
                f"identity '{target.name}' has no faces embedded by model {self.model.id}; enrol photos of them first"
            )
        dists = l2_distances(va, vectors)
        best = int(np.argmin(dists))
        distance = float(dists[best])
        return VerifyResult(
            match=distance <= tau,
            distance=distance,
            similarity=similarity_from_distance(distance),
            threshold=tau,
            model=self.model.id,
            face_a=to_detected_face(a.detections[0]),
            faces_in_a=len(a.detections),
            identity=target.name,
            matched_face_id=int(face_ids[best]),
            probability=self._probability(distance),
        )

    # ------------------------------------------------------------------------------------ identify
    def identify(self, image: bytes, *, top_k: int = 0, threshold: float | None = None) -> IdentifyResult:
        tau = self._threshold(threshold)
        k = validate_top_k(top_k, default=self.config.default_top_k, maximum=self.config.max_top_k)
        gallery = len(self.index)
        if gallery == 0 or self.store.count_labeled_faces(self.model.id) == 0:
            raise errors.EmptyGallery(
                f"the gallery has no enrolled faces for model {self.model.id}: enrol people before identifying"
            )
        analyzed = self._decode_for_query(image, "the image")
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
        total = len(self.index)
        depth = min(total, max(4 * k, 32))
        while True:
            distances, ids = self.index.search(queries, depth)
            face_map = self.store.face_identity_map({int(i) for i in ids.ravel() if i >= 0})
            per_face = [aggregate_by_identity(distances[q], ids[q], face_map) for q in range(len(queries))]
            if depth >= total or all(len(h) >= k for h in per_face):
                return per_face
            depth = min(total, depth * 4)

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
    def _find(self, name: str | None, identity_id: int | None):
        if (name is None) == (identity_id is None):
            raise errors.InvalidRequest("name the identity by exactly one of name or id")
        row = self.store.find_identity(name) if name is not None else self.store.find_identity_by_id(identity_id)
        if row is None:
            what = f"named '{name}'" if name is not None else f"with id {identity_id}"
            raise errors.UnknownIdentity(f"no identity {what} is enrolled (see ListIdentities)")
        return row

    def get_identity(self, *, name: str | None = None, identity_id: int | None = None) -> IdentityInfo:
        row = self._find(name, identity_id)
        return self.store.identity_info(row.id, with_faces=True)

    def list_identities(self, *, page_size: int = 0, page_token: str = "", name_prefix: str = "") -> IdentityPage:
        if page_size < 0 or page_size > 1000:
            raise errors.InvalidRequest(f"page_size {page_size} is outside [0, 1000] (0 means 100)")
        after = _decode_page_token(page_token)
        return self.store.list_identities(page_size=page_size or 100, after_name=after, name_prefix=name_prefix,
                                          token_for=_encode_page_token)

    def delete_identity(self, *, name: str | None = None, identity_id: int | None = None, actor: str = "") -> DeleteResult:
        row = self._find(name, identity_id)
        with self._write_lock:
            deleted = self.store.delete_identity(row.id, actor=actor)
            self.index.remove(np.array(deleted.face_ids, dtype=np.int64))
        return DeleteResult(row.id, row.name, len(deleted.face_ids))

    # --------------------------------------------------------------------------------------- stats
    def stats(self) -> GalleryStats:
        status = self._index_status or self.check_index(rebuild=False)
        return GalleryStats(
            identities=self.store.count_identities(),
            faces=self.store.count_faces(self.model.id),
            unlabeled_faces=self.store.count_faces(self.model.id, unlabeled=True),
            model=self.model,
            index=replace(status, vectors=len(self.index)),
            device=self.device,
            database=self.store.describe(),
        )

    def check_index(self, *, rebuild: bool = True) -> IndexStatus:
        """Compare the index with the store (count + checksum over face ids); rebuild on mismatch."""
        with self._write_lock:
            store_sum = self.store.checksum(self.model.id)
            consistent = self.index.checksum() == store_sum
            if not consistent and rebuild:
                log.warning("vector index differs from the store (%s vs %s): rebuilding", self.index.checksum(), store_sum)
                self.index.rebuild_from(self.store)
                consistent = self.index.checksum() == store_sum
                if not consistent:
                    raise errors.IndexInconsistent("the vector index still differs from the store after a rebuild")
            self._index_status = IndexStatus(
                backend="faiss",
                device=self.index.device,
                vectors=len(self.index),
                consistent=consistent,
                checksum=store_sum[1],
                checked_at=datetime.now(timezone.utc),
            )
            return self._index_status


def _encode_page_token(last_name: str) -> str:
    return base64.urlsafe_b64encode(last_name.encode()).decode()


def _decode_page_token(token: str) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidRequest("page_token is not one this server issued; start again without it") from exc
