"""RecBole's KGAT propagation over a compressed-row adjacency: the same math, less time.

RecBole's KGAT (recbole/model/knowledge_aware_recommender/kgat.py) propagates every
user and entity vector over the whole collaborative knowledge graph for every training
batch: per layer, ``Aggregator.forward`` computes ``side = A_in @ ego`` (eq. 3 of the
KGAT paper, ``e_N = sum_t pi(h, r, t) e_t``) with ``torch.sparse.mm`` over ``A_in``, a
COO matrix of attention weights [users + entities, users + entities], and autograd
multiplies the gradient by ``A_in``'s transpose on the way back. ``A_in`` is a constant
within an epoch: it is built once (``init_graph``) and replaced after each epoch's KG
pass by ``update_attentive_A``, under ``torch.no_grad``.

Here each ``A_in`` gets, once, a compressed-row (CSR) copy of itself and of its
transpose, kept on the tensor; the product and its gradient run over those:
``side = A @ ego`` forward, ``d ego += A^T @ d side`` backward. Both are what autograd
computes through RecBole's COO product, in another storage order (sums may differ in
float rounding, tests/compat/test_kgat_propagation.py). The rest of ``Aggregator.forward`` is
RecBole's, unchanged, and draws its message dropout from the same random stream.
Measured on ml-1m (one thread): the sparse products of a batch took about 0.47 s
through COO and 0.14 s through CSR (``python -m recbole_kgin.bench.kgat``, which
prints the figures of the machine it runs on).
"""

from __future__ import annotations

from typing import Any

import torch

from recbole_kgin.compat.sparse_product import csr_pair, propagate  # noqa: F401  (csr_pair: for tests)

def aggregator_forward(self: Any, norm_matrix: torch.Tensor, ego_embeddings: torch.Tensor) -> torch.Tensor:
    """RecBole's ``Aggregator.forward`` (kgat.py:52-72) with :func:`propagate` for the
    neighbourhood product; [n, d_in] -> [n, d_out]."""
    side_embeddings = propagate(norm_matrix, ego_embeddings)
    if self.aggregator_type == "gcn":
        ego_embeddings = self.activation(self.W(ego_embeddings + side_embeddings))
    elif self.aggregator_type == "graphsage":
        ego_embeddings = self.activation(self.W(torch.cat([ego_embeddings, side_embeddings], dim=1)))
    elif self.aggregator_type == "bi":
        sum_embeddings = self.activation(self.W1(ego_embeddings + side_embeddings))
        bi_embeddings = self.activation(self.W2(torch.mul(ego_embeddings, side_embeddings)))
        ego_embeddings = bi_embeddings + sum_embeddings
    else:
        raise NotImplementedError
    return self.message_dropout(ego_embeddings)


from recbole.model.knowledge_aware_recommender.kgat import Aggregator  # noqa: E402

RECBOLE_AGGREGATOR_FORWARD = Aggregator.forward  # RecBole's own, for tests and the benchmark


def install() -> None:
    """Route RecBole's KGAT aggregators through :func:`aggregator_forward` (idempotent)."""
    Aggregator.forward = aggregator_forward
