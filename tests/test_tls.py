"""TLS and mutual TLS on the gRPC port, with a CA and certificates generated in the test (openssl CLI).

The servers here start with a model id the registry does not know, so the engine fails to load at once
and costs no minute of model loading: TLS is the transport, and what goes over it is still served by the
real code (health, auth and the Admin key service need only the database). The engine's RPCs over TLS
answer UNAVAILABLE here, which also proves the call crossed the handshake and reached the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from faceid.indexer.store import KeyStore
from faceid.server import RunningServer
from faceid.server.auth import Scope, create_key
from faceid.server.cli import load_settings
from faceid.v1 import admin_pb2, admin_pb2_grpc
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pki import HAVE_OPENSSL, Pki, make_pki
from pydantic import ValidationError
from server_harness import server_settings

pytestmark = pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl command to make test certificates")
C = grpc.StatusCode
NO_ENGINE = "no-such-model-tls-test"  # fails to load at once: see the module docstring


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def admin_key(tmp_path: Path) -> tuple[Path, str]:
    db = tmp_path / "faceid.db"
    with KeyStore.open(f"sqlite:///{db}") as keys:
        return db, create_key(keys, scope=Scope.ADMIN, name="ops", actor="cli").key


def _start(db: Path, **tls: Path) -> RunningServer:
    from faceid.server import create_server

    return create_server(server_settings(db, model=NO_ENGINE, auth={"mode": "required"}, tls=tls))


def _channel(server: RunningServer, pki: Pki, *, ca: str = "ca.pem", client: str | None = None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.read(ca),
        private_key=pki.read(f"{client}.key") if client else None,
        certificate_chain=pki.read(f"{client}.pem") if client else None,
    )
    return grpc.secure_channel(f"127.0.0.1:{server.port}", creds)


def _health(channel: grpc.Channel) -> grpc.StatusCode:
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return C.OK


@pytest.fixture
def tls_server(pki: Pki, admin_key: tuple[Path, str]) -> Iterator[tuple[RunningServer, str]]:
    server = _start(admin_key[0], cert_file=pki.path("server.pem"), key_file=pki.path("server.key"))
    yield server, admin_key[1]
    server.stop(0)


def test_tls_serves_trusting_clients_only(tls_server: tuple[RunningServer, str], pki: Pki) -> None:
    server, key = tls_server
    with _channel(server, pki) as channel:
        assert _health(channel) is C.OK
        admin = admin_pb2_grpc.AdminStub(channel)
        keys = admin.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=(("x-api-key", key),), timeout=10)
        assert [k.name for k in keys.keys] == ["ops"]
        with pytest.raises(grpc.RpcError) as info:  # auth still applies on top of TLS
            admin.ListApiKeys(admin_pb2.ListApiKeysRequest(), timeout=10)
        assert info.value.code() is C.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:  # reached the servicer: no engine in this test server
            pb_grpc.FaceIdStub(channel).GetStats(pb.GetStatsRequest(), metadata=(("x-api-key", key),), timeout=10)
        assert info.value.code() is C.UNAVAILABLE
    with _channel(server, pki, ca="rogue-ca.pem") as untrusting:  # a client that does not trust the server's CA
        assert _health(untrusting) is C.UNAVAILABLE
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as plain:  # plaintext to a TLS port
        assert _health(plain) is C.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki: Pki, admin_key: tuple[Path, str]) -> None:
    db, key = admin_key
    server = _start(db, cert_file=pki.path("server.pem"), key_file=pki.path("server.key"), client_ca_file=pki.path("ca.pem"))
    try:
        with _channel(server, pki, client="client") as channel:
            assert _health(channel) is C.OK
            listed = admin_pb2_grpc.AdminStub(channel).ListApiKeys(
                admin_pb2.ListApiKeysRequest(), metadata=(("x-api-key", key),), timeout=10
            )
            assert len(listed.keys) == 1
        for client in (None, "rogue-client"):  # no certificate, or one from another CA: no handshake
            with _channel(server, pki, client=client) as channel:
                assert _health(channel) is C.UNAVAILABLE, client
    finally:
        server.stop(0)


def test_tls_settings_are_checked_at_start_up(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="go together"):
        server_settings(tmp_path / "a.db", tls={"cert_file": pki.path("server.pem")})
    with pytest.raises(ValidationError, match="needs tls.cert_file"):
        server_settings(tmp_path / "a.db", tls={"client_ca_file": pki.path("ca.pem")})
    with pytest.raises(ValidationError, match="is not a file"):
        server_settings(tmp_path / "a.db", tls={"cert_file": tmp_path / "nope.pem", "key_file": pki.path("server.key")})
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(OSError, match="not a PEM file"):
        _start(tmp_path / "b.db", cert_file=not_pem, key_file=pki.path("server.key"))
    # The CLI flags land in the nested group.
    settings = load_settings(tls_cert_file=pki.path("server.pem"), tls_key_file=pki.path("server.key"), auth_mode="required")
    assert settings.tls.enabled and settings.tls.key_file == pki.path("server.key") and settings.auth.mode == "required"
