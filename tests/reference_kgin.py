"""KGIN written plainly from the equations (dense tensors, Python loops).

Independent of recbole_kgin's sparse operators: used to check the model's
propagation, scores, loss and gradients on small graphs.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F


def reference_distance_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dCor of two vectors, as the authors' code writes it (one pair at a time)."""
    n = x.shape[0]
    a = torch.zeros(n, n, dtype=x.dtype)
    b = torch.zeros(n, n, dtype=x.dtype)
    for i in range(n):
        for j in range(n):
            a[i, j] = torch.sqrt(torch.clamp((x[i] - x[j]) ** 2, min=0.0) + 1e-8)
            b[i, j] = torch.sqrt(torch.clamp((y[i] - y[j]) ** 2, min=0.0) + 1e-8)
    A = a - a.mean(dim=0, keepdim=True) - a.mean(dim=1, keepdim=True) + a.mean()
    B = b - b.mean(dim=0, keepdim=True) - b.mean(dim=1, keepdim=True) + b.mean()
    dcov_ab = torch.sqrt(torch.clamp((A * B).sum() / n**2, min=0.0) + 1e-8)
    dcov_aa = torch.sqrt(torch.clamp((A * A).sum() / n**2, min=0.0) + 1e-8)
    dcov_bb = torch.sqrt(torch.clamp((B * B).sum() / n**2, min=0.0) + 1e-8)
    return dcov_ab / torch.sqrt(dcov_aa * dcov_bb + 1e-8)


def reference_independence(vectors: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    n_intents = vectors.shape[0]
    if kind == "mi":
        total = vectors.new_zeros(())
        for p in range(n_intents):
            sims = [F.cosine_similarity(vectors[p], vectors[q], dim=0) / temperature for q in range(n_intents)]
            denominator = sum(torch.exp(s) for s in sims)
            total = total - torch.log(torch.exp(sims[p]) / denominator)
        return total
    total = vectors.new_zeros(())
    for p in range(n_intents):
        for q in range(p + 1, n_intents):
            if kind == "distance":
                total = total + reference_distance_correlation(vectors[p], vectors[q])
            else:
                total = total + F.cosine_similarity(vectors[p], vectors[q], dim=0) ** 2
    return total


class ReferenceKGIN:
    """Dense KGIN with the same switches as the model.

    ``triples``: (head, relation, tail) with relations 0-based; ``interactions``:
    (user, item) pairs. Masks are dicts {triple: kept} and {pair: kept}.
    """

    def __init__(
        self,
        params: Dict[str, torch.Tensor],
        triples: Sequence[Tuple[int, int, int]],
        interactions: Sequence[Tuple[int, int]],
        n_items: int,
        config: Dict,
    ) -> None:
        self.p = params
        self.triples = sorted(set(triples))
        self.interactions = sorted(set(interactions))
        self.n_items = n_items
        self.c = config

    def propagate(self, kg_keep: Dict = None, inter_keep: Dict = None) -> Tuple[torch.Tensor, torch.Tensor]:
        p, c = self.p, self.c
        rate = c["node_dropout_rate"] if inter_keep is not None else 0.0
        users, entities = p["user"], p["entity"]
        n_users, n_entities = users.shape[0], entities.shape[0]
        intents = torch.softmax(p["intent_logits"], dim=1) @ p["relation"]  # Eq. 1
        user_items: List[List[int]] = [[] for _ in range(n_users)]
        for u, i in self.interactions:
            user_items[u].append(i)
        user_sum, entity_sum = users, entities
        u_l, e_l = users, entities
        for _ in range(c["context_hops"]):
            e_next = []
            for h in range(n_entities):
                msgs = [
                    e_l[t] * p["relation"][r]
                    for (hh, r, t) in self.triples
                    if hh == h and (kg_keep is None or kg_keep[(hh, r, t)])
                ]
                e_next.append(torch.stack(msgs).mean(0) if msgs else torch.zeros_like(e_l[0]))
            u_next = []
            for u in range(n_users):
                items = user_items[u]
                m = torch.zeros_like(e_l[0])
                for i in items:
                    if inter_keep is None or inter_keep[(u, i)]:
                        m = m + e_l[i] / len(items) / (1.0 - rate)
                if c["intent_attention"] == "latent":
                    beta = torch.softmax(u_l[u] @ p["intent_latent"].t(), dim=0)
                else:
                    beta = torch.softmax(users[u] @ intents.t(), dim=0)
                value = m * (beta @ intents)
                if c["user_self_connection"]:
                    value = value + m
                u_next.append(value)
            e_l = torch.stack([v / v.norm().clamp_min(1e-12) for v in e_next])
            u_l = torch.stack([v / v.norm().clamp_min(1e-12) for v in u_next])
            entity_sum = entity_sum + e_l
            user_sum = user_sum + u_l
        return user_sum, entity_sum[: self.n_items]

    def loss(self, users, pos, neg, kg_keep=None, inter_keep=None) -> torch.Tensor:
        c = self.c
        u_all, i_all = self.propagate(kg_keep, inter_keep)
        u, ip, ineg = u_all[users], i_all[pos], i_all[neg]
        pos_s, neg_s = (u * ip).sum(1), (u * ineg).sum(1)
        bpr = -torch.mean(torch.stack([F.logsigmoid(a - b) for a, b in zip(pos_s, neg_s)]))
        l2 = (u.pow(2).sum() + ip.pow(2).sum() + ineg.pow(2).sum()) / 2 / len(users)
        if c["independence_on"] == "logits":
            vectors = self.p["intent_logits"]
        else:
            vectors = torch.softmax(self.p["intent_logits"], dim=1) @ self.p["relation"]
        cor = reference_independence(vectors, c["ind"], c["temperature"])
        return bpr + c["reg_weight"] * l2 + c["sim_regularity"] * cor


def is_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return bool(torch.allclose(a, b, atol=tol, rtol=tol)) and not math.isnan(float(a.sum()))
