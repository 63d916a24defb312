"""TLS for the gRPC port: server credentials from PEM files, optionally requiring client certificates.

tls.cert_file / tls.key_file      the server's certificate chain and private key (PEM)
tls.client_ca_file               CA bundle (PEM): when set, every client must present a certificate it
                                 signed (mutual TLS); without one the handshake fails before any RPC
The files are read once at start-up; a missing or unreadable file stops the server with a message naming
the setting. API keys still apply on top of TLS (TLS authenticates the channel, keys the caller's rights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None


def _read_pem(path: Path, setting: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read {setting} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise OSError(f"{setting} {path} is not a PEM file (expected a '-----BEGIN ...' block)")
    return data


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials for `server.add_secure_port`; OSError naming the setting when a file is unusable."""
    cert = _read_pem(files.cert_file, "tls.cert_file")
    key = _read_pem(files.key_file, "tls.key_file")
    client_ca = _read_pem(files.client_ca_file, "tls.client_ca_file") if files.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
