"""Issue 7: the default model's accuracy on shared/data/faces, as in docs/accuracy.md.

Every photo goes once through the service's own pipeline (decode → MTCNN at the card's margin → prewhiten →
InceptionResnetV1), then:
  1. verification on all pairs of the per-person folders (AUC, EER, best / 10-fold accuracy, TAR at FAR);
  2. verification on an LFW-style pairs.txt generated from those folders (10 folds of balanced pairs);
  3. open-set identification: people rotated as never-enrolled strangers in 4 folds, 2 enrolment photos each;
  4. calibration: tau at FAR 1e-2 and 1e-3 and the logistic P(same | d);
  5. with --train: a triplet fine-tune of the head and a Siamese head (held-out numbers).
It writes out/accuracy/{pairs_faces.txt, roc.png, accuracy.json} and prints a Markdown summary.
The same numbers come from the CLI one at a time (each command embeds the photos again):

    faceid eval pairs ../shared/data/faces --model facenet-20170512-128d --roc out/roc.png
    faceid eval pairs out/accuracy/pairs_faces.txt --images ../shared/data/faces --pattern '{name}/{num:02d}.jpg'
    faceid eval identify ../shared/data/faces --stranger-folds 4 --gallery-per-identity 2
    faceid calibrate ../shared/data/faces --far 1e-2 --database sqlite:///faceid.db

    uv run python bench/accuracy.py [--train] [--device cpu|cuda|auto] [--threads N] [--out out/accuracy]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from faceid.indexer.calibration import calibrate
from faceid.indexer.evaluation import (
    all_pairs,
    evaluate_identification,
    evaluate_pairs,
    format_identification_evaluation,
    format_pairs_evaluation,
    identity_folders,
    lfw_style_pairs,
    open_set_splits,
    plot_roc,
    read_pairs,
    to_jsonable,
    write_lfw_pairs,
)
from faceid.indexer.evaluation.files import file_embedder

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEID_SHARED_DIR", REPO.parent / "shared"))
MODEL = "facenet-20170512-128d"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=SHARED / "data" / "faces")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--model-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "out" / "accuracy")
    ap.add_argument("--train", action="store_true", help="also fine-tune a triplet head and fit a Siamese head")
    args = ap.parse_args()
    if args.threads:
        from faceid.indexer.runtime import configure_torch_threads

        configure_torch_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    people = identity_folders(args.faces)
    t0 = time.perf_counter()
    embedder = file_embedder(args.model, args.device, args.model_dir)
    cropped = embedder.crop_files([p for files in people.values() for p in files])
    images = cropped.images
    embed_s = time.perf_counter() - t0
    result: dict[str, object] = {
        "model": args.model, "device": embedder.device, "photos": sum(map(len, people.values())),
        "people": len(people), "embedded": len(images.paths), "failures": images.failures,
        "embed_seconds": embed_s, "machine": platform.platform(), "cpus": os.cpu_count(),
    }

    everything = evaluate_pairs(all_pairs(people), images)
    pairs_file = args.out / "pairs_faces.txt"
    write_lfw_pairs(pairs_file, lfw_style_pairs(people, n_folds=10, seed=0))
    lfw = evaluate_pairs(read_pairs(pairs_file, args.faces, "{name}/{num:02d}.jpg"), images)
    plot_roc({"all pairs": everything.report, "LFW-style pairs.txt": lfw.report}, args.out / "roc.png",
             title=f"{args.model} on shared/data/faces")
    splits = open_set_splits(people, n_folds=4, gallery_per_identity=2, seed=0)
    ident = evaluate_identification(splits, images, embedder.spec.default_threshold, fars=(1e-1, 1e-2))
    d, s = everything.distances.distances, everything.distances.same
    cals = [calibrate(d, s, far, args.model) for far in (1e-2, 1e-3)]
    result |= {"all_pairs": everything.report, "lfw_pairs": lfw.report, "identify": ident.report,
               "calibration": cals}

    print(f"## {args.model} on {args.faces.name}: {len(images.paths)}/{result['photos']} photos embedded "
          f"in {embed_s:.1f} s on {embedder.device}\n")
    print("### All pairs of the per-person folders\n```\n" + format_pairs_evaluation(everything) + "\n```")
    print("### LFW-style pairs.txt (10 folds)\n```\n" + format_pairs_evaluation(lfw) + "\n```")
    print("### Open-set identification\n```\n" + format_identification_evaluation(ident) + "\n```")
    print("### Calibration (all pairs)\n```")
    for c in cals:
        print(f"target FAR {c.target_far:g}: tau {c.tau:.3f} (FAR {c.far:.4f}, TAR {c.tar:.4f}); "
              f"P(same|d) = sigmoid({c.intercept:.2f} {c.slope:+.2f}·d), P(d=tau) = {float(c.probability(c.tau)):.3f}, "
              f"P(d=1.02) = {float(c.probability(1.02)):.3f}")
    print("```")
    if args.train:
        result["training"] = _train(cropped, people, embedder)
    (args.out / "accuracy.json").write_text(json.dumps(to_jsonable(result), indent=1) + "\n")
    print(f"\nwrote {args.out / 'accuracy.json'}, {args.out / 'roc.png'}, {pairs_file}")


def _train(cropped, people, embedder) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Head fine-tune (triplet, semi-hard, margin 0.8) and Siamese heads, on the already-cropped photos."""
    import copy

    import torch

    from faceid.indexer.embedding import standardize
    from faceid.indexer.evaluation import auc, d_prime
    from faceid.indexer.training import (
        TripletConfig, fit_siamese, holdout_split, split_network, train_triplet, trunk_features, validation_pairs,
    )

    names = sorted(people)
    labels = np.array([names.index(p.parent.name) for p in cropped.images.paths], dtype=np.int64)
    out: dict[str, object] = {}
    for by in ("images", "identities"):
        net = copy.deepcopy(embedder.embedder.network)
        trunk, tail = split_network(net, "head")
        x = standardize(torch.from_numpy(cropped.crops).float(), embedder.spec.preprocessing)
        feats, flipped = trunk_features(trunk, x), trunk_features(trunk, x.flip(-1))
        cfg = TripletConfig(epochs=10, margin=0.8, lr=1e-3, mining="semi_hard", restore_best=False)
        t = time.perf_counter()
        res = train_triplet(tail, feats, labels, cfg, flipped=flipped, holdout_by=by)
        h0, h1 = res.history[0], res.history[-1]
        print(f"triplet head, hold-out by {by}: objective {h0.train_objective:.5f} → {h1.train_objective:.5f}, "
              f"val AUC {h0.val_auc:.4f} → {h1.val_auc:.4f}, val d' {h0.val_d_prime:.2f} → {h1.val_d_prime:.2f} "
              f"({time.perf_counter() - t:.1f} s)")
        out[f"triplet_{by}"] = res.to_dict()
    emb = cropped.images.vectors.astype(np.float64)
    train, val = holdout_split(labels, by="identities", seed=0)
    ti, tj = (train[k] for k in np.triu_indices(len(train), 1))
    vi, vj, vs = validation_pairs(labels, val, "identities")
    dist = np.linalg.norm(emb[vi] - emb[vj], axis=1)
    print(f"siamese, held-out people ({len(vi)} pairs): distance AUC {auc(dist, vs):.4f} d' {d_prime(dist, vs):.2f}")
    for kind in ("l1", "chi2"):
        head = fit_siamese(emb[ti], emb[tj], labels[ti] == labels[tj], kind)
        logit = head.logit(emb[vi], emb[vj])
        print(f"  {kind}: AUC {auc(-logit, vs):.4f}, d' of the logit {d_prime(-logit, vs):.2f}")
        out[f"siamese_{kind}"] = {"val_auc": auc(-logit, vs), "val_d_prime_logit": d_prime(-logit, vs)}
    return out


if __name__ == "__main__":
    main()
