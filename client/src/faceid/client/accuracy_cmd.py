"""`faceid eval pairs|identify`, `faceid calibrate`, `faceid train triplet|siamese`, `faceid reindex`.

These are engine-side tools: they run locally with the service's own detector and embedder (faceid.indexer, torch)
on image folders and a gallery database, not through a server. The `faceid` client must stay usable without
torch, faiss or numpy, so faceid.indexer is imported inside the command bodies only; when it is not installed the
command says which package to install and exits 2. Register with `register_accuracy_commands(app)`.

Exit codes as for every `faceid` command: 0 done; 2 the request was at fault (bad flags, unreadable pairs file,
unknown model, not enough pairs, faceid.indexer missing); 1 anything the engine could not do for other reasons.
Progress bars (tqdm, on stderr) show detection, embedding and training epochs (loss, held-out AUC);
--json prints one JSON document on stdout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from faceid.client.cli_common import EXIT_REQUEST, EXIT_SERVER, Json, print_json
from rich.console import Console

DEFAULT_MODEL = "facenet-20170512-128d"  # the engine's default; repeated here so --help works without it
INSTALL_HINT = (
    "this command runs the face engine locally and needs the faceid-indexer package (torch, facenet-pytorch): "
    "inside the faceid workspace run `uv sync`; elsewhere `pip install \"faceid-indexer[cpu]\"` "
    "(or `[gpu]` on an NVIDIA machine)"
)

eval_app = typer.Typer(name="eval", help="Measure accuracy on labeled photos (runs the engine locally).",
                       no_args_is_help=True)
train_app = typer.Typer(name="train", help="Train on labeled per-person folders; saves a new model id.",
                        no_args_is_help=True)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Trainable(str, Enum):
    head = "head"
    last_block = "last_block"


class MiningChoice(str, Enum):
    semi_hard = "semi_hard"
    hard = "hard"
    batch_all = "batch_all"


class HoldOutChoice(str, Enum):
    images = "images"
    identities = "identities"


class Feature(str, Enum):
    l1 = "l1"
    chi2 = "chi2"


Model = Annotated[str, typer.Option("--model", "-m", help="model id: registered, or trained by `faceid train`")]
ModelDir = Annotated[
    Path | None,
    typer.Option(help="folder of model folders, searched before $FACEID_MODEL_DIR and the user cache"),
]
DeviceOpt = Annotated[Device, typer.Option(help="where the engine runs (auto: CUDA when present)")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="progress bars on stderr")]
Folder = Annotated[
    Path, typer.Argument(exists=True, file_okay=False, help="folder of per-person folders (one per identity)")
]
PairsArg = Annotated[
    Path,
    typer.Argument(exists=True, help="LFW pairs.txt, a CSV image_a,image_b,same, or a folder of per-person folders "
                                     "(then all pairs of its photos)"),
]
ImagesOpt = Annotated[Path | None, typer.Option("--images", help="image root of an LFW pairs.txt or relative CSV paths")]
Pattern = Annotated[str, typer.Option(help="LFW image path pattern under --images")]
Database = Annotated[str | None, typer.Option(help="gallery database URL (as faceid-server --database)")]


# ----------------------------------------------------------------------------------------- plumbing
def _tools() -> ModuleType:
    """faceid.indexer.cli_tools, or exit 2 with what to install."""
    try:
        from faceid.indexer import cli_tools
    except ImportError as exc:
        Console(stderr=True).print(f"[bold red]error[/] {INSTALL_HINT} ({exc})", highlight=False)
        raise typer.Exit(EXIT_REQUEST) from None
    return cli_tools


@contextmanager
def _engine_errors(as_json: bool) -> Iterator[None]:
    """The engine's deliberate errors become a message (or JSON) and exit 2 (the caller's to fix) or 1."""
    from faceid.indexer import errors

    try:
        yield
    except errors.FaceIdError as exc:
        fault = isinstance(exc, errors.InvalidRequest | errors.NotFound | errors.AlreadyExists
                           | errors.FailedPrecondition)
        code = type(exc).__name__
        if as_json:
            print_json({"error": {"code": code, "message": str(exc)}})
        else:
            Console(stderr=True).print(f"[bold red]error[/] {code}: {exc}", highlight=False)
        raise typer.Exit(EXIT_REQUEST if fault else EXIT_SERVER) from None


def _echo(text: str) -> None:
    Console(soft_wrap=True, highlight=False).print(text, markup=False)


def _failures(failures: Any) -> list[dict[str, str]]:
    return [{"path": str(f.path), "reason": f.reason} for f in failures]


def _fars(values: list[float] | None, default: tuple[float, ...]) -> tuple[float, ...]:
    fars = tuple(values) if values else default
    bad = [f for f in fars if not 0.0 < f < 1.0]
    if bad:
        raise typer.BadParameter(f"a false accept rate is in (0, 1), got {bad}", param_hint="--far")
    return fars


# ------------------------------------------------------------------------------------------- eval
@eval_app.command("pairs")
def eval_pairs(
    pairs: PairsArg,
    images: ImagesOpt = None,
    pattern: Pattern = "{name}/{name}_{num:04d}.jpg",
    model: Model = DEFAULT_MODEL,
    model_dir: ModelDir = None,
    device: DeviceOpt = Device.auto,
    far: Annotated[list[float] | None, typer.Option("--far", help="FAR for TAR@FAR (repeat; 1e-1 1e-2 1e-3)")] = None,
    roc: Annotated[Path | None, typer.Option("--roc", help="write the ROC curve as a PNG here")] = None,
    seed: Annotated[int, typer.Option(help="seed of the 10 folds when the pairs file has none")] = 0,
    as_json: Json = False,
    progress: ProgressOpt = True,
) -> None:
    """Verification accuracy: ROC AUC, EER and its tau, 10-fold accuracy (LFW protocol), TAR at FAR, ROC PNG."""
    tools = _tools()
    with _engine_errors(as_json):
        ev = tools.eval_pairs(pairs, image_dir=images, pattern=pattern, model=model, model_dir=model_dir,
                              device=device.value, fars=_fars(far, (1e-1, 1e-2, 1e-3)), roc_png=roc, seed=seed,
                              progress=progress)
    from faceid.indexer.evaluation import format_pairs_evaluation, to_jsonable

    if as_json:
        report = to_jsonable(ev.report)
        report.pop("roc", None)  # thousands of points: the PNG (--roc) shows them
        print_json({"model": ev.model_id, "pairs": ev.n_pairs, "pairs_evaluated": len(ev.distances.pairs),
                     "report": report, "detection_failures": _failures(ev.failures),
                     "pairs_skipped": len(ev.skipped), "roc_png": str(roc) if roc else None})
        return
    _echo(format_pairs_evaluation(ev) + (f"\nROC curve: {roc}" if roc else ""))


@eval_app.command("identify")
def eval_identify(
    folder: Folder,
    model: Model = DEFAULT_MODEL,
    model_dir: ModelDir = None,
    device: DeviceOpt = Device.auto,
    tau: Annotated[float | None, typer.Option(help="operating threshold (default: --database calibration, "
                                                     "else the model card)")] = None,
    database: Database = None,
    stranger_folds: Annotated[int, typer.Option(help="people split into this many groups; each group in turn "
                                                     "is never enrolled (the strangers)")] = 4,
    gallery_per_identity: Annotated[int, typer.Option(help="photos enrolled per known person")] = 2,
    far: Annotated[list[float] | None, typer.Option("--far", help="false-alarm rate for DIR (repeat; 1e-1 1e-2)")] = None,
    seed: int = 0,
    as_json: Json = False,
    progress: ProgressOpt = True,
) -> None:
    """Open-set 1:K: rank-1 accuracy, detection-and-identification rate at a false-alarm rate, strangers named."""
    tools = _tools()
    with _engine_errors(as_json):
        ev = tools.eval_identify(folder, model=model, model_dir=model_dir, device=device.value, tau=tau,
                                 database_url=database, stranger_folds=stranger_folds,
                                 gallery_per_identity=gallery_per_identity, fars=_fars(far, (1e-1, 1e-2)),
                                 seed=seed, progress=progress)
    from faceid.indexer.evaluation import format_identification_evaluation, to_jsonable

    if as_json:
        print_json({"model": ev.model_id, "splits": ev.n_splits, "gallery_sizes": list(ev.gallery_sizes),
                     "report": to_jsonable(ev.report), "detection_failures": _failures(ev.failures)})
        return
    _echo(format_identification_evaluation(ev))


# -------------------------------------------------------------------------------------- calibrate
def calibrate(
    pairs: PairsArg,
    target_far: Annotated[float, typer.Option(help="false accept rate tau must not exceed on these pairs")] = 1e-2,
    database: Annotated[str | None, typer.Option(
        help="store the calibration for the model in this gallery database (the server then uses it by default)"
    )] = None,
    images: ImagesOpt = None,
    pattern: Pattern = "{name}/{name}_{num:04d}.jpg",
    model: Model = DEFAULT_MODEL,
    model_dir: ModelDir = None,
    device: DeviceOpt = Device.auto,
    as_json: Json = False,
    progress: ProgressOpt = True,
) -> None:
    """Pick tau for a target FAR from labeled pairs and fit P(same | distance); store both with --database."""
    tools = _tools()
    _fars([target_far], ())
    with _engine_errors(as_json):
        out = tools.calibrate_model(pairs, target_far=target_far, model=model, model_dir=model_dir,
                                    device=device.value, image_dir=images, pattern=pattern, database_url=database,
                                    progress=progress)
    c = out.calibration
    if as_json:
        print_json({"calibration": c.to_dict(), "stored_in": out.stored_in,
                     "detection_failures": _failures(out.evaluation.failures)})
        return
    where = f"stored for {c.model_id} in {out.stored_in}" if out.stored_in else "not stored (no --database)"
    _echo(
        f"model {c.model_id}: tau {c.tau:.4f} for FAR <= {c.target_far:g} (FAR {c.far:.4f}, TAR {c.tar:.4f} on "
        f"{c.n_same} same / {c.n_different} different pairs)\n"
        f"P(same | d) = 1 / (1 + exp(-({c.intercept:.3f} {c.slope:+.3f}·d)))   P(tau) = {float(c.probability(c.tau)):.3f}\n"
        f"{where}\ndetection failures: {len(out.evaluation.failures)}"
        + "".join(f"\n  {f.path}: {f.reason}" for f in out.evaluation.failures)
    )


# ------------------------------------------------------------------------------------------- train
@train_app.command("triplet")
def train_triplet(
    folder: Folder,
    model_id: Annotated[str, typer.Option("--model-id", help="id of the new model (a-z, 0-9, . _ -)")],
    base_model: Annotated[str, typer.Option(help="model to fine-tune")] = DEFAULT_MODEL,
    trainable: Annotated[Trainable, typer.Option(help="train the embedding head, or also the last block")] = Trainable.head,
    epochs: int = 10,
    p: Annotated[int, typer.Option("--p", help="identities per batch")] = 8,
    k: Annotated[int, typer.Option("--k", help="images per identity in a batch")] = 4,
    margin: Annotated[float, typer.Option(help="alpha of the triplet loss (squared L2 distances)")] = 0.2,
    mining: Annotated[MiningChoice, typer.Option(help="negatives per anchor: semi-hard, hardest, or all")] = MiningChoice.semi_hard,
    lr: float = 1e-4,
    holdout: Annotated[HoldOutChoice, typer.Option(help="hold out some images of each person, or whole people")] = HoldOutChoice.images,
    seed: int = 0,
    model_dir: ModelDir = None,
    out_dir: Annotated[Path | None, typer.Option(help="where to save the model (default: the user model cache)")] = None,
    device: DeviceOpt = Device.auto,
    overwrite: bool = False,
    as_json: Json = False,
    progress: ProgressOpt = True,
) -> None:
    """Fine-tune a model with triplet loss on P x K batches; saves it as --model-id (weights + card + sha256)."""
    tools = _tools()
    from faceid.indexer.training.triplet import TripletConfig

    with _engine_errors(as_json):
        config = TripletConfig(epochs=epochs, p=p, k=k, margin=margin, mining=mining.value, lr=lr, seed=seed)
        out = tools.train_triplet_model(folder, new_model_id=model_id, base_model=base_model, model_dir=model_dir,
                                        out_dir=out_dir, trainable=trainable.value, config=config,
                                        holdout_by=holdout.value, device=device.value, overwrite=overwrite,
                                        progress=progress)
    history = out.result.history
    if as_json:
        print_json({"model_id": out.model_id, "folder": str(out.folder), "tau": out.tau,
                     "best_epoch": out.result.best_epoch, "history": [vars(h) for h in history],
                     "detection_failures": _failures(out.failures)})
        return
    lines = [f"saved {out.model_id} in {out.folder} (default tau {out.tau:.3f}; calibrate it on your pairs)",
             "epoch  batch loss  train objective  held-out AUC"]
    for h in history:
        loss = "-" if h.batch_loss is None else f"{h.batch_loss:.4f}"
        val = "-" if h.val_auc is None else f"{h.val_auc:.4f}"
        lines.append(f"{h.epoch:5d}  {loss:>10}  {h.train_objective:15.4f}  {val:>12}")
    lines.append(f"kept epoch {out.result.best_epoch}; detection failures: {len(out.failures)}")
    lines += [f"  {f.path}: {f.reason}" for f in out.failures]
    _echo("\n".join(lines))


@train_app.command("siamese")
def train_siamese(
    folder: Folder,
    head_id: Annotated[str, typer.Option("--head-id", help="id of the new head (a-z, 0-9, . _ -)")],
    base_model: Annotated[str, typer.Option(help="model whose embeddings the head reads")] = DEFAULT_MODEL,
    feature: Annotated[Feature, typer.Option(help="|f_i - f_j| (l1) or the chi-square variant")] = Feature.l1,
    c: Annotated[float, typer.Option("--c", help="inverse L2 penalty of the logistic fit")] = 1.0,
    holdout: Annotated[HoldOutChoice, typer.Option(help="held-out split")] = HoldOutChoice.identities,
    seed: int = 0,
    model_dir: ModelDir = None,
    out_dir: Annotated[Path | None, typer.Option(help="where to save the head (default: the user model cache)")] = None,
    device: DeviceOpt = Device.auto,
    overwrite: bool = False,
    as_json: Json = False,
    progress: ProgressOpt = True,
) -> None:
    """Fit a Siamese verification head sigma(sum w_k phi_k + b) on embedding pairs; the server's --verifier-head."""
    tools = _tools()
    with _engine_errors(as_json):
        out = tools.train_siamese_head(folder, head_id=head_id, base_model=base_model, kind=feature.value, c=c,
                                       holdout_by=holdout.value, model_dir=model_dir, out_dir=out_dir,
                                       device=device.value, overwrite=overwrite, seed=seed, progress=progress)
    if as_json:
        print_json({"head_id": out.model_id, "folder": str(out.folder), "feature": feature.value,
                     "pairs_train": out.n_train_pairs, "pairs_val": out.n_val_pairs,
                     "val_auc_head": out.val_auc_head, "val_auc_distance": out.val_auc_distance,
                     "detection_failures": _failures(out.failures)})
        return

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    _echo(f"saved head {out.model_id} ({feature.value}) in {out.folder}\n"
          f"{out.n_train_pairs} training pairs, {out.n_val_pairs} held-out pairs: AUC head {fmt(out.val_auc_head)}, "
          f"plain distance {fmt(out.val_auc_distance)}\n"
          f"use it for Verify: faceid-server --verifier-head {out.model_id}\n"
          f"detection failures: {len(out.failures)}" + "".join(f"\n  {f.path}: {f.reason}" for f in out.failures))


# ----------------------------------------------------------------------------------------- reindex
def reindex(
    model: Annotated[str, typer.Option("--model", "-m", help="the model id to switch the gallery to")],
    database: Annotated[str, typer.Option(help="gallery database URL (stop the server using it first)")],
    source: Annotated[str | None, typer.Option("--from", help="the gallery's current model, when it holds several")] = None,
    originals: Annotated[Path | None, typer.Option(
        exists=True, file_okay=False,
        help="folder of the original photos (matched by sha256); without it, stored thumbnails are upsampled")] = None,
    drop_unembeddable: Annotated[bool, typer.Option(
        help="leave out faces that can be re-embedded neither from an original nor a thumbnail")] = False,
    model_dir: ModelDir = None,
    device: DeviceOpt = Device.auto,
    as_json: Json = False,
    progress: ProgressOpt = True,
) -> None:
    """Re-embed every stored face with --model and switch the gallery to it in one transaction (server stopped)."""
    tools = _tools()
    with _engine_errors(as_json):
        r = tools.reindex_database(database, model=model, source_model=source, originals=originals,
                                   drop_unembeddable=drop_unembeddable, model_dir=model_dir, device=device.value,
                                   progress=progress)
    if as_json:
        from faceid.indexer.evaluation import to_jsonable

        print_json(to_jsonable(r))
        return
    _echo(f"gallery switched from {r.source_model} to {r.target_model}: {r.faces} faces "
          f"({r.from_originals} from original photos, {r.from_thumbnails} from thumbnails), {r.deleted} old rows "
          f"removed, {len(r.dropped)} dropped, {r.vanished} deleted meanwhile\n"
          f"start the server with --model {r.target_model}; calibrate the new model (faceid calibrate)"
          + "".join(f"\n  dropped face {d.face_id}: {d.reason}" for d in r.dropped))


def register_accuracy_commands(app: typer.Typer) -> None:
    """Attach eval/train sub-apps and calibrate/reindex to the `faceid` app."""
    app.add_typer(eval_app, name="eval")
    app.add_typer(train_app, name="train")
    app.command("calibrate")(calibrate)
    app.command("reindex")(reindex)
