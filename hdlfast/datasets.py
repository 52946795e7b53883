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
