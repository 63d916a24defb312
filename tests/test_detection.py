"""FaceDetector on the real photos of shared/data: counts, crops equal to facenet-pytorch's, downscaled detection."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN
from PIL import Image

import pipeline_faces as pf
from conftest import FACES_DIR, GROUP_DIR
from faceid.indexer.detection import Detection, FaceDetector
from faceid.indexer.images import decode_image

pytestmark = pytest.mark.slow  # MTCNN over ~100 real photos (once per process, shared with test_embedding)


def _box_error(a: Detection, b: Detection) -> float:
    return float(np.abs(np.subtract(a.box, b.box)).max())


def _match(reference: list[Detection], found: list[Detection]) -> list[tuple[Detection, Detection]]:
    """Pairs each reference face with the found face of the nearest box centre."""

    def centre(d: Detection) -> np.ndarray:
        return np.array([(d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2])

    return [(r, min(found, key=lambda f: float(np.linalg.norm(centre(f) - centre(r))))) for r in reference]


def test_every_faces_photo_has_exactly_one_face() -> None:
    found = pf.detections()
    photos = pf.face_photos()
    assert len(photos) == 79
    wrong = {p.name: len(found[p.name]) for p in photos if len(found[p.name]) != 1}
    assert wrong == {}
    for p in photos:
        (d,) = found[p.name]
        assert d.probability >= 0.95
        assert d.landmarks.shape == (5, 2) and d.landmarks.dtype == np.float32
        x1, y1, x2, y2 = d.box
        assert x1 < x2 and y1 < y2 and d.size >= 20
        # the landmarks lie inside the face box (eyes above the mouth corners)
        assert (d.landmarks[:, 0] > x1).all() and (d.landmarks[:, 0] < x2).all()
        assert d.landmarks[:2, 1].max() < d.landmarks[3:, 1].min()


def test_group_photos_match_counts_csv_largest_first() -> None:
    found = pf.detections()
    got = {p.name: len(found[p.name]) for p, _ in pf.group_photos()}
    expected = {p.name: n for p, n in pf.group_photos()}
    assert got == expected
    for p, _ in pf.group_photos():
        areas = [d.area for d in found[p.name]]
        assert areas == sorted(areas, reverse=True)


def test_no_face_photos_have_none() -> None:
    found = pf.detections()
    assert {p.name: len(found[p.name]) for p in pf.no_face_photos()} == {p.name: 0 for p in pf.no_face_photos()}


def test_crops_equal_facenet_pytorch_mtcnn() -> None:
    """Boxes and crops are bit-identical to MTCNN(image_size=160, margin=20, post_process=False) on the same photo.

    One photo per call: in a batch, PNet's convolutions round differently in the last float bits (~1e-5 px),
    which is why the shared batched detections are not used here.
    """
    mtcnn = MTCNN(image_size=160, margin=20, post_process=False, keep_all=True)
    names = [
        "john_salley/01.jpg",  # tight 150×150 crop: the box reaches past the image edges
        "kit_harington/01.jpg",  # small face on a beach
        "barack_obama/05.jpg",  # large face
        "faces_group/2008_002470.jpg",  # six faces
    ]
    photos = {p.name: p for p in pf.all_photos()}
    det = pf.detector(None)
    for name in names:
        image = photos[name].decoded.image
        ours = det.detect_one(image)
        boxes, probs = mtcnn.detect(image)
        reference = mtcnn(image)  # (k, 3, 160, 160) float 0..255, largest first
        keep = [i for i, p in enumerate(probs) if p >= 0.95]
        assert len(keep) == len(ours) > 0, name
        for i, d in zip(keep, ours, strict=True):
            np.testing.assert_array_equal(np.asarray(d.box, np.float32), boxes[i].astype(np.float32), err_msg=name)
            crop = det.crop(image, d)
            assert crop.shape == (3, 160, 160) and crop.dtype == np.uint8
            assert torch.equal(torch.from_numpy(crop).float(), reference[i]), name
        np.testing.assert_array_equal(det.crops(image, ours)[0], det.crop(image, ours[0]))


def _iou(a: Detection, b: Detection) -> float:
    ix = max(0.0, min(a.box[2], b.box[2]) - max(a.box[0], b.box[0]))
    iy = max(0.0, min(a.box[3], b.box[3]) - max(a.box[1], b.box[1]))
    return ix * iy / (a.area + b.area - ix * iy)


def test_downscaled_detection_maps_boxes_back_exactly() -> None:
    """Detecting with detect_max_side = detecting on the downscaled copy, boxes multiplied back by the scale."""
    photos = {p.name: p for p in pf.all_photos()}
    side = pf.DOWNSCALED_MAX_SIDE
    for name in ["barack_obama/01.jpg", "kit_harington/04.jpg", "faces_group/2008_002470.jpg"]:  # portrait, tall, wide
        image = photos[name].decoded.image
        w, h = image.size
        s = side / max(w, h)
        copy = image.resize((round(w * s), round(h * s)), Image.Resampling.BILINEAR, reducing_gap=2.0)
        sx, sy = copy.width / w, copy.height / h
        on_copy = pf.detector(None).detect_one(copy)
        mapped = pf.detector(side).detect_one(image)
        assert len(mapped) == len(on_copy) > 0, name
        for c, m in zip(on_copy, mapped, strict=True):
            expected = np.array(c.box) / np.array([sx, sy, sx, sy])
            np.testing.assert_allclose(m.box, expected, atol=1e-3, err_msg=name)
            np.testing.assert_allclose(m.landmarks, c.landmarks / np.array([sx, sy], np.float32), atol=1e-3)
            assert m.probability == pytest.approx(c.probability)


def test_downscaled_detection_finds_the_same_faces_in_the_same_places() -> None:
    """Detecting on a copy no larger than DOWNSCALED_MAX_SIDE: same counts, boxes in the same places.

    MTCNN's boxes jitter by several pixels anyway (shifting a photo by 1 px moves them that much), so boxes
    are compared by overlap, and the mean signed offset, which a mapping error would show, must be ~0.
    """
    full = pf.detections()
    small = pf.downscaled_detections()
    assert len(small) >= 30  # the large photos of faces/, every group photo, the large no-face photos
    assert {n: len(d) for n, d in small.items()} == {n: len(full[n]) for n in small}
    offsets = []
    for name, found in small.items():
        for ref, got in _match(full[name], found):
            assert _iou(ref, got) >= 0.6, (name, ref.box, got.box)
            assert np.abs(ref.landmarks - got.landmarks).max() <= 0.2 * ref.size, name
            assert got.probability >= 0.95
            offsets.append(np.subtract(got.box, ref.box) / ref.size)
    assert len(offsets) >= 45
    assert np.abs(np.mean(offsets, axis=0)).max() <= 0.03, np.mean(offsets, axis=0)


def test_canvas_batching_finds_the_same_faces() -> None:
    """Photos of different sizes padded onto one canvas per batch give the per-size result."""
    photos = [p for p, _ in pf.group_photos()] + list(pf.no_face_photos()[:2])
    canvas = FaceDetector("cpu", batching="canvas", batch_size=8)
    found = canvas.detect([p.decoded.image for p in photos])
    for p, got in zip(photos, found, strict=True):
        ref = pf.detections()[p.name]
        assert len(got) == len(ref), p.name
        for r, g in _match(ref, got):
            assert _iou(r, g) >= 0.8, p.name


def test_exif_rotated_photo_still_has_its_face() -> None:
    path = FACES_DIR / "rose_leslie" / "02.jpg"
    upright = Image.open(path).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90° counter-clockwise to display": stored turned 90° clockwise
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_270).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    decoded = decode_image(buf.getvalue())
    (face,) = pf.detector(None).detect_one(decoded.image)
    (ref,) = pf.detections()["rose_leslie/02.jpg"]
    assert _box_error(face, ref) <= 6.0


def test_min_probability_is_applied() -> None:
    """alex_lacamoire/01 holds a p≈0.78 non-face besides the face: 0.95 drops it, 0.5 keeps it."""
    image = decode_image((FACES_DIR / "alex_lacamoire" / "01.jpg").read_bytes()).image
    lenient = FaceDetector("cpu", min_probability=0.5).detect_one(image)
    assert len(lenient) == 2
    assert min(d.probability for d in lenient) < 0.95
    assert len(pf.detections()["alex_lacamoire/01.jpg"]) == 1


def test_min_face_size_is_applied_in_original_pixels() -> None:
    image = decode_image((GROUP_DIR / "2008_001322.jpg").read_bytes()).image  # faces of ~87, 71 and 62 px
    assert len(pf.detections()["faces_group/2008_001322.jpg"]) == 3
    big_only = FaceDetector("cpu", min_face_size=65).detect_one(image)
    assert len(big_only) == 2
    assert all(d.size >= 65 for d in big_only)


def test_empty_batch_and_bad_arguments() -> None:
    det = pf.detector(None)
    assert det.detect([]) == []
    with pytest.raises(ValueError, match="RGB"):
        det.detect([Image.new("L", (64, 64))])
    with pytest.raises(ValueError, match="margin"):
        FaceDetector("cpu", image_size=160, margin=160)
