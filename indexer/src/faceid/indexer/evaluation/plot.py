"""ROC plot as a PNG (matplotlib's Agg canvas directly: no pyplot, no global backend state, no display)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from faceid.indexer.evaluation.verification import VerificationReport


def plot_roc(reports: Mapping[str, VerificationReport], path: Path, title: str = "ROC") -> Path:
    """Write TAR against FAR (log scale) for each named report, marking its EER and TAR-at-FAR points.

    FAR = 0 cannot sit on a log axis, so points at FAR 0 are drawn at half the smallest resolvable FAR
    (0.5 / number of different-person pairs) and the axis says so.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    floor = min(0.5 / r.n_different for r in reports.values())
    for name, r in reports.items():
        far = np.maximum(r.roc.far, floor)
        line = ax.step(far, r.roc.tar, where="post", label=f"{name}: AUC {r.auc:.4f}, EER {100 * r.eer:.2f}%")[0]
        ax.plot([max(r.eer, floor)], [1.0 - r.eer], "o", color=line.get_color(), markersize=5)
        for op in r.tar_at_far:
            if op.enough_pairs:
                ax.plot([max(op.far, floor)], [op.tar], "x", color=line.get_color(), markersize=7)
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.01)
    ax.set_xlabel(f"FAR (false accept rate; FAR 0 drawn at {floor:.1e})")
    ax.set_ylabel("TAR (true accept rate)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small", title="o EER   x TAR at FAR", title_fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
