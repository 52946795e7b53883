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
    weights = imbalance ** (-np.arange(n_classes) / max(n_classes - 1, 1))
    labels = rng.choice(n_classes, size=n, p=weights / weights.sum())
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
