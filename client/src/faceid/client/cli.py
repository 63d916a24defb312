"""`faceid`: enrol, verify, identify and manage identities on a faceid server from the shell.

Every command takes --server HOST:PORT (env FACEID_SERVER, default 127.0.0.1:50051), --api-key (env
FACEID_API_KEY), --tls-ca / --tls-cert / --tls-key (env FACEID_TLS_CA, _CERT, _KEY; see connection.py) and
--json (machine-readable output on stdout; errors too, as {"error": {"code", "message"}}).

Exit codes:
  0  the call succeeded (for `verify`, whether or not the faces match: read `match`)
  1  a server-side or transport problem: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL
  2  the request was at fault: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION,
     UNAUTHENTICATED, PERMISSION_DENIED, an unreadable local file, bad flags; also `enroll` when
     not one photo was accepted
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from faceid.client.stylize_cmd import stylize
from faceid.client.accuracy_cmd import register_accuracy_commands
from faceid.client.cluster_cmd import register as register_clustering
from faceid.client.index_cmd import register as register_index
from faceid.client import types as t
from faceid.client.cli_common import EXIT_REQUEST, Json, print_json, session
from faceid.client.client import DEFAULT_SERVER
from faceid.client.connection import ApiKeyOpt, ServerOpt, TlsCaOpt, TlsCertOpt, TlsKeyOpt, connect
from rich.console import Console
from rich.table import Table


app = typer.Typer(
    name="faceid",
    help="Face identification client. Server: --server HOST:PORT or $FACEID_SERVER (default 127.0.0.1:50051).",
    epilog="Exit codes: 0 ok; 1 server or transport problem (UNAVAILABLE, INTERNAL, ...); "
    "2 the request was at fault (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ..., bad flags).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Server = ServerOpt
Timeout = Annotated[float, typer.Option(help="seconds to wait for the answer")]
Wait = Annotated[float, typer.Option(help="seconds to wait for a starting server to be ready (0 = no wait)")]
ImagePath = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="photo (JPEG, PNG, WebP)")]


def _out() -> Console:
    return Console(soft_wrap=True)


def _box(face: t.Face) -> str:
    b = face.box
    return f"{b.x1:.0f},{b.y1:.0f} {b.width:.0f}x{b.height:.0f}"


def _parse_metadata(pairs: list[str]) -> dict[str, str]:
    metadata = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--meta")
        metadata[key] = value
    return metadata


# ------------------------------------------------------------------------------------------ commands
@app.command()
def enroll(
    name: Annotated[str, typer.Argument(help="the person's name or external id")],
    images: Annotated[
        list[Path], typer.Argument(exists=True, dir_okay=False, readable=True, help="photos of the person")
    ],
    meta: Annotated[list[str], typer.Option("--meta", help="KEY=VALUE stored with the identity")] = [],  # noqa: B006
    largest: Annotated[bool, typer.Option(help="store the largest face of group photos instead of refusing them")] = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    as_json: Json = False,
    timeout: Timeout = 300.0,
    wait: Wait = 0.0,
) -> None:
    """Add photos of NAME (created on first use)."""
    policy = t.MultiFacePolicy.LARGEST if largest else t.MultiFacePolicy.REJECT
    metadata = _parse_metadata(meta)
    with session(connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key), as_json, timeout, wait) as client:
        result = client.enroll(name, *images, metadata=metadata, policy=policy)
    if as_json:
        print_json(result.to_dict())
    else:
        table = Table(title=f"{result.identity} (id {result.identity_id}{', new' if result.created else ''})")
        for column in ("photo", "status", "face id", "detail"):
            table.add_column(column)
        for r in result.results:
            style = "green" if r.accepted else "red"
            table.add_row(str(images[r.index]), f"[{style}]{r.status.value}[/]", str(r.face_id or ""), r.message)
        console = _out()
        console.print(table)
        console.print(f"{result.faces_on_record} face(s) on record, model {result.model}")
    if not any(r.accepted for r in result.results):
        raise typer.Exit(EXIT_REQUEST)


@app.command()
def verify(
    image_a: ImagePath,
    image_b: Annotated[
        Path | None, typer.Argument(exists=True, dir_okay=False, readable=True, help="second photo")
    ] = None,
    identity: Annotated[str | None, typer.Option("--identity", "-i", help="compare with an enrolled identity")] = None,
    threshold: Annotated[float | None, typer.Option(help="distance threshold in (0, 2]; default: the server's")] = None,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    as_json: Json = False,
    timeout: Timeout = 60.0,
    wait: Wait = 0.0,
) -> None:
    """Is the face in IMAGE_A the same person as in IMAGE_B (or as --identity NAME)?"""
    if (image_b is None) == (identity is None):
        raise typer.BadParameter("give a second photo IMAGE_B or --identity NAME (one of them)")
    with session(connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key), as_json, timeout, wait) as client:
        result = client.verify(image_a, image_b, identity=identity, threshold=threshold)
    if as_json:
        print_json(result.to_dict())
        return
    verdict = "[bold green]same person[/]" if result.match else "[bold red]different people[/]"
    target = f"identity {result.identity!r}" if result.identity else str(image_b)
    _out().print(
        f"{verdict}: {image_a} vs {target}\n"
        f"distance {result.distance:.3f} (threshold {result.threshold:.3f}), similarity {result.similarity:.3f}, "
        f"model {result.model}"
    )


@app.command()
def identify(
    image: ImagePath,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="candidates per face (0 = server default)")] = 0,
    threshold: Annotated[float | None, typer.Option(help="distance threshold in (0, 2]; default: the server's")] = None,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    as_json: Json = False,
    timeout: Timeout = 60.0,
    wait: Wait = 0.0,
) -> None:
    """Who is each face in IMAGE?"""
    with session(connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key), as_json, timeout, wait) as client:
        result = client.identify(image, top_k=top_k, threshold=threshold)
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(title=f"{image}: {len(result.faces)} face(s), threshold {result.threshold:.3f}, model {result.model}")
    for column in ("#", "box", "identity", "distance", "similarity", "candidates"):
        table.add_column(column)
    for i, face in enumerate(result.faces, 1):
        who = "[yellow]unknown[/]" if face.unknown else f"[green]{face.identity}[/]"
        candidates = ", ".join(f"{c.identity} {c.distance:.3f}" for c in face.candidates)
        table.add_row(str(i), _box(face.face), who, f"{face.distance:.3f}", f"{face.similarity:.3f}", candidates)
    _out().print(table)


@app.command("list")
def list_identities(
    prefix: Annotated[str, typer.Option(help="only names starting with this")] = "",
    server: Server = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    as_json: Json = False,
    timeout: Timeout = 60.0,
    wait: Wait = 0.0,
) -> None:
    """Enrolled identities, by name."""
    with session(connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key), as_json, timeout, wait) as client:
        identities = client.identities(prefix=prefix)
    if as_json:
        print_json([i.to_dict() for i in identities])
        return
    table = Table(title=f"{len(identities)} identit{'y' if len(identities) == 1 else 'ies'}")
    for column in ("id", "name", "faces", "updated", "metadata"):
        table.add_column(column)
    for i in identities:
        updated = i.updated_at.strftime("%Y-%m-%d %H:%M") if i.updated_at else ""
        metadata = ", ".join(f"{k}={v}" for k, v in sorted(i.metadata.items()))
        table.add_row(str(i.id), i.name, str(i.face_count), updated, metadata)
    _out().print(table)


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="identity to erase, with all its faces")],
    server: Server = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    as_json: Json = False,
    timeout: Timeout = 60.0,
    wait: Wait = 0.0,
) -> None:
    """Erase NAME: its record, faces and vectors."""
    with session(connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key), as_json, timeout, wait) as client:
        result = client.delete_identity(name)
    if as_json:
        print_json(result.to_dict())
    else:
        _out().print(f"deleted {result.identity!r} (id {result.identity_id}) and {result.faces_deleted} face(s)")


@app.command()
def rename(
    old: Annotated[str, typer.Argument(help="the identity's current name")],
    new: Annotated[str, typer.Argument(help="its new name (must not belong to another identity: see `merge`)")],
    server: Server = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    as_json: Json = False,
    timeout: Timeout = 60.0,
    wait: Wait = 0.0,
) -> None:
    """Rename OLD to NEW; its faces stay and identify as NEW from now on."""
    with session(connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key), as_json, timeout, wait) as client:
        result = client.rename_identity(old, new_name=new)
    if as_json:
        print_json(result.to_dict())
    else:
        # markup=False: a name like "[red]x" is text, not a style
        _out().print(f"renamed {old!r} to {result.name!r} (id {result.id}, {result.face_count} face(s))", markup=False)


@app.command()
def stats(
    server: Server = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    as_json: Json = False,
    timeout: Timeout = 30.0,
    wait: Wait = 0.0,
) -> None:
    """Gallery size, model, index state and server version."""
    with session(connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key), as_json, timeout, wait) as client:
        result = client.stats()
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(show_header=False, title=f"faceid {result.version} at {server}")
    rows = (
        ("identities", str(result.identities)),
        ("faces", str(result.faces)),
        ("unlabeled faces", str(result.unlabeled_faces)),
        ("model", f"{result.model.id} ({result.model.architecture}, {result.model.dimension}-d)"),
        ("threshold", f"{result.model.default_threshold:.3f} ({result.model.threshold_source})"),
        ("device", result.device),
        ("index", f"{result.index.backend} on {result.index.device}, {result.index.vectors} vectors, "
                  f"{'consistent' if result.index.consistent else 'INCONSISTENT'} with the store"),
        ("database", result.database),
    )
    for key, value in rows:
        table.add_row(key, value)
    _out().print(table)


# Neural style transfer (StyleTransfer service): its own module, registered here.
app.command("stylize")(stylize)
# Clustering (`cluster`, `name`, `merge`; Clustering service): its own module, registered here.
register_clustering(app)
# Bulk indexing of a photo collection (`index`; EnrollStream): its own module, registered here.
register_index(app)
# Engine-side accuracy tools (`eval`, `calibrate`, `train`, `reindex`; faceid.indexer imported lazily).
register_accuracy_commands(app)


def main() -> None:
    app(prog_name="faceid")


if __name__ == "__main__":
    main()
