"""Property-based requests (hypothesis) against one real server: every answer is a clean gRPC status.

Every request message of every service (FaceId, Clustering, Admin, StyleTransfer) is filled with random
and hostile values: random and truncated bytes, decompression-bomb headers, real photos, huge and negative
numbers, NaN, unicode with control and invisible characters, SQL-looking names. Raw random bytes (and
hand-made wire encodings of out-of-range varints) are sent as the serialized request of every method.
The server runs with auth disabled (a fuzzed CreateApiKey would otherwise turn loopback auth on) and with
style transfer enabled at tiny limits, so a valid Stylize request costs a few small VGG steps.

Properties, per request: the status is never INTERNAL or UNKNOWN (a client mistake is never reported as
a server fault), a refusal carries a message and no traceback, and the SQLite store is unchanged unless
the answer says something was stored or deleted.

Example counts are small on purpose: a request with a real photo costs an MTCNN pass on a shared CPU.
The limits themselves (request size, pixels, EXIF orientation, faces per photo) are checked at the end
with explicit examples.
"""

from __future__ import annotations

import io
import struct
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import FACES_DIR, GROUP_DIR, NO_FACE_DIR
from faceid.server import RunningServer
from faceid.server.auth import Scope, method_scopes
from faceid.v1 import admin_pb2, admin_pb2_grpc, clustering_pb2, clustering_pb2_grpc, style_pb2, style_pb2_grpc
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from server_harness import sqlite_tables, start_server

pytestmark = pytest.mark.slow
C = grpc.StatusCode
CLEAN = {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.ALREADY_EXISTS, C.FAILED_PRECONDITION, C.RESOURCE_EXHAUSTED,
         C.OUT_OF_RANGE, C.UNIMPLEMENTED}
FUZZ = settings(max_examples=10, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

ANCHOR = "john_salley"
ANCHOR_PHOTO = (FACES_DIR / ANCHOR / "01.jpg").read_bytes()
OTHER_PHOTO = (FACES_DIR / "naomi_watts" / "01.jpg").read_bytes()
NO_FACE = (NO_FACE_DIR / "coffee.jpg").read_bytes()
GROUP7 = (GROUP_DIR / "2007_007763.jpg").read_bytes()
MAX_MESSAGE = 4 * 1024 * 1024
MAX_IMAGE = 3 * 1024 * 1024
STYLE_LIMITS = {"enabled": True, "max_pixels": 64 * 64, "max_steps": 3}  # StyleSettings' smallest max_pixels


def _png(width: int, height: int) -> bytes:
    """A valid 8×8 PNG whose header then claims width×height (a decompression bomb's header)."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(out, "PNG")
    data = bytearray(out.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR's CRC covers type + data
    return bytes(data)


def _encoded(fmt: str, source: bytes = ANCHOR_PHOTO, **save: Any) -> bytes:
    with Image.open(io.BytesIO(source)) as im:
        out = io.BytesIO()
        im.convert("RGB").save(out, fmt, **save)
    return out.getvalue()


CHEAP_IMAGES = [
    b"",
    b"\xff\xd8\xff",
    b"%PDF-1.4\n" * 30,
    b"GIF89a" + bytes(100),
    _png(100_000, 100_000),  # PIL's own bomb limit
    _png(50_000, 1_000),  # 50 Mpx: above the server's 40 Mpx, refused before decoding
    _png(8, 8),  # decodes, smaller than any face
    _encoded("GIF"),  # a real image in a format the server does not accept
]
REAL_IMAGES = [ANCHOR_PHOTO, OTHER_PHOTO, NO_FACE, _encoded("PNG"), _encoded("WEBP", quality=80)]
SQLISH = [
    "'; DROP TABLE identities; --", "Robert'); DELETE FROM faces; --", "1 OR 1=1", "%", "_", "\\", "*",
    "' UNION SELECT key_id, secret_hash FROM api_keys --", "\x00", "a\x00b", "\u202egnp.exe", "\u200b", "NULL",
    "😀" * 60, "x" * 201, "y" * 256, " leading", "trailing ", "名前", "\n", "\t", "../../etc/passwd", ANCHOR,
]

_image_kinds = [
    st.binary(max_size=300),
    st.sampled_from(CHEAP_IMAGES),
    st.integers(0, len(ANCHOR_PHOTO)).map(lambda n: ANCHOR_PHOTO[:n]),  # truncated photo
]
# Real photos cost a detection pass each: about one image in eight is one.
images = st.sampled_from([*_image_kinds, *_image_kinds, st.sampled_from(REAL_IMAGES)]).flatmap(lambda kind: kind)
names = st.one_of(st.text(max_size=250), st.text(st.characters(max_codepoint=0x7F), max_size=40), st.sampled_from(SQLISH))
int32s = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, -1, 1, 5, 100, 101, 1000, 1001, 2**31 - 1, -(2**31)]))
int64s = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 1, 2, 2**63 - 1, -(2**63)]))
floats = st.one_of(st.none(), st.floats(width=32), st.sampled_from([0.0, -0.0, 2.0, 2.0000002, 1e-45, float("nan"), float("inf")]))
metadata = st.one_of(
    st.dictionaries(names, st.text(max_size=1100), max_size=3),
    st.just({f"k{i}": "v" for i in range(65)}),
)


@dataclass
class Target:
    server: RunningServer
    db: Path
    channel: grpc.Channel
    faceid: pb_grpc.FaceIdStub
    admin: admin_pb2_grpc.AdminStub
    clustering: clustering_pb2_grpc.ClusteringStub
    style: style_pb2_grpc.StyleTransferStub

    def ensure_anchor(self) -> None:
        """The one enrolled person (a fuzzed DeleteIdentity may have erased it; Enroll is idempotent)."""
        try:
            self.faceid.GetIdentity(pb.GetIdentityRequest(name=ANCHOR), timeout=30)
        except grpc.RpcError as exc:
            assert exc.code() is C.NOT_FOUND, exc
            self.faceid.Enroll(pb.EnrollRequest(identity=ANCHOR, images=[ANCHOR_PHOTO]), timeout=120)

    def check(self, call: Callable[[], Any], changed: Callable[[Any], bool] = lambda _: False) -> tuple[grpc.StatusCode, Any]:
        """Run `call`: a clean status, a message on refusal, the store unchanged unless `changed(response)`."""
        before = sqlite_tables(self.db)
        response = None
        try:
            response = call()
            code, details = C.OK, ""
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
        assert code in CLEAN, (code, details)
        if code is not C.OK:
            assert details and "Traceback" not in details, (code, details)
        if code is not C.OK or not changed(response):
            assert sqlite_tables(self.db) == before, (code, details)
        return code, response


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    db = tmp_path_factory.mktemp("fuzz") / "faceid.db"
    running = start_server(
        db,
        limits={"max_message_bytes": MAX_MESSAGE, "max_image_bytes": MAX_IMAGE, "max_faces_per_image": 3},
        auth={"mode": "disabled"},
        style=STYLE_LIMITS,
    )
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    channel = grpc.insecure_channel(running.address, options=options)
    t = Target(running, db, channel, pb_grpc.FaceIdStub(channel), admin_pb2_grpc.AdminStub(channel),
               clustering_pb2_grpc.ClusteringStub(channel), style_pb2_grpc.StyleTransferStub(channel))
    t.ensure_anchor()
    yield t
    channel.close()
    running.stop(0)


def _stored(results: Any) -> bool:
    return any(r.status == pb.IMAGE_STATUS_STORED for r in results)


# ------------------------------------------------------------------------------ typed requests
@FUZZ
@given(identity=names, imgs=st.one_of(st.lists(images, max_size=3), st.just([b""] * 65)), meta=metadata, policy=int32s)
def test_enroll(target: Target, identity: str, imgs: list[bytes], meta: dict[str, str], policy: int) -> None:
    request = pb.EnrollRequest(identity=identity, images=imgs, metadata=meta, multi_face_policy=policy)
    target.check(lambda: target.faceid.Enroll(request, timeout=120), lambda r: _stored(r.results))


stream_requests = st.builds(
    pb.EnrollStreamRequest,
    identity=st.one_of(st.just(""), names),
    image=images,
    metadata=metadata,
    multi_face_policy=int32s,
    client_ref=st.one_of(st.text(max_size=50), st.just("r" * 5000)),
)


@FUZZ
@given(requests=st.lists(stream_requests, max_size=3))
# Found by this test: the anchor's (labeled) photo sent again unlabeled answered DUPLICATE but wrote an audit row.
@example(requests=[pb.EnrollStreamRequest(identity="", image=ANCHOR_PHOTO)])
def test_enroll_stream(target: Target, requests: list[pb.EnrollStreamRequest]) -> None:
    code, responses = target.check(
        lambda: list(target.faceid.EnrollStream(iter(requests), timeout=120)),
        lambda rs: _stored(r.result for r in rs),
    )
    if code is C.OK:
        assert len(responses) == len(requests)  # one answer per image, bad ones included


@FUZZ
@given(image_a=images, target_kind=st.sampled_from(["image_b", "identity", None]), image_b=images, identity=names, threshold=floats)
def test_verify(target: Target, image_a: bytes, target_kind: str | None, image_b: bytes, identity: str, threshold: float | None) -> None:
    target.ensure_anchor()
    request = pb.VerifyRequest(image_a=image_a)
    if target_kind == "image_b":
        request.image_b = image_b
    elif target_kind == "identity":
        request.identity = identity
    if threshold is not None:
        request.threshold = threshold
    target.check(lambda: target.faceid.Verify(request, timeout=120))


@FUZZ
@given(image=images, top_k=int32s, threshold=floats)
def test_identify(target: Target, image: bytes, top_k: int, threshold: float | None) -> None:
    target.ensure_anchor()
    request = pb.IdentifyRequest(image=image, top_k=top_k)
    if threshold is not None:
        request.threshold = threshold
    code, response = target.check(lambda: target.faceid.Identify(request, timeout=120))
    if code is C.OK:
        assert 1 <= len(response.faces) <= 3  # limits.max_faces_per_image
        assert all(len(f.candidates) <= (top_k or 5) for f in response.faces)


@FUZZ
@given(image=images, all_faces=st.booleans())
def test_embed(target: Target, image: bytes, all_faces: bool) -> None:
    target.check(lambda: target.faceid.Embed(pb.EmbedRequest(image=image, all_faces=all_faces), timeout=120))


refs = st.one_of(st.none(), names.map(lambda n: {"name": n}), int64s.map(lambda i: {"id": i}))


@FUZZ
@given(ref=refs)
def test_get_and_delete_identity(target: Target, ref: dict[str, Any] | None) -> None:
    target.check(lambda: target.faceid.GetIdentity(pb.GetIdentityRequest(**(ref or {})), timeout=30))
    target.check(lambda: target.faceid.DeleteIdentity(pb.DeleteIdentityRequest(**(ref or {})), timeout=30), lambda r: True)


@FUZZ
@given(ref=st.one_of(refs, st.just({"name": ANCHOR})), new_name=names)
# SQL-looking names are valid names: stored and read back as text, nothing else happens.
@example(ref={"name": ANCHOR}, new_name="Robert'); DELETE FROM faces; --")
@example(ref={"name": ANCHOR}, new_name="a\x00b")  # NUL: refused before the store
@example(ref={"name": ANCHOR}, new_name=ANCHOR)  # its own name: OK, and not one byte changes
def test_rename_identity(target: Target, ref: dict[str, Any] | None, new_name: str) -> None:
    target.ensure_anchor()
    old_names = {i.id: i.name for i in target.faceid.ListIdentities(pb.ListIdentitiesRequest(page_size=1000), timeout=30).identities}
    request = pb.RenameIdentityRequest(new_name=new_name, **(ref or {}))
    code, renamed = target.check(
        lambda: target.faceid.RenameIdentity(request, timeout=30), lambda r: old_names.get(r.id) != r.name
    )
    if code is C.OK:
        assert renamed.name == unicodedata.normalize("NFC", new_name)
        assert target.faceid.GetIdentity(pb.GetIdentityRequest(id=renamed.id), timeout=30).name == renamed.name
        # Back to the old name: the anchor must stay enrolled as ANCHOR (its photo cannot be enrolled twice).
        target.faceid.RenameIdentity(pb.RenameIdentityRequest(id=renamed.id, new_name=old_names[renamed.id]), timeout=30)


@FUZZ
@given(page_size=int32s, token=st.one_of(st.text(max_size=80), st.sampled_from(["=", "!!", "AAAA", "_w==", "4pyT"])), prefix=names)
def test_list_identities(target: Target, page_size: int, token: str, prefix: str) -> None:
    request = pb.ListIdentitiesRequest(page_size=page_size, page_token=token, name_prefix=prefix)
    target.check(lambda: target.faceid.ListIdentities(request, timeout=30))


@FUZZ
@given(after_id=int64s, page_size=int32s, prefix=names, key=names, check_only=st.booleans())
def test_admin_requests(target: Target, after_id: int, page_size: int, prefix: str, key: str, check_only: bool) -> None:
    request = admin_pb2.ListAuditLogRequest(after_id=after_id, page_size=page_size, action_prefix=prefix)
    target.check(lambda: target.admin.ListAuditLog(request, timeout=30))
    # A key fuzzed into existence by test_api_key_requests may be revoked here: OK may change the store.
    target.check(lambda: target.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key=key), timeout=30), lambda r: True)
    target.check(lambda: target.admin.CheckIndex(admin_pb2.CheckIndexRequest(check_only=check_only), timeout=60))
    target.check(lambda: target.faceid.GetStats(pb.GetStatsRequest(), timeout=30))


@FUZZ
@given(scope=st.one_of(st.sampled_from([1, 2, 3]), int32s), name=names, include_revoked=st.booleans())
def test_api_key_requests(target: Target, scope: int, name: str, include_revoked: bool) -> None:
    code, made = target.check(
        lambda: target.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(scope=scope, name=name), timeout=30), lambda r: True
    )
    if code is C.OK:
        assert made.key.active and made.secret.startswith("fid_")
    code, listed = target.check(
        lambda: target.admin.ListApiKeys(admin_pb2.ListApiKeysRequest(include_revoked=include_revoked), timeout=30)
    )
    assert code is C.OK and all(k.key_id and not k.name.startswith("fid_") for k in listed.keys)


optional_floats = st.one_of(st.none(), st.floats(width=32))


def _valid_or_hostile(draw: st.DrawFn, hostile: set[str], field: str, valid: st.SearchStrategy[Any],
                      bad: st.SearchStrategy[Any]) -> Any:
    """A value the server should accept unless `field` was picked to be hostile: a request with many fields
    reaches the deep code only when all but one or two of them are sensible."""
    return draw(bad if field in hostile else valid)


STYLIZE_FIELDS = ("content", "styles", "method", "size", "steps", "style_layer_weights", "init", "optimizer",
                  "scales", "preview_every", "preview_size", "weights", "seed")


@st.composite
def stylize_requests(draw: st.DrawFn) -> style_pb2.StylizeRequest:
    hostile = draw(st.sets(st.sampled_from(STYLIZE_FIELDS), max_size=2))

    def pick(field: str, valid: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return _valid_or_hostile(draw, hostile, field, valid, bad)

    photo = st.sampled_from([ANCHOR_PHOTO, OTHER_PHOTO])
    style_list = pick("styles", st.lists(photo, min_size=1, max_size=2), st.lists(images, max_size=5))
    request = style_pb2.StylizeRequest(
        content=pick("content", photo, images),
        styles=[style_pb2.StyleImage(image=image) for image in style_list],
        method=pick("method", st.sampled_from([0, 1, 2]), int32s),
        size=pick("size", st.integers(16, 64), int32s),
        steps=pick("steps", st.integers(1, 3), int32s),
        style_layer_weights=pick(
            "style_layer_weights", st.just({}),
            st.dictionaries(st.one_of(names, st.sampled_from(["relu1_1", "relu4_2"])), st.floats(width=32), max_size=3),
        ),
        init=pick("init", st.sampled_from([0, 1, 2, 3]), int32s),
        optimizer=pick("optimizer", st.sampled_from([0, 1, 2]), int32s),
        scales=pick("scales", st.integers(0, 2), int32s),
        seed=pick("seed", st.integers(0, 9), st.integers(0, 2**64 - 1)),
        preserve_color=draw(st.booleans()),
        preview_every=pick("preview_every", st.integers(0, 2), int32s),
        preview_size=pick("preview_size", st.integers(0, 64), int32s),
    )
    if "weights" in hostile:  # blend weights and the optional loss weights, NaN and negatives included
        for style in request.styles:
            value = draw(optional_floats)
            if value is not None:
                style.weight = value
        for field in ("content_weight", "style_weight", "tv_weight", "learning_rate", "style_strength"):
            value = draw(optional_floats)
            if value is not None:
                setattr(request, field, value)
    return request


@FUZZ
@given(request=stylize_requests())
def test_stylize(target: Target, request: style_pb2.StylizeRequest) -> None:
    code, events = target.check(lambda: list(target.style.Stylize(request, timeout=120)))
    if code is C.OK:
        assert events and events[-1].WhichOneof("event") == "result"


# ------------------------------------------------------------------------------- raw wire bytes
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative numbers travel as 10-byte two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


crafted = st.one_of(
    st.binary(max_size=200),
    # A varint of any 64-bit value in any of the first fields (top_k, page_size, ids, enums ...).
    st.tuples(st.integers(1, 8), st.integers(-(2**63), 2**64 - 1)).map(lambda t: _field(t[0], 0, _varint(t[1]))),
    # A length-delimited field that claims more bytes than follow, or holds invalid UTF-8.
    st.tuples(st.integers(1, 8), st.integers(0, 2**32), st.binary(max_size=20)).map(
        lambda t: _field(t[0], 2, _varint(t[1]) + t[2])
    ),
    st.integers(1, 8).map(lambda n: _field(n, 2, _varint(2) + b"\xff\xfe")),
    st.integers(0, 60).map(lambda n: pb.IdentifyRequest(image=ANCHOR_PHOTO[:40], top_k=3).SerializeToString()[:n]),
)
# (full method name, client streaming, server streaming) of every RPC of every service
ALL_METHODS = [
    (f"/{service.full_name}/{m.name}", m.client_streaming, m.server_streaming)
    for module in (pb, clustering_pb2, admin_pb2, style_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for m in service.methods
]
WRITING_METHODS = ("/Enroll", "/EnrollStream", "/DeleteIdentity", "/RenameIdentity", "/NameFaces", "/MergeIdentities",
                   "/CreateApiKey", "/RevokeApiKey")


def test_the_raw_bytes_test_covers_every_service() -> None:
    services = {name.split("/")[1] for name, _, _ in ALL_METHODS}
    assert services == {"faceid.v1.FaceId", "faceid.v1.Clustering", "faceid.v1.Admin", "faceid.v1.StyleTransfer"}
    assert all(not client or server for _, client, server in ALL_METHODS)  # no stream-unary RPC to call differently
    # Every gallery-writing RPC (write scope; Stylize only computes) may change the store when it answers OK:
    # a new one missing from WRITING_METHODS would fail the raw-bytes test only by chance, so fail here.
    writers = {m for m, scope in method_scopes().items() if scope is Scope.WRITE and not m.endswith("/Stylize")}
    assert writers and all(m.endswith(WRITING_METHODS) for m in writers), sorted(writers)
    assert writers <= {name for name, _, _ in ALL_METHODS}


@settings(FUZZ, max_examples=60)
@given(method=st.sampled_from(ALL_METHODS), raw=st.lists(crafted, min_size=1, max_size=2))
def test_raw_bytes_to_every_method(target: Target, method: tuple[str, bool, bool], raw: list[bytes]) -> None:
    name, client_streaming, server_streaming = method
    writes = name.endswith(WRITING_METHODS)
    if client_streaming:
        call = target.channel.stream_stream(name)
        target.check(lambda: list(call(iter(raw), timeout=120)), lambda rs: writes)
    elif server_streaming:
        stream = target.channel.unary_stream(name)
        target.check(lambda: list(stream(raw[0], timeout=120)), lambda rs: writes)
    else:
        unary = target.channel.unary_unary(name)
        target.check(lambda: unary(raw[0], timeout=120), lambda r: writes)


# ---------------------------------------------------------------------- the limits, explicitly
def test_request_size_limit(target: Target) -> None:
    code, _ = target.check(lambda: target.faceid.Identify(pb.IdentifyRequest(image=b"\0" * (MAX_MESSAGE + 1)), timeout=60))
    assert code is C.RESOURCE_EXHAUSTED  # gRPC's own message limit, before any parsing
    big = ANCHOR_PHOTO + b"\0" * (MAX_IMAGE + 1 - len(ANCHOR_PHOTO))  # fits the message, not the image limit
    with pytest.raises(grpc.RpcError) as info:
        target.faceid.Embed(pb.EmbedRequest(image=big), timeout=60)  # Embed: needs no gallery
    assert info.value.code() is C.INVALID_ARGUMENT and "MiB" in info.value.details()


def test_decompression_bombs_are_refused_before_decoding(target: Target) -> None:
    for bomb in (_png(100_000, 100_000), _png(50_000, 1_000)):
        with pytest.raises(grpc.RpcError) as info:
            target.faceid.Embed(pb.EmbedRequest(image=bomb), timeout=60)
        assert info.value.code() is C.INVALID_ARGUMENT and "pixels" in info.value.details()


def test_exif_orientation_is_honoured(target: Target) -> None:
    target.ensure_anchor()
    other = (FACES_DIR / ANCHOR / "02.jpg").read_bytes()
    with Image.open(io.BytesIO(other)) as im:
        upright = im.convert("RGB")
    # Stored rotated a quarter turn, with the EXIF tag (6) that tells viewers to turn it back upright.
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=92, exif=exif)
    tagged = target.faceid.Identify(pb.IdentifyRequest(image=out.getvalue()), timeout=120).faces[0]
    reference = target.faceid.Identify(pb.IdentifyRequest(image=other), timeout=120).faces[0]
    assert not tagged.unknown and tagged.identity == ANCHOR
    # Same face, same box as in the upright original: boxes are in displayed (rotated-back) coordinates.
    got, want = tagged.face.box, reference.face.box
    assert max(abs(got.x1 - want.x1), abs(got.y1 - want.y1), abs(got.x2 - want.x2), abs(got.y2 - want.y2)) < 3


def test_faces_per_photo_are_capped(target: Target) -> None:
    target.ensure_anchor()
    response = target.faceid.Identify(pb.IdentifyRequest(image=GROUP7), timeout=120)
    assert len(response.faces) == 3  # 7 faces in the photo, limits.max_faces_per_image = 3
    sides = [f.face.box.x2 - f.face.box.x1 for f in response.faces]
    assert sides == sorted(sides, reverse=True)  # the largest ones are kept


def test_deadline_is_honoured(target: Target) -> None:
    with pytest.raises(grpc.RpcError) as info:
        target.faceid.Identify(pb.IdentifyRequest(image=GROUP7), timeout=0.001)
    assert info.value.code() is C.DEADLINE_EXCEEDED
    assert target.faceid.GetStats(pb.GetStatsRequest(), timeout=30).index.consistent  # still serving


def test_undecodable_request_bytes_are_invalid_argument_not_internal(target: Target) -> None:
    """gRPC itself would answer INTERNAL ("Exception deserializing request!"); the server says INVALID_ARGUMENT."""
    truncated = _field(1, 2, _varint(50) + b"only five")  # claims 50 bytes, carries 9
    bad_utf8 = _field(1, 2, _varint(2) + b"\xff\xfe")  # GetIdentityRequest.name must be UTF-8
    for method, raw in (("/faceid.v1.FaceId/Identify", truncated), ("/faceid.v1.FaceId/GetIdentity", bad_utf8)):
        with pytest.raises(grpc.RpcError) as info:
            target.channel.unary_unary(method)(raw, timeout=30)
        assert info.value.code() is C.INVALID_ARGUMENT and "not a valid protobuf" in info.value.details()
    stream = target.channel.stream_stream("/faceid.v1.FaceId/EnrollStream")
    with pytest.raises(grpc.RpcError) as info:
        list(stream(iter([truncated]), timeout=30))
    assert info.value.code() is C.INVALID_ARGUMENT


# ---------------------------------------------------------------------------------- clustering
# Last in this module: NameFaces and MergeIdentities may move the anchor's face to another name, after which
# the anchor cannot be enrolled again (its photo belongs to someone else), and the tests above need it.
@st.composite
def cluster_requests(draw: st.DrawFn) -> clustering_pb2.ClusterRequest:
    hostile = draw(st.sets(st.sampled_from(["scope", "identities", "k", "niter", "seed"]), max_size=2))

    def pick(field: str, valid: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return _valid_or_hostile(draw, hostile, field, valid, bad)

    request = clustering_pb2.ClusterRequest(
        scope=pick("scope", st.sampled_from([0, 1, 2]), int32s),
        identities=pick("identities", st.just([]), st.lists(st.one_of(names, st.just(ANCHOR)), max_size=3)),
        seed=pick("seed", st.integers(0, 9), st.integers(0, 2**64 - 1)),
        niter=pick("niter", st.integers(0, 30), int32s),
        include_thumbnails=draw(st.booleans()),
    )
    choice = draw(st.sampled_from(["k", "k", "auto_k", "none"]))  # none: refused (k or auto_k is required)
    if choice == "k":
        request.k = pick("k", st.integers(1, 2), int32s)
    elif choice == "auto_k":
        request.auto_k.min_k, request.auto_k.max_k = pick("k", st.tuples(st.just(2), st.integers(2, 3)), st.tuples(int32s, int32s))
    return request


@st.composite
def name_faces_requests(draw: st.DrawFn) -> clustering_pb2.NameFacesRequest:
    request = clustering_pb2.NameFacesRequest(name=draw(names), unlabeled_only=draw(st.booleans()))
    target_kind = draw(st.sampled_from(["faces", "cluster", "cluster", "none"]))
    if target_kind == "faces":
        request.faces.face_ids.extend(draw(st.lists(st.one_of(int64s, st.integers(1, 20)), max_size=4)))
    elif target_kind == "cluster":
        request.cluster.run_id = draw(st.one_of(st.just(""), st.text(max_size=40)))
        request.cluster.cluster = draw(st.one_of(int32s, st.integers(0, 3)))
    return request


@pytest.fixture
def cluster_gallery(target: Target) -> Target:
    """Several faces of two people (once per test, not per example), so that some fuzzed runs succeed."""
    target.ensure_anchor()
    photos = [p.read_bytes() for p in sorted((FACES_DIR / "naomi_watts").glob("*.jpg"))[:2]]
    target.faceid.Enroll(pb.EnrollRequest(identity="naomi_watts", images=photos), timeout=120)
    return target


@FUZZ
@given(cluster=cluster_requests(), naming=name_faces_requests(), source=st.one_of(names, st.just("naomi_watts")),
       merge_target=st.one_of(names, st.just(ANCHOR)))
def test_clustering_requests(
    cluster_gallery: Target, cluster: clustering_pb2.ClusterRequest, naming: clustering_pb2.NameFacesRequest, source: str,
    merge_target: str,
) -> None:
    target, c = cluster_gallery, cluster_gallery.clustering
    code, events = target.check(lambda: list(c.Cluster(cluster, timeout=120)))  # a run lives in memory only
    if code is C.OK:
        assert any(e.WhichOneof("event") == "result" for e in events)
    target.check(lambda: c.NameFaces(naming, timeout=60), lambda r: True)
    merge = clustering_pb2.MergeIdentitiesRequest(source=source, target=merge_target)
    target.check(lambda: c.MergeIdentities(merge, timeout=60), lambda r: True)
