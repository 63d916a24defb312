"""The `faceid` CLI and FaceIdClient against servers that require API keys, over plaintext, TLS and mutual TLS.

One engine is loaded once and served by three real gRPC servers on 127.0.0.1:0 (plaintext, TLS, mutual
TLS; `create_server(settings, engine=...)`), all with `auth.mode=required` and keys made in the
database the way `faceid-server keys create` makes them. Certificates come from tests/pki.py (openssl).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pytest
import typer
from conftest import FACES_DIR, person_photos
from faceid.client import FaceIdClient, Unauthenticated
from faceid.client.cli import app as faceid_cli
from faceid.client.connection import Connection, connect
from faceid.indexer.store import KeyStore
from faceid.server import RunningServer, create_server
from faceid.server.auth import Scope, create_key
from pki import HAVE_OPENSSL, Pki, make_pki
from server_harness import server_settings, start_server
from typer.testing import CliRunner

pytestmark = pytest.mark.slow
needs_openssl = pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl command to make test certificates")
# A well-formed key that no database holds.
UNKNOWN_KEY = "fid_0123456789ab_" + "A" * 43
_CONNECTION_ENV = ("FACEID_API_KEY", "FACEID_TLS_CA", "FACEID_TLS_CERT", "FACEID_TLS_KEY", "FACEID_SERVER")


@dataclass(frozen=True)
class Servers:
    plain: RunningServer
    tls: RunningServer | None
    mtls: RunningServer | None
    pki: Pki | None
    keys: dict[str, str] = field(repr=False)  # "read" / "write" -> key (kept out of failure reports)

    def secrets(self) -> list[str]:
        """Every key and every key's secret part: none may ever appear in the CLI's output."""
        return [*self.keys.values(), *(k.split("_", 2)[2] for k in self.keys.values())]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    folder = tmp_path_factory.mktemp("cli-security")
    db = folder / "faceid.db"
    with KeyStore.open(f"sqlite:///{db}") as store:  # what `faceid-server keys create` does
        keys = {s.label: create_key(store, scope=s, name=f"cli-{s.label}", actor="cli").key for s in (Scope.READ, Scope.WRITE)}
    auth = {"mode": "required"}
    plain = start_server(db, auth=auth, style={"enabled": True})  # style weights load only on first use
    started = [plain]
    tls = mtls = pki = None
    try:
        if HAVE_OPENSSL:
            (folder / "pki").mkdir()
            pki = make_pki(folder / "pki")
            engine = plain.wait_ready(1)
            cert = {"cert_file": pki.path("server.pem"), "key_file": pki.path("server.key")}
            tls = create_server(server_settings(db, auth=auth, tls=cert), engine=engine)
            started.append(tls)
            mtls = create_server(server_settings(db, auth=auth, tls={**cert, "client_ca_file": pki.path("ca.pem")}), engine=engine)
            started.append(mtls)
        yield Servers(plain, tls, mtls, pki, keys)
    finally:
        for running in reversed(started):  # they share one engine: whichever stops first closes it
            running.stop(0)


def cli(servers: Servers, *args: str, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Run `faceid ARGS` (connection env vars cleared unless given); the key must never be in its output."""
    environment = {name: None for name in _CONNECTION_ENV} | dict(env or {})
    result = CliRunner().invoke(faceid_cli, list(args), env=environment)  # type: ignore[arg-type]
    output = result.output
    assert not any(secret in output for secret in servers.secrets()), "an API key was printed"
    return result.exit_code, output


def _error_code(output: str) -> str:
    return json.loads(output)["error"]["code"]


# ------------------------------------------------------------------------------------------ API keys
def test_cli_needs_a_key_with_the_right_scope(servers: Servers) -> None:
    address = servers.plain.address
    photos = [str(p) for p in person_photos("john_schneider")]
    write, read = servers.keys["write"], servers.keys["read"]

    code, out = cli(servers, "enroll", "john_schneider", photos[0], photos[1], "--server", address, "--api-key", write, "--json")
    assert code == 0, out
    assert [r["status"] for r in json.loads(out)["results"]] == ["stored", "stored"]
    # The key from the environment works as well as the flag.
    code, out = cli(servers, "identify", photos[2], "--server", address, "--json", env={"FACEID_API_KEY": read})
    assert code == 0, out
    assert json.loads(out)["faces"][0]["identity"] == "john_schneider"

    # No key, an unknown key: UNAUTHENTICATED, exit 2 (the request is at fault), for every command.
    for args in (("stats",), ("list",), ("identify", photos[3]), ("verify", photos[2], photos[3]), ("delete", "john_schneider")):
        code, out = cli(servers, *args, "--server", address, "--json")
        assert (code, _error_code(out)) == (2, "UNAUTHENTICATED"), (args, out)
    code, out = cli(servers, "stats", "--server", address, env={"FACEID_API_KEY": UNKNOWN_KEY})
    assert code == 2 and "UNAUTHENTICATED" in out and UNKNOWN_KEY not in out

    # A read key may not delete: PERMISSION_DENIED, exit 2, and the identity is intact.
    code, out = cli(servers, "delete", "john_schneider", "--server", address, "--api-key", read)
    assert code == 2 and "PERMISSION_DENIED" in out, out
    code, out = cli(servers, "list", "--server", address, "--api-key", read, "--json")
    assert code == 0 and [(i["name"], i["face_count"]) for i in json.loads(out)] == [("john_schneider", 2)]

    code, out = cli(servers, "delete", "john_schneider", "--server", address, "--api-key", write, "--json")
    assert code == 0 and json.loads(out)["faces_deleted"] == 2


def test_streams_and_stylize_send_the_key(servers: Servers) -> None:
    address = servers.plain.address
    photo = person_photos("john_shimkus")[0]
    with connect(address, api_key=servers.keys["write"]).client(timeout=120) as client:
        (result,) = list(client.enroll_stream([("john_shimkus", photo)]))
        assert result.result.status.value == "stored" and result.identity == "john_shimkus"
        client.delete_identity("john_shimkus")
    with FaceIdClient(address, timeout=60) as anonymous, pytest.raises(Unauthenticated):
        list(anonymous.enroll_stream([("john_shimkus", photo)]))

    # Stylize with too many steps is refused before any work is queued, so the answer shows how far the
    # call got: no key UNAUTHENTICATED, a read key PERMISSION_DENIED (style needs write), a write key
    # reaches the style engine's own check.
    content, style = str(FACES_DIR / "john_simm" / "01.jpg"), str(FACES_DIR / "john_simm" / "02.jpg")
    stylize = ("stylize", content, style, "-o", "/nonexistent/out.png", "--steps", "100000", "--server", address)
    answers = {}
    for scope in (None, "read", "write"):
        code, out = cli(servers, *stylize, env={"FACEID_API_KEY": servers.keys[scope]} if scope else None)
        answers[scope] = (code, out.strip().split(":")[0].removeprefix("error").strip())
    assert answers == {None: (2, "UNAUTHENTICATED"), "read": (2, "PERMISSION_DENIED"), "write": (2, "INVALID_ARGUMENT")}


# ------------------------------------------------------------------------------------------------- TLS
@needs_openssl
def test_cli_over_tls(servers: Servers) -> None:
    assert servers.tls is not None and servers.pki is not None
    address, pki = f"127.0.0.1:{servers.tls.port}", servers.pki
    read = servers.keys["read"]
    code, out = cli(servers, "stats", "--server", address, "--tls-ca", str(pki.path("ca.pem")), "--api-key", read, "--json")
    assert code == 0, out
    assert json.loads(out)["model"]["id"] == "facenet-20170512-128d"
    # Environment variables instead of flags; "localhost" matches the certificate's DNS name.
    env = {"FACEID_SERVER": f"localhost:{servers.tls.port}", "FACEID_TLS_CA": str(pki.path("ca.pem")), "FACEID_API_KEY": read}
    code, out = cli(servers, "list", "--json", env=env)
    assert code == 0, out
    # Plaintext to a TLS port, or a CA that did not sign the server's certificate: no connection, exit 1.
    for extra in ((), ("--tls-ca", str(pki.path("rogue-ca.pem")))):
        code, out = cli(servers, "stats", "--server", address, "--api-key", read, "--timeout", "5", "--json", *extra)
        assert (code, _error_code(out)) == (1, "UNAVAILABLE"), (extra, out)
    # TLS does not replace the key.
    code, out = cli(servers, "stats", "--server", address, "--tls-ca", str(pki.path("ca.pem")), "--json")
    assert (code, _error_code(out)) == (2, "UNAUTHENTICATED")


@needs_openssl
def test_cli_over_mutual_tls(servers: Servers) -> None:
    assert servers.mtls is not None and servers.pki is not None
    address, pki = f"127.0.0.1:{servers.mtls.port}", servers.pki
    ca = ("--tls-ca", str(pki.path("ca.pem")))
    client_cert = ("--tls-cert", str(pki.path("client.pem")), "--tls-key", str(pki.path("client.key")))
    write = servers.keys["write"]
    photos = [str(p) for p in person_photos("serena_williams")]

    code, out = cli(servers, "enroll", "serena_williams", photos[0], "--server", address, *ca, *client_cert,
                    "--api-key", write, "--json")
    assert code == 0, out
    code, out = cli(servers, "verify", photos[1], "--identity", "serena_williams", "--server", address, "--json",
                    env={"FACEID_TLS_CA": str(pki.path("ca.pem")), "FACEID_TLS_CERT": str(pki.path("client.pem")),
                         "FACEID_TLS_KEY": str(pki.path("client.key")), "FACEID_API_KEY": write})
    assert code == 0 and json.loads(out)["match"] is True, out
    # A stream over mutual TLS carries the key too.
    conn = connect(address, api_key=write, tls_ca=pki.path("ca.pem"), tls_cert=pki.path("client.pem"), tls_key=pki.path("client.key"))
    with conn.client(timeout=120) as client:
        (result,) = list(client.enroll_stream([("serena_williams", photos[2])]))
        assert result.result.status.value == "stored"
        assert client.delete_identity("serena_williams").faces_deleted == 2

    # No client certificate, or one from another CA: the handshake fails, exit 1.
    rogue = ("--tls-cert", str(pki.path("rogue-client.pem")), "--tls-key", str(pki.path("rogue-client.key")))
    for extra in ((), rogue):
        code, out = cli(servers, "stats", "--server", address, *ca, *extra, "--api-key", write, "--timeout", "5", "--json")
        assert (code, _error_code(out)) == (1, "UNAVAILABLE"), (extra, out)
    # Half a client certificate is a usage error (exit 2) before any call.
    code, out = cli(servers, "stats", "--server", address, *ca, "--tls-cert", str(pki.path("client.pem")))
    assert code == 2 and "--tls-key" in out


# ----------------------------------------------------------------------------------- the key stays hidden
def test_the_key_is_never_shown(servers: Servers) -> None:
    key = servers.keys["read"]
    for args in (("identify", "--help"), ("stylize", "--help"), ("--help",)):
        code, out = cli(servers, *args, env={"FACEID_API_KEY": key})  # `cli` asserts the key is absent
        assert code == 0
    conn = connect(servers.plain.address, api_key=f"  {key}\n")  # as pasted from `$(cat key.txt)`
    assert conn.api_key == key and key not in repr(conn)
    with conn.client(timeout=30) as client:
        assert key not in repr(client)
        assert client.stats().faces >= 0
    with pytest.raises(typer.BadParameter) as info:
        connect(servers.plain.address, api_key=key[:20] + " " + key[20:])
    assert "API key" in str(info.value) and key[:20] not in str(info.value)
    assert Connection(servers.plain.address).metadata == ()
