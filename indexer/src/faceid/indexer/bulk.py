"""Bulk indexing: skip the photos already on record, and keep several photos of one stream in flight.

Why skip by image before detecting: a re-run of an interrupted bulk index must add nothing for the photos it
already stored, and the (model, image sha256, rounded box) key alone cannot promise that. Batched MTCNN
does not give a photo the same box in every batch: the forward passes' float arithmetic changes with the
batch, and a candidate close to a stage threshold or an NMS tie then survives in one batch and not in
another (measured here with shared/data: the same photo's box moved by up to 3 px for 250 px LFW photos and
15 px for 150 px tight crops, depending on its batch-mates). So the same photo analysed again beside other
photos could be stored twice. Looking the photo up by its sha256 first makes a re-run exact, and cheap: no
detection at all.

Why a window of photos in flight: a stream brings one photo per message, and analysed one at a time each
photo would get a detection and an embedding batch of its own. `ordered_map` runs up to `window` messages
at once, so the micro-batcher (batching.py) finds many photos queued and batches them, while answers still
leave in the order the messages came.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from faceid.indexer.config import EngineConfig
from faceid.indexer.results import DetectedFace, ImageOutcome, ImageStatus
from faceid.indexer.store import FaceRow, GalleryStore

T = TypeVar("T")
R = TypeVar("R")

ALREADY_ON_RECORD = "this image is already on record: nothing added"


def on_record(
    store: GalleryStore, model_id: str, image_sha256: str, identity: str | None
) -> tuple[ImageOutcome, int | None] | None:
    """The DUPLICATE outcome (and identity id) of a photo whose enrolment is already stored, else None.

    Labeled (`identity` given): the photo counts as done when one of its stored faces belongs to that
    identity (a labeled enrolment stores one face per photo). Unlabeled: when one of its faces is stored
    unlabeled, since an unlabeled enrolment stores every face of the photo in one transaction (naming some
    of them later does not change that the photo was indexed). Anything else (nothing stored, or stored
    only under another name or by a labeled enrolment) returns None: the photo must be analysed.
    """
    rows = store.faces_of_image(image_sha256, model_id)
    if not rows:
        return None
    if identity is None:
        if not any(r.identity_id is None for r in rows):
            return None
        mine, identity_id = list(rows), None
    else:
        owners = store.identity_names({r.identity_id for r in rows if r.identity_id is not None})
        mine = [r for r in rows if r.identity_id is not None and owners.get(r.identity_id) == identity]
        if not mine:
            return None
        identity_id = mine[0].identity_id
    outcome = ImageOutcome(
        0,
        ImageStatus.DUPLICATE,
        ALREADY_ON_RECORD,
        image_sha256,
        face_id=mine[0].id,
        faces=tuple(_stored_face(r) for r in mine),
        face_ids=tuple(r.id for r in mine),
    )
    return outcome, identity_id


def _stored_face(row: FaceRow) -> DetectedFace:
    return DetectedFace(box=row.box, probability=row.probability, landmarks=())  # landmarks are not stored


def stream_window(config: EngineConfig) -> int:
    """Photos of one stream in flight: two detection batches, one on the accelerator while the next fills
    (decoded, queued) behind it, so the accelerator does not wait for the stream between batches."""
    return 2 * config.detect_batch_size


_END = object()


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, window: int, name: str = "faceid-bulk") -> Iterator[R]:
    """fn(item) for every item, up to `window` running at once; results in the order of the items.

    `items` is read lazily on a thread of its own (a stream's messages arrive when the client sends them),
    never more than `window` ahead of the results taken: a result is yielded as soon as it and those before
    it are ready, even while the next item has not arrived (a client may wait for an answer before sending
    more). An exception of `fn` is raised where its result would have been; one of `items` after the
    results of the items read before it. Closing the generator stops reading; calls already running finish.
    Each call runs in a copy of the context the generator was started in, so the call's cancel scope
    (cancellation.py) reaches the worker threads.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    slots = threading.Semaphore(window)
    ready: queue.Queue[object] = queue.Queue()
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=window, thread_name_prefix=name)
    context = contextvars.copy_context()  # taken at the first next(), on the consumer's (the RPC's) thread

    def read() -> None:
        try:
            for item in items:
                slots.acquire()
                if stop.is_set():
                    return
                ready.put(pool.submit(context.copy().run, fn, item))  # one copy each: a Context runs on one thread at a time
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there in order
            ready.put(exc)
        finally:
            ready.put(_END)

    reader = threading.Thread(target=read, name=f"{name}-reader", daemon=True)
    reader.start()
    try:
        while True:
            entry = ready.get()
            if entry is _END:
                return
            if isinstance(entry, BaseException):
                raise entry
            assert isinstance(entry, Future)
            result: R = entry.result()
            slots.release()
            yield result
    finally:
        stop.set()
        slots.release()  # a reader waiting for a slot wakes up, sees `stop` and ends
        pool.shutdown(wait=False, cancel_futures=True)
