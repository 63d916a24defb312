"""Clustering of face embeddings: spherical K-means, automatic K, quality metrics, outliers, 2-D view.

Numpy in, numpy out; no grpc. See docs/clustering.md for the algorithms and the measured numbers.
Modules: seeding (k-means‖ + greedy k-means++), backend (FAISS CPU/GPU), kmeans (the engine), quality
(metrics, automatic K), outliers, projection (PCA), naming (nearest identity), pipeline (one job),
synthetic (test data).
"""

from faceid.indexer.clustering.backend import gpu_available
from faceid.indexer.clustering.kmeans import (
    KMeansResult,
    assign_to_centroids,
    spherical_inertia,
    spherical_kmeans,
)
from faceid.indexer.clustering.naming import IdentitySearch, NearestIdentity, nearest_identities
from faceid.indexer.clustering.outliers import find_outliers
from faceid.indexer.clustering.pipeline import ClusteringResult, Progress, cluster
from faceid.indexer.clustering.projection import pca_2d
from faceid.indexer.clustering.quality import ClusterMetrics, KChoice, choose_k, cluster_metrics, silhouette
from faceid.indexer.clustering.synthetic import Blobs, spherical_blobs

__all__ = [
    "Blobs",
    "ClusterMetrics",
    "ClusteringResult",
    "IdentitySearch",
    "KChoice",
    "KMeansResult",
    "NearestIdentity",
    "Progress",
    "assign_to_centroids",
    "choose_k",
    "cluster",
    "cluster_metrics",
    "find_outliers",
    "gpu_available",
    "nearest_identities",
    "pca_2d",
    "silhouette",
    "spherical_blobs",
    "spherical_inertia",
    "spherical_kmeans",
]
