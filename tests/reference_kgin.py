"""KGIN written plainly from the equations (dense tensors, Python loops), on its own
reading of the atomic files.

Independent of recbole_kgin and of RecBole's data pipeline: :class:`ReferenceGraph`
reads ``.inter``/``.kg``/``.link`` itself and derives the users, the entities, the
item-entity alignment (``.link``), the relations with their inverses (``r`` and ``r_r``,
RecBole's ``kg_reverse_r`` names) and the edges, all keyed by the files' tokens.
:class:`ReferenceKGIN` propagates and scores on that graph with dense tensors. The
tests hand it the model's parameters row by row (by token) and compare outputs and
gradients token by token, so a model that reads the data differently (a relation
table with extra rows, items misaligned with their entities, missing inverse
edges) disagrees with it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

Triple = Tuple[str, str, str]
Pair = Tuple[str, str]


def reference_distance_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dCor of two vectors, as the authors' code writes it (one pair at a time)."""
    n = x.shape[0]
    a = torch.sqrt(torch.clamp((x.unsqueeze(1) - x.unsqueeze(0)) ** 2, min=0.0) + 1e-8)
    b = torch.sqrt(torch.clamp((y.unsqueeze(1) - y.unsqueeze(0)) ** 2, min=0.0) + 1e-8)
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


def _read_atomic(path: Path) -> List[Dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    names = [cell.split(":")[0] for cell in lines[0].split("\t")]
    return [dict(zip(names, line.split("\t"))) for line in lines[1:] if line]


class ReferenceGraph:
    """The training graph of a dataset, read from its atomic files.

    ``folder/<name>.<inter_part>.inter`` (or ``<name>.inter``), ``<name>.kg``,
    ``<name>.link``. Items without a link are dropped (as RecBole does for KG models).
    """

    def __init__(self, folder: Path, name: str, inter_part: Optional[str] = None) -> None:
        inter_file = folder / (f"{name}.{inter_part}.inter" if inter_part else f"{name}.inter")
        links = {row["item_id"]: row["entity_id"] for row in _read_atomic(folder / f"{name}.link")}
        kg = {(row["head_id"], row["relation_id"], row["tail_id"]) for row in _read_atomic(folder / f"{name}.kg")}
        self.item_entity: Dict[str, str] = dict(sorted(links.items()))
        self.relations: List[str] = sorted({r for _, r, _ in kg})
        self.relations += [f"{r}_r" for r in self.relations]
        self.triples: List[Triple] = sorted(kg | {(t, f"{r}_r", h) for h, r, t in kg})
        self.entities: List[str] = sorted({h for h, _, _ in kg} | {t for _, _, t in kg} | set(links.values()))
        pairs = {(row["user_id"], row["item_id"]) for row in _read_atomic(inter_file)}
        self.interactions: List[Pair] = sorted(p for p in pairs if p[1] in links)
        self.users: List[str] = sorted({u for u, _ in self.interactions})
        self.items: List[str] = list(self.item_entity)


class ReferenceKGIN:
    """Dense KGIN on a :class:`ReferenceGraph`, with the model's switches.

    ``params``: ``user`` (users, d), ``entity`` (entities, d), ``relation`` (2R, d),
    ``intent_logits`` (P, 2R), ``intent_latent`` (P, d), rows in the graph's token order.
    Node-dropout masks are dicts {triple: kept} and {(user, item): kept}; message-dropout
    masks a list, per hop, of ({entity: (d,) keep}, {user: (d,) keep}).
    """

    def __init__(self, params: Dict[str, torch.Tensor], graph: ReferenceGraph, config: Dict) -> None:
        self.p, self.g, self.c = params, graph, config
        self.entity_index = {token: i for i, token in enumerate(graph.entities)}
        self.relation_index = {token: i for i, token in enumerate(graph.relations)}

    def intents(self) -> torch.Tensor:
        return torch.softmax(self.p["intent_logits"], dim=1) @ self.p["relation"]  # Eq. 1

    def _message_dropout(self, rows: torch.Tensor, tokens: Sequence[str], masks: Optional[Dict]) -> torch.Tensor:
        """nn.Dropout then F.normalize, row by row, as the authors' code."""
        out = []
        for row, token in zip(rows, tokens):
            if masks is not None:
                row = row * masks[token].to(row.dtype) / (1.0 - self.c["mess_dropout_rate"])
            out.append(row / row.norm().clamp_min(1e-12))
        return torch.stack(out)

    def propagate(
        self, kg_keep: Dict = None, inter_keep: Dict = None, message_masks: List = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Final user vectors (users, d) and item vectors (items, d), in token order."""
        p, c, g = self.p, self.c, self.g
        rate = c["node_dropout_rate"] if inter_keep is not None else 0.0
        users, entities = p["user"], p["entity"]
        intents = self.intents()
        user_items: Dict[str, List[str]] = {u: [] for u in g.users}
        for u, i in g.interactions:
            user_items[u].append(i)
        item_rows = [self.entity_index[g.item_entity[i]] for i in g.items]
        user_sum, item_sum = users, entities[item_rows]
        u_l, e_l = users, entities
        for hop in range(c["context_hops"]):
            e_next = []
            for h in g.entities:
                msgs = [
                    e_l[self.entity_index[t]] * p["relation"][self.relation_index[r]]
                    for (hh, r, t) in g.triples
                    if hh == h and (kg_keep is None or kg_keep[(hh, r, t)])
                ]
                e_next.append(torch.stack(msgs).mean(0) if msgs else torch.zeros_like(e_l[0]))
            u_next = []
            for index, u in enumerate(g.users):
                items = user_items[u]
                m = torch.zeros_like(e_l[0])
                for i in items:
                    if inter_keep is None or inter_keep[(u, i)]:
                        m = m + e_l[self.entity_index[g.item_entity[i]]] / len(items) / (1.0 - rate)
                if c["intent_attention"] == "latent":
                    beta = torch.softmax(u_l[index] @ p["intent_latent"].t(), dim=0)  # code
                else:
                    beta = torch.softmax(users[index] @ intents.t(), dim=0)  # paper Eq. 8
                value = m * (beta @ intents)
                if c["user_self_connection"]:
                    value = value + m
                u_next.append(value)
            entity_masks, user_masks = message_masks[hop] if message_masks else (None, None)
            e_l = self._message_dropout(torch.stack(e_next), g.entities, entity_masks)
            u_l = self._message_dropout(torch.stack(u_next), g.users, user_masks)
            item_sum = item_sum + e_l[item_rows]
            user_sum = user_sum + u_l
        return user_sum, item_sum

    def loss(
        self, users: Sequence[str], pos: Sequence[str], neg: Sequence[str], kg_keep=None, inter_keep=None, message_masks=None
    ) -> torch.Tensor:
        """BPR + L2 on the batch's final vectors + independence (Eq. 14); tokens in."""
        c, g = self.c, self.g
        u_all, i_all = self.propagate(kg_keep, inter_keep, message_masks)
        u = u_all[[g.users.index(t) for t in users]]
        ip = i_all[[g.items.index(t) for t in pos]]
        ineg = i_all[[g.items.index(t) for t in neg]]
        pos_s, neg_s = (u * ip).sum(1), (u * ineg).sum(1)
        bpr = -torch.mean(torch.stack([F.logsigmoid(a - b) for a, b in zip(pos_s, neg_s)]))
        l2 = (u.pow(2).sum() + ip.pow(2).sum() + ineg.pow(2).sum()) / 2 / len(users)
        vectors = self.p["intent_logits"] if c["independence_on"] == "logits" else self.intents()
        cor = reference_independence(vectors, c["ind"], c["temperature"])
        return bpr + c["reg_weight"] * l2 + c["sim_regularity"] * cor


def is_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return bool(torch.allclose(a, b, atol=tol, rtol=tol)) and not math.isnan(float(a.sum()))
