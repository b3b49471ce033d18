"""Independence losses between intents (paper Sec. 3.1.2, Eq. 3-5).

Each takes ``vectors`` (P, n): one row per intent. In the authors' code the rows are
the intents' relation-attention logits (n = number of relations); in the paper they
are the intent embeddings (n = embedding size). A lower loss means more distinct
intents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recbole_kgin.model import fused as fused_kernels

_EPS = 1e-8  # the authors' stabiliser, kept at the same places


def distance_correlation_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """(P, n) -> (P, P) distance correlations dCor(v_p, v_q) of the rows (Eq. 4).

    The pairwise distances are ``sqrt(max(x_i^2 - 2 x_i x_j + x_j^2, 0) + 1e-8)`` and
    ``dCor = dCov(p, q) / sqrt(dCov(p, p) dCov(q, q) + 1e-8)`` with
    ``dCov = sqrt(max(sum(A_p * A_q) / n^2, 0) + 1e-8)`` over double-centred distance
    matrices ``A``: the authors' formula, computed for all pairs at once.
    """
    n = vectors.shape[1]
    squares = vectors.pow(2)
    gram = vectors.unsqueeze(2) * vectors.unsqueeze(1)  # (P, n, n)
    distances = torch.sqrt(
        torch.clamp(squares.unsqueeze(2) - 2 * gram + squares.unsqueeze(1), min=0.0) + _EPS
    )
    centred = (
        distances
        - distances.mean(dim=1, keepdim=True)
        - distances.mean(dim=2, keepdim=True)
        + distances.mean(dim=(1, 2), keepdim=True)
    )
    dcov_sq = torch.einsum("pij,qij->pq", centred, centred) / (n * n)
    dcov = torch.sqrt(torch.clamp(dcov_sq, min=0.0) + _EPS)
    variance = torch.diagonal(dcov)
    return dcov / torch.sqrt(variance.unsqueeze(1) * variance.unsqueeze(0) + _EPS)


def _upper_pairs_sum(matrix: torch.Tensor) -> torch.Tensor:
    rows, cols = torch.triu_indices(matrix.shape[0], matrix.shape[1], offset=1, device=matrix.device)
    return matrix[rows, cols].sum()


def distance_loss(vectors: torch.Tensor) -> torch.Tensor:
    """Sum over pairs p < q of dCor(v_p, v_q) (Eq. 4-5, the authors' default)."""
    return _upper_pairs_sum(distance_correlation_matrix(vectors))


def cosine_loss(vectors: torch.Tensor) -> torch.Tensor:
    """Sum over pairs p < q of the squared cosine similarity (the authors' option)."""
    unit = F.normalize(vectors, dim=1)
    return _upper_pairs_sum((unit @ unit.t()).pow(2))


def mutual_information_loss(vectors: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over intents (Eq. 3): ``-sum_p log softmax_q(cos(v_p, v_q) / tau)[p]``.

    Non-negative; it falls as the intents' cosine similarities fall. (The authors'
    version sums over relations with a wrong denominator and can turn negative.)
    """
    unit = F.normalize(vectors, dim=1)
    logits = unit @ unit.t() / temperature
    return -torch.diagonal(torch.log_softmax(logits, dim=1)).sum()


def independence_loss(vectors: torch.Tensor, kind: str, temperature: float, fused: bool = False) -> torch.Tensor:
    """Dispatch on ``kind`` in {'distance', 'cosine', 'mi'}; ``fused`` (CPU): the
    distance loss through the fused kernel (:func:`recbole_kgin.model.fused.distance_loss`,
    the same loss and gradient up to float rounding)."""
    if kind == "distance":
        if fused and vectors.device.type == "cpu" and fused_kernels.kernel() is not None:
            return fused_kernels.distance_loss(vectors)
        return distance_loss(vectors)
    if kind == "cosine":
        return cosine_loss(vectors)
    if kind == "mi":
        return mutual_information_loss(vectors, temperature)
    raise ValueError(f"unknown independence loss '{kind}'")
