"""KGIN's hot loops as fused CPU kernels (``kernels.cpp``), compiled on first use.

The torch path of :mod:`recbole_kgin.model.graph` runs a hop as two embedding bags
with a (groups, d) tensor of per-(relation, head) sums between them; on paper-sized
KGs (millions of edges, groups about half the edges) that tensor and its gradient
dominate the time. The kernel walks the edges once forward, ``Y[h] = sum w R[r] * X[t]``,
and once backward (by tail, for ``dX`` and ``dR`` together), skipping dropped edges;
dropout needs no per-batch sub-pattern, only per-edge weights (0 = dropped).
Message dropout and the row normalisation after it are one pass forward and one
backward (:func:`dropout_normalize`) instead of about fourteen tensor passes.

They are built on first use by :func:`recbole_kgin.kernel_build.kernel`; where that
fails it logs one line and returns None, and KGIN uses the torch path. Results agree
with the torch path up to float rounding: the random draws are the same.
"""

from __future__ import annotations

import numpy as np
import torch

from recbole_kgin.kernel_build import kernel

__all__ = ["FusedHop", "dropout_normalize", "kernel", "relational_mean"]


class FusedHop:
    """One hop's edges for the kernel: rows ``0..n_rows-1`` (heads) from ``n_cols`` tails.

    Args:
        heads, relations, tails: int64 arrays of the hop's edges, sorted by head.
        positions: each edge's position in the graph's edge order (weights are
            indexed by it); the forward order must be a prefix of the graph's order.
        n_rows, n_cols: output rows (heads) and input rows (tails).
    """

    def __init__(self, heads, relations, tails, positions, n_rows: int, n_cols: int) -> None:
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
        if len(positions) and not np.array_equal(positions, np.arange(len(positions))):
            raise ValueError("a fused hop's edges must be a prefix of the graph's edge order")
        self.crow = as_tensor(np.concatenate([[0], np.cumsum(np.bincount(heads, minlength=n_rows))]))
        self.col, self.rel = as_tensor(tails), as_tensor(relations)
        by_tail = np.argsort(tails, kind="stable")
        self.crow_t = as_tensor(np.concatenate([[0], np.cumsum(np.bincount(tails, minlength=n_cols))]))
        self.head_t, self.rel_t = as_tensor(heads[by_tail]), as_tensor(relations[by_tail])
        self.perm_t = as_tensor(positions[by_tail])

    def to(self, device: torch.device) -> "FusedHop":
        for name in ("crow", "col", "rel", "crow_t", "head_t", "rel_t", "perm_t"):
            setattr(self, name, getattr(self, name).to(device))
        return self


class _FusedRelationalMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, entity, relation, weights, hop):
        entity, relation = entity.contiguous(), relation.contiguous()
        ctx.hop = hop
        ctx.save_for_backward(entity, relation, weights)
        return kernel().relational_forward(entity, relation, hop.crow, hop.col, hop.rel, weights)

    @staticmethod
    def backward(ctx, grad_out):
        entity, relation, weights = ctx.saved_tensors
        hop = ctx.hop
        grad_entity, grad_relation = kernel().relational_backward(
            grad_out.contiguous(), entity, relation, hop.crow_t, hop.head_t, hop.rel_t, hop.perm_t, weights
        )
        return grad_entity, grad_relation, None, None


def relational_mean(entity: torch.Tensor, relation: torch.Tensor, weights: torch.Tensor, hop: FusedHop) -> torch.Tensor:
    """``Y[h] = sum_{(h, r, t)} w_e R[r] * X[t]``: (N, d) entities, (K, d) relations and
    per-edge weights (E,) -> (hop.n_rows, d); differentiable in entity and relation."""
    return _FusedRelationalMean.apply(entity, relation, weights.to(entity.dtype), hop)


class _FusedDropoutNormalize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lanes, threshold, eps):
        out, denominators = kernel().dropout_normalize_forward(x.contiguous(), lanes, threshold, eps)
        ctx.threshold, ctx.eps = threshold, eps
        ctx.save_for_backward(out, lanes, denominators)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        out, lanes, denominators = ctx.saved_tensors
        grad = kernel().dropout_normalize_backward(
            grad_out.contiguous(), out, lanes, ctx.threshold, denominators, ctx.eps
        )
        return grad, None, None, None


def dropout_normalize(x: torch.Tensor, lanes: torch.Tensor, threshold: int, eps: float) -> torch.Tensor:
    """(n, d) -> (n, d): ``z / max(|z|, eps)`` per row, ``z = x * (lanes >= threshold)``;
    ``lanes`` (n, d) int16 random lanes (:func:`recbole_kgin.model.dropout.random_lanes`)."""
    return _FusedDropoutNormalize.apply(x, lanes, threshold, eps)
