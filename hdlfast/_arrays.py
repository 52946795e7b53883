"""The one place that knows numpy, cupy and torch.

Everything else in hdlfast asks this module for an array's kind, device, dtype, pointer and
stream, for host (numpy) views, and for outputs allocated in the caller's kind on the caller's
device. cupy and torch are imported only when the caller hands us one of their arrays.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import numpy as np

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}


def _torch():
    return sys.modules.get("torch")


def _cupy():
    return sys.modules.get("cupy")


@dataclass(frozen=True)
class Info:
    """What hdlfast needs to know about one array."""

    kind: str  # "numpy" | "torch" | "cupy"
    device: str  # "cpu" or "cuda:N"
    dtype: str  # numpy-style name: "float32", "bfloat16", "int64", ...
    shape: tuple

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu"


def kind(x) -> str:
    t, cp = _torch(), _cupy()
    if isinstance(x, np.ndarray):
        return "numpy"
    if t is not None and isinstance(x, t.Tensor):
        return "torch"
    if cp is not None and isinstance(x, cp.ndarray):
        return "cupy"
    return "other"


def info(x, name: str) -> Info:
    """Describe ``x``; anything that is not an array of a known kind raises TypeError."""
    k = kind(x)
    if k == "numpy":
        return Info("numpy", "cpu", _np_dtype_name(x.dtype), tuple(x.shape))
    if k == "torch":
        dev = "cpu" if x.device.type == "cpu" else f"cuda:{x.device.index or 0}"
        if x.device.type not in ("cpu", "cuda"):
            raise TypeError(f"{name}: torch device {x.device} is not supported (cpu or cuda)")
        return Info("torch", dev, str(x.dtype).replace("torch.", ""), tuple(x.shape))
    if k == "cupy":
        return Info("cupy", f"cuda:{x.device.id}", _np_dtype_name(x.dtype), tuple(x.shape))
    raise TypeError(
        f"{name} must be a numpy array, a torch tensor or a cupy array, got {type(x).__name__}"
    )


def _np_dtype_name(dt) -> str:
    name = np.dtype(dt).name
    return "bfloat16" if name == "bfloat16" else name  # ml_dtypes registers "bfloat16"


def refuse_non_array(x, name: str) -> None:
    """TypeError for the values numpy would read as a 0-d or object array but no caller
    means as one (None, strings, dicts, sets, scipy sparse matrices)."""
    if _is_sparse(x):
        raise TypeError(f"{name}: sparse input is not supported; pass a dense array "
                        f"(for example {name}.toarray())")
    if isinstance(x, (str, bytes, dict, set)) or x is None:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")


def _is_sparse(x) -> bool:
    if not hasattr(x, "nnz"):  # cheap test first: scipy loads only for candidates
        return False
    from scipy import sparse

    return sparse.issparse(x)


def as_array(x, name: str):
    """Accept array-likes (lists, memoryviews) as numpy; leave real arrays untouched."""
    if kind(x) != "other":
        return x
    refuse_non_array(x, name)
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything numpy cannot read is the caller's error
        raise TypeError(f"{name} could not be read as an array: {exc}") from None


def is_framework_array(x) -> bool:
    """A torch tensor or cupy array (on any device): what hdlfast reads where it lives,
    rather than converting it to numpy."""
    return kind(x) in ("torch", "cupy")


def device_floats(x, name: str):
    """A torch or cupy ``x`` with real entries as floats, where it lives: integers and booleans
    become float32 (a copy, as scikit-learn's ``check_array`` converts host arrays), float
    dtypes pass unchanged, complex raises ValueError."""
    dtype = info(x, name).dtype
    if dtype.startswith("complex"):
        raise ValueError(f"{name}: Complex data not supported")
    if dtype in FLOAT_DTYPES:
        return x
    if kind(x) == "torch":
        return x.detach().to(_torch().float32)
    return x.astype(_cupy().float32)


# --- host (numpy) views --------------------------------------------------------------------


def to_host(x) -> np.ndarray:
    """A numpy view (or copy, for GPU arrays, bf16 and fp16) of ``x``; never a view the caller
    could see modified, since hdlfast never writes into it."""
    k = kind(x)
    if k == "torch":
        x = x.detach()
        if x.dtype in (_torch().bfloat16, _torch().float16):
            x = x.float()
        return x.cpu().numpy()
    if k == "cupy":
        return x.get()
    return x


def host_view(x, dtypes=(np.float32,)):
    """``x`` as a C-contiguous numpy view when it is one on the host (numpy or torch CPU) of
    one of ``dtypes``, for kernels that only read it; else None (no copy is ever made here)."""
    k = kind(x)
    if k == "cupy" or (k == "torch" and x.device.type != "cpu"):
        return None
    if k == "torch":
        t = _torch()
        if x.dtype not in (t.float32, t.float64):
            return None
        x = x.detach().numpy()
    return x if x.dtype in dtypes and x.flags.c_contiguous else None


def copy_to_host(dst: np.ndarray, src, rows=None) -> None:
    """dst[...] = src[rows] cast to dst's dtype, with no temporary of src's size for numpy and
    torch CPU sources (bf16/fp16 are widened straight into dst)."""
    if rows is not None:
        src = src[rows]
    if kind(src) == "torch":
        _torch().from_numpy(dst).copy_(src.detach())
    elif kind(src) == "cupy":
        np.copyto(dst, src.get(), casting="unsafe")
    else:
        np.copyto(dst, src, casting="unsafe")


def allreduce(x: np.ndarray, group, op: str) -> np.ndarray:
    """Sum or max of a small host vector over a torch.distributed group (``group`` True: the
    default group; None: no reduction)."""
    if group is None or group is False:
        return x
    t = _torch()
    dist = t.distributed
    buf = t.from_numpy(np.ascontiguousarray(x, dtype=np.float64).copy())
    dist.all_reduce(buf, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX,
                    group=None if group is True else group)
    return buf.numpy()


def row_peaks(x) -> np.ndarray:
    """The largest magnitude of each row of the 2-D array ``x`` (NaN for a row holding NaN,
    Inf for one holding Inf, 0 for a zero row), computed where x lives and returned as a
    float64 numpy vector (for input checks and scale decisions; never writes)."""
    k = kind(x)
    if k == "torch":
        return to_numpy(x.detach().abs().amax(dim=1).double())
    if k == "cupy":
        with x.device:
            return to_numpy(abs(x).max(axis=1)).astype(np.float64)
    return np.maximum(x.max(axis=1), -x.min(axis=1)).astype(np.float64)  # no |x| temporary


def row_logsumexp(x, block: int = 4096) -> np.ndarray:
    """log sum_k exp(x_ik) per row of the 2-D array ``x``, computed where x lives in float64
    blocks of rows, as a numpy vector."""
    out = np.empty(x.shape[0])
    for b in range(0, x.shape[0], block):
        blk = x[b:b + block]
        if kind(blk) == "torch":
            out[b:b + block] = to_numpy(_torch().logsumexp(blk.detach().double(), dim=1))
            continue
        xp = _cupy() if kind(blk) == "cupy" else np
        with device_ctx(blk):
            blk = xp.asarray(blk, dtype=xp.float64)
            m = blk.max(axis=1, keepdims=True)
            out[b:b + block] = to_numpy(m[:, 0] + xp.log(xp.exp(blk - m).sum(axis=1)))
    return out


_LOG_TINY = float(np.log(np.finfo(np.float64).tiny))


def log_probs(x, block_elements: int = 1 << 16):
    """(log x as float32 in x's kind and on its device, the first row of x that is not a row
    of probabilities, else -1) for the 2-D array ``x``: logs taken in float64 blocks of rows
    and rounded once; 0 gives the log of the smallest normal double (any power of it with
    lam >= 1 underflows to 0, as 0 ** lam is). A bad row holds NaN, Inf or a negative entry,
    or no positive one."""
    n, k = x.shape
    out = empty(x, (n, k), "float32")
    step = max(1, block_elements // max(k, 1))
    is_torch = kind(x) == "torch"
    xp = _cupy() if kind(x) == "cupy" else np
    with device_ctx(x), np.errstate(divide="ignore", invalid="ignore"):
        for b in range(0, n, step):
            if is_torch:
                blk = x[b:b + step].detach().double()
                ok = ((blk >= 0) & (blk < float("inf"))).all(dim=1) & (blk.amax(dim=1) > 0)
            else:
                blk = xp.asarray(x[b:b + step], dtype=xp.float64)
                ok = ((blk >= 0) & (blk < xp.inf)).all(axis=1) & (blk.max(axis=1) > 0)
            ok = to_numpy(ok)
            if not ok.all():
                return out, b + int(np.argmin(ok))
            if is_torch:
                out[b:b + step].copy_(blk.clamp_min_(np.finfo(np.float64).tiny).log_())
            else:
                out[b:b + step] = xp.maximum(xp.log(blk), _LOG_TINY)
    return out, -1


def _half(x) -> bool:
    return info(x, "x").dtype in ("float16", "bfloat16")


def scale_rows_to_unit_peak(x, peaks: np.ndarray):
    """A C-contiguous copy of the 2-D array ``x`` with row i multiplied by the power of two
    that brings its largest magnitude ``peaks[i]`` into [0.5, 1): exact in every binary
    float type, so a row keeps its direction to the last bit. In x's kind, device and dtype
    (two multiplications, so that each factor is representable in float32 and bfloat16)."""
    e = -np.frexp(np.asarray(peaks, np.float64))[1].astype(np.int64)
    f1 = np.ldexp(1.0, e // 2).astype(np.float32)[:, None]
    f2 = np.ldexp(1.0, e - e // 2).astype(np.float32)[:, None]
    if kind(x) == "torch":
        t = _torch()
        x = x.detach()
        return (x * t.from_numpy(f1).to(x.device, x.dtype) *
                t.from_numpy(f2).to(x.device, x.dtype)).contiguous()
    xp = _cupy() if kind(x) == "cupy" else np
    with device_ctx(x):
        out = x * xp.asarray(f1).astype(x.dtype) * xp.asarray(f2).astype(x.dtype)
        return xp.ascontiguousarray(out)


def scaled(x, exponent: int):
    """``x * 2**exponent`` in x's kind and device: exact (a power of two). float16 and
    bfloat16 are widened to float32 first (their exponent range could not hold the factor);
    torch multiplies in steps small enough for the factor to fit float32."""
    if _half(x):
        x = x.float() if kind(x) == "torch" else x.astype(np.float32)
    if kind(x) != "torch":
        xp = _cupy() if kind(x) == "cupy" else np
        with device_ctx(x):
            return xp.ldexp(x, exponent)
    x = x.detach()
    while exponent:
        step = max(-100, min(100, exponent))
        x = x * (2.0 ** step)
        exponent -= step
    return x


def host_float32(x) -> np.ndarray:
    """C-contiguous float32 numpy array with the values of ``x``."""
    return np.ascontiguousarray(to_host(x), dtype=np.float32)


def take_rows(x, rows: np.ndarray):
    """x[rows] in x's own kind and device (a copy)."""
    if kind(x) == "torch":
        return x[_torch().from_numpy(np.asarray(rows, np.int64)).to(x.device)]
    if kind(x) == "cupy":
        with x.device:
            return x[_cupy().asarray(rows)]
    return x[rows]


# --- GPU views -----------------------------------------------------------------------------


def gpu_contiguous(x):
    """``x`` itself when it is row-major contiguous (never copied), else a contiguous copy;
    torch tensors that require grad are detached."""
    if kind(x) == "torch":
        x = x.detach()
        return x if x.is_contiguous() else x.contiguous()
    return x if x.flags.c_contiguous else _cupy().ascontiguousarray(x)


def cuda_view(x):
    """``x`` as hdlfast._cuda takes it (anything with ``__cuda_array_interface__``): itself,
    or for a torch bfloat16 tensor its int16 bit view, since torch's interface has no
    bfloat16 type string (the kernels read "<i2" float inputs as bfloat16). Detached."""
    if kind(x) == "torch":
        x = x.detach()
        return x.view(_torch().int16) if x.dtype == _torch().bfloat16 else x
    return x


def cuda_stream(x) -> int:
    """The caller's current CUDA stream on x's device, as an integer handle."""
    if kind(x) == "torch":
        return _torch().cuda.current_stream(x.device).cuda_stream
    return _cupy().cuda.get_current_stream().ptr


def device_ctx(x):
    """Context manager making x's device current (so kernels launch on it); does nothing for
    host arrays."""
    if kind(x) == "torch":
        return _torch().cuda.device(x.device) if x.device.type == "cuda" else \
            contextlib.nullcontext()
    if kind(x) == "cupy":
        return _cupy().cuda.Device(x.device.id)
    return contextlib.nullcontext()


# --- allocation in the caller's kind ------------------------------------------------------


POISON_ENV = "HDLFAST_POISON"


def empty(like, shape, dtype: str):
    """Uninitialised array of ``dtype`` in the kind and on the device of ``like``. With the
    environment variable ``HDLFAST_POISON=1`` (the GPU smoke checks set it) it is filled with
    :func:`poison` instead, so an output element no kernel wrote is seen, not silently
    stale memory."""
    k = kind(like)
    if k == "torch":
        t = _torch()
        out = t.empty(shape, dtype=getattr(t, dtype), device=like.device)
    elif k == "cupy":
        with like.device:
            out = _cupy().empty(shape, dtype=dtype)
    else:
        out = np.empty(shape, dtype=dtype)
    if os.environ.get(POISON_ENV, "0") not in ("", "0"):
        value = poison(dtype)
        out.fill_(value) if k == "torch" else out.fill(value)
    return out


def poison(dtype: str):
    """The fill of :func:`empty` under ``HDLFAST_POISON``: NaN for floats, the most negative
    value for signed integers (never a valid index, label or count), 0xA5 for unsigned ones
    (the byte workspaces)."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return float("nan")
    return int(np.iinfo(dt).min) if dt.kind == "i" else 0xA5


def full(like, shape, value, dtype: str):
    out = empty(like, shape, dtype)
    out.fill_(value) if kind(out) == "torch" else out.fill(value)
    return out


def from_host(arr: np.ndarray, like):
    """Return the numpy result ``arr`` in the kind and on the device of ``like``."""
    k = kind(like)
    if k == "torch":
        t = _torch().from_numpy(arr)
        return t if like.device.type == "cpu" else t.to(like.device)
    if k == "cupy":
        with like.device:
            return _cupy().asarray(arr)
    return arr


def astype(x, dtype: str):
    """``x`` in ``dtype`` (a name numpy knows), same kind and device; no copy if it has it."""
    if kind(x) == "torch":
        return x.to(getattr(_torch(), dtype))
    return x.astype(dtype, copy=False)


def product_operand(x):
    """``x`` in a dtype whose products :func:`products_f32` can write in float32: itself for
    torch (cuBLAS reads float16/bfloat16 and accumulates and writes float32), float32 for a
    cupy float16 array (cupy has no mixed-precision product; a copy)."""
    if kind(x) == "cupy" and x.dtype != np.float32:
        return x.astype(np.float32)
    return x


@contextlib.contextmanager
def _torch_tf32(allow: bool):
    """torch's float32 products in TF32 exactly when ``allow`` (its switch is global: set
    for the duration, then restored)."""
    m = _torch().backends.cuda.matmul
    before = m.allow_tf32
    m.allow_tf32 = bool(allow)
    try:
        yield
    finally:
        m.allow_tf32 = before


def products_f32(a, b, out, allow_tf32: bool) -> None:
    """out (float32, (len(a), len(b))) = a @ b.T by the framework's matrix product (cuBLAS on
    the caller's current stream), accumulated and written in float32; ``a`` and ``b`` from
    :func:`product_operand`. cupy's float32 products use TF32 only under CUPY_TF32=1."""
    if kind(a) == "cupy":
        _cupy().matmul(a, b.T, out=out)
        return
    t = _torch()
    if a.dtype == t.float32:
        with _torch_tf32(allow_tf32):
            t.mm(a, b.T, out=out)
        return
    try:
        t.mm(a, b.T, out_dtype=t.float32, out=out)
    except (TypeError, RuntimeError):  # a torch without mixed-precision mm (before 2.8)
        out.copy_(t.mm(a.float(), b.float().T))


def cast_like(x, like):
    """``x``, an array of like's kind and device, in like's dtype (no copy if it has it)."""
    if kind(x) == "torch":
        return x.to(like.dtype)
    return x.astype(like.dtype, copy=False)


def as_dtype_of(arr: np.ndarray, like):
    """The numpy array ``arr`` in the kind, device and dtype of ``like`` (for GPU inputs to the
    kernels, which take both operands in one dtype)."""
    out = from_host(np.ascontiguousarray(arr), like)
    if kind(like) == "torch":
        return out.to(like.dtype).contiguous()
    return out.astype(like.dtype, copy=False)


def with_columns(x, values) -> object:
    """``x`` with constant columns ``values`` appended, in x's kind, device and dtype."""
    n = x.shape[0]
    if kind(x) == "torch":
        t = _torch()
        extra = t.tensor(list(values), dtype=x.dtype, device=x.device).expand(n, len(values))
        return t.cat([x.detach(), extra], dim=1).contiguous()
    xp = _cupy() if kind(x) == "cupy" else np
    with device_ctx(x):
        extra = xp.broadcast_to(xp.asarray(values, dtype=x.dtype), (n, len(values)))
        return xp.ascontiguousarray(xp.concatenate([x, extra], axis=1))


def to_gpu(arr: np.ndarray):
    """``arr`` on the current CUDA device as a torch tensor (or a cupy array without torch);
    None when neither sees a GPU. bfloat16 (ml_dtypes) arrives as float32: neither library
    takes it from numpy."""
    if _np_dtype_name(arr.dtype) == "bfloat16":
        arr = arr.astype(np.float32)
    try:
        import torch

        if torch.cuda.is_available():
            return torch.from_numpy(np.ascontiguousarray(arr)).cuda()
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy.asarray(arr)
    except Exception:  # noqa: BLE001 - no cupy, or no driver
        pass
    return None


def to_device(arr: np.ndarray, like):
    """A C-contiguous copy of the numpy array ``arr`` in the kind and on the GPU device of
    ``like`` (a torch tensor or cupy array on a CUDA device), copied on the current stream."""
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # torch.from_numpy warns on read-only arrays
        arr = arr.copy()
    k = kind(like)
    if k == "torch" and like.device.type == "cuda":
        return _torch().from_numpy(arr).to(like.device, copy=True)
    if k == "cupy":
        with like.device:
            return _cupy().array(arr, copy=True)
    raise TypeError(f"to_device needs a torch or cupy array on a CUDA device, got {k}")


def to_numpy(x) -> np.ndarray:
    """Small GPU or torch results (flags, counts) as numpy, synchronising as needed."""
    return np.asarray(to_host(x))


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the allocation failures of torch and cupy (answered by smaller blocks)."""
    t, cp = _torch(), _cupy()
    if t is not None and isinstance(exc, getattr(t.cuda, "OutOfMemoryError", ())):
        return True
    if cp is not None and isinstance(exc, cp.cuda.memory.OutOfMemoryError):
        return True
    return isinstance(exc, MemoryError)


#: Share of the free device memory one GPU call may use for its workspace.
GPU_FREE_FRACTION = 0.5


def gpu_budget(like) -> int:
    """Workspace bytes one GPU call may use on like's device."""
    return int(gpu_free_bytes(like) * GPU_FREE_FRACTION)


def gpu_free_bytes(like) -> int:
    """Free memory on like's device, counting what the framework's pool holds but does not use."""
    if kind(like) == "torch":
        t = _torch()
        free, _ = t.cuda.mem_get_info(like.device)
        return free + t.cuda.memory_reserved(like.device) - t.cuda.memory_allocated(like.device)
    cp = _cupy()
    with like.device:
        free, _ = cp.cuda.runtime.memGetInfo()
        pool = cp.get_default_memory_pool()
        return free + pool.total_bytes() - pool.used_bytes()


def unit_mixtures(a, rows_a, b, rows_b, weight, like, host_mix, normalize=True):
    """Mixtures ``w * a[rows_a] + (1 - w) * b[rows_b]`` of the rows of a and b scaled to unit
    length (scale-safe: whatever the rows' magnitude; ``normalize=False``: of the rows as
    stored), each rescaled to unit length (a zero mixture stays zero, as torch's
    F.normalize): float32, detached, shape ``rows_a.shape + (d,)``, in the kind and on the
    device of ``like``. ``rows_a``, ``rows_b`` and ``weight`` are numpy arrays of one shape;
    a and b live on like's device. Host arrays are mixed by ``host_mix`` (the CPU backend's
    ``mix_rows`` kernel: one pass writing the output, no gathered copies)."""
    shape = rows_a.shape + (a.shape[1],)
    rows_a, rows_b = (np.ascontiguousarray(r, dtype=np.int64).reshape(-1) for r in (rows_a, rows_b))
    w = np.ascontiguousarray(weight, dtype=np.float32).reshape(-1)
    if kind(like) == "torch" and like.device.type == "cuda":
        t = _torch()
        unit = t.nn.functional.normalize

        def take(x, rows):  # rows divided by their largest magnitude first: scale-safe
            x = x.detach()
            x = x if x.dtype == t.float64 else x.float()
            if normalize:
                x = unit((x / x.abs().amax(dim=1, keepdim=True)).float())
            return x.float()[t.from_numpy(rows).to(x.device)]

        w = t.from_numpy(w[:, None]).to(like.device)
        return unit(w * take(a, rows_a) + (1 - w) * take(b, rows_b)).reshape(shape)
    on_cupy = kind(like) == "cupy"
    xp = _cupy() if on_cupy else np

    def unit(x):  # in place
        x /= xp.maximum(xp.sqrt(xp.einsum("ij,ij->i", x, x)), 1e-12)[:, None]
        return x

    def table(x):  # float32 rows to mix: divided by their largest magnitude first (scale-safe)
        x = xp.asarray(x if on_cupy else to_host(x))
        if x.dtype != xp.float64:
            x = x.astype(xp.float32)
        if normalize:
            x = unit((x / xp.abs(x).max(axis=1, keepdims=True)).astype(xp.float32))
        return xp.ascontiguousarray(x, dtype=xp.float32)

    if not on_cupy:
        m = np.empty((rows_a.size, shape[-1]), np.float32)
        host_mix(table(a), table(b), rows_a, rows_b, w, m)
        return from_host(m.reshape(shape), like)
    with device_ctx(like):  # two gathered copies, the rest in place: the output is large
        w = xp.asarray(w[:, None])
        m = table(a)[xp.asarray(rows_a)]
        m *= w
        other = table(b)[xp.asarray(rows_b)]
        other *= 1 - w
        m += other
        del other
        return unit(m).reshape(shape)
