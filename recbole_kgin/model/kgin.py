r"""KGIN: Knowledge Graph-based Intent Network.

Reference:
    Xiang Wang, Tinglin Huang, Dingxian Wang, Yancheng Yuan, Zhenguang Liu, Xiangnan He,
    Tat-Seng Chua. "Learning Intents behind Interactions with Knowledge Graph for
    Recommendation." WWW 2021 (arXiv 2102.07057).
Authors' code:
    https://github.com/huangtinglin/Knowledge_Graph_based_Intent_Network (modules/KGIN.py)
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import KnowledgeRecommender
from recbole.utils import InputType

from recbole_kgin.common.config_checks import (
    boolean,
    non_negative_number,
    one_of,
    positive_int,
    positive_number,
    rate,
)
from recbole_kgin.model import dropout as message_dropout
from recbole_kgin.model.dropout import dropout_normalize, keep_mask, keep_threshold, normalize_eps
from recbole_kgin.model.fused import kernel, user_side
from recbole_kgin.model.graph import InteractionGraph, KnowledgeGraph
from recbole_kgin.model.independence import independence_loss

Masks = Dict[str, torch.Tensor]


def _unique_ids(ids: torch.Tensor, n_ids: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(ids, return_inverse=True)`` for ids in [0, n_ids), without a
    sort (a mark-and-count pass; ~10x faster for a batch on CPU)."""
    present = torch.zeros(n_ids, dtype=torch.bool, device=ids.device)
    present[ids] = True
    unique = present.nonzero().squeeze(1)
    position = torch.cumsum(present, dim=0) - 1
    return unique, position.index_select(0, ids)


class KGIN(KnowledgeRecommender):
    r"""KGIN as the authors' code implements it, with the paper's variants as switches.

    Notation: U users, N entities (items are entities ``0..n_items-1``), K KG relations
    (2R with ``kg_reverse_r: True``, RecBole's inverse relations; RecBole's ``[PAD]``
    and ``[UI-Relation]`` are not model relations), P = ``n_factors`` intents,
    d = ``embedding_size``, L = ``context_hops``.

    One hop ``l`` (authors' code):

    1. KG (Eq. 11): ``e_h^(l+1) = mean_{(h,r,t)} e_t^(l) * e_r``; items and entities
       receive nothing from users.
    2. Intents (Eq. 1): ``e_p = sum_r softmax_r(W)[p, r] e_r``, ``W`` (P, K).
    3. Attention (Eq. 8): ``beta_u = softmax_p(e_u^(l) . z_p)``, ``z`` a latent (P, d) table.
    4. Users (Eq. 7): ``m_u = mean_{i in N_u} e_i^(l)``,
       ``e_u^(l+1) = m_u * sum_p beta_up e_p + m_u``.
    5. Message dropout on both outputs (training only), then L2 row normalisation.

    Final (Eq. 12): ``e = e^(0) + sum_l e^(l)``; score ``s(u, i) = e_u . e_i`` (Eq. 13).
    Loss (Eq. 14): BPR + ``reg_weight * (|u|^2 + |i+|^2 + |i-|^2) / 2 / batch`` on the
    propagated vectors + ``sim_regularity *`` independence (``ind``: ``distance``,
    ``cosine`` or ``mi``; ``mi`` is a correct InfoNCE over intents, paper Eq. 3, where the
    authors' formula sums unnormalised products over relations and can turn negative).

    Paper-vs-code divergences, authors' code by default:

    - ``user_self_connection`` (True): the ``+ m_u`` of step 4, absent from paper Eq. 7.
      False gives ``e_u^(l+1) = m_u * sum_p beta_up e_p``.
    - ``intent_attention`` (``latent``): step 3 as in the code. ``intent`` gives the
      paper's ``beta_u = softmax_p(e_u^(0) . e_p)`` (ego user vector, intent embeddings).
    - ``independence_on`` (``logits``): the loss on the rows of ``W`` as in the code.
      ``intents`` puts it on the intent embeddings ``e_p`` as in the paper.

    Dropout (training only, resampled every mini-batch; evaluation is deterministic):
    ``node_dropout_rate`` is the share of KG edges and of interactions **dropped**:
    each is kept independently with probability ``1 - node_dropout_rate`` (the
    authors draw an exact count of KG edges; the expectation is the same); a hop's KG
    mean runs over the kept edges, a user's item mean over the kept items (weight
    1/|N_u|; inverted dropout's 1/(1 - rate) cancels in the row normalisation).
    Message dropout at ``mess_dropout_rate`` (share dropped) on each hop's outputs.
    Rates are drawn at a resolution of 1/65536 (:mod:`recbole_kgin.model.dropout`).

    The authors' code and RecBole's port read ``node_dropout_rate`` the other way, as
    the share **kept**: the authors keep ``int(rate * |E|)`` KG edges (``_edge_sampling``)
    and each interaction with probability ``rate`` (``_sparse_dropout``), RecBole's port
    keeps ``int(rate * |E|)`` KG edges and drops interactions at its *message*-dropout
    rate. The readings agree only at 0.5: a ``node_dropout_rate`` tuned for either of
    them means ``1 - rate`` here. RecBole's port also samples KG edges in evaluation;
    this one does not. Initialisation follows the authors: Xavier-uniform, with
    users and entities drawn as one (U + N, d) table.

    Speed (same math): on CPU each KG hop is one fused kernel pass over the edges and
    the user side of all hops one pass each way (``fused_kernel``,
    :mod:`recbole_kgin.model.fused`), elsewhere sparse products as embedding bags over
    fixed patterns; each batch computes only what its loss reaches
    (the last hop outputs items only; the user side only the batch's users); see
    :mod:`recbole_kgin.model.graph`.
    """

    input_type = InputType.PAIRWISE
    config_checks = {
        "context_hops": positive_int(),
        "n_factors": positive_int(),
        "node_dropout_rate": rate(),
        "mess_dropout_rate": rate(),
        "sim_regularity": non_negative_number(),
        "reg_weight": non_negative_number(),
        "ind": one_of(["distance", "cosine", "mi"]),
        "temperature": positive_number(),
        "user_self_connection": boolean(),
        "intent_attention": one_of(["latent", "intent"]),
        "independence_on": one_of(["logits", "intents"]),
        "fused_kernel": boolean(),
    }

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.context_hops = config["context_hops"]
        self.n_factors = config["n_factors"]
        self.node_dropout_rate = config["node_dropout_rate"]
        self.mess_dropout_rate = config["mess_dropout_rate"]
        self.sim_regularity = config["sim_regularity"]
        self.reg_weight = config["reg_weight"]
        self.ind = config["ind"]
        self.temperature = config["temperature"]
        self.user_self_connection = config["user_self_connection"]
        self.intent_attention = config["intent_attention"]
        self.independence_on = config["independence_on"]

        heads, relations, tails = self._kg_triples(dataset)
        self.n_kg_relations = self.n_relations - 2  # minus [PAD] and [UI-Relation]
        fused = config["fused_kernel"] is not False and self.device.type == "cpu" and kernel() is not None
        self.kg = KnowledgeGraph(heads, relations, tails, self.n_entities, self.n_items, fused).to(self.device)
        # the user side of all hops in one kernel pass (latent attention only)
        self.fused_user_side = fused and self.intent_attention == "latent"
        inter = dataset.inter_matrix(form="coo")
        self.interactions = InteractionGraph(inter.row, inter.col, self.n_users, self.n_items).to(
            self.device
        )

        d = self.embedding_size
        self.user_embedding = nn.Parameter(torch.empty(self.n_users, d))
        self.entity_embedding = nn.Parameter(torch.empty(self.n_entities, d))
        self.relation_embedding = nn.Parameter(torch.empty(self.n_kg_relations, d))
        self.intent_logits = nn.Parameter(torch.empty(self.n_factors, self.n_kg_relations))
        self.intent_latent = nn.Parameter(torch.empty(self.n_factors, d))
        self._reset_parameters()
        self._eval_cache: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def extra_repr(self) -> str:
        """What ``logger.info(model)`` shows beside the parameter count: the graph's
        sizes and the model's shape."""
        return (
            f"users={self.n_users}, entities={self.n_entities} (items={self.n_items}), "
            f"kg_relations={self.n_kg_relations}, kg_triples={len(self.kg.heads)}, "
            f"interactions={self.interactions.n_edges}, intents={self.n_factors}, d={self.embedding_size}, "
            f"hops={self.context_hops}, ind={self.ind}, fused_kernel={self.kg.fused}"
        )

    # --- construction --------------------------------------------------------------
    @staticmethod
    def _kg_triples(dataset) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(heads, relations - 1, tails): RecBole's relation 0 is [PAD]."""
        return dataset.head_entities, dataset.relations - 1, dataset.tail_entities

    def _reset_parameters(self) -> None:
        bound = np.sqrt(6.0 / (self.n_users + self.n_entities + self.embedding_size))
        nn.init.uniform_(self.user_embedding, -bound, bound)
        nn.init.uniform_(self.entity_embedding, -bound, bound)
        nn.init.xavier_uniform_(self.relation_embedding)
        nn.init.xavier_uniform_(self.intent_logits)
        nn.init.xavier_uniform_(self.intent_latent)

    # --- propagation ---------------------------------------------------------------
    def sample_masks(self) -> Masks:
        """Node-dropout keep masks for one mini-batch: ``kg`` (per KG edge, in
        ``self.kg`` edge order) and ``inter`` (per interaction, in CSR order)."""
        rate = self.node_dropout_rate
        return {
            "kg": keep_mask(self.kg.n_edges, rate, self.device, self.kg.fused),
            "inter": keep_mask(self.interactions.n_edges, rate, self.device, self.kg.fused),
        }

    def intent_embeddings(self) -> torch.Tensor:
        """(P, d) intents as attentive combinations of relations (Eq. 1)."""
        return torch.softmax(self.intent_logits, dim=-1) @ self.relation_embedding

    def forward(self, users: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Propagate L hops, with node dropout (:meth:`sample_masks`) in training.

        Args:
            users: sorted unique user ids to return (None: all users).

        Returns:
            final user vectors (len(users) or U, d) and final item vectors (n_items, d).
        """
        kg_keep = inter_keep = None
        if self.training and self.node_dropout_rate > 0:
            masks = self.sample_masks()
            kg_keep, inter_keep = masks["kg"], masks["inter"]
        kg_batch = self.kg.prepare(kg_keep)
        inter_batch = self.interactions.prepare(inter_keep, users)
        message_rate = self.mess_dropout_rate if self.training else 0.0

        relation = self.relation_embedding
        intents = self.intent_embeddings()
        user = self.user_embedding if users is None else self.user_embedding.index_select(0, users)
        entity = self.entity_embedding
        if self.fused_user_side:
            return self._propagate_fused(user, entity, relation, intents, kg_batch, inter_batch, message_rate)
        user_sum, item_sum = user, 0
        if self.intent_attention == "intent":
            beta = torch.softmax(user @ intents.t(), dim=1)
        for hop in range(1, self.context_hops + 1):
            entity_next, items = self.kg.aggregate(kg_batch, hop == self.context_hops, entity, relation)
            item_sum = item_sum + items
            item_mean = self.interactions.aggregate(inter_batch, items)
            if self.intent_attention == "latent":
                beta = torch.softmax(user @ self.intent_latent.t(), dim=1)
            user_next = item_mean * (beta @ intents)
            if self.user_self_connection:
                user_next = user_next + item_mean
            entity = dropout_normalize(entity_next, message_rate, self.kg.fused)
            user = dropout_normalize(user_next, message_rate, self.kg.fused)
            user_sum = user_sum + user
        return user_sum, item_sum + entity  # the last hop's output holds the items only

    def _propagate_fused(self, user, entity, relation, intents, kg_batch, inter_batch, message_rate):
        """:meth:`forward`'s hops with the fused kernels: the KG hops one by one, then
        the user side of all hops in one pass (:func:`recbole_kgin.model.fused.user_side`).
        Message-dropout lanes are drawn in the same order as on the hop-by-hop path
        (each hop's entities, then its users), so the results are the same."""
        hop_items, user_lanes, item_sum = [], [], 0
        for hop in range(1, self.context_hops + 1):
            entity_next, items = self.kg.aggregate(kg_batch, hop == self.context_hops, entity, relation)
            item_sum = item_sum + items
            hop_items.append(items)
            entity = dropout_normalize(entity_next, message_rate, fused=True)
            if message_rate > 0:
                user_lanes.append(message_dropout.random_lanes(user.shape, user.device, fused=True))
        pattern, values = inter_batch
        user_sum = user_side(
            user, hop_items, pattern, values, self.intent_latent, intents, user_lanes, keep_threshold(message_rate),
            normalize_eps(message_rate), self.user_self_connection,
        )
        return user_sum, item_sum + entity

    def independence_vectors(self) -> torch.Tensor:
        """The rows the independence loss compares: (P, K) logits or (P, d) intents."""
        if self.independence_on == "logits":
            return self.intent_logits
        return self.intent_embeddings()

    # --- RecBole interface ------------------------------------------------------------
    def train(self, mode: bool = True) -> "KGIN":
        self._eval_cache = None
        return super().train(mode)

    def calculate_loss(self, interaction) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(BPR, weighted L2, weighted independence) for one mini-batch (Eq. 14).

        Shapes: ``interaction`` holds B users, B positive and B negative items; each
        returned loss is a scalar.
        """
        self._eval_cache = None
        batch_users, user_rows = _unique_ids(interaction[self.USER_ID], self.n_users)
        user_final, item_final = self.forward(batch_users)
        users = user_final.index_select(0, user_rows)
        positives = item_final.index_select(0, interaction[self.ITEM_ID])
        negatives = item_final.index_select(0, interaction[self.NEG_ITEM_ID])
        pos_scores = (users * positives).sum(dim=1)
        neg_scores = (users * negatives).sum(dim=1)
        bpr = -F.logsigmoid(pos_scores - neg_scores).mean()
        l2 = (users.pow(2).sum() + positives.pow(2).sum() + negatives.pow(2).sum()) / 2
        l2 = self.reg_weight * l2 / users.shape[0]
        independence = self.sim_regularity * independence_loss(
            self.independence_vectors(), self.ind, self.temperature, self.kg.fused
        )
        return bpr, l2, independence

    def _final_embeddings(self) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            return self.forward()
        if self._eval_cache is None:
            with torch.no_grad():
                self._eval_cache = self.forward()
        return self._eval_cache

    def predict(self, interaction) -> torch.Tensor:
        """Scores ``e_u^* . e_i^*`` (Eq. 13) of B (user, item) pairs -> (B,)."""
        user_all, item_all = self._final_embeddings()
        users = user_all.index_select(0, interaction[self.USER_ID])
        items = item_all.index_select(0, interaction[self.ITEM_ID])
        return (users * items).sum(dim=1)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Scores of B users against every item, row after row -> (B * n_items,)."""
        user_all, item_all = self._final_embeddings()
        users = user_all.index_select(0, interaction[self.USER_ID])
        return (users @ item_all.t()).reshape(-1)
