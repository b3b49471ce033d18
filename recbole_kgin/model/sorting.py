"""Sorting of the graphs' index arrays through torch's sort, which is 2-3x faster than
numpy's on the millions of edges of the larger paper shapes (numpy sorts with one
general-purpose algorithm; torch's stable sort of integers is a radix sort)."""

import numpy as np
import torch


def stable_order(keys: torch.Tensor) -> torch.Tensor:
    """The permutation (int64, same length) that sorts the 1-d ``keys``, equal keys in
    their given order: ``np.argsort(keys, kind="stable")``."""
    return torch.sort(keys, stable=True).indices


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique(keys)``: the distinct values of a 1-d integer array, ascending, int64."""
    return torch.unique(torch.from_numpy(np.ascontiguousarray(keys, dtype=np.int64)), sorted=True).numpy()
