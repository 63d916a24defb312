"""`faceid index PATH`: enrol a whole photo collection through EnrollStream, with a progress bar.

Registered on the `faceid` app by `register(app)`. What PATH holds decides the labels:

  PATH/<person>/*.jpg             (default) the first folder below PATH is the identity; deeper folders are fine
  --manifest list.csv             a CSV with columns `path,identity` (paths relative to PATH, or absolute); an
                                  empty identity stores that photo's faces unlabeled
  --unlabeled                     every photo below PATH, stored without an identity (ready for `faceid cluster`)

Photos are .jpg/.jpeg/.png/.webp files (hidden files and folders are skipped), sent in a stable order and read
lazily: at most --batch photos are sent and not yet answered. Each answer comes after the server committed the
photo's faces, so stopping at any point (Ctrl-C, a kill, a server restart) loses nothing acknowledged, and
running the same command again finishes the rest: the server recognises a photo it already holds (sha256 of the
file) and adds nothing for it ("already on record" in the summary). The server is the only record: no journal.

At the end: a summary, and a CSV of every rejected photo (`path,reason,message`; reasons: unreadable, too_large,
no_face, multiple_faces, face_too_small, invalid, no_label). Exit codes: 0 the collection was gone through
(rejected photos included), 1 server or transport problem, 2 bad flags or manifest, 130 interrupted.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from faceid.client import types as t
from faceid.client.cli_common import exit_code
from faceid.client.client import DEFAULT_SERVER, FaceIdClient
from faceid.client.connection import ApiKeyOpt, ServerOpt, TlsCaOpt, TlsCertOpt, TlsKeyOpt, connect
from faceid.client.errors import FaceIdError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

EXIT_INTERRUPTED = 130
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
NO_LABEL = "no_label"  # client-side reason: a photo outside any person folder in labeled mode
UNREADABLE = t.ImageStatus.UNREADABLE.value


@dataclass(frozen=True)
class Photo:
    """One photo to index: the file and its identity (None: unlabeled)."""

    path: Path
    identity: str | None


@dataclass(frozen=True)
class Rejection:
    path: str
    reason: str  # an ImageStatus value, or NO_LABEL
    message: str


@dataclass
class Summary:
    """What a run did. `done` counts photos answered by the server or refused before sending."""

    total: int
    done: int = 0
    stored: int = 0
    on_record: int = 0  # answered DUPLICATE: already held by the server (a re-run, or a repeated file)
    rejected: int = 0
    faces_found: int = 0
    faces_stored: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def images_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["reasons"] = dict(self.reasons)
        data["images_per_s"] = round(self.images_per_s, 3)
        return data


# ------------------------------------------------------------------------------------------- collection
def _is_photo(path: Path, root: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return path.suffix.lower() in IMAGE_SUFFIXES and not hidden and path.is_file()


def _photos_below(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if _is_photo(p, root))


def from_folders(root: Path) -> tuple[list[Photo], list[Rejection]]:
    """PATH/<person>/...: the first folder below `root` names the person; photos directly in root have no label."""
    photos, refused = [], []
    for path in _photos_below(root):
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            refused.append(Rejection(str(path), NO_LABEL, "not inside a person folder; index it with --unlabeled or a manifest"))
        else:
            photos.append(Photo(path, parts[0]))
    return photos, refused


def unlabeled(root: Path) -> list[Photo]:
    return [Photo(path, None) for path in _photos_below(root)]


def from_manifest(manifest: Path, root: Path) -> tuple[list[Photo], list[Rejection]]:
    """Rows of a `path,identity` CSV (header required); relative paths are below `root`."""
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = set(reader.fieldnames or ())
            if not {"path", "identity"} <= columns:
                raise typer.BadParameter(
                    f"{manifest} needs a header with the columns path,identity (found: {', '.join(sorted(columns)) or 'none'})",
                    param_hint="--manifest",
                )
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise typer.BadParameter(f"cannot read {manifest}: {exc}", param_hint="--manifest") from None
    photos, refused = [], []
    for line, row in enumerate(rows, start=2):
        raw = (row.get("path") or "").strip()
        if not raw:
            refused.append(Rejection(f"{manifest}:{line}", UNREADABLE, "empty path in the manifest"))
            continue
        path = Path(raw).expanduser()
        path = path if path.is_absolute() else root / path
        photos.append(Photo(path, (row.get("identity") or "").strip() or None))
    return photos, refused


# --------------------------------------------------------------------------------------------- running
def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} img/s"),
        TextColumn("{task.fields[faces]} faces"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def run_index(
    client: FaceIdClient,
    photos: list[Photo],
    refused: list[Rejection],
    *,
    window: int,
    policy: t.MultiFacePolicy,
    console: Console,
) -> tuple[Summary, list[Rejection], FaceIdError | None]:
    """Stream `photos` (in order) and account for every answer. Ctrl-C or a failed call end the run early;
    what was answered until then is still summarised (the failure is returned, not raised)."""
    summary = Summary(total=len(photos) + len(refused), done=len(refused), rejected=len(refused))
    summary.reasons.update(r.reason for r in refused)
    rejections = list(refused)
    sent: deque[Photo] = deque()  # photos sent, not yet answered: answers come in the same order

    def items() -> Iterator[tuple[str | None, bytes]]:
        for photo in photos:
            try:
                data = photo.path.read_bytes()
            except OSError as exc:  # refused here; the stream goes on
                rejection = Rejection(str(photo.path), UNREADABLE, f"cannot read the file: {exc.strerror or exc}")
                unread.append(rejection)
                continue
            sent.append(photo)
            yield photo.identity, data

    unread: deque[Rejection] = deque()  # filled on gRPC's sending thread, drained here
    failure: FaceIdError | None = None
    start = time.monotonic()
    with _progress(console) as progress:
        task = progress.add_task("index", total=summary.total, completed=summary.done, rate=0.0, faces=0)
        try:
            for result in client.enroll_stream(items(), policy=policy, window=window):
                _account(summary, rejections, sent.popleft(), result.result)
                while unread:
                    _refuse(summary, rejections, unread.popleft())
                summary.elapsed_s = time.monotonic() - start
                progress.update(task, completed=summary.done, rate=summary.images_per_s, faces=summary.faces_found)
            while unread:  # files that failed to read after the last answer
                _refuse(summary, rejections, unread.popleft())
        except KeyboardInterrupt:
            summary.interrupted = True
        except FaceIdError as exc:
            summary.interrupted, failure = True, exc
        summary.elapsed_s = time.monotonic() - start
        progress.update(task, completed=summary.done, rate=summary.images_per_s, faces=summary.faces_found)
    return summary, rejections, failure


def _account(summary: Summary, rejections: list[Rejection], photo: Photo, result: t.ImageResult) -> None:
    summary.done += 1
    summary.faces_found += len(result.faces)
    if result.status is t.ImageStatus.STORED:
        summary.stored += 1
        summary.faces_stored += len(result.face_ids)
    elif result.status is t.ImageStatus.DUPLICATE:
        summary.on_record += 1
    else:
        _refuse(summary, rejections, Rejection(str(photo.path), result.status.value, result.message), counted=True)


def _refuse(summary: Summary, rejections: list[Rejection], rejection: Rejection, *, counted: bool = False) -> None:
    if not counted:
        summary.done += 1
    summary.rejected += 1
    summary.reasons[rejection.reason] += 1
    rejections.append(rejection)


def write_rejections(path: Path, rejections: list[Rejection]) -> None:
    """`path,reason,message`, one row per rejected photo (a header only when none was)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason", "message"])
        writer.writerows((r.path, r.reason, r.message) for r in rejections)


def _print_summary(console: Console, summary: Summary, rejected_csv: Path) -> None:
    state = "[yellow]interrupted[/]: run the same command again to finish" if summary.interrupted else "[green]done[/]"
    table = Table(show_header=False, title=f"faceid index: {state}")
    rows = [
        ("photos", f"{summary.done} of {summary.total} gone through"),
        ("stored", f"{summary.stored} photos, {summary.faces_stored} faces"),
        ("already on record", str(summary.on_record)),
        ("rejected", ", ".join(f"{n} {reason}" for reason, n in summary.reasons.most_common()) or "0"),
        ("faces found", str(summary.faces_found)),
        ("time", f"{summary.elapsed_s:.1f} s, {summary.images_per_s:.2f} images/s"),
    ]
    if summary.rejected:
        rows.append(("rejected photos", str(rejected_csv)))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def index(
    path: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="folder of photos (see --manifest, --unlabeled)")],
    manifest: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="CSV with columns path,identity (paths relative to PATH)")
    ] = None,
    unlabeled_: Annotated[bool, typer.Option("--unlabeled", help="store every face without an identity")] = False,
    rejected: Annotated[Path, typer.Option(help="where to write the CSV of rejected photos")] = Path("rejected.csv"),
    batch: Annotated[int, typer.Option("--batch", min=1, max=1024, help="photos sent ahead of the answers")] = 32,
    largest: Annotated[bool, typer.Option(help="labeled group photos: store the largest face instead of refusing")] = False,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    wait: Annotated[float, typer.Option(help="seconds to wait for a starting server (0 = no wait)")] = 0.0,
) -> None:
    """Enrol every photo below PATH (labels from person folders, a manifest, or none). Resumable."""
    if manifest is not None and unlabeled_:
        raise typer.BadParameter("give --manifest or --unlabeled, not both (a manifest row with no identity is unlabeled)")
    if manifest is not None:
        photos, refused = from_manifest(manifest, path)
    elif unlabeled_:
        photos, refused = unlabeled(path), []
    else:
        photos, refused = from_folders(path)
    conn = connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
    policy = t.MultiFacePolicy.LARGEST if largest else t.MultiFacePolicy.REJECT
    err = Console(stderr=True)
    with conn.client(timeout=None) as client:  # a collection takes as long as it takes: no deadline
        try:
            if wait > 0:
                client.wait_ready(wait)
        except FaceIdError as exc:
            _fail(err, exc, as_json)
        summary, rejections, failure = run_index(client, photos, refused, window=batch, policy=policy, console=err)
    write_rejections(rejected, rejections)
    if as_json:
        error = {"error": {"code": failure.code.name, "message": failure.message}} if failure else {}
        sys.stdout.write(json.dumps({**summary.to_dict(), "rejected_csv": str(rejected), **error}, ensure_ascii=False) + "\n")
    else:
        _print_summary(Console(soft_wrap=True), summary, rejected)
    if failure is not None:
        _fail(err, failure, as_json, printed_json=as_json)
    if summary.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


def _fail(err: Console, exc: FaceIdError, as_json: bool, *, printed_json: bool = False) -> None:
    """Report a failed call (unless the JSON summary already carries it) and exit with its code."""
    if as_json and not printed_json:
        sys.stdout.write(json.dumps({"error": {"code": exc.code.name, "message": exc.message}}) + "\n")
    elif not as_json:
        err.print(f"[bold red]error[/] {exc.code.name}: {exc.message}", highlight=False)
        err.print("Photos answered before the error are stored: run the same command again to finish.")
    raise typer.Exit(exit_code(exc))


def register(app: typer.Typer) -> None:
    app.command("index")(index)
