"""RenameIdentity on the real server with keys required: the new name answers at once (Identify reads names
from the store, the vector index holds face ids only), the old name is gone, a taken or bad name and an
unknown identity change nothing, and the audit log names the key that renamed, by identity id only.

One server per module (real weights, a tmp_path SQLite file), called with the raw generated stubs plus
`x-api-key` metadata, and once with the typed client.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import person_photos
from faceid.client import AlreadyExists, FaceIdClient, NotFound
from faceid.indexer.store import KeyStore
from faceid.server import RunningServer
from faceid.server.auth import Scope, create_key
from faceid.v1 import admin_pb2, admin_pb2_grpc
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc
from server_harness import rpc_status, sqlite_tables, start_server

pytestmark = pytest.mark.slow
C = grpc.StatusCode
RENAMED_PERSON = "john_shimkus"
OTHER_PERSON = "gloria_macapagal_arroyo"


@dataclass
class Secured:
    server: RunningServer
    db: Path
    channel: grpc.Channel
    faceid: pb_grpc.FaceIdStub
    admin: admin_pb2_grpc.AdminStub
    keys: dict[str, str]  # scope label -> key, named "<label>-key"

    def md(self, scope: str) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", self.keys[scope]),)

    def enroll(self, name: str, person: str, photos: slice) -> pb.EnrollResponse:
        images = [p.read_bytes() for p in person_photos(person)[photos]]
        response = self.faceid.Enroll(pb.EnrollRequest(identity=name, images=images), metadata=self.md("write"), timeout=120)
        assert all(r.status == pb.IMAGE_STATUS_STORED for r in response.results), response
        return response

    def identify(self, person: str, photo: int) -> pb.IdentifiedFace:
        image = person_photos(person)[photo].read_bytes()
        (face,) = self.faceid.Identify(pb.IdentifyRequest(image=image), metadata=self.md("read"), timeout=120).faces
        return face

    def rename(self, new_name: str, *, name: str | None = None, id: int | None = None, scope: str = "write") -> pb.Identity:
        request = pb.RenameIdentityRequest(new_name=new_name)
        if name is not None:
            request.name = name
        if id is not None:
            request.id = id
        return self.faceid.RenameIdentity(request, metadata=self.md(scope), timeout=30)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    db = tmp_path_factory.mktemp("rename") / "faceid.db"
    with KeyStore.open(f"sqlite:///{db}") as store:
        keys = {s.label: create_key(store, scope=s, name=f"{s.label}-key", actor="cli").key for s in Scope}
    running = start_server(db, auth={"mode": "required"})
    channel = grpc.insecure_channel(running.address)
    try:
        yield Secured(running, db, channel, pb_grpc.FaceIdStub(channel), admin_pb2_grpc.AdminStub(channel), keys)
    finally:
        channel.close()
        running.stop(0)


def test_a_renamed_identity_identifies_under_its_new_name_at_once(secured: Secured) -> None:
    enrolled = secured.enroll("shimkus", RENAMED_PERSON, slice(0, 2))
    before = secured.identify(RENAMED_PERSON, 3)
    assert (before.unknown, before.identity, before.identity_id) == (False, "shimkus", enrolled.identity_id)

    decomposed = "Joh\u0301n Shimkus"  # NFD: stored NFC, as an enrolment's name would be
    renamed = secured.rename(decomposed, name="shimkus")
    nfc = unicodedata.normalize("NFC", decomposed)
    assert (renamed.id, renamed.name, renamed.face_count) == (enrolled.identity_id, nfc, 2)
    assert renamed.updated_at.ToDatetime() >= renamed.created_at.ToDatetime()

    after = secured.identify(RENAMED_PERSON, 3)  # no index rebuild, no wait
    assert (after.unknown, after.identity, after.identity_id) == (False, nfc, enrolled.identity_id)
    assert after.distance == pytest.approx(before.distance, abs=1e-6)  # same vectors, same face
    code, details = rpc_status(lambda: secured.faceid.GetIdentity(pb.GetIdentityRequest(name="shimkus"), metadata=secured.md("read"), timeout=30))
    assert code is C.NOT_FOUND and "shimkus" in details
    got = secured.faceid.GetIdentity(pb.GetIdentityRequest(name=nfc), metadata=secured.md("read"), timeout=30)
    assert got.id == enrolled.identity_id and len(got.faces) == 2

    # By id, and back: the same identity throughout; renaming to the current name changes nothing.
    assert secured.rename("shimkus-2", id=enrolled.identity_id).name == "shimkus-2"
    tables = sqlite_tables(secured.db)
    assert secured.rename("shimkus-2", name="shimkus-2").id == enrolled.identity_id
    assert sqlite_tables(secured.db) == tables
    assert secured.identify(RENAMED_PERSON, 4).identity == "shimkus-2"


def test_a_taken_name_a_bad_name_or_an_unknown_identity_changes_nothing(secured: Secured) -> None:
    a = secured.enroll("arroyo", OTHER_PERSON, slice(0, 1))
    b = secured.enroll("arroyo-taken", OTHER_PERSON, slice(1, 2))
    assert a.identity_id != b.identity_id
    before, identified = sqlite_tables(secured.db), secured.identify(OTHER_PERSON, 2)
    refused = {
        "taken": (lambda: secured.rename("arroyo-taken", name="arroyo"), C.ALREADY_EXISTS),
        "taken, by id": (lambda: secured.rename("arroyo-taken", id=a.identity_id), C.ALREADY_EXISTS),
        "unknown name": (lambda: secured.rename("anyone", name="nobody-by-that-name"), C.NOT_FOUND),
        "unknown id": (lambda: secured.rename("anyone", id=2**62), C.NOT_FOUND),
        "no identity named": (lambda: secured.rename("anyone"), C.INVALID_ARGUMENT),
        "read key": (lambda: secured.rename("by-reader", name="arroyo", scope="read"), C.PERMISSION_DENIED),
    }
    for bad in ("", " arroyo", "arroyo ", "a\x00b", "a\u200bb", "a\nb", "\u202eoyorra", "x" * 201):
        refused[f"new name {bad!r}"] = (lambda bad=bad: secured.rename(bad, name="arroyo"), C.INVALID_ARGUMENT)  # type: ignore[misc]
    for what, (call, expected) in refused.items():
        code, details = rpc_status(call)
        assert code is expected, (what, code, details)
        assert details and "Traceback" not in details, what
        assert sqlite_tables(secured.db) == before, what  # not even an audit row
    # Identify still answers as it did, with the names as they were.
    assert secured.identify(OTHER_PERSON, 2) == identified


def test_the_audit_log_names_the_key_that_renamed_but_no_name(secured: Secured) -> None:
    enrolled = secured.enroll("savage-old", "john_savage", slice(0, 1))
    secured.rename("savage-new", name="savage-old")
    entries = secured.admin.ListAuditLog(
        admin_pb2.ListAuditLogRequest(action_prefix="identity.rename", page_size=1000), metadata=secured.md("admin"), timeout=30
    ).entries
    mine = [e for e in entries if e.identity_id == enrolled.identity_id]
    assert [(e.actor, e.action, e.subject, e.identity) for e in mine] == [
        ("key:write-key", "identity.rename", f"identity:{enrolled.identity_id}", "savage-new")  # resolved now
    ]
    assert json.loads(mine[0].details_json) == {"identity_id": enrolled.identity_id}
    # The log keeps ids only (docs/security.md): neither name is in any stored audit row.
    rows = sqlite_tables(secured.db)["audit_log"]
    assert not any(name in json.dumps(row, default=str) for row in rows for name in ("savage-old", "savage-new"))


def test_the_typed_client_renames_and_raises_typed_errors(secured: Secured) -> None:
    with FaceIdClient(secured.server.address, api_key=secured.keys["write"], timeout=60) as client:
        enrolled = client.enroll("koizumi", *person_photos("junichiro_koizumi")[:1])
        renamed = client.rename_identity("koizumi", new_name="Junichiro Koizumi")
        assert (renamed.id, renamed.name, renamed.face_count) == (enrolled.identity_id, "Junichiro Koizumi", 1)
        assert client.rename_identity(id=enrolled.identity_id, new_name="koizumi").name == "koizumi"
        client.enroll("koizumi-2", *person_photos("junichiro_koizumi")[1:2])
        with pytest.raises(AlreadyExists):
            client.rename_identity("koizumi", new_name="koizumi-2")
        with pytest.raises(NotFound):
            client.rename_identity("Junichiro Koizumi", new_name="anyone")
        with pytest.raises(ValueError, match="exactly one"):
            client.rename_identity(new_name="anyone")
