"""hdlfast: exact cosine kNN graphs and kNN labeling for numpy, cupy and torch arrays."""
from ._backend import info
from .clusterability import KSelection, label_clusterability, select_k
from .estimator import HDLLabeler
from .knn import knn, reverse_graph
from .labeling import PROVENANCE, HDLResult, hdl, knn_vote, vote_against
from .sinkhorn import sinkhorn

__version__ = "0.1.0"
__all__ = ["knn", "reverse_graph", "knn_vote", "hdl", "HDLResult", "PROVENANCE",
           "vote_against", "sinkhorn", "label_clusterability", "select_k", "KSelection", "HDLLabeler", "info",
           "__version__"]
