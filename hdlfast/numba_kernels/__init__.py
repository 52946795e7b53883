"""numba fallbacks of the native kernels: same names, same arguments (arrays, not pointers).

Imported lazily (compilation is cached on disk) so that ``import hdlfast`` stays fast.
"""
from .topk import finalize, merge_cols, merge_rows

__all__ = ["merge_rows", "merge_cols", "finalize"]
