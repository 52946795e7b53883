"""NCL (Zhong et al., CVPR 2021; zhunzhong07/NCL, Apache-2.0): its memory module, for a
one-line switch::

    from hdlfast.compat.ncl import NCLMemory  # instead of models.NCL

Same constructor, forward, buffers and loss as the original, written from a reading of it.
What differs is how the work is done: the hard negatives of all anchors are selected at
once by :func:`hdlfast.hard_negatives` (NCL loops over the anchors and builds all
2 x hard_iter x num_neg mixtures of each; the cosine of a mixture follows from three dot
products) and the labeled loss's targets are built without a Python loop. The random draws
are NCL's own: one ``torch.randperm`` of the labeled queue per anchor and round, in NCL's
order, so the same torch seed gives the same negatives and leaves torch's generator in the
same state. Among equal logits the smaller column comes first (NCL's unstable sort leaves
ties open). Requires torch.

NCL's ``knn`` counts the positive logit: ``smooth_hot`` ranks it together with the queue, so
when it is among the top ``knn`` (as it nearly always is) the queue positives are the top
``knn - 1`` queue rows, not ``hdlfast.neighborhood_positives(k=knn)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..neighbors import hard_negatives


def smooth_hot(inputs, knn, w_pos=0.2):
    """NCL's soft targets for the logits ``inputs`` (B, 1 + K), column 0 the positive: the
    ``knn`` largest logits of each row (the positive ranked with the queue; ties: smaller
    column) get (1 - w_pos) / knn each, then column 0 is set to ``w_pos``. float32 (B, 1 + K)
    on inputs' device."""
    if isinstance(knn, bool) or not isinstance(knn, int) or not 1 <= knn <= inputs.shape[1]:
        raise ValueError(f"knn must be an int in [1, {inputs.shape[1]}] (the columns of "
                         f"inputs), got {knn!r}; NCLMemory takes knn=-1 for "
                         "K / num_class / 2")
    order = torch.sort(inputs.detach(), dim=1, descending=True, stable=True).indices[:, :knn]
    share = torch.ones((), device=inputs.device) / knn * (1 - w_pos)  # NCL's float32 value
    targets = torch.zeros(inputs.shape, device=inputs.device)
    targets.scatter_(1, order, share.expand(order.shape))
    targets[:, 0] = float(w_pos)
    return targets


def soft_cross_entropy(logits, targets):
    """Mean over rows of -sum(targets * log_softmax(logits)), NCL's loss for soft targets."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean(dim=0)


class NCLMemory(nn.Module):
    """NCL's memory module: a queue of ``K`` features (buffer ``memory``) and their labels
    (``label``, -1 for none), the neighbourhood contrastive loss of a batch against it and,
    from epoch ``hard_negative_start`` on, with synthetic hard negatives."""

    def __init__(self, inputSize, K=2000, T=0.05, num_class=5, knn=None, w_pos=0.2,
                 hard_iter=5, num_hard=400, hard_negative_start=1000):
        super().__init__()
        self.inputSize = inputSize
        self.queueSize = K
        self.T = T
        self.index = 0
        self.num_class = num_class
        self.w_pos = w_pos
        self.hard_iter = hard_iter
        self.num_hard = num_hard
        self.hard_negative_start = hard_negative_start
        stdv = 1.0 / math.sqrt(inputSize / 3)  # NCL's uniform start, same generator calls
        self.register_buffer("memory", torch.rand(K, inputSize).mul_(2 * stdv).add_(-stdv))
        self.knn = int(K / num_class / 2) if knn == -1 else knn
        self.label = nn.Parameter(torch.zeros(K) - 1, requires_grad=False)

    def forward(self, q, k, labels=None, epoch=0, labeled=False, la_memory=None):
        """Loss of the batch ``q`` (B, inputSize) with positives ``k`` (detached) against the
        queue; then the queue takes ``q`` (and ``labels``). ``labeled``: targets are the
        queue rows of the same label; ``la_memory``: the labeled module's queue, needed for
        hard negatives."""
        self._check(q, k, labels, labeled, la_memory)
        self.epoch = epoch
        self.feat = q
        self.la_memory = la_memory
        k = k.detach()
        l_pos = torch.einsum("bd,bd->b", q, k)[:, None]
        queue = self.memory.clone()  # autograd keeps it; update_memory writes in place
        logits = torch.cat((l_pos, q @ queue.t()), dim=1) / self.T
        if labeled:
            loss = self.supervised_loss(logits, self.label, labels)
        else:
            loss = self.ncl_loss(logits)
        self.update_memory(q.shape[0], q, labels)
        return loss

    def _check(self, q, k, labels, labeled, la_memory):
        """NCL's arguments, named as NCL names them, before any work."""
        for name, x in (("q", q), ("k", k)):
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                raise TypeError(f"NCLMemory: {name} must be a float torch tensor")
            if x.dim() != 2 or x.shape[1] != self.inputSize or x.shape[0] == 0:
                raise ValueError(f"NCLMemory: {name} must be (B, inputSize={self.inputSize}), "
                                 f"got shape {tuple(x.shape)}")
        if k.shape != q.shape:
            raise ValueError(f"NCLMemory: k has shape {tuple(k.shape)}, q {tuple(q.shape)}")
        if labeled and labels is None:
            raise ValueError("NCLMemory: labeled=True needs labels")
        if labels is not None and tuple(labels.shape) != (q.shape[0],):
            raise ValueError(f"NCLMemory: labels must be ({q.shape[0]},), one per row of q, "
                             f"got shape {tuple(labels.shape)}")
        if la_memory is not None and (la_memory.dim() != 2 or
                                      la_memory.shape[1] != self.inputSize):
            raise ValueError(f"NCLMemory: la_memory must be (L, inputSize={self.inputSize}), "
                             f"got shape {tuple(la_memory.shape)}")

    def supervised_loss(self, inputs, all_labels, la_labels):
        """Targets spread evenly over the positive and the queue rows labeled like the
        anchor."""
        same = all_labels[None, :] == la_labels.float()[:, None]
        mask = torch.cat((torch.ones_like(same[:, :1]), same), dim=1)
        targets = mask.float() / mask.sum(dim=1, keepdim=True).float()
        return soft_cross_entropy(inputs, targets)

    def ncl_loss(self, inputs):
        targets = self.smooth_hot(inputs.detach())
        if self.epoch < self.hard_negative_start:
            return soft_cross_entropy(inputs, targets)
        return self.ncl_hng_loss(self.feat, inputs, targets, self.memory.clone())

    def smooth_hot(self, inputs):
        return smooth_hot(inputs, self.knn, self.w_pos)

    def ncl_hng_loss(self, feat, inputs, targets, memory):
        """The loss with each anchor's ``num_hard`` hardest mixtures of its ``num_neg`` least
        similar queue rows and random labeled-queue rows (NCL: 50 for 5 classes, else 400)
        as extra negatives (target 0)."""
        if self.la_memory is None:
            raise ValueError("NCLMemory: hard negatives (epoch >= hard_negative_start) need "
                             "la_memory, the labeled module's memory")
        batch, rounds = feat.shape[0], self.hard_iter
        labeled_rows = self.la_memory.shape[0]
        # NCL's slices take what there is when a queue is shorter than num_neg
        num_neg = min(50 if self.num_class == 5 else 400, memory.shape[0], labeled_rows)
        perms = torch.stack([torch.randperm(labeled_rows) for _ in range(batch * rounds)])
        # NCL pairs its negatives from the most similar of them down, hard_negatives from the
        # least similar up: the same pairs with each draw reversed
        draws = perms[:, :num_neg].reshape(batch, rounds, -1).flip(-1)
        hn = hard_negatives(feat.detach(), memory.detach(), self.la_memory.detach(),
                            min(self.num_hard, 2 * rounds * num_neg), n_neg=num_neg,
                            n_mix=rounds, mu=(1 / 3, 2 / 3), draws=draws, normalize=False)
        hard = torch.einsum("bd,bkd->bk", feat, hn.mixtures.to(feat.dtype)) / self.T
        logits = torch.cat((inputs, hard), dim=1)
        return soft_cross_entropy(logits, torch.cat((targets, torch.zeros_like(hard)), dim=1))

    def update_memory(self, batchSize, k, labels):
        with torch.no_grad():
            ids = (torch.arange(batchSize, device=self.memory.device) + self.index) \
                % self.queueSize
            self.memory.index_copy_(0, ids, k)
            if labels is not None:
                self.label.index_copy_(0, ids, labels.float().detach().clone())
            self.index = (self.index + batchSize) % self.queueSize
