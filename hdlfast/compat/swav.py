"""SwAV (Caron et al., NeurIPS 2020; facebookresearch/swav, CC BY-NC 4.0): its codes
function ``distributed_sinkhorn`` for a one-line switch::

    from hdlfast.compat.swav import distributed_sinkhorn   # instead of main_swav's

    q = distributed_sinkhorn(out)[-bs:]     # as in SwAV's training loop

The original reads ``args.epsilon`` (0.05), ``args.sinkhorn_iterations`` (3) and
``args.world_size`` from its script's globals; here they are keyword arguments with those
defaults, and the world size and the all-reduce come from torch.distributed when it is
initialised (each rank passes its own rows, as in SwAV). Returns the (B, K) codes in the
dtype and on the device of ``out``, without gradient, as the original (``@torch.no_grad``).
Computed by :func:`hdlfast.sinkhorn` with ``kind="swav"``: float64 scalings, exp taken after
a per-row max shift (the original's ``exp(out / epsilon)`` overflows float32 for scores above
about 4.4 at epsilon = 0.05; here no score overflows).
"""
from __future__ import annotations

from .. import _arrays
from ..sinkhorn import sinkhorn


def distributed_sinkhorn(out, epsilon=0.05, sinkhorn_iterations=3):
    """SwAV's codes of the (B, K) prototype scores ``out``: Sinkhorn-Knopp on
    exp(out / epsilon) with uniform marginals over all ranks' rows, ``sinkhorn_iterations``
    rounds, rows scaled to sum to 1."""
    import torch

    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    with torch.no_grad():
        q, _ = sinkhorn(out, kind="swav", epsilon=epsilon, n_iters=sinkhorn_iterations,
                        process_group=True if initialised else None, _name="out")
    return _arrays.cast_like(q, out)
