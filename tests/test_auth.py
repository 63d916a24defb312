"""API keys: stored only as salted scrypt hashes, checked on every RPC by one interceptor, scoped by one table.

Unit tests use a real SQLite key store; the server tests run the real server (auth required) on
127.0.0.1:0 with keys created the way `faceid-server keys create` creates them, and call it with the raw
generated stubs plus metadata, as any client would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import FACES_DIR, person_photos
from faceid.indexer.store import KeyStore
from faceid.server import RunningServer, auth
from faceid.server.auth import AuthPolicy, KeyVerifier, Scope, create_key, is_loopback, method_scopes
from faceid.server.cli import app as server_cli
from faceid.v1 import admin_pb2, admin_pb2_grpc, clustering_pb2, faceid_pb2, style_pb2
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_harness import free_port, rpc_status, start_server
from typer.testing import CliRunner

C = grpc.StatusCode
READ_RPCS = {"Verify", "Identify", "Embed", "GetIdentity", "ListIdentities", "GetStats"}
WRITE_RPCS = {"Enroll", "EnrollStream", "DeleteIdentity", "RenameIdentity"}
CLUSTERING_WRITE_RPCS = {"NameFaces", "MergeIdentities"}  # Cluster itself needs admin


def _all_rpcs() -> list[str]:
    names = []
    for module in (faceid_pb2, clustering_pb2, style_pb2, admin_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            names += [f"/{service.full_name}/{m.name}" for m in service.methods]
    return names


# ------------------------------------------------------------------------------------ the table
def test_every_rpc_of_every_service_is_in_the_one_table_with_the_issue_s_scopes() -> None:
    table = method_scopes()
    missing = [m for m in _all_rpcs() if m not in table]
    assert missing == []
    # ... and nothing in it that no service serves (a stale entry hides a renamed RPC's real scope)
    outside = {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
               "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
               "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}
    assert sorted(set(table) - set(_all_rpcs()) - outside) == []
    for method in _all_rpcs():
        service, name = method.strip("/").split("/")
        if service == "faceid.v1.FaceId":
            assert table[method] == (Scope.READ if name in READ_RPCS else Scope.WRITE), method
            assert name in READ_RPCS | WRITE_RPCS
        elif service == "faceid.v1.Clustering":
            assert table[method] == (Scope.WRITE if name in CLUSTERING_WRITE_RPCS else Scope.ADMIN), method
        elif service == "faceid.v1.Admin":
            assert table[method] == Scope.ADMIN, method
    assert method_scopes(style_scope=Scope.ADMIN)["/faceid.v1.StyleTransfer/Stylize"] == Scope.ADMIN
    assert table["/grpc.health.v1.Health/Check"] is None  # probes need no key


def test_a_method_missing_from_the_table_needs_admin(tmp_path: Path) -> None:
    with KeyStore.open(f"sqlite:///{tmp_path / 'k.db'}") as keys:
        interceptor = auth.build_interceptor(keys, mode="required", host="127.0.0.1")
        assert interceptor.required("/faceid.v1.FaceId/SomethingNew") == Scope.ADMIN
        assert interceptor.required("/faceid.v1.FaceId/GetStats") == Scope.READ


# ----------------------------------------------------------------------------- keys and hashes
@pytest.fixture
def keys(tmp_path: Path) -> Iterator[KeyStore]:
    with KeyStore.open(f"sqlite:///{tmp_path / 'keys.db'}") as store:
        yield store


def test_key_is_shown_once_and_stored_only_as_a_salted_scrypt_hash(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    with KeyStore.open(f"sqlite:///{db}") as keys:
        a = create_key(keys, scope=Scope.READ, name="door", actor="cli")
        b = create_key(keys, scope=Scope.READ, name=None, actor="cli")
        listed = keys.list()
    assert re.fullmatch(r"fid_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", a.key)
    assert b.row.name == f"key-{b.row.key_id}"
    secret = a.key.split("_", 2)[2]
    row = a.row
    assert row.kdf == "scrypt:n=16384,r=8,p=1" and len(row.salt) == 16 and row.salt != b.row.salt
    assert row.secret_hash == hashlib.scrypt(secret.encode(), salt=row.salt, n=16384, r=8, p=1, dklen=32, maxmem=64 << 20)
    # Neither the key nor its secret is anywhere in the database files (main file and WAL).
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("keys.db"))
    for text in (a.key, secret, b.key):
        assert text.encode() not in stored
    assert "secret_hash" not in repr(listed) and "salt=" not in repr(listed)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT actor, action, subject FROM audit_log").fetchall() == [
            ("cli", "key.create", "key:door"),
            ("cli", "key.create", f"key:{b.row.name}"),
        ]


def test_verifier_accepts_only_the_exact_active_key(keys: KeyStore) -> None:
    new = create_key(keys, scope=Scope.WRITE, name="ci", actor="cli")
    other = create_key(keys, scope=Scope.READ, name="other", actor="cli")
    verifier = KeyVerifier(keys)
    assert verifier.verify(new.key) == new.row
    assert verifier.verify(f"  {new.key}\n") == new.row  # surrounding whitespace from a copy-paste
    key_id = new.row.key_id
    wrong_secret = f"fid_{key_id}_{other.key.split('_', 2)[2]}"
    for bad in (wrong_secret, new.key[:-1], new.key + "x", new.key.upper(), "", "Bearer", f"fid_{'0' * 12}_{'A' * 43}"):
        assert verifier.verify(bad) is None, bad
    keys.revoke("ci", actor="cli")
    assert verifier.verify(new.key) is None  # revoked: refused at once, although its check was memoised
    assert verifier.verify(other.key) == other.row


def test_scrypt_runs_once_per_key_and_guessing_stops_reaching_it(keys: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = auth.hash_secret

    def counting(secret: str, salt: bytes, kdf: str) -> bytes:
        calls.append(kdf)
        return real(secret, salt, kdf)

    monkeypatch.setattr(auth, "hash_secret", counting)
    new = create_key(keys, scope=Scope.READ, name="cam", actor="cli")
    calls.clear()
    verifier = KeyVerifier(keys)
    for _ in range(5):
        assert verifier.verify(new.key) is not None
    assert len(calls) == 1  # the slow hash once, then the memo

    guess = new.key[:-4] + ("AAAA" if not new.key.endswith("AAAA") else "BBBB")
    fresh = KeyVerifier(keys)  # nothing memoised: a guesser's view
    for _ in range(20):
        assert fresh.verify(guess, "10.6.6.6") is None
    assert len(calls) == 1 + KeyVerifier.MAX_FAILURES  # throttled after MAX_FAILURES wrong secrets
    assert fresh.verify(new.key, "10.6.6.6") is None  # even the right secret, from the guesser's address
    # The key's holder is still let in while guessing goes on: from its memo, or from another address.
    assert verifier.verify(new.key, "10.6.6.6") is not None
    assert fresh.verify(new.key, "10.0.0.2") is not None
    assert verifier.verify(guess) is None


@pytest.mark.parametrize(
    ("peer", "address"),
    [("ipv4:10.1.2.3:5555", "10.1.2.3"), ("ipv6:[::1]:40000", "::1"), ("unix:/tmp/s", "unix:/tmp/s")],
)
def test_client_address_drops_the_port(peer: str, address: str) -> None:
    assert auth.client_address(peer) == address


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("localhost", True), ("[::1]", True), ("::1", True),
     ("0.0.0.0", False), ("[::]", False), ("192.168.1.4", False), ("example.org", False), ("", False)],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_auth_default_rule(keys: KeyStore) -> None:
    local = AuthPolicy("auto", "127.0.0.1", keys)
    local.RECHECK_S = 0.0
    assert not local.enabled()  # a fresh local server: open, as the README's two commands expect
    assert AuthPolicy("auto", "0.0.0.0", keys).enabled()  # beyond loopback: always
    assert AuthPolicy("auto", "10.0.0.5", keys).enabled()
    assert AuthPolicy("required", "127.0.0.1", keys).enabled()
    assert not AuthPolicy("disabled", "0.0.0.0", keys).enabled()
    create_key(keys, scope=Scope.READ, name="first", actor="cli")
    assert local.enabled()  # the first key protects a running local server too
    keys.revoke("first", actor="cli")
    assert not local.enabled()
    with pytest.raises(ValueError):
        AuthPolicy("sometimes", "127.0.0.1", keys)


def test_cli_keys_create_list_revoke(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    created = runner.invoke(server_cli, ["keys", "create", "--scope", "admin", "--name", "ops", "--database", url])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"fid_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
    listed = runner.invoke(server_cli, ["keys", "list", "--database", url])
    assert listed.exit_code == 0 and "ops" in listed.stdout and "admin" in listed.stdout
    assert key not in listed.output and key.split("_", 2)[2] not in listed.output
    assert runner.invoke(server_cli, ["keys", "create", "--scope", "root", "--database", url]).exit_code == 2
    duplicate = runner.invoke(server_cli, ["keys", "create", "--scope", "read", "--name", "ops", "--database", url])
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    revoked = runner.invoke(server_cli, ["keys", "revoke", "ops", "--database", url])
    assert revoked.exit_code == 0, revoked.output
    assert "ops" not in runner.invoke(server_cli, ["keys", "list", "--database", url]).stdout
    assert "ops" in runner.invoke(server_cli, ["keys", "list", "--all", "--database", url]).stdout
    assert runner.invoke(server_cli, ["keys", "revoke", "nobody", "--database", url]).exit_code == 1
    assert runner.invoke(server_cli, ["--auth", "--insecure-no-auth"]).exit_code == 2


# ----------------------------------------------------------------------------- the real server
@dataclass
class Secured:
    server: RunningServer
    db: Path
    channel: grpc.Channel
    faceid: pb_grpc.FaceIdStub
    admin: admin_pb2_grpc.AdminStub
    keys: dict[str, str]  # scope label -> key
    logs: list[logging.LogRecord]
    metrics_port: int


class _Collect(logging.Handler):
    def __init__(self, sink: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    db = tmp_path_factory.mktemp("auth") / "faceid.db"
    with KeyStore.open(f"sqlite:///{db}") as store:
        keys = {s.label: create_key(store, scope=s, name=f"{s.label}-key", actor="cli").key for s in Scope}
        keys["victim"] = create_key(store, scope=Scope.ADMIN, name="victim-key", actor="cli").key
    logs: list[logging.LogRecord] = []
    handler = _Collect(logs)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    port = free_port()
    running = start_server(db, auth={"mode": "required"}, metrics_port=port)
    channel = grpc.insecure_channel(running.address)
    try:
        yield Secured(running, db, channel, pb_grpc.FaceIdStub(channel), admin_pb2_grpc.AdminStub(channel), keys, logs, port)
    finally:
        channel.close()
        running.stop(0)
        root.removeHandler(handler)
        root.setLevel(old_level)


def md(key: str, *, bearer: bool = False) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),) if bearer else (("x-api-key", key),)


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    return rpc_status(call)[0]


def test_the_server_requires_keys_beyond_loopback_unless_told_insecure(tmp_path: Path) -> None:
    """The default rule end to end: the same server, no key in the database, on 0.0.0.0 and on 127.0.0.1.

    The model id is unknown, so the engine fails to load at once (no minute of loading): a call that passes
    the auth interceptor reaches the servicer and gets UNAVAILABLE, one that does not gets UNAUTHENTICATED.
    """
    from faceid.server import create_server
    from faceid.server.cli import load_settings
    from server_harness import server_settings

    def get_stats_code(listen: str, mode: str | None) -> grpc.StatusCode:
        auth_settings = {} if mode is None else {"auth": {"mode": mode}}
        running = create_server(server_settings(tmp_path / "open.db", listen=listen, model="no-such-model-auth-test",
                                                **auth_settings))
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                return code_of(lambda: pb_grpc.FaceIdStub(channel).GetStats(pb.GetStatsRequest(), timeout=10))
        finally:
            running.stop(0)

    assert get_stats_code("0.0.0.0:0", None) is C.UNAUTHENTICATED  # beyond loopback: on by default
    assert get_stats_code("0.0.0.0:0", "disabled") is C.UNAVAILABLE  # --insecure-no-auth: let through
    assert get_stats_code("127.0.0.1:0", None) is C.UNAVAILABLE  # loopback without any key: open
    assert get_stats_code("127.0.0.1:0", "required") is C.UNAUTHENTICATED  # --auth
    # The CLI flags map onto those modes (`faceid-server --insecure-no-auth` / `--auth`).
    assert load_settings(auth_mode="disabled").auth.mode == "disabled"
    assert load_settings(auth_mode=None).auth.mode == "auto"


@pytest.mark.slow
def test_without_a_valid_key_everything_but_health_is_unauthenticated(secured: Secured) -> None:
    f, a = secured.faceid, secured.admin
    good = secured.keys["victim"]  # wrong secrets for its key id get it throttled for this client
    calls = {
        "GetStats": lambda m: f.GetStats(pb.GetStatsRequest(), metadata=m, timeout=30),
        "ListIdentities": lambda m: f.ListIdentities(pb.ListIdentitiesRequest(), metadata=m, timeout=30),
        "Enroll": lambda m: f.Enroll(pb.EnrollRequest(identity="x"), metadata=m, timeout=30),
        "EnrollStream": lambda m: list(f.EnrollStream(iter([pb.EnrollStreamRequest(identity="x")]), metadata=m, timeout=30)),
        "DeleteIdentity": lambda m: f.DeleteIdentity(pb.DeleteIdentityRequest(name="x"), metadata=m, timeout=30),
        "ListAuditLog": lambda m: a.ListAuditLog(admin_pb2.ListAuditLogRequest(), metadata=m, timeout=30),
    }
    key_id = good.split("_")[1]
    presented = [
        (),
        md(""),
        md("not-a-key"),
        md(good[:-1]),
        md(f"fid_{key_id}_{'x' * 43}"),
        (("authorization", f"Basic {good}"),),
        (("authorization", good),),
    ]
    for name, call in calls.items():
        for metadata in presented:
            with pytest.raises(grpc.RpcError) as info:
                call(metadata)
            assert info.value.code() is C.UNAUTHENTICATED, (name, metadata)
            assert good not in info.value.details() and key_id not in info.value.details()
            assert "x-api-key" in info.value.details()  # says what to send
    health = health_pb2_grpc.HealthStub(secured.channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="faceid.v1.FaceId"), timeout=10).status == (
        health_pb2.HealthCheckResponse.SERVING
    )


@pytest.mark.slow
def test_scopes_are_ordered_read_write_admin(secured: Secured) -> None:
    f, a = secured.faceid, secured.admin

    def matrix(key: str, bearer: bool = False) -> dict[str, grpc.StatusCode]:
        m = md(key, bearer=bearer)
        return {
            "GetStats": code_of(lambda: f.GetStats(pb.GetStatsRequest(), metadata=m, timeout=30)),
            "GetIdentity": code_of(lambda: f.GetIdentity(pb.GetIdentityRequest(name="nobody"), metadata=m, timeout=30)),
            "DeleteIdentity": code_of(lambda: f.DeleteIdentity(pb.DeleteIdentityRequest(name="nobody"), metadata=m, timeout=30)),
            "RenameIdentity": code_of(lambda: f.RenameIdentity(pb.RenameIdentityRequest(name="nobody", new_name="somebody"),
                                                               metadata=m, timeout=30)),
            "Enroll": code_of(lambda: f.Enroll(pb.EnrollRequest(identity="nobody"), metadata=m, timeout=30)),
            "CheckIndex": code_of(lambda: a.CheckIndex(admin_pb2.CheckIndexRequest(check_only=True), metadata=m, timeout=60)),
            "ListApiKeys": code_of(lambda: a.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=m, timeout=30)),
        }

    denied = C.PERMISSION_DENIED
    # Past the interceptor the engine answers: NOT_FOUND for an unknown name, INVALID_ARGUMENT for no images.
    assert matrix(secured.keys["read"]) == {
        "GetStats": C.OK, "GetIdentity": C.NOT_FOUND, "DeleteIdentity": denied, "RenameIdentity": denied, "Enroll": denied,
        "CheckIndex": denied, "ListApiKeys": denied,
    }
    assert matrix(secured.keys["write"], bearer=True) == {
        "GetStats": C.OK, "GetIdentity": C.NOT_FOUND, "DeleteIdentity": C.NOT_FOUND, "RenameIdentity": C.NOT_FOUND,
        "Enroll": C.INVALID_ARGUMENT,
        "CheckIndex": denied, "ListApiKeys": denied,
    }
    assert set(matrix(secured.keys["admin"]).values()) <= {C.OK, C.NOT_FOUND, C.INVALID_ARGUMENT}
    with pytest.raises(grpc.RpcError) as info:
        f.Enroll(pb.EnrollRequest(identity="x"), metadata=md(secured.keys["read"]), timeout=30)
    assert "read-key" in info.value.details() and "needs write" in info.value.details()


@pytest.mark.slow
def test_audit_log_names_the_key_and_keeps_no_name_after_erasure(secured: Secured) -> None:
    f, a = secured.faceid, secured.admin
    person = "rose_leslie"
    photo = person_photos(person)[0].read_bytes()
    enrolled = f.Enroll(pb.EnrollRequest(identity=person, images=[photo]), metadata=md(secured.keys["write"]), timeout=120)
    assert enrolled.results[0].status == pb.IMAGE_STATUS_STORED
    audit_md = md(secured.keys["admin"])
    entries = a.ListAuditLog(admin_pb2.ListAuditLogRequest(action_prefix="identity."), metadata=audit_md, timeout=30).entries
    enrol = [e for e in entries if e.identity_id == enrolled.identity_id]
    assert [(e.actor, e.action, e.subject, e.identity) for e in enrol] == [
        ("key:write-key", "identity.enroll", f"identity:{enrolled.identity_id}", person)
    ]
    deleted = f.DeleteIdentity(pb.DeleteIdentityRequest(name=person), metadata=md(secured.keys["write"]), timeout=30)
    assert deleted.faces_deleted == 1
    entries = a.ListAuditLog(admin_pb2.ListAuditLogRequest(page_size=1000), metadata=audit_md, timeout=30).entries
    mine = [e for e in entries if e.identity_id == enrolled.identity_id]
    assert [(e.actor, e.action) for e in mine] == [("key:write-key", "identity.enroll"), ("key:write-key", "identity.delete")]
    assert all(e.identity == "" for e in mine)  # erased: the id resolves to nobody now
    # The name is nowhere in the log, and nowhere in the database file.
    assert not any(person in (e.subject + e.details_json + e.identity) for e in entries)
    with sqlite3.connect(f"file:{secured.db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT actor, action, subject, details FROM audit_log").fetchall()
    assert rows and not any(person in json.dumps(r) for r in rows)
    # After the erase the person's photo no longer identifies as anyone.
    with pytest.raises(grpc.RpcError) as info:  # the gallery is empty again
        f.Identify(pb.IdentifyRequest(image=photo), metadata=md(secured.keys["read"]), timeout=120)
    assert info.value.code() is C.FAILED_PRECONDITION


@pytest.mark.slow
def test_keys_made_and_revoked_over_the_admin_api(secured: Secured) -> None:
    a, f = secured.admin, secured.faceid
    admin = md(secured.keys["admin"])
    made = a.CreateApiKey(admin_pb2.CreateApiKeyRequest(scope=admin_pb2.API_KEY_SCOPE_READ, name="dashboard"), metadata=admin, timeout=30)
    assert made.key.active and made.key.scope == admin_pb2.API_KEY_SCOPE_READ and made.secret.startswith("fid_")
    assert f.GetStats(pb.GetStatsRequest(), metadata=md(made.secret), timeout=30).model
    listed = a.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=admin, timeout=30)
    assert "dashboard" in {k.name for k in listed.keys}
    assert made.secret.split("_", 2)[2] not in str(listed)
    assert code_of(lambda: a.CreateApiKey(admin_pb2.CreateApiKeyRequest(), metadata=admin, timeout=30)) is C.INVALID_ARGUMENT
    assert code_of(
        lambda: a.CreateApiKey(admin_pb2.CreateApiKeyRequest(scope=1, name="dashboard"), metadata=admin, timeout=30)
    ) is C.ALREADY_EXISTS
    revoked = a.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key=made.key.key_id), metadata=admin, timeout=30)
    assert not revoked.active and revoked.HasField("revoked_at")
    assert code_of(lambda: f.GetStats(pb.GetStatsRequest(), metadata=md(made.secret), timeout=30)) is C.UNAUTHENTICATED
    assert code_of(lambda: a.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key="nope"), metadata=admin, timeout=30)) is C.NOT_FOUND
    actions = [(e.actor, e.action, e.subject) for e in a.ListAuditLog(
        admin_pb2.ListAuditLogRequest(action_prefix="key."), metadata=admin, timeout=30).entries]
    assert ("key:admin-key", "key.create", "key:dashboard") in actions
    assert ("key:admin-key", "key.revoke", "key:dashboard") in actions


@pytest.mark.slow
def test_check_index_repairs_a_tampered_index(secured: Secured) -> None:
    a, f = secured.admin, secured.faceid
    photo = (FACES_DIR / "john_simm" / "01.jpg").read_bytes()
    enrolled = f.Enroll(pb.EnrollRequest(identity="john_simm", images=[photo]), metadata=md(secured.keys["write"]), timeout=120)
    admin = md(secured.keys["admin"])
    ok = a.CheckIndex(admin_pb2.CheckIndexRequest(), metadata=admin, timeout=60)
    assert ok.consistent_before and ok.consistent and not ok.rebuilt and ok.vectors == ok.store_faces >= 1
    engine = secured.server.wait_ready(1)
    engine.index.remove([enrolled.results[0].face_id])  # the index drifts from the store (a lost update)
    seen = a.CheckIndex(admin_pb2.CheckIndexRequest(check_only=True), metadata=admin, timeout=60)
    assert not seen.consistent_before and not seen.consistent and not seen.rebuilt
    fixed = a.CheckIndex(admin_pb2.CheckIndexRequest(), metadata=admin, timeout=60)
    assert not fixed.consistent_before and fixed.rebuilt and fixed.consistent and fixed.vectors == fixed.store_faces
    stats = f.GetStats(pb.GetStatsRequest(), metadata=md(secured.keys["read"]), timeout=30)
    assert stats.index.consistent and stats.index.vectors == stats.faces
    entries = a.ListAuditLog(admin_pb2.ListAuditLogRequest(action_prefix="index."), metadata=admin, timeout=30).entries
    assert [(e.actor, e.action) for e in entries] == [("key:admin-key", "index.rebuild")]
    f.DeleteIdentity(pb.DeleteIdentityRequest(name="john_simm"), metadata=md(secured.keys["write"]), timeout=30)


@pytest.mark.slow
def test_no_secret_in_logs_or_metrics(secured: Secured) -> None:
    """Runs after the others in this module: their traffic (good and bad keys) is in the logs by now."""
    f = secured.faceid
    for label, key in secured.keys.items():  # make sure each key was used at least once, bad variants too
        if label != "victim":  # throttled for this client by the wrong-secret test
            f.GetStats(pb.GetStatsRequest(), metadata=md(key), timeout=30)
        code_of(lambda: f.GetStats(pb.GetStatsRequest(), metadata=md(key[:-2] + "zz"), timeout=30))
    with urllib.request.urlopen(f"http://127.0.0.1:{secured.metrics_port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'code="UNAUTHENTICATED"' in metrics and 'code="PERMISSION_DENIED"' in metrics
    texts = [metrics]
    for record in secured.logs:
        texts.append(record.getMessage())
        texts.append(json.dumps({k: str(v) for k, v in vars(record).items()}))
    assert len(secured.logs) > 10
    everything = "\n".join(texts)
    for key in secured.keys.values():
        secret = key.split("_", 2)[2]
        assert secret not in everything and secret[:12] not in everything


def test_database_password_never_reaches_logs_or_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from faceid.server.app import _open_key_store
    from faceid.server.config import Settings

    url = "postgresql+psycopg://faceid:hunter2-secret@127.0.0.1:1/gallery"
    assert "hunter2-secret" not in Settings(database=url).database_for_logs
    assert "faceid:***@127.0.0.1:1/gallery" in Settings(database=url).database_for_logs
    # A database that cannot be opened (not "down": a file in a missing folder) is an error naming it, masked.
    bad = Settings(database=f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    with caplog.at_level(logging.DEBUG), pytest.raises(OSError, match="cannot open the database sqlite:///"):
        _open_key_store(bad)
