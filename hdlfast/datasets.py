"""The embedded default data (no downloads) and synthetic generators."""
from __future__ import annotations

import numpy as np


def digits():
    """scikit-learn's bundled 8x8 digits: (1797, 64) float32 embeddings and int64 labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def hypersphere_mixture(n, d, n_classes=10, *, spread=0.5, imbalance=1.0, seed=0,
                        dtype=np.float32):
    """Clustered embeddings: class centres on the unit sphere plus Gaussian noise.

    ``imbalance`` > 1 gives long-tailed class sizes (the largest class ``imbalance`` times the
    smallest, geometric in between). Returns (X (n, d), labels (n,) int64).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.choice(n_classes, size=n, p=_class_probabilities(n_classes, imbalance))
    x = centres[labels] + spread / np.sqrt(d) * rng.standard_normal((n, d))
    return x.astype(dtype), labels.astype(np.int64)


def ring_graph(n, k, n_classes=100, *, closed_fraction=0.01, label_fraction=0.001, seed=0):
    """A synthetic kNN graph of ``n`` points for labeling benchmarks (no embeddings needed).

    Most points lie on a ring split into ``n_classes`` arcs; each lists its k nearest ring
    neighbours (offsets +-1, +-2, ...). A ``closed_fraction`` of the points form cliques of k+1
    that only list each other (phase B work), each reachable through one in-edge from the ring.
    Point ids are shuffled so neighbour lists are scattered in memory, as in real graphs.
    Returns (idx (n, k) int64, sims (n, k) float32, labels (n,) int64 with -1 for unlabeled,
    truth (n,) int64).
    """
    rng = np.random.default_rng(seed)
    g = k + 1
    n_closed = int(n * closed_fraction) // g * g
    n_ring = n - n_closed
    perm = rng.permutation(n)  # position -> id
    offsets = np.stack([np.arange(1, k // 2 + 2), -np.arange(1, k // 2 + 2)], 1).ravel()[:k]
    pos = np.arange(n_ring)[:, None]
    nbr_pos = (pos + offsets[None, :]) % n_ring
    sims = (1.0 - 0.01 * np.abs(offsets) - 1e-4 * (offsets < 0))[None, :] \
        - 1e-6 * rng.random((n_ring, 1))
    truth_pos = np.empty(n, np.int64)
    truth_pos[:n_ring] = np.arange(n_ring) * n_classes // n_ring
    idx_pos = np.empty((n, k), np.int64)
    sim_pos = np.empty((n, k), np.float32)
    idx_pos[:n_ring], sim_pos[:n_ring] = nbr_pos, sims
    if n_closed:
        members = n_ring + np.arange(n_closed).reshape(-1, g)
        for j in range(g):
            others = np.delete(members, j, axis=1)
            idx_pos[members[:, j]] = others
            sim_pos[members[:, j]] = np.linspace(0.9, 0.8, k)
        hosts = rng.choice(n_ring, members.shape[0], replace=False)
        idx_pos[hosts, -1] = members[:, 0]  # the one in-edge into each clique
        truth_pos[members] = truth_pos[hosts][:, None]
    idx = np.empty((n, k), np.int64)
    sims_out = np.empty((n, k), np.float32)
    idx[perm] = perm[idx_pos]
    sims_out[perm] = sim_pos
    truth = np.empty(n, np.int64)
    truth[perm] = truth_pos
    labels = np.full(n, -1, np.int64)
    ring_ids = perm[:n_ring]
    chosen = rng.choice(ring_ids, max(n_classes, int(n * label_fraction)), replace=False)
    labels[chosen] = truth[chosen]
    return idx, sims_out, labels, truth


SYNTHETIC_BLOCK = 65536  # rows per generated block: fixed, so X never depends on memory


def synthetic_embeddings(n, d, *, n_classes=100, imbalance=10.0, spread=1.0, seed=0, path=None,
                         dtype=np.float32):
    """Large clustered embeddings, generated block by block: (X (n, d), labels (n,) int64).

    The distribution of :func:`hypersphere_mixture`: class centres on the unit sphere plus
    Gaussian noise of norm about ``spread``; long-tailed class sizes (class c drawn with
    probability proportional to ``imbalance ** (-c / (n_classes - 1))``, so the largest class
    is about ``imbalance`` times the smallest). The centres come from the seed alone and the rows
    in blocks of ``SYNTHETIC_BLOCK`` rows, block b from its own generator
    ``np.random.default_rng([seed, 1, b])`` (labels first, then float32 noise), so X is the same
    for the same (n, d, n_classes, imbalance, spread, seed, dtype) on every machine, any block
    can be regenerated alone, and the rows of a smaller n are the first rows of a larger one.

    path : None for an in-memory array, or a .npy file written block by block through
        ``np.lib.format.open_memmap`` (overwritten if present); X is then that read-write
        memmap and the labels are also saved beside it as ``<stem>.labels.npy``.
    Extra memory beyond X and the labels: about one block of float32 noise.
    """
    n, d = _positive(n, "n"), _positive(d, "d")
    n_classes = _positive(n_classes, "n_classes")
    if not imbalance >= 1:
        raise ValueError(f"imbalance must be >= 1, got {imbalance}")
    if not spread >= 0:
        raise ValueError(f"spread must be >= 0, got {spread}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a float type, got {dtype}")
    centres = _synthetic_centres(n_classes, d, seed).astype(dtype, copy=False)
    p = _class_probabilities(n_classes, imbalance)
    if path is None:
        x = np.empty((n, d), dtype)
    else:
        from pathlib import Path

        x = np.lib.format.open_memmap(Path(path), mode="w+", dtype=dtype, shape=(n, d))
    labels = np.empty(n, np.int64)
    for b, start in enumerate(range(0, n, SYNTHETIC_BLOCK)):
        stop = min(start + SYNTHETIC_BLOCK, n)
        _fill_block(x[start:stop], labels[start:stop], seed, b, centres, p, spread)
    if path is not None:
        x.flush()
        np.save(_labels_path(path), labels)
    return x, labels


def _synthetic_block_at(b, n, d, *, n_classes=100, imbalance=10.0, spread=1.0, seed=0,
                        dtype=np.float32):
    """Block ``b`` of :func:`synthetic_embeddings` (rows ``b * SYNTHETIC_BLOCK`` onwards) on
    its own, without generating the others: (X block, labels block)."""
    n, d, b = _positive(n, "n"), _positive(d, "d"), int(b)
    start = b * SYNTHETIC_BLOCK
    if not 0 <= start < n:
        raise ValueError(f"block {b} is outside the {n} rows")
    rows = min(SYNTHETIC_BLOCK, n - start)
    centres = _synthetic_centres(n_classes, d, seed).astype(np.dtype(dtype), copy=False)
    out, lab = np.empty((rows, d), centres.dtype), np.empty(rows, np.int64)
    _fill_block(out, lab, seed, b, centres, _class_probabilities(n_classes, imbalance), spread)
    return out, lab


def _class_probabilities(n_classes, imbalance):
    """Long-tailed class probabilities: class c proportional to imbalance ** (-c / (C - 1))."""
    weights = float(imbalance) ** (-np.arange(n_classes) / max(n_classes - 1, 1))
    return weights / weights.sum()


def _synthetic_centres(n_classes, d, seed):
    centres = np.random.default_rng([seed, 0]).standard_normal((n_classes, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return centres.astype(np.float32)


def _fill_block(out, labels, seed, b, centres, p, spread):
    """Block ``b`` of synthetic_embeddings into ``out`` (rows, d) and ``labels`` (rows,)."""
    rows, d = out.shape
    rng = np.random.default_rng([seed, 1, b])
    # labels of a whole block even when it is cut short, so the noise stream starts at the
    # same place and the rows of a smaller n are the first rows of a larger one
    labels[:] = rng.choice(p.shape[0], size=SYNTHETIC_BLOCK, p=p)[:rows]
    noise = rng.standard_normal((rows, d), dtype=np.float32)
    noise *= np.float32(spread / np.sqrt(d))
    np.take(centres, labels, axis=0, out=out)
    np.add(out, noise, out=out, casting="unsafe")


def _labels_path(path):
    from pathlib import Path

    p = Path(path)
    return p.with_name(p.stem + ".labels.npy")


def _positive(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)
