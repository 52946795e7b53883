"""The pair kernels of the compiled module (csrc/cpu/pairs.cpp) under the names of
``numba_kernels``: the paired dot products and unit mixtures of ``hard_negatives``."""
from __future__ import annotations

from types import SimpleNamespace


def native_kernels(mod):
    return SimpleNamespace(pair_dots=mod.pair_dots, mix_rows=mod.mix_rows)
