"""Training on the user's labeled folders: triplet-loss fine-tuning of an embedding network's tail, and a
Siamese verification head on precomputed embeddings; trained models are saved as new model ids.

- `triplet_loss`: the loss and online miners (batch-all, semi-hard, hard).
- `sampler`: P identities × K images batches.
- `network`: frozen trunk / trainable tail split of InceptionResnetV1, cached trunk features.
- `triplet`: the training loop (held-out split, per-epoch loss and AUC, tqdm bar).
- `siamese`: σ(Σ w_k φ_k(f_i, f_j) + b) with φ = |f_i − f_j| or χ², logistic loss.
- `export`: model folders (safetensors + card.json + sha256).
Torch is imported by these modules: import them only where training runs (never from the `faceid` CLI's top level).
"""

from faceid.indexer.training.network import Tail, Trunk, split_network, trunk_features
from faceid.indexer.training.sampler import PKBatchSampler
from faceid.indexer.training.siamese import SiameseVerifier, fit_siamese, pair_features
from faceid.indexer.training.triplet import (
    EpochStats,
    TripletConfig,
    TripletTrainingResult,
    embed_features,
    holdout_split,
    train_triplet,
    validation_pairs,
)
from faceid.indexer.training.triplet_loss import (
    MINING_CHOICES,
    Triplets,
    batch_triplet_loss,
    mean_triplet_loss,
    mine_batch_all,
    mine_hard,
    mine_semi_hard,
    triplet_loss,
)

__all__ = [
    "MINING_CHOICES",
    "EpochStats",
    "PKBatchSampler",
    "SiameseVerifier",
    "Tail",
    "TripletConfig",
    "TripletTrainingResult",
    "Triplets",
    "Trunk",
    "batch_triplet_loss",
    "embed_features",
    "fit_siamese",
    "holdout_split",
    "mean_triplet_loss",
    "mine_batch_all",
    "mine_hard",
    "mine_semi_hard",
    "pair_features",
    "split_network",
    "train_triplet",
    "trunk_features",
    "triplet_loss",
    "validation_pairs",
]
