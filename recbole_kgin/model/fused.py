"""KGIN's hot loops as fused CPU kernels (``kernels.cpp``), compiled on first use.

The torch path of :mod:`recbole_kgin.model.graph` runs a hop as two embedding bags
with a (groups, d) tensor of per-(relation, head) sums between them; on paper-sized
KGs (millions of edges, groups about half the edges) that tensor and its gradient
dominate the time. Here a batch first compacts its kept edges both ways in one linear
pass (:meth:`FusedHop.select`; no sort); each hop then walks them once forward,
``Y[h] = 1/|N_h| sum R[r] * X[t]``, and once backward (by tail, for ``dX`` and ``dR``
together). The last hop (into the items) reuses the same arrays: by head it is a
prefix, by tail each tail's item heads come first.
Message dropout and the row normalisation after it are one pass forward and one
backward (:func:`dropout_normalize`) instead of about fourteen tensor passes; the
intents' distance-correlation loss is one call that returns its gradient too
(:func:`distance_loss`) instead of about thirty small tensor operations each way; the
user side of all hops (item means, intent attention, dropout and normalisation) is
one pass each way (:func:`user_side`) instead of about twenty operations per hop.

They are built on first use by :func:`recbole_kgin.model.kernel_build.kernel`; where that
fails it logs one line and returns None, and KGIN uses the torch path. Given the same
dropout draws, results agree with the torch path up to float rounding; the fused path
draws them from the kernels' counter-based generator
(:func:`recbole_kgin.model.dropout.random_lanes`), the torch path from torch's.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from recbole_kgin.model.kernel_build import kernel
from recbole_kgin.model.sorting import stable_order

__all__ = ["FusedHop", "KeptEdges", "distance_loss", "dropout_normalize", "kernel", "relational_mean", "user_side"]


class KeptEdges(NamedTuple):
    """A batch's kept KG edges both ways (:cpp:func:`select_edges`): by head ``crow``
    (N + 1), ``col``, ``rel`` (int32) and ``inv_degree`` (N, float32: 1 / kept edges);
    by tail ``crow_t`` (N + 1), ``head_t``, ``rel_t`` (int32) and ``items_end_t`` (N,):
    where each tail's entries from item heads end (they come first)."""

    crow: torch.Tensor
    col: torch.Tensor
    rel: torch.Tensor
    inv_degree: torch.Tensor
    crow_t: torch.Tensor
    head_t: torch.Tensor
    rel_t: torch.Tensor
    items_end_t: torch.Tensor


class FusedHop:
    """The KG's edges for the kernels, by head and by tail.

    Args:
        heads, relations, tails: int arrays of the edges, sorted by head (the graph's
            edge order, in which keep masks are given).
        n_entities: N, the rows on either side.
        n_items: items are entities ``0..n_items-1``; the last hop outputs them only.
    """

    def __init__(self, heads, relations, tails, n_entities: int, n_items: int) -> None:
        if len(heads) and np.any(np.diff(heads) < 0):
            raise ValueError("a fused hop's edges must be sorted by head")
        if len(heads) >= 2**31 or n_entities >= 2**31:
            raise ValueError("the fused kernels index edges and entities with int32")
        index = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32))  # noqa: E731
        pointers = lambda rows: torch.from_numpy(  # noqa: E731
            np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_entities))]).astype(np.int64)
        )
        by_tail = stable_order(torch.from_numpy(np.asarray(tails, dtype=np.int64))).numpy()  # within a tail, heads ascend
        self.crow, self.col, self.rel = pointers(heads), index(tails), index(relations)
        self.crow_t, self.head_t, self.rel_t = pointers(tails), index(heads[by_tail]), index(relations[by_tail])
        self.perm_t = index(by_tail)
        self.n_items = n_items

    def to(self, device: torch.device) -> "FusedHop":
        for name in ("crow", "col", "rel", "crow_t", "head_t", "rel_t", "perm_t"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def select(self, keep: Optional[torch.Tensor]) -> KeptEdges:
        """The edges where ``keep`` (bool (E,), graph order; None = all) holds, both
        ways, with each head's 1 / kept degree: one linear pass each way."""
        flags = torch.empty(0, dtype=torch.uint8) if keep is None else keep.view(torch.uint8)
        return KeptEdges(
            *kernel().select_edges(
                self.crow, self.col, self.rel, self.crow_t, self.head_t, self.rel_t, self.perm_t, flags, self.n_items
            )
        )


class _FusedRelationalMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, entity, relation, edges, n_rows, n_items):
        entity, relation = entity.contiguous(), relation.contiguous()
        ctx.edges, ctx.last = edges, n_rows < entity.shape[0]
        ctx.save_for_backward(entity, relation)
        out = kernel().relational_forward(entity, relation, edges.crow, edges.col, edges.rel, edges.inv_degree, n_rows)
        return out, entity[:n_items].clone()

    @staticmethod
    def backward(ctx, grad_out, grad_items):
        entity, relation = ctx.saved_tensors
        edges = ctx.edges
        ends = edges.items_end_t if ctx.last else edges.crow_t[1:]
        grad_entity, grad_relation = kernel().relational_backward(
            grad_out.contiguous(), entity, relation, edges.crow_t, ends, edges.head_t, edges.rel_t,
            edges.inv_degree, grad_items.contiguous(),
        )
        return grad_entity, grad_relation, None, None, None


def relational_mean(
    entity: torch.Tensor, relation: torch.Tensor, edges: KeptEdges, n_rows: int, n_items: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``Y[h] = 1/|N_h| sum_{(h, r, t) in N_h} R[r] * X[t]`` over a batch's kept edges
    (:meth:`FusedHop.select`) for heads ``0..n_rows-1`` (N: all entities; n_items: the
    last hop): (N, d) entities, (K, d) relations -> (n_rows, d); differentiable in
    entity and relation.

    Also returns ``entity[:n_items]`` (a copy), whose gradient the kernel's backward
    adds into the entity gradient as it writes it: a plain slice would cost autograd a
    zero-filled (N, d) gradient and an (N, d) addition per hop."""
    if n_rows not in (entity.shape[0], n_items):
        raise ValueError("a fused hop outputs all entities or the items")
    return _FusedRelationalMean.apply(entity, relation, edges, n_rows, n_items)


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


class _FusedDistanceLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vectors):
        loss, grad = kernel().distance_loss(vectors.detach().contiguous())
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out


def distance_loss(vectors: torch.Tensor) -> torch.Tensor:
    """Sum over pairs p < q of dCor(v_p, v_q) of the rows of ``vectors`` (P, n) -> scalar
    (paper Eq. 4-5 in the authors' formula,
    :func:`recbole_kgin.model.independence.distance_correlation_matrix`); the kernel
    computes the loss and its gradient together, in float64."""
    return _FusedDistanceLoss.apply(vectors)


class _FusedUserSide(torch.autograd.Function):
    @staticmethod
    def forward(ctx, user, latent, intents, pattern, values, lanes, threshold, eps, self_connection, *items):
        items = [item.contiguous() for item in items]
        latent, intents, values = latent.contiguous(), intents.contiguous(), values.contiguous()
        user_sum, users, means, betas, denominators = kernel().user_side_forward(
            user.contiguous(), items, pattern.crow, pattern.col, values, latent, intents, lanes, threshold, eps,
            self_connection,
        )
        ctx.pattern, ctx.lanes, ctx.settings = pattern, lanes, (threshold, eps, self_connection)
        ctx.n_items = pattern.shape[1]
        ctx.save_for_backward(users, means, betas, denominators, values, latent, intents)
        return user_sum

    @staticmethod
    def backward(ctx, grad_sum):
        users, means, betas, denominators, values, latent, intents = ctx.saved_tensors
        threshold, eps, self_connection = ctx.settings
        pattern = ctx.pattern
        grad_user, grad_items, grad_latent, grad_intents = kernel().user_side_backward(
            grad_sum.contiguous(), users, means, betas, denominators, ctx.lanes, threshold, eps,
            pattern.crow_t, pattern.col_t, pattern.perm_t, values, ctx.n_items, latent, intents, self_connection,
        )
        return (grad_user, grad_latent, grad_intents, None, None, None, None, None, None, *grad_items.unbind(0))


def user_side(
    user: torch.Tensor,
    items: Sequence[torch.Tensor],
    pattern,
    values: torch.Tensor,
    latent: torch.Tensor,
    intents: torch.Tensor,
    lanes: List[torch.Tensor],
    threshold: int,
    eps: float,
    self_connection: bool,
) -> torch.Tensor:
    """The user side of every hop with latent attention (paper Eq. 7-8, the authors'
    code), summed with the ego vectors: ``e_u^(0) + sum_l e_u^(l)`` -> (B, d).

    Args:
        user: (B, d) ego vectors of the batch's users, ``e^(0)``.
        items: one (n_items, d) table per hop, the items' rows that hop reads.
        pattern, values: the batch's user-item pattern (:class:`CSRPattern`, B rows)
            and its weights (1/|N_u| on the kept interactions).
        latent: (P, d) attention table ``Z``; intents: (P, d) intent vectors ``e_p``.
        lanes: one (B, d) int16 lane tensor per hop for message dropout
            (:func:`recbole_kgin.model.dropout.random_lanes`), or [] for none;
            kept where ``lane >= threshold``; ``eps`` the normalisation's floor.
        self_connection: add ``m_u`` (the authors' code) or not (paper Eq. 7).

    Per hop: ``m_u = A e^(l)_items``, ``beta_u = softmax(e_u^(l-1) Z^T)``,
    ``e_u^(l) = normalize(dropout(m_u * (beta_u I + self)))``. Differentiable in user,
    latent, intents and each hop's items."""
    return _FusedUserSide.apply(
        user, latent, intents, pattern, values, lanes, threshold, eps, self_connection, *items
    )
