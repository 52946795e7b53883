"""SCAN (Van Gansbeke et al., ECCV 2020; wvangansbeke/Unsupervised-Classification, CC BY-NC
4.0): its memory bank and self-labeling loss, for a one-line switch::

    from hdlfast.compat.scan import MemoryBank        # instead of utils.memory
    from hdlfast.compat.scan import ConfidenceBasedCE  # instead of losses.losses

Same constructors, methods, arguments and outputs as the original, written from a reading of
it. ``MemoryBank.mine_nearest_neighbors`` is the exact cosine kNN graph of hdlfast instead of
faiss: the point itself is column 0 by index (faiss may put an exact duplicate there), and
among equal similarities the smaller index comes first. SCAN's bank holds L2-normalised
features, whose inner product (faiss ``IndexFlatIP``) is the cosine; other rows are refused.
``ConfidenceBasedCE`` builds its targets with :func:`hdlfast.confident_labels` and raises, as
the original does, when no row of the batch is confident. Requires torch.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import _arrays
from ..neighbors import confident_labels, mine_neighbors


class MemoryBank:
    """SCAN's ``utils.memory.MemoryBank``: ``n`` features of ``dim`` and their targets,
    filled batch by batch with :meth:`update`."""

    def __init__(self, n, dim, num_classes, temperature):
        self.n = n
        self.dim = dim
        self.features = torch.FloatTensor(self.n, self.dim)
        self.targets = torch.LongTensor(self.n)
        self.ptr = 0
        self.device = "cpu"
        self.K = 100
        self.temperature = temperature
        self.C = num_classes

    def weighted_knn(self, predictions):
        """Class of each row of ``predictions`` by the K = 100 most similar bank rows, each
        voting exp(similarity / temperature) (SCAN's evaluation kNN)."""
        sims = predictions @ self.features.t()
        top_s, top_i = sims.topk(self.K, dim=1, largest=True, sorted=True)
        votes = torch.zeros(predictions.shape[0], self.C, device=sims.device, dtype=sims.dtype)
        votes.scatter_add_(1, self.targets[top_i], (top_s / self.temperature).exp())
        return votes.sort(1, True)[1][:, 0]

    def knn(self, predictions):
        """Class of the most similar bank row."""
        return self.targets[torch.argmax(predictions @ self.features.t(), dim=1)]

    def mine_nearest_neighbors(self, topk, calculate_accuracy=True):
        """The (n, topk + 1) int64 indices of each row's topk nearest bank rows with the row
        itself first (numpy, as SCAN saves them), and with ``calculate_accuracy`` the share of
        neighbours (the row itself left out) carrying the row's target."""
        features = self.features.detach().cpu()
        norms = features.double().norm(dim=1)
        off = (norms - 1).abs()
        if bool((off > 1e-3).any()):
            row = int(off.argmax())
            raise ValueError(f"MemoryBank.features must be L2-normalised (as SCAN's are), row "
                             f"{row} has norm {float(norms[row]):.4g}")
        indices = _arrays.to_numpy(mine_neighbors(features, topk, include_self=True))
        if not calculate_accuracy:
            return indices
        targets = self.targets.cpu().numpy()
        accuracy = np.mean(targets[indices[:, 1:]] == targets[:, None])
        return indices, accuracy

    def reset(self):
        self.ptr = 0

    def update(self, features, targets):
        b = features.size(0)
        if b + self.ptr > self.n:
            raise ValueError(f"MemoryBank.update: {b} rows after {self.ptr} overflow the bank "
                             f"of n={self.n}")
        self.features[self.ptr:self.ptr + b].copy_(features.detach())
        self.targets[self.ptr:self.ptr + b].copy_(targets.detach())
        self.ptr += b

    def to(self, device):
        self.features = self.features.to(device)
        self.targets = self.targets.to(device)
        self.device = device

    def cpu(self):
        self.to("cpu")

    def cuda(self):
        self.to("cuda:0")


class ConfidenceBasedCE(nn.Module):
    """SCAN's self-labeling loss: cross-entropy of the strongly augmented logits against the
    argmax of the weakly augmented ones, on the rows whose softmax maximum exceeds
    ``threshold``, with class weights n / n_c when ``apply_class_balancing``."""

    def __init__(self, threshold, apply_class_balancing):
        super().__init__()
        self.threshold = threshold
        self.apply_class_balancing = apply_class_balancing

    def forward(self, anchors_weak, anchors_strong):
        probs = F.softmax(anchors_weak, dim=1)
        with warnings.catch_warnings():  # no confident row: raised below, as SCAN does
            warnings.simplefilter("ignore", RuntimeWarning)
            mask, target, weight = confident_labels(probs, self.threshold,
                                                    balance=self.apply_class_balancing)
        if not bool(mask.any()):
            raise ValueError("Mask in MaskedCrossEntropyLoss is all zeros.")
        weight = weight.to(anchors_strong.dtype) if self.apply_class_balancing else None
        return F.cross_entropy(anchors_strong[mask], target[mask], weight=weight,
                               reduction="mean")
