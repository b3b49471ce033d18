"""Full ranking for RecBole's KGCN (and KGNNLS) in item-major form: RecBole's scores, computed once per item.

RecBole's ``KGCN.full_sort_predict`` (recbole/model/knowledge_aware_recommender/kgcn.py:327)
pairs each user with every item and runs ``KGCN.forward`` on the pairs. Each pair looks up
its item's whole sampled neighbourhood tree (1 + K + ... + K^H entities, K =
``neighbor_sample_size``, H = ``n_iter``) and multiplies every vector of it by the first
layer's weight, although neither depends on the user: on lastfm (3,847 items, H = 2,
K = 8) a validation took 0.48 s per user on one core, 15 minutes per epoch's validation.

KGCN (Wang et al., WWW 2019) scores ``y(u, v) = <u, v^u>`` where ``v^u`` aggregates the
item's neighbourhood with user-specific weights (eq. 1-2, with RecBole's scaling)

    pi(u, r) = mean_d(u * r),    a(u, v, k) = softmax_k pi(u, r(v, k)),
    v^u_N = mean_k a(u, v, k) * e(v, k)

and every layer maps a node and its neighbourhood through one linear map ``W`` (eq. 4-6):
``W (v + v^u_N)`` (sum), ``W [v; v^u_N]`` (concat), ``W v^u_N`` (neighbor). Because ``W`` is
linear, the first layer's ``W`` applied to a mix of entity vectors equals the same mix of
``W``-mapped entity vectors; those are computed once per item tree and kept until a
parameter they read changes. Per batch of users, only the user-dependent parts remain: the
``pi`` table (users x relations), the attention over each item's sampled edges, and the
deeper layers. The scores equal RecBole's up to float rounding (tests/compat/test_kgcn_ranking.py).
"""

from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Tuple

import torch


class ItemTrees(NamedTuple):
    """Every item's sampled neighbourhood tree, mapped through the first layer's weight.

    For depth h in 0..H-1 (I items, d = embedding_size):
    ``relations[h]``: [I, K^h, K], the relation ids of each depth-h node's K sampled edges;
    ``node[h]``: [I, K^h, d], ``W_self e`` of each depth-h node (None for ``neighbor``);
    ``children[h]``: [I, K^h, K, d], ``W_neighbour e`` of each depth-h node's K children.
    ``inputs`` holds the tensors (with their versions) these were computed from.
    """

    relations: List[torch.Tensor]
    node: List[Optional[torch.Tensor]]
    children: List[torch.Tensor]
    inputs: Tuple[Tuple[torch.Tensor, int], ...]


def _split_weight(model: Any, layer: int) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """The parts of a layer's weight ([d, d] each) applied to the node itself and to its
    aggregated neighbourhood (eq. 4-6)."""
    weight, size = model.linear_layers[layer].weight, model.embedding_size
    if model.aggregator_class == "concat":
        return weight[:, :size], weight[:, size:]
    if model.aggregator_class == "sum":
        return weight, weight
    if model.aggregator_class == "neighbor":
        return None, weight
    raise ValueError(f"KGCN: unknown aggregator {model.aggregator_class!r} (sum, neighbor or concat)")


def _inputs(model: Any) -> Tuple[Tuple[torch.Tensor, int], ...]:
    layer = model.linear_layers[0]
    tensors = (model.entity_embedding.weight, layer.weight, layer.bias, model.adj_entity, model.adj_relation)
    return tuple((tensor, tensor._version) for tensor in tensors)


def _unchanged(cached: Tuple[Tuple[torch.Tensor, int], ...], current: Tuple[Tuple[torch.Tensor, int], ...]) -> bool:
    return all(old is new and old_version == new_version for (old, old_version), (new, new_version) in zip(cached, current))


def item_trees(model: Any) -> ItemTrees:
    """Build (or reuse) the user-independent part of every item's score; see :class:`ItemTrees`.

    Reused while the entity embeddings, the first layer and the sampled adjacency are the
    same tensors at the same version (an optimiser step or a checkpoint load changes them);
    never kept while autograd records, so no graph outlives its backward pass.
    """
    cached: Optional[ItemTrees] = getattr(model, "_item_trees", None)
    current = _inputs(model)
    if cached is not None and _unchanged(cached.inputs, current):
        return cached
    items = torch.arange(model.n_items, device=model.adj_entity.device)
    model.batch_size = model.n_items  # KGCN.get_neighbors reshapes by it
    entities, relations = model.get_neighbors(items)  # [I, K^h] per depth h = 0..H
    size, width = model.embedding_size, model.neighbor_sample_size
    to_self, to_neighbour = _split_weight(model, 0)
    trees = ItemTrees([], [], [], current)
    for depth in range(model.n_iter):
        nodes = model.entity_embedding(entities[depth])  # [I, K^h, d]
        children = model.entity_embedding(entities[depth + 1])  # [I, K^(h+1), d]
        trees.relations.append(relations[depth].reshape(model.n_items, -1, width))
        trees.node.append(None if to_self is None else nodes @ to_self.T)
        trees.children.append((children @ to_neighbour.T).reshape(model.n_items, -1, width, size))
    if not torch.is_grad_enabled():
        model._item_trees = trees
    return trees


def _combine(model: Any, layer: int, node: torch.Tensor, neighbourhood: torch.Tensor) -> torch.Tensor:
    """A deeper layer (eq. 4-6) on user-dependent vectors, as RecBole computes it."""
    if model.aggregator_class == "sum":
        mixed = node + neighbourhood
    elif model.aggregator_class == "neighbor":
        mixed = neighbourhood
    else:
        mixed = torch.cat([node, neighbourhood], dim=-1)
    return model.linear_layers[layer](mixed)


def _activate(model: Any, layer: int, vectors: torch.Tensor) -> torch.Tensor:
    return model.Tanh(vectors) if layer == model.n_iter - 1 else model.ReLU(vectors)


def full_sort_predict(model: Any, interaction: Any) -> torch.Tensor:
    """Scores of every item for each user of ``interaction``: [B * I], user-major, as
    RecBole's ``KGCN.full_sort_predict`` returns them."""
    users = model.user_embedding(interaction[model.USER_ID])  # [B, d]
    trees = item_trees(model)
    width = model.neighbor_sample_size
    relation_scores = users @ model.relation_embedding.weight.T / model.embedding_size  # pi: [B, R + 1]
    attention = [torch.softmax(relation_scores[:, edges], dim=-1) for edges in trees.relations]  # [B, I, K^h, K]
    bias = model.linear_layers[0].bias
    vectors = []  # first layer, per depth h: [B, I, K^h, d]
    for depth in range(model.n_iter):
        neighbourhood = torch.einsum("bijk,ijkd->bijd", attention[depth], trees.children[depth]) / width
        node = trees.node[depth]
        vectors.append(_activate(model, 0, neighbourhood + bias if node is None else node + neighbourhood + bias))
    for layer in range(1, model.n_iter):
        deeper = []
        for depth in range(model.n_iter - layer):
            children = vectors[depth + 1].unflatten(2, (-1, width))  # [B, I, K^h, K, d]
            neighbourhood = (attention[depth].unsqueeze(-1) * children).mean(dim=3)
            deeper.append(_activate(model, layer, _combine(model, layer, vectors[depth], neighbourhood)))
        vectors = deeper
    items = vectors[0].squeeze(2)  # [B, I, d]
    return (users.unsqueeze(1) * items).sum(dim=-1).view(-1)


def install() -> None:
    """Make RecBole's KGCN and KGNNLS rank with :func:`full_sort_predict`; idempotent.

    KGNNLS (Wang et al., KDD 2019) scores with KGCN's aggregation unchanged (its
    ``aggregate`` is KGCN's, with the neighbour mixing written inline; the label
    smoothness term enters only its training loss), so the same item-major ranking
    gives its scores (tests/compat/test_kgcn_ranking.py compares both with RecBole's)."""
    from recbole.model.knowledge_aware_recommender.kgcn import KGCN
    from recbole.model.knowledge_aware_recommender.kgnnls import KGNNLS

    KGCN.full_sort_predict = full_sort_predict
    KGNNLS.full_sort_predict = full_sort_predict
