"""RecBole's LightGCN propagation over a compressed-row adjacency: the same math, less time.

RecBole's LightGCN (recbole/model/general_recommender/lightgcn.py) propagates every user
and item vector over the whole interaction graph for every training batch: per layer,
``e^(k+1) = A_hat e^(k)`` (eq. 3 of the LightGCN paper, ``A_hat = D^-1/2 A D^-1/2``) with
``torch.sparse.mm`` over ``norm_adj_matrix``, a COO matrix [users + items, users + items]
built once in ``__init__`` and never changed; the model's vectors are the mean over
layers (eq. 4). Here that product runs through
:func:`recbole_kgin.compat.sparse_product.propagate` (a CSR copy of the matrix and of its
transpose, made once); everything else is RecBole's ``forward``, unchanged. The same
losses, gradients and scores up to float rounding (tests/compat/test_lightgcn_propagation.py).
"""

from __future__ import annotations

from typing import Any, Tuple

import torch
from recbole.model.general_recommender.lightgcn import LightGCN

from recbole_kgin.compat.sparse_product import propagate

RECBOLE_LIGHTGCN_FORWARD = LightGCN.forward  # RecBole's own, for tests


def lightgcn_forward(self: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """RecBole's ``LightGCN.forward`` with :func:`propagate` for each layer's product;
    returns the users' [n_users, d] and the items' [n_items, d] mean over layers."""
    all_embeddings = self.get_ego_embeddings()
    embeddings_list = [all_embeddings]
    for _ in range(self.n_layers):
        all_embeddings = propagate(self.norm_adj_matrix, all_embeddings)
        embeddings_list.append(all_embeddings)
    lightgcn_all_embeddings = torch.mean(torch.stack(embeddings_list, dim=1), dim=1)
    user_all_embeddings, item_all_embeddings = torch.split(lightgcn_all_embeddings, [self.n_users, self.n_items])
    return user_all_embeddings, item_all_embeddings


def install() -> None:
    """Route RecBole's LightGCN through :func:`lightgcn_forward` (idempotent)."""
    LightGCN.forward = lightgcn_forward
