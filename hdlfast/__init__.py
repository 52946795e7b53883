"""hdlfast: exact cosine kNN graphs and kNN labeling for numpy, cupy and torch arrays."""
from ._backend import info
from .knn import knn, reverse_graph

__version__ = "0.1.0"
__all__ = ["knn", "reverse_graph", "info", "__version__"]
