"""A Siamese verification head (`faceid train siamese`) configured for Verify in place of the distance threshold.

With a head configured (server setting `verifier_head`, a head id found in the model folders like a trained
model), Verify answers match = P(same) >= 0.5 where P = σ(Σ_k w_k·φ_k(f_a, f_b) + b) is the head's probability,
and returns that P as `probability`. A request that gives its own threshold is decided by the distance, as
without a head. The head must have been trained on embeddings of the served model: a head of another model
would read meaningless features, so it is refused at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from faceid.indexer.errors import FailedPrecondition, UnknownModel
from faceid.indexer.training.siamese import SiameseVerifier

DECISION_THRESHOLD = 0.5


@dataclass(frozen=True)
class VerifierHead:
    id: str
    base_model: str
    verifier: SiameseVerifier

    @property
    def decided_by(self) -> str:
        return f"siamese:{self.id}"

    def probabilities(self, probe: NDArray[np.float32], others: NDArray[np.float32]) -> NDArray[np.float64]:
        """P(same) of `probe` (d,) against each row of `others` (n, d) → (n,)."""
        others = np.atleast_2d(others)
        return self.verifier.probability(np.broadcast_to(probe, others.shape), others)


def load_verifier_head(head_id: str, model_id: str, model_dir: Path | None = None) -> VerifierHead:
    """The head `head_id` (sha256-checked) for the served `model_id`; UnknownModel / FailedPrecondition else."""
    from faceid.indexer.models.locations import model_search_dirs
    from faceid.indexer.models.trained import HEAD_KIND, find_trained_folder
    from faceid.indexer.training.export import load_siamese_head

    extra = [model_dir] if model_dir is not None else []
    folder = find_trained_folder(head_id, HEAD_KIND, extra)
    if folder is None:
        searched = ", ".join(str(d) for d in [*extra, *model_search_dirs()])
        raise UnknownModel(f"no Siamese head {head_id!r} (a {head_id}/ folder with a card.json) in {searched}; "
                           "train one with `faceid train siamese`")
    verifier, base = load_siamese_head(folder)
    if base != model_id:
        raise FailedPrecondition(
            f"Siamese head {head_id!r} was trained on embeddings of {base!r}, but the server serves {model_id!r}: "
            "train a head for this model or unset verifier_head"
        )
    return VerifierHead(head_id, base, verifier)
