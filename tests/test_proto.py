"""The contract: generated code is current, proto/ is self-contained, and the names clients rely on exist."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from conftest import REPO_ROOT

PROTO_DIR = REPO_ROOT / "proto"


def test_generated_code_is_up_to_date() -> None:
    sys.path.insert(0, str(PROTO_DIR))
    try:
        import generate  # proto/generate.py
    finally:
        sys.path.remove(str(PROTO_DIR))
    with tempfile.TemporaryDirectory() as tmp:
        for produced in generate.generate(Path(tmp)):
            committed = PROTO_DIR / produced.relative_to(tmp)
            assert committed.exists(), f"{committed} is missing: run `uv run python proto/generate.py`"
            assert committed.read_bytes() == produced.read_bytes(), (
                f"{committed.name} is stale: run `uv run python proto/generate.py`"
            )


def test_protos_import_only_their_own_package_and_well_known_types() -> None:
    for proto in (PROTO_DIR / "faceid" / "v1").glob("*.proto"):
        text = proto.read_text()
        assert re.search(r"^package faceid\.v1;", text, re.M), proto
        for imported in re.findall(r'^import\s+(?:public\s+)?"([^"]+)";', text, re.M):
            assert imported.startswith(("google/protobuf/", "faceid/v1/")), f"{proto.name} imports {imported}"


def test_contract_names() -> None:
    from faceid.v1 import faceid_pb2

    service = faceid_pb2.DESCRIPTOR.services_by_name["FaceId"]
    methods = {m.name for m in service.methods}
    assert {"Enroll", "EnrollStream", "Verify", "Identify", "Embed", "GetIdentity", "ListIdentities",
            "DeleteIdentity", "RenameIdentity", "GetStats"} <= methods
    stream = service.methods_by_name["EnrollStream"]
    assert stream.client_streaming and stream.server_streaming
    enroll = faceid_pb2.EnrollRequest.DESCRIPTOR.fields_by_name
    assert enroll["identity"].type == enroll["identity"].TYPE_STRING
    assert enroll["images"].is_repeated
    assert faceid_pb2.EnrollRequest.DESCRIPTOR.fields_by_name["metadata"].message_type.GetOptions().map_entry
    verify = faceid_pb2.VerifyRequest.DESCRIPTOR
    assert {f.name for f in verify.oneofs_by_name["target"].fields} == {"image_b", "identity"}
    assert verify.fields_by_name["threshold"].has_presence
    identify = faceid_pb2.IdentifyRequest.DESCRIPTOR.fields_by_name
    assert identify["threshold"].has_presence and not identify["top_k"].has_presence
    face = faceid_pb2.IdentifiedFace.DESCRIPTOR.fields_by_name
    assert {"unknown", "identity", "distance", "candidates"} <= set(face)
    assert {"identity", "distance", "similarity"} <= set(faceid_pb2.Candidate.DESCRIPTOR.fields_by_name)
    for answer in (faceid_pb2.VerifyResponse, faceid_pb2.IdentifyResponse, faceid_pb2.EmbedResponse, faceid_pb2.EnrollResponse):
        assert "model" in answer.DESCRIPTOR.fields_by_name, answer
