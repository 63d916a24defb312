"""Bad input gets the documented gRPC status, a message a person can act on, and changes nothing stored.

Requests are sent with the raw generated stub (as any client in any language would), and every case
compares the SQLite file's rows and the API's view (GetStats, ListIdentities) before and after.
"""

from __future__ import annotations

import io
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import FACES_DIR, GROUP_DIR, NO_FACE_DIR, person_photos
from faceid.server import RunningServer
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc
from PIL import Image
from server_harness import StoreSnapshot, served, snapshot, sqlite_tables, start_server, stub

pytestmark = pytest.mark.slow
C = grpc.StatusCode

ENROLLED = "gloria_macapagal_arroyo"
OBAMA = (FACES_DIR / "barack_obama" / "05.jpg").read_bytes()
GROUP = (GROUP_DIR / "longoria-cooper.jpg").read_bytes()
NO_FACE = (NO_FACE_DIR / "coffee.jpg").read_bytes()
TRUNCATED_JPEG = OBAMA[: len(OBAMA) // 3]
NOT_AN_IMAGE = b"%PDF-1.4 this is not a photo\n" * 20


def downscaled(data: bytes, factor: float) -> bytes:
    """The photo scaled down (the face shrinks with it)."""
    with Image.open(io.BytesIO(data)) as im:
        small = im.convert("RGB").resize((max(1, round(im.width * factor)), max(1, round(im.height * factor))))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=95)
    return out.getvalue()


# barack_obama/05's face is ~595 px high: at 1/20 it is ~30 px, above the detector's floor (20 px)
# and below the enrolment minimum (40 px).
TINY_FACE = downscaled(OBAMA, 0.05)


@dataclass
class Target:
    server: RunningServer
    db: Path
    faceid: pb_grpc.FaceIdStub

    def snapshot(self) -> StoreSnapshot:
        return snapshot(self.db, self.faceid)

    def assert_rejected(self, call: Callable[[], Any], code: grpc.StatusCode, *needles: str) -> str:
        """`call` fails with `code`, its message names each needle, and the store is byte-for-byte unchanged."""
        before = self.snapshot()
        with pytest.raises(grpc.RpcError) as info:
            call()
        after = self.snapshot()
        assert info.value.code() is code, info.value.details()
        message = info.value.details()
        assert message and "Traceback" not in message
        for needle in needles:
            assert needle.lower() in message.lower(), message
        assert after == before
        return message


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    db = tmp_path_factory.mktemp("bad-input") / "faceid.db"
    running = start_server(db)
    channel, faceid = stub(running.address)
    photos = [p.read_bytes() for p in person_photos(ENROLLED)[:2]]
    response = faceid.Enroll(pb.EnrollRequest(identity=ENROLLED, images=photos), timeout=120)
    assert [r.status for r in response.results] == [pb.IMAGE_STATUS_STORED] * 2
    yield Target(running, db, faceid)
    channel.close()
    running.stop(0)


# ------------------------------------------------------------------------------ images


@pytest.mark.parametrize(
    ("image", "needle"),
    [
        (b"", "empty"),
        (NOT_AN_IMAGE, "image"),
        (TRUNCATED_JPEG, "image"),
        (NO_FACE, "no face"),
    ],
    ids=["empty", "not-an-image", "truncated-jpeg", "no-face"],
)
def test_unusable_image_in_queries(target: Target, image: bytes, needle: str) -> None:
    target.assert_rejected(lambda: target.faceid.Identify(pb.IdentifyRequest(image=image)), C.INVALID_ARGUMENT, needle)
    target.assert_rejected(
        lambda: target.faceid.Verify(pb.VerifyRequest(image_a=image, identity=ENROLLED)), C.INVALID_ARGUMENT, needle
    )
    target.assert_rejected(lambda: target.faceid.Embed(pb.EmbedRequest(image=image)), C.INVALID_ARGUMENT, needle)


@pytest.mark.parametrize(
    ("image", "status"),
    [
        (b"", pb.IMAGE_STATUS_UNREADABLE),
        (NOT_AN_IMAGE, pb.IMAGE_STATUS_UNREADABLE),
        (TRUNCATED_JPEG, pb.IMAGE_STATUS_UNREADABLE),
        (NO_FACE, pb.IMAGE_STATUS_NO_FACE),
        (TINY_FACE, pb.IMAGE_STATUS_FACE_TOO_SMALL),
        (GROUP, pb.IMAGE_STATUS_MULTIPLE_FACES),
    ],
    ids=["empty", "not-an-image", "truncated-jpeg", "no-face", "tiny-face", "group-photo"],
)
def test_unusable_enrolment_photo(target: Target, image: bytes, status: int) -> None:
    # A new identity whose only photo is unusable: the call fails, and no identity is created.
    message = target.assert_rejected(
        lambda: target.faceid.Enroll(pb.EnrollRequest(identity="nobody-new", images=[image])),
        C.INVALID_ARGUMENT,
        "nothing was stored",
    )
    assert "nobody-new" in message
    # An existing identity: the call succeeds with the reason per image, and nothing is added.
    before = target.snapshot()
    response = target.faceid.Enroll(pb.EnrollRequest(identity=ENROLLED, images=[image]))
    assert [r.status for r in response.results] == [status]
    assert response.results[0].message
    assert response.faces_on_record == 2
    assert target.snapshot() == before


def test_tiny_face_is_still_found_by_queries(target: Target) -> None:
    """The enrolment minimum is a gallery quality gate; a query may show a small face."""
    response = target.faceid.Identify(pb.IdentifyRequest(image=TINY_FACE))
    assert len(response.faces) == 1


def test_group_photo_with_the_largest_policy_is_explicit_opt_in(target: Target) -> None:
    before = target.snapshot()
    request = pb.EnrollRequest(identity="eva-or-bradley", images=[GROUP], multi_face_policy=pb.MULTI_FACE_POLICY_LARGEST)
    response = target.faceid.Enroll(request)
    assert response.created and [r.status for r in response.results] == [pb.IMAGE_STATUS_STORED]
    assert len(response.results[0].faces) == 2 and response.faces_on_record == 1
    target.faceid.DeleteIdentity(pb.DeleteIdentityRequest(name="eva-or-bradley"))
    after = target.snapshot()
    assert after.stats[:4] == before.stats[:4] and after.identities == before.identities


def test_duplicate_enrolment_is_idempotent(target: Target) -> None:
    photo = person_photos(ENROLLED)[0].read_bytes()
    faces_before = sqlite_tables(target.db)["faces"]
    stats_before = target.snapshot().stats
    response = target.faceid.Enroll(pb.EnrollRequest(identity=ENROLLED, images=[photo, photo]))
    assert [r.status for r in response.results] == [pb.IMAGE_STATUS_DUPLICATE] * 2
    assert response.results[0].face_id and response.results[0].face_id == response.results[1].face_id
    assert not response.created and response.faces_on_record == 2
    assert sqlite_tables(target.db)["faces"] == faces_before
    assert target.snapshot().stats == stats_before


def test_a_face_enrolled_under_another_name_is_refused(target: Target) -> None:
    photo = person_photos(ENROLLED)[0].read_bytes()
    target.assert_rejected(
        lambda: target.faceid.Enroll(pb.EnrollRequest(identity="someone-else", images=[photo])),
        C.INVALID_ARGUMENT,
        ENROLLED,
    )


# -------------------------------------------------------------------------- names and refs


def test_unknown_identity(target: Target) -> None:
    target.assert_rejected(
        lambda: target.faceid.Verify(pb.VerifyRequest(image_a=OBAMA, identity="no-such-person")),
        C.NOT_FOUND,
        "no-such-person",
    )
    target.assert_rejected(
        lambda: target.faceid.GetIdentity(pb.GetIdentityRequest(name="no-such-person")), C.NOT_FOUND, "no-such-person"
    )
    target.assert_rejected(lambda: target.faceid.GetIdentity(pb.GetIdentityRequest(id=987654)), C.NOT_FOUND, "987654")
    target.assert_rejected(
        lambda: target.faceid.DeleteIdentity(pb.DeleteIdentityRequest(name="no-such-person")),
        C.NOT_FOUND,
        "no-such-person",
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.Verify(pb.VerifyRequest(image_a=OBAMA)),  # no target
        lambda s: s.GetIdentity(pb.GetIdentityRequest()),  # no ref
        lambda s: s.DeleteIdentity(pb.DeleteIdentityRequest()),
        lambda s: s.Enroll(pb.EnrollRequest(identity=ENROLLED)),  # no images
        lambda s: s.Enroll(pb.EnrollRequest(identity="", images=[OBAMA])),  # no name
        lambda s: s.Enroll(pb.EnrollRequest(identity="bad\x00name", images=[OBAMA])),
        lambda s: s.Enroll(pb.EnrollRequest(identity="x" * 201, images=[OBAMA])),
        lambda s: s.Enroll(pb.EnrollRequest(identity="ok-name", images=[OBAMA], multi_face_policy=7)),
        lambda s: s.ListIdentities(pb.ListIdentitiesRequest(page_size=-1)),
        lambda s: s.ListIdentities(pb.ListIdentitiesRequest(page_size=100_000)),
        lambda s: s.ListIdentities(pb.ListIdentitiesRequest(page_token="!!not-a-token!!")),
    ],
    ids=[
        "verify-no-target", "get-no-ref", "delete-no-ref", "enroll-no-images", "enroll-empty-name",
        "enroll-control-char", "enroll-long-name", "enroll-unknown-policy", "page-size-negative",
        "page-size-huge", "page-token-forged",
    ],
)
def test_malformed_requests(target: Target, call: Callable[[pb_grpc.FaceIdStub], Any]) -> None:
    target.assert_rejected(lambda: call(target.faceid), C.INVALID_ARGUMENT)


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ({f"k{i}": "v" for i in range(65)}, "65 metadata entries"),  # at most 64
        ({"k" * 65: "v"}, "metadata key"),  # keys: 1..64 printable characters
        ({"": "v"}, "metadata key"),
        ({"bad\u200bkey": "v"}, "metadata key"),
        ({"note": "v" * 1025}, "metadata value"),  # values: at most 1024 characters
        ({"note": "line\x07bell"}, "metadata value"),
    ],
    ids=["65-entries", "long-key", "empty-key", "invisible-key", "long-value", "control-value"],
)
def test_metadata_bounds(target: Target, metadata: dict[str, str], needle: str) -> None:
    """Checked before the photo is even decoded: the enrolled person and a new one alike, unary and streamed."""
    for name in (ENROLLED, f"new-{uuid.uuid4().hex[:8]}"):
        target.assert_rejected(
            lambda: target.faceid.Enroll(pb.EnrollRequest(identity=name, images=[OBAMA], metadata=metadata)),
            C.INVALID_ARGUMENT,
            needle,
        )
    before = target.snapshot()
    streamed = list(target.faceid.EnrollStream(iter([pb.EnrollStreamRequest(identity=ENROLLED, image=OBAMA, metadata=metadata)])))
    assert [r.result.status for r in streamed] == [pb.IMAGE_STATUS_INVALID] and needle in streamed[0].result.message
    assert target.snapshot() == before


# ------------------------------------------------------------------------- top_k, threshold


@pytest.mark.parametrize("top_k", [-1, -(2**31), 101, 2**31 - 1])
def test_top_k_out_of_range(target: Target, top_k: int) -> None:
    target.assert_rejected(
        lambda: target.faceid.Identify(pb.IdentifyRequest(image=OBAMA, top_k=top_k)), C.INVALID_ARGUMENT, "top_k"
    )


@pytest.mark.parametrize("threshold", [0.0, -0.5, 2.0001, 1e9, math.nan, math.inf, -math.inf])
def test_threshold_out_of_range(target: Target, threshold: float) -> None:
    target.assert_rejected(
        lambda: target.faceid.Identify(pb.IdentifyRequest(image=OBAMA, threshold=threshold)),
        C.INVALID_ARGUMENT,
        "threshold",
    )
    target.assert_rejected(
        lambda: target.faceid.Verify(pb.VerifyRequest(image_a=OBAMA, image_b=OBAMA, threshold=threshold)),
        C.INVALID_ARGUMENT,
        "threshold",
    )


def test_threshold_bounds_are_inclusive_of_two(target: Target) -> None:
    response = target.faceid.Identify(pb.IdentifyRequest(image=OBAMA, threshold=2.0, top_k=100))
    assert response.threshold == pytest.approx(2.0)


# ----------------------------------------------------------------------------- bulk enrolment


def test_stream_reports_bad_images_and_keeps_going(target: Target) -> None:
    name = f"hugo-{uuid.uuid4().hex[:8]}"
    good = person_photos("hugo_chavez")[0].read_bytes()
    requests = [
        pb.EnrollStreamRequest(identity=name, image=b"", client_ref="empty"),
        pb.EnrollStreamRequest(identity=name, image=NO_FACE, client_ref="no-face"),
        pb.EnrollStreamRequest(identity="bad\nname", image=good, client_ref="bad-name"),
        pb.EnrollStreamRequest(identity=name, image=GROUP, client_ref="group"),
        pb.EnrollStreamRequest(identity=name, image=good, client_ref="good"),
    ]
    before = target.snapshot()
    responses = list(target.faceid.EnrollStream(iter(requests), timeout=120))
    assert [r.client_ref for r in responses] == ["empty", "no-face", "bad-name", "group", "good"]
    assert [r.result.status for r in responses] == [
        pb.IMAGE_STATUS_UNREADABLE,
        pb.IMAGE_STATUS_NO_FACE,
        pb.IMAGE_STATUS_INVALID,
        pb.IMAGE_STATUS_MULTIPLE_FACES,
        pb.IMAGE_STATUS_STORED,
    ]
    assert all(r.result.message for r in responses[:4])
    stored = target.faceid.GetIdentity(pb.GetIdentityRequest(name=name))
    assert [f.id for f in stored.faces] == [responses[-1].result.face_id]
    # Only the good image was stored: erasing it gives back the store as it was (the audit log aside).
    target.faceid.DeleteIdentity(pb.DeleteIdentityRequest(name=name))
    after = target.snapshot()
    assert after.stats[:4] == before.stats[:4] and after.identities == before.identities


# ------------------------------------------------------------------------------- empty gallery


def test_identify_on_an_empty_gallery(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    with served(db) as running:
        channel, faceid = stub(running.address)
        with channel:
            before = snapshot(db, faceid)
            with pytest.raises(grpc.RpcError) as info:
                faceid.Identify(pb.IdentifyRequest(image=OBAMA))
            assert info.value.code() is C.FAILED_PRECONDITION
            assert "enrol" in info.value.details()
            assert snapshot(db, faceid) == before
