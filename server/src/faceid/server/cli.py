"""`faceid-server`: run the server (no subcommand), manage models (`models ...`), API keys (`keys ...`),
and back up / restore the gallery (`backup`, `restore`).

Every flag overrides the matching FACEID_* environment variable, which overrides the default
(see faceid.server.config.Settings). Exit codes: 0 ok, 1 the server could not start (e.g. the model
could not be obtained), 2 bad flags or settings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from faceid.server.config import MODEL_DIR_ENV, Settings
from pydantic import ValidationError

app = typer.Typer(
    name="faceid-server",
    help="faceid gRPC server. Without a command it starts serving; flags override FACEID_* env vars.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List and fetch embedding models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
keys_app = typer.Typer(help="Create, list and revoke API keys (stored in the gallery database).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _overrides(**flags: Any) -> dict[str, Any]:
    """Flags the user gave (None = not given), nested groups as dicts so env values for the rest survive."""
    given = {k: v for k, v in flags.items() if v is not None}
    limits = {k: given.pop(k) for k in ("max_message_bytes",) if k in given}
    scheduler = {k.removeprefix("accelerator_"): given.pop(k) for k in ("torch_threads", "accelerator_slots") if k in given}
    auth = {k.removeprefix("auth_"): given.pop(k) for k in ("auth_mode",) if k in given}
    tls = {k.removeprefix("tls_"): given.pop(k) for k in ("tls_cert_file", "tls_key_file", "tls_client_ca_file") if k in given}
    if auth:
        given["auth"] = auth
    if tls:
        given["tls"] = tls
    if limits:
        given["limits"] = limits
    if scheduler:
        given["scheduler"] = scheduler
    return given


def load_settings(**flags: Any) -> Settings:
    """Settings from env + flags; a readable message and exit code 2 when invalid."""
    try:
        return Settings(**_overrides(**flags))
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()]
        typer.echo("faceid-server: invalid settings (flags or FACEID_* environment variables):", err=True)
        typer.echo("\n".join(lines), err=True)
        raise typer.Exit(2) from None


@app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT to listen on (env FACEID_LISTEN; 127.0.0.1:50051)")] = None,
    database: Annotated[str | None, typer.Option(help="SQLAlchemy URL (env FACEID_DATABASE; sqlite:///faceid.db)")] = None,
    model: Annotated[str | None, typer.Option(help="embedding model id (env FACEID_MODEL; facenet-20170512-128d)")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="folder of model folders (env FACEID_MODEL_DIR)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N (env FACEID_DEVICE; auto)")] = None,
    threshold: Annotated[float | None, typer.Option(help="match threshold, L2 distance in (0, 2] (default: model card)")] = None,
    verifier_head: Annotated[
        str | None, typer.Option(help="Siamese head id deciding Verify (env FACEID_VERIFIER_HEAD; none: the distance)")
    ] = None,
    thumbnail_size: Annotated[
        int | None, typer.Option(help="px of the face thumbnail stored per enrolled face, 0 = none (env FACEID_THUMBNAIL_SIZE; 96)")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="gRPC worker threads (default: from the usable cores)")] = None,
    grace_s: Annotated[float | None, typer.Option("--grace", help="seconds SIGTERM waits for in-flight calls (10)")] = None,
    max_message_bytes: Annotated[int | None, typer.Option(help="largest gRPC message (32 MiB)")] = None,
    torch_threads: Annotated[
        int | None, typer.Option(help="CPU inference threads per accelerator slot; 0 = cores / slots (1)")
    ] = None,
    accelerator_slots: Annotated[
        int | None, typer.Option(help="computations at once; 0 = 1 on a GPU, cores / torch threads on the CPU")
    ] = None,
    allow_model_fetch: Annotated[
        bool | None, typer.Option("--fetch/--no-fetch", help="fetch a missing model on start (fetch)")
    ] = None,
    log_format: Annotated[str | None, typer.Option(help="text or json (env FACEID_LOG_FORMAT; text)")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING, ERROR (INFO)")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus /metrics port, 0 = off (0)")] = None,
    require_auth: Annotated[
        bool, typer.Option("--auth", help="require API keys even on loopback (default: beyond loopback, or once a key exists)")
    ] = False,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="never check API keys, even beyond loopback (unsafe)")
    ] = False,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate chain, PEM (env FACEID_TLS__CERT_FILE)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key, PEM (env FACEID_TLS__KEY_FILE)")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="CA bundle, PEM: require client certificates it signed (mutual TLS)")
    ] = None,
    vector_backend: Annotated[
        str | None, typer.Option(help="faiss (in this process) or milvus (env FACEID_VECTOR_BACKEND; faiss)")
    ] = None,
    milvus_uri: Annotated[
        str | None, typer.Option(help="Milvus server for --vector-backend milvus (env FACEID_MILVUS_URI; http://127.0.0.1:19530)")
    ] = None,
) -> None:
    """Start the server and run until SIGTERM / Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    if require_auth and insecure_no_auth:
        typer.echo("faceid-server: --auth and --insecure-no-auth contradict each other; give one", err=True)
        raise typer.Exit(2)
    auth_mode = "required" if require_auth else ("disabled" if insecure_no_auth else None)
    settings = load_settings(
        listen=listen, database=database, model=model, model_dir=model_dir, device=device, threshold=threshold,
        verifier_head=verifier_head, thumbnail_size=thumbnail_size,
        workers=workers, grace_s=grace_s, max_message_bytes=max_message_bytes, torch_threads=torch_threads,
        accelerator_slots=accelerator_slots,
        allow_model_fetch=allow_model_fetch, log_format=log_format, log_level=log_level, metrics_port=metrics_port,
        auth_mode=auth_mode, tls_cert_file=tls_cert, tls_key_file=tls_key, tls_client_ca_file=tls_client_ca,
        vector_backend=vector_backend, milvus_uri=milvus_uri,
    )
    from faceid.server.app import serve
    from faceid.server.logging_setup import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    try:
        code = serve(settings)
    except OSError as exc:  # the port is taken, the database folder is missing, ...
        typer.echo(f"faceid-server: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


# ------------------------------------------------------------------------------------------ models
ModelDirOption = Annotated[Path | None, typer.Option(help="folder of model folders (env FACEID_MODEL_DIR)")]


def _use_model_dir(model_dir: Path | None) -> None:
    if model_dir is not None:
        os.environ[MODEL_DIR_ENV] = str(model_dir.expanduser())


@models_app.command("list")
def models_list(model_dir: ModelDirOption = None) -> None:
    """Registered models, and where their weights are (or the command that fetches them)."""
    from faceid.indexer import models

    _use_model_dir(model_dir)
    for status in models.list_models():
        spec = status.spec
        default = " (default)" if status.is_default else ""
        place = str(status.path) if status.path is not None else f"not here: {models.fetch_command(spec.name)}"
        typer.echo(f"{spec.name}{default}\n  {spec.architecture}, {spec.dimension}-d, {spec.license}\n  {place}")


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="model id, e.g. facenet-20170512-128d")],
    force: Annotated[bool, typer.Option(help="fetch again even when a verified copy exists")] = False,
    model_dir: ModelDirOption = None,
) -> None:
    """Download (or fetch and convert) a model's weights into the user cache, checking every sha256."""
    from faceid.indexer import errors, models

    _use_model_dir(model_dir)
    try:
        result = models.cli_fetch(name, force=force, progress=True)
    except errors.FaceIdError as exc:
        typer.echo(f"faceid-server: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{name}: {'fetched into' if result.fetched else 'already present in'} {result.path}")


# -------------------------------------------------------------------------------- keys, backup, restore
DatabaseOption = Annotated[str | None, typer.Option(help="SQLAlchemy URL (env FACEID_DATABASE; sqlite:///faceid.db)")]


def _cli_actor() -> str:
    """Who ran an admin command, for the audit log."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli"


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"faceid-server: {exc}", err=True)
    return typer.Exit(1)


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="read, write or admin")],
    name: Annotated[str | None, typer.Option(help="shown in the audit log as key:<name> (default key-<id>)")] = None,
    database: DatabaseOption = None,
) -> None:
    """Create a key and print it ONCE (only its salted hash is stored)."""
    from faceid.indexer import errors
    from faceid.indexer.store import KeyStore
    from faceid.server.auth import Scope, create_key

    try:
        parsed = Scope.parse(scope)
    except ValueError as exc:
        typer.echo(f"faceid-server: {exc}", err=True)
        raise typer.Exit(2) from None
    url = load_settings(database=database).database
    try:
        with KeyStore.open(url) as keys:
            new = create_key(keys, scope=parsed, name=name, actor=_cli_actor())
    except errors.FaceIdError as exc:
        raise _fail(exc) from None
    typer.echo(f"created API key {new.row.name!r} (id {new.row.key_id}, scope {new.row.scope}).", err=True)
    typer.echo("It is shown only now; send it as gRPC metadata x-api-key:", err=True)
    typer.echo(new.key)


@keys_app.command("list")
def keys_list(
    all_keys: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
    database: DatabaseOption = None,
) -> None:
    """Keys without secrets: id, name, scope, created, revoked."""
    from faceid.indexer.store import KeyStore

    url = load_settings(database=database).database
    with KeyStore.open(url) as keys:
        rows = keys.list(include_revoked=all_keys)
    typer.echo(f"{'KEY ID':<14}{'NAME':<28}{'SCOPE':<8}{'CREATED':<22}REVOKED")
    for r in rows:
        revoked = r.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if r.revoked_at else "-"
        typer.echo(f"{r.key_id:<14}{r.name[:27]:<28}{r.scope:<8}{r.created_at:%Y-%m-%d %H:%M:%S}   {revoked}")


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="key id or name (not the secret)")],
    database: DatabaseOption = None,
) -> None:
    """Revoke a key: a running server refuses it from its next call on."""
    from faceid.indexer import errors
    from faceid.indexer.store import KeyStore

    url = load_settings(database=database).database
    try:
        with KeyStore.open(url) as keys:
            row = keys.revoke(key, actor=_cli_actor())
    except errors.FaceIdError as exc:
        raise _fail(exc) from None
    typer.echo(f"revoked API key {row.name!r} (id {row.key_id})")


@app.command("backup")
def backup(
    out: Annotated[Path, typer.Argument(help="backup file to write (replaced if it exists)")],
    database: DatabaseOption = None,
) -> None:
    """Copy the SQLite gallery into OUT with SQLite's online backup API (safe while the server writes)."""
    from faceid.indexer import errors
    from faceid.server.backup import backup_database

    url = load_settings(database=database).database
    try:
        report = backup_database(url, out)
    except errors.FaceIdError as exc:
        raise _fail(exc) from None
    typer.echo(
        f"backed up {report.identities} identities, {report.faces} faces (schema {report.revision}) to "
        f"{report.path} ({report.bytes / 1e6:.1f} MB, {report.seconds:.2f} s)"
    )


@app.command("restore")
def restore(
    backup_file: Annotated[Path, typer.Argument(help="a file written by `faceid-server backup`")],
    database: DatabaseOption = None,
    force: Annotated[bool, typer.Option(help="replace a database that holds identities or faces")] = False,
) -> None:
    """Replace the gallery with a backup. Stop the server first; it rebuilds its index on the next start."""
    from faceid.indexer import errors
    from faceid.server.backup import restore_database

    url = load_settings(database=database).database
    try:
        report = restore_database(backup_file, url, force=force)
    except errors.FaceIdError as exc:
        raise _fail(exc) from None
    typer.echo(
        f"restored {report.identities} identities, {report.faces} faces (schema {report.revision}) into "
        f"{report.path} ({report.seconds:.2f} s); start the server to migrate and index them"
    )


def main() -> None:
    # OpenMP threads that spin after work ends slow down torch on other threads 2-8x on small CPU
    # machines (measured here when a thread that ran torch exits); passive waiting removes that.
    # It must be set before torch is imported, hence here.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app(prog_name="faceid-server")


if __name__ == "__main__":
    sys.exit(main())
