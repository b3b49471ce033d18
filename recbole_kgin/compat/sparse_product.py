"""A product with a constant sparse matrix over its compressed-row (CSR) copy.

RecBole's graph models (KGAT, LightGCN) multiply their embeddings by a sparse
adjacency that does not change between batches, with ``torch.sparse.mm`` over a COO
matrix, for every batch; autograd multiplies the gradient by the matrix's transpose on
the way back. :func:`propagate` gives the matrix, once, a CSR copy of itself and of its
transpose, kept on the tensor, and runs the product and its gradient over those: what
autograd computes through the COO product, in another storage order (sums may differ
in float rounding).
"""

from __future__ import annotations

import warnings
from typing import Any, Tuple

import torch

_PAIR = "_recbole_kgin_csr_pair"  # the attribute of a matrix holding (A, A^T) as CSR


class ConstantSparseProduct(torch.autograd.Function):
    """``matrix @ dense`` for a constant sparse ``matrix`` [n, m] (CSR) and a dense
    [m, d]; the gradient to ``dense`` is ``transpose @ grad`` ([m, n] CSR times [n, d])."""

    @staticmethod
    def forward(ctx: Any, matrix: torch.Tensor, transpose: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.transpose = transpose
        return torch.sparse.mm(matrix, dense)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[None, None, torch.Tensor]:
        return None, None, torch.sparse.mm(ctx.transpose, grad)


def csr_pair(matrix: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(matrix, matrix^T)`` in CSR, computed once per ``matrix`` and kept on it."""
    pair = getattr(matrix, _PAIR, None)
    if pair is None:
        coalesced = matrix.detach().coalesce()
        with warnings.catch_warnings():  # torch: "Sparse CSR tensor support is in beta state"
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            pair = (coalesced.to_sparse_csr(), coalesced.t().coalesce().to_sparse_csr())
        setattr(matrix, _PAIR, pair)
    return pair


def propagate(matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``torch.sparse.mm(matrix, dense)`` for a COO ``matrix`` that stays constant while
    it lives (KGAT's ``A_in``, LightGCN's ``norm_adj_matrix``), through its CSR pair; a
    matrix that needs gradients itself, or is not COO, takes torch's own path."""
    if matrix.requires_grad or matrix.layout != torch.sparse_coo:
        return torch.sparse.mm(matrix, dense)
    forward, transpose = csr_pair(matrix)
    return ConstantSparseProduct.apply(forward, transpose, dense)
