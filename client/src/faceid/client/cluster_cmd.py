"""`faceid cluster`, `faceid name`, `faceid merge`: cluster the gallery, write the HTML report, name what it found.

Registered on the `faceid` app by `register(app)`. Talks to faceid.v1.Clustering through FaceIdClient;
connection options (server, API key, TLS) come from connection.py like every other command's. Exit codes
as for every `faceid` command: 0 done, 1 server-side or transport problem, 2 the request was at fault.

Naming targets (`faceid name TARGET NAME`):
  42          face 42 (a face id, e.g. from the report or `faceid cluster --json`)
  42,43,57    several faces
  RUN:C       cluster C of clustering run RUN (the run id `faceid cluster` prints), e.g. 3f2a9c01b7de:4
  :C          cluster C of the latest run the server remembers (same as last:C); with several people
              clustering one server, prefer RUN:C
The server remembers its last 8 runs, in memory: after a restart, cluster again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from faceid.client.cli_common import Json, print_json, session
from faceid.client.client import DEFAULT_SERVER, FaceIdClient
from faceid.client.cluster_types import ClusterProgress, ClusterResult, ClusterScope
from faceid.client.connection import ApiKeyOpt, ServerOpt, TlsCaOpt, TlsCertOpt, TlsKeyOpt, connect
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

DEFAULT_MAX_K = 30  # --auto without --max-k: up to this, or faces in scope - 1 when fewer


class ScopeName(str, Enum):
    all = "all"
    unlabeled = "unlabeled"
    identities = "identities"


@dataclass(frozen=True)
class NameTarget:
    """What `faceid name` names: face ids, or one cluster of a run ("" = the server's latest run)."""

    face_ids: tuple[int, ...] = ()
    run_id: str = ""
    cluster: int | None = None


def parse_target(text: str) -> NameTarget:
    """Parse a naming target (see the module docstring); typer.BadParameter when it is neither form."""
    text = text.strip()
    hint = "a face id (42), face ids (42,43), RUN:CLUSTER (3f2a9c01b7de:4) or :CLUSTER (latest run)"
    if ":" in text:
        run, _, index = text.rpartition(":")
        run = "" if run in ("", "last") else run
        if not index.isdigit():
            raise typer.BadParameter(f"{text!r}: the cluster after ':' must be a number; expected {hint}")
        return NameTarget(run_id=run, cluster=int(index))
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"{text!r} is not {hint}")
    return NameTarget(face_ids=tuple(int(p) for p in parts))


# ------------------------------------------------------------------------------------------- cluster
def cluster(
    k: Annotated[int | None, typer.Option("--k", "-k", help="number of clusters")] = None,
    auto: Annotated[bool, typer.Option("--auto", help="choose K by silhouette within --min-k..--max-k")] = False,
    min_k: Annotated[int, typer.Option("--min-k", help="--auto: smallest K tried")] = 2,
    max_k: Annotated[
        int | None, typer.Option("--max-k", help=f"--auto: largest K tried [default: {DEFAULT_MAX_K}, or faces - 1]")
    ] = None,
    scope: Annotated[ScopeName | None, typer.Option(help="faces to cluster [default: all; identities with --identity]")] = None,
    identity: Annotated[list[str], typer.Option("--identity", "-i", help="scope identities: a name (repeat)")] = [],  # noqa: B006
    seed: Annotated[int, typer.Option(help="same seed, same faces, same server: same clusters")] = 0,
    niter: Annotated[int, typer.Option(help="Lloyd iterations (0 = server default, 20)")] = 0,
    report: Annotated[
        Path | None, typer.Option("--report", "-r", dir_okay=False, help="write this self-contained HTML report, and its .json beside it")
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    as_json: Json = False,
    timeout: Annotated[float, typer.Option(help="seconds for the whole run")] = 3600.0,
) -> None:
    """Cluster the stored faces (--k K, or --auto) and show or report the clusters. Needs an admin key.

    Then name a cluster with `faceid name RUN:CLUSTER NAME` (the run id is printed, and is `run_id` in the JSON).
    """
    if (k is None) == (not auto):
        raise typer.BadParameter("give --k K or --auto (one of them)")
    chosen = ScopeName.identities if scope is None and identity else (scope or ScopeName.all)
    if identity and chosen is not ScopeName.identities:
        raise typer.BadParameter(f"--identity needs --scope identities, not {chosen.value}")
    if chosen is ScopeName.identities and not identity:
        raise typer.BadParameter("--scope identities needs at least one --identity NAME")
    err = Console(stderr=True)
    with session(connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key), as_json, timeout, local_errors=(OSError,)) as client:
        auto_range = None
        if auto:
            auto_range = (min_k, max_k if max_k is not None else _default_max_k(client, chosen, identity))
        with _progress_bar(err, quiet=as_json) as on_progress:
            run = client.cluster(
                k, auto=auto_range, scope=ClusterScope(chosen.value), identities=identity, seed=seed, niter=niter,
                thumbnails=report is not None, progress=on_progress, timeout=timeout,
            )
        data = report_data(run.result)
        if report is not None:
            from faceid.client.report import write_report  # jinja2: only when a report is asked for

            html_path, json_path = write_report(report, data, run.thumbnails)  # type: ignore[arg-type]
            err.print(f"wrote {html_path} and {json_path}", highlight=False)
    if as_json:
        print_json(data)
    else:
        _print_summary(run.result)


def report_data(result: ClusterResult) -> dict[str, Any]:
    """The report's result dict (`faceid.client.report.ClusterReport`, plus run and identity ids)."""
    return {**result.to_dict(), "created_at": datetime.now(UTC).isoformat(timespec="seconds")}


def _default_max_k(client: FaceIdClient, scope: ScopeName, identities: list[str]) -> int:
    """DEFAULT_MAX_K, or faces in scope − 1 when fewer (the server refuses a range beyond that)."""
    if scope is ScopeName.identities:
        faces = sum(client.get_identity(name).face_count for name in identities)
    else:
        stats = client.stats()
        faces = stats.unlabeled_faces if scope is ScopeName.unlabeled else stats.faces
    return max(2, min(DEFAULT_MAX_K, faces - 1))


@contextmanager
def _progress_bar(console: Console, *, quiet: bool) -> Iterator[Any]:
    """A rich progress bar fed by ClusterProgress events (nothing shown with --json)."""
    if quiet:
        yield None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description:<22}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("connecting", total=1.0)

        def on_progress(event: ClusterProgress) -> None:
            bar.update(task, description=event.message or event.stage.replace("_", " "), completed=event.fraction)

        yield on_progress


def _print_summary(result: ClusterResult) -> None:
    m = result.metrics
    out = Console(soft_wrap=True)
    table = Table(title=f"{result.k} clusters of {len(result.faces)} faces (run {result.run_id}, model {result.model})")
    for column in ("cluster", "size", "nearest identity", "distance", "outliers", "labels"):
        table.add_column(column)
    for c in sorted(result.clusters, key=lambda c: (-c.size, c.cluster)):
        labels = [f.identity for f in result.faces_of(c.cluster) if f.identity]
        majority = max(set(labels), key=labels.count) if labels else ""
        share = f"{majority} {labels.count(majority)}/{c.size}" if majority else ""
        near = (f"[green]{c.nearest_identity}[/]" if c.within_threshold else str(c.nearest_identity)) if c.nearest_identity else ""
        distance = f"{c.nearest_distance:.3f}" if c.nearest_distance is not None else ""
        table.add_row(str(c.cluster), str(c.size), near, distance, str(c.outliers or ""), share)
    out.print(table)
    scores = [f"silhouette {m.silhouette:.3f}" if m.silhouette is not None else "silhouette –", f"inertia {m.inertia:.2f}"]
    if m.nmi is not None:
        scores += [f"purity {m.purity:.3f}", f"NMI {m.nmi:.3f}", f"ARI {m.ari:.3f} ({m.labeled_faces} labeled faces)"]
    if result.k_scores:
        scores.append("K chosen from " + ", ".join(f"{s.k}: {s.silhouette:.3f}" for s in result.k_scores))
    out.print("; ".join(scores))
    out.print(f"name a cluster: faceid name {result.run_id}:CLUSTER NAME", highlight=False)


# --------------------------------------------------------------------------------------- name, merge
def name(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET",
            help="face id (42), face ids (42,43), RUN:CLUSTER (3f2a9c01b7de:4) or :CLUSTER (the server's latest run)",
        ),
    ],
    identity: Annotated[str, typer.Argument(metavar="NAME", help="the identity to give them (created if new)")],
    unlabeled_only: Annotated[
        bool, typer.Option("--unlabeled-only", help="cluster targets: leave faces that already have an identity alone")
    ] = False,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    as_json: Json = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 60.0,
) -> None:
    """Name faces, or a whole cluster of a `faceid cluster` run, as NAME.

    TARGET is a face id (42) or several (42,43,57); RUN:CLUSTER for cluster CLUSTER of run RUN (the run id that `faceid cluster` prints); or :CLUSTER (also last:CLUSTER) for the latest run the server remembers.

    The server keeps its last 8 runs, in memory. Faces already labeled move to NAME unless --unlabeled-only. Needs a write key.
    """
    parsed = parse_target(target)
    if unlabeled_only and parsed.cluster is None:
        raise typer.BadParameter("--unlabeled-only applies to a cluster target (RUN:CLUSTER or :CLUSTER)")
    with session(connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key), as_json, timeout, local_errors=(OSError,)) as client:
        if parsed.cluster is None:
            result = client.name_faces(identity, parsed.face_ids)
        else:
            result = client.name_cluster(identity, parsed.cluster, run_id=parsed.run_id, unlabeled_only=unlabeled_only)
    if as_json:
        print_json(result.to_dict())
    else:
        Console(soft_wrap=True).print(
            f"named {len(result.face_ids)} face(s) {result.identity!r} (id {result.identity_id}"
            f"{', new' if result.created else ''}); it holds {result.face_count} face(s)",
            highlight=False,
        )


def merge(
    source: Annotated[str, typer.Argument(help="identity whose faces move; deleted afterwards")],
    target: Annotated[str, typer.Argument(help="identity that receives them (keeps its name and id)")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    as_json: Json = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 60.0,
) -> None:
    """Merge SOURCE into TARGET: every face of SOURCE moves to TARGET, then SOURCE is deleted. Needs a write key."""
    with session(connect(server, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key), as_json, timeout, local_errors=(OSError,)) as client:
        result = client.merge_identities(source, target)
    if as_json:
        print_json(result.to_dict())
    else:
        Console(soft_wrap=True).print(
            f"merged {source!r} into {result.identity!r}: {len(result.moved_face_ids)} face(s) moved, "
            f"{result.face_count} on record",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    """Add `cluster`, `name` and `merge` to the `faceid` app."""
    app.command("cluster")(cluster)
    app.command("name")(name)
    app.command("merge")(merge)
