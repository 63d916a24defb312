"""How a `faceid` command reaches the server: address, API key, TLS. One option set, shared by every command.

A command declares the options (each is one `Annotated` alias) and turns them into a `Connection`:

    from faceid.client.connection import ApiKeyOpt, ServerOpt, TlsCaOpt, TlsCertOpt, TlsKeyOpt, connect

    @app.command()
    def mine(server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = None,
             tls_ca: TlsCaOpt = None, tls_cert: TlsCertOpt = None, tls_key: TlsKeyOpt = None) -> None:
        conn = connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
        with conn.client(timeout=60) as client:          # typed FaceIdClient
            ...
        with conn.channel() as channel:                  # or a raw stub of another service
            SomeStub(channel).Call(request, metadata=conn.metadata, timeout=60)

Each option also reads an environment variable (FACEID_SERVER, FACEID_API_KEY, FACEID_TLS_CA,
FACEID_TLS_CERT, FACEID_TLS_KEY); the environment is the better place for a key than a flag, which shell
history and `ps` show. TLS is on when any TLS option is given; --tls-cert with --tls-key add a client
certificate for servers that require mutual TLS. The key is never printed, logged or put in a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import grpc
import typer
from faceid.client.client import DEFAULT_SERVER, SERVER_ENV, FaceIdClient, open_channel, tls_credentials

API_KEY_ENV = "FACEID_API_KEY"
TLS_CA_ENV = "FACEID_TLS_CA"
TLS_CERT_ENV = "FACEID_TLS_CERT"
TLS_KEY_ENV = "FACEID_TLS_KEY"
KEY_HEADER = "x-api-key"

_PEM = {"exists": True, "dir_okay": False, "readable": True, "show_envvar": True}
ServerOpt = Annotated[
    str, typer.Option("--server", "-s", envvar=SERVER_ENV, help="faceid server HOST:PORT", show_default=True)
]
# show_default=False: typer would otherwise show the value it read from $FACEID_API_KEY in --help.
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar=API_KEY_ENV, show_default=False, show_envvar=True,
                 help="API key (fid_...), sent as x-api-key; prefer the env var to the flag"),
]
TlsCaOpt = Annotated[
    Path | None, typer.Option("--tls-ca", envvar=TLS_CA_ENV, help="CA (PEM) that signed the server's certificate; turns TLS on", **_PEM)
]
TlsCertOpt = Annotated[
    Path | None, typer.Option("--tls-cert", envvar=TLS_CERT_ENV, help="client certificate (PEM) for mutual TLS; with --tls-key", **_PEM)
]
TlsKeyOpt = Annotated[
    Path | None, typer.Option("--tls-key", envvar=TLS_KEY_ENV, help="client private key (PEM) for mutual TLS; with --tls-cert", **_PEM)
]


@dataclass(frozen=True)
class Connection:
    """Where and how to call: address, API key (hidden from repr), TLS files."""

    server: str = DEFAULT_SERVER
    api_key: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def tls(self) -> bool:
        return any(p is not None for p in (self.tls_ca, self.tls_cert, self.tls_key))

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata for every call (the API key, when one is set)."""
        return ((KEY_HEADER, self.api_key),) if self.api_key else ()

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials from the PEM files (None: plaintext). typer.BadParameter when a file is unusable."""
        if not self.tls:
            return None
        try:
            return tls_credentials(self.tls_ca, self.tls_cert, self.tls_key)
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--tls-ca / --tls-cert / --tls-key") from None

    def channel(self) -> grpc.Channel:
        """A channel (TLS when configured) with the server's message limits; close it, or use `with`."""
        return open_channel(self.server, self.credentials())

    def client(self, *, timeout: float | None) -> FaceIdClient:
        """A FaceIdClient that sends the key with every call (streams included) over this connection."""
        return FaceIdClient(self.server, timeout=timeout, api_key=self.api_key, channel=self.channel())


def connect(
    server: str = DEFAULT_SERVER,
    *,
    api_key: str | None = None,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> Connection:
    """The Connection for a command's options; typer.BadParameter (exit 2) for an unusable key or TLS setup."""
    if api_key is not None:
        api_key = api_key.strip()  # `$(cat key.txt)` brings a newline, which gRPC metadata refuses
        if not api_key:
            api_key = None
        elif not api_key.isascii() or not api_key.isprintable() or " " in api_key:
            # The message must not contain the key (it may be a real one with a stray character).
            raise typer.BadParameter("the API key has spaces or non-printable characters; paste it again", param_hint="--api-key")
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together (mutual TLS): give both or neither",
                                 param_hint="--tls-cert / --tls-key")
    return Connection(server, api_key, tls_ca, tls_cert, tls_key)
