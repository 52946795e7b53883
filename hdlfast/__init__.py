"""hdlfast: exact cosine kNN graphs, kNN labeling, balanced pseudo-labels, selective labeling
and the neighbour utilities of SCAN and NCL, for numpy, cupy and torch arrays.

What each function computes, its tie rules and its bad-input rules are written down in the
repository's docs/algorithms.md; docstrings cite its sections as "docs §N"."""
from ._backend import info
from .clusterability import KSelection, label_clusterability, select_k
from .estimator import HDLLabeler
from .kmeans import KMeansResult, kmeans
from .knn import KNNGraph, knn, reverse_graph
from .labeling import PROVENANCE, HDLResult, hdl, knn_vote, vote_against
from .metrics import ari, cluster_accuracy, nmi
from .neighbors import (ConfidentLabels, HardNegatives, confident_labels, hard_negatives,
                        mine_neighbors, neighbor_accuracy, neighborhood_positives)
from .selection import knn_density, select_to_label
from .sinkhorn import SinkhornResult, sinkhorn

__version__ = "0.1.0"
__all__ = ["knn", "KNNGraph", "reverse_graph", "knn_vote", "hdl", "HDLResult", "PROVENANCE", "vote_against",
           "sinkhorn", "SinkhornResult", "kmeans", "KMeansResult", "knn_density", "select_to_label",
           "mine_neighbors", "neighbor_accuracy", "confident_labels", "ConfidentLabels",
           "neighborhood_positives", "hard_negatives", "HardNegatives", "cluster_accuracy",
           "nmi", "ari", "label_clusterability", "select_k", "KSelection", "HDLLabeler", "info",
           "__version__"]
