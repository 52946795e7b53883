"""Input validation shared by every public function (docs: bad input).

Each check raises ValueError or TypeError naming the argument, before any work starts, and
never modifies the caller's array.
"""
from __future__ import annotations

import numbers
import os

import numpy as np

from . import _arrays

_INT_KINDS = ("int", "uint", "bool", "complex")
_ROW_CHECK_ELEMENTS = 1 << 22  # entries per block of :func:`rows` (4 MiB of flags)


def embeddings(x, name: str):
    """A 2-D, non-empty float array; returns (x, Info). Finiteness and zero rows are checked
    with the row norms, see :func:`row_norms`."""
    x = _arrays.as_array(x, name)
    inf = _arrays.info(x, name)
    if inf.dtype.startswith(_INT_KINDS):
        raise TypeError(
            f"{name} must hold floating-point embeddings (float32, float16 or bfloat16), "
            f"got dtype {inf.dtype}"
        )
    if inf.dtype not in _arrays.FLOAT_DTYPES:
        raise TypeError(f"{name}: unsupported dtype {inf.dtype}")
    if len(inf.shape) != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {inf.shape}")
    if inf.shape[0] == 0 or inf.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {inf.shape}")
    return x, inf


def rows(x, name: str, offset: int = 0, zero_ok: bool = False) -> float:
    """Raise (see :func:`bad_rows`) for the first row of the 2-D embeddings ``x`` (already
    checked by :func:`embeddings`) that holds NaN/Inf or (unless ``zero_ok``) is all zeros;
    return the largest magnitude in ``x``. For functions that hand row subsets of ``x`` to
    the kNN search, so that errors name the caller's argument and row (``x`` being rows
    ``offset``.. of it). Runs where ``x`` lives, in blocks of rows (small temporaries); never
    writes."""
    n, d = x.shape
    step = max(1, _ROW_CHECK_ELEMENTS // max(d, 1))
    peak = 0.0
    for b in range(0, n, step):
        peaks = _arrays.row_peaks(x[b:b + step])
        bad_peaks(np.where(peaks == 0, 1.0, peaks) if zero_ok else peaks, name, offset + b)
        peak = max(peak, float(peaks.max()))
    return peak


def bad_peaks(peaks: np.ndarray, name: str, offset: int = 0) -> None:
    """Raise (see :func:`bad_rows`) for the first row whose largest magnitude (from
    ``_arrays.row_peaks``) is NaN/Inf or zero; ``peaks`` are rows ``offset``.. of ``name``."""
    finite = np.isfinite(peaks)
    if not finite.all():
        bad_rows(name, offset + int(np.argmin(finite)), None)
    if not (peaks > 0).all():
        bad_rows(name, None, offset + int(np.argmin(peaks > 0)))


def seed(value, name: str = "seed") -> int:
    """A non-negative integer seed for ``np.random.default_rng``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def same_device(a_info, b_info, a_name: str, b_name: str):
    if a_info.device != b_info.device:
        raise ValueError(
            f"{a_name} is on {a_info.device} but {b_name} is on {b_info.device}: "
            "put both on the same device"
        )
    if a_info.on_gpu and a_info.kind != b_info.kind:
        raise TypeError(f"{a_name} is a {a_info.kind} array but {b_name} is {b_info.kind}")


def same_width(a_info, b_info, a_name: str, b_name: str):
    if a_info.shape[1] != b_info.shape[1]:
        raise ValueError(
            f"{a_name} has {a_info.shape[1]} columns but {b_name} has {b_info.shape[1]}"
        )


def positive_int(value, name: str, zero: bool = False) -> int:
    """An integer >= 1 (>= 0 with ``zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    low = 0 if zero else 1
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def positive_float(value, name: str, zero: bool = False) -> float:
    """A finite real > 0 (>= 0 with ``zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {'>= 0' if zero else '> 0'} and finite, got {value}")
    return value


def fraction(value, name: str) -> float:
    """A number in [0, 1]."""
    value = positive_float(value, name, zero=True)
    if value > 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def _vector(x, length: int, name: str) -> np.ndarray:
    x = _arrays.as_array(x, name)
    inf = _arrays.info(x, name)
    if not inf.dtype.startswith(("int", "uint", "float", "bfloat")):
        raise TypeError(f"{name} must be real numbers, got dtype {inf.dtype}")
    if inf.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {inf.shape}")
    host = _arrays.to_numpy(x).astype(np.float64)
    if not np.isfinite(host).all():
        raise ValueError(f"{name} holds NaN or Inf")
    if (host < 0).any():
        raise ValueError(f"{name} must be non-negative, got min {host.min()}")
    return host


def distribution(p, length: int, name: str) -> np.ndarray:
    """A probability vector of ``length`` (uniform when None), float64."""
    if p is None:
        return np.full(length, 1.0 / length)
    host = _vector(p, length, name)
    if abs(host.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got {host.sum()}")
    return host


def weights(w, length: int, name: str) -> np.ndarray:
    """Non-negative weights of ``length`` (ones when None), float64."""
    return np.ones(length) if w is None else _vector(w, length, name)


def k_at_most(k: int, available: int, what: str):
    if k > available:
        raise ValueError(f"k={k} is larger than the {available} {what}")


def bad_rows(name: str, nonfinite_row: int | None, zero_row: int | None):
    """Raise for the first row holding NaN/Inf or having zero norm (None: no such row)."""
    if nonfinite_row is not None:
        raise ValueError(f"{name} holds NaN or Inf (row {nonfinite_row})")
    if zero_row is not None:
        raise ValueError(f"{name} has a zero-norm row (row {zero_row}): cosine is undefined")


def _integers(x, name: str, ndim: int, what: str, shape: str):
    """(x as an array, its info) once its dtype is an integer one and it has ``ndim``
    dimensions; ``what`` and ``shape`` complete the error messages."""
    x = _arrays.as_array(x, name)
    inf = _arrays.info(x, name)
    if not inf.dtype.startswith(("int", "uint")):
        raise TypeError(f"{name} must {what}, got dtype {inf.dtype}")
    if len(inf.shape) != ndim:
        raise ValueError(f"{name} must be {shape}, got shape {inf.shape}")
    return x, inf


def labels(y, n: int | None, n_classes: int | None = None, name: str = "labels"):
    """(N,) integer labels, -1 for unlabeled, at least one labeled, each < n_classes when
    given; returned as int64 numpy. ``name`` is the caller's argument name."""
    y, inf = _integers(y, name, 1, "be integers (-1 for unlabeled)", "1-D")
    if n is not None and inf.shape[0] != n:
        raise ValueError(f"{name} has {inf.shape[0]} entries but there are {n} points")
    if inf.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if inf.shape[0] >= 2**31:
        raise ValueError(f"{name}: {inf.shape[0]} points; at most 2**31 - 1 on one machine")
    host = int64_host(y, name)
    if host.min() < -1:
        raise ValueError(f"{name} must be >= -1 (-1 = unlabeled), got {host.min()}")
    if host.max() < 0:
        raise ValueError(f"{name} has no labeled point (every entry is -1)")
    if host.max() >= 2**31 - 1:
        raise ValueError(f"{name} must be < 2**31 - 1, got {host.max()}")
    if n_classes is not None:
        n_classes = positive_int(n_classes, "n_classes")
        if host.max() >= n_classes:
            raise ValueError(f"{name} must be < n_classes={n_classes}, got {host.max()}")
    return host


def indices(idx, name: str, n: int | None):
    """A 2-D integer index array with values in [0, n) (n None: max + 1); returns it as a
    C-contiguous int64 host copy together with n."""
    idx, inf = _integers(idx, name, 2, "hold integer indices", "2-D (N, k)")
    if 0 in inf.shape:
        raise ValueError(f"{name} is empty: shape {inf.shape}")
    host = int64_host(idx, name)
    if n is None:
        n = max(host.shape[0], int(host.max()) + 1)
    if host.min() < 0 or host.max() >= n:
        raise ValueError(f"{name} holds indices outside [0, {n}): min {host.min()}, "
                         f"max {host.max()}")
    return host, n


def graph_pair(g):
    """The ``(sims, idx)`` arrays of a graph argument: hdlfast.knn's result (a KNNGraph) or any
    pair of a float and an integer array, in either order (told apart by dtype, so the
    ``(idx, sims)`` order of earlier releases still works)."""
    a, b = (_arrays.as_array(x, "graph") for x in pair_of(g))
    return sims_first(a, b, [_arrays.info(x, "graph").dtype.startswith(_INT_KINDS)
                             for x in (a, b)])


def pair_of(g, source: str = "hdlfast.knn"):
    """``g`` as a tuple of two, or TypeError: a graph is the (sims, idx) pair of ``source``."""
    if not isinstance(g, (tuple, list)) or len(g) != 2:
        raise TypeError(f"graph must be the (sims, idx) pair returned by {source}")
    return tuple(g)


def sims_first(a, b, ints, source: str = "hdlfast.knn"):
    """``(sims, idx)`` of the graph arrays a, b, whichever order they come in; ``ints``: which
    of the two hold integers (exactly one must)."""
    if ints == [False, True]:
        return a, b
    if ints == [True, False]:
        return b, a
    raise TypeError(f"graph must be the (sims, idx) result of {source}: one float array of "
                    "similarities and one integer array of indices, got "
                    f"{'two integer' if all(ints) else 'two float'} arrays")


def graph(g, n: int, k: int):
    """A precomputed kNN graph (see :func:`graph_pair`) of n points with at least k columns;
    returns host copies of the first k columns, ``(idx, sims)`` (int64, float32)."""
    sims, idx = graph_pair(g)
    i_shape, s_inf = _arrays.info(idx, "graph idx").shape, _arrays.info(sims, "graph sims")
    if s_inf.dtype not in _arrays.FLOAT_DTYPES:
        raise TypeError(f"graph sims must hold similarities (floats), got dtype {s_inf.dtype}")
    if len(i_shape) != 2 or i_shape != s_inf.shape:
        raise ValueError(f"graph idx and sims must both be (N, k), got {i_shape} and "
                         f"{s_inf.shape}")
    if i_shape[0] != n:
        raise ValueError(f"graph has {i_shape[0]} rows but labels has {n} entries")
    if k > i_shape[1]:
        raise ValueError(f"k={k} is larger than the graph's {i_shape[1]} columns")
    idx, _ = indices(idx, "graph idx", n)
    idx = np.ascontiguousarray(idx[:, :k])
    sims = np.ascontiguousarray(_arrays.to_numpy(sims)[:, :k], dtype=np.float32)
    if not np.isfinite(sims).all():
        raise ValueError("graph sims holds NaN or Inf")
    return idx, sims


def choice(value, name: str, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def int_vector(x, name: str, n: int | None = None, other: str = "") -> np.ndarray:
    """A non-empty 1-D integer array (of n entries when given) as int64 numpy."""
    x = _arrays.as_array(x, name)
    inf = _arrays.info(x, name)
    if not inf.dtype.startswith(("int", "uint")):
        raise TypeError(f"{name} must hold integer labels, got dtype {inf.dtype}")
    if len(inf.shape) != 1:
        raise ValueError(f"{name} must be 1-D, got shape {inf.shape}")
    if inf.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if n is not None and inf.shape[0] != n:
        raise ValueError(f"{name} has {inf.shape[0]} entries but {other} has {n}")
    return int64_host(x, name)


_INT64_MAX = np.iinfo(np.int64).max


def int64_host(x, name: str) -> np.ndarray:
    """The integer array ``x`` as a C-contiguous int64 numpy copy; unsigned values above
    int64's range (which a cast would wrap to negative numbers, e.g. to -1 = unlabeled) are
    refused."""
    raw = _arrays.to_numpy(x)
    if raw.dtype.kind == "u" and raw.dtype.itemsize >= 8 and raw.size and \
            int(raw.max()) > _INT64_MAX:
        raise ValueError(f"{name} holds {int(raw.max())}, which does not fit in int64")
    return np.ascontiguousarray(raw, dtype=np.int64)


def available_memory() -> int | None:
    """Bytes of memory this process can still get: the machine's (Linux MemAvailable, else
    free pages) and, inside a container, what its cgroup v2 limit leaves; None if unknown."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current") as fh:
            used = int(fh.read().strip())
        if limit != "max":
            left = max(int(limit) - used, 0)
            avail = left if avail is None else min(avail, left)
    except (OSError, ValueError):
        pass
    return avail


def fits_in_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating, work that needs more memory than is available."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise ValueError(f"{what} would need {nbytes / 2**30:.1f} GiB, more than the "
                         f"{avail / 2**30:.1f} GiB of memory available")
