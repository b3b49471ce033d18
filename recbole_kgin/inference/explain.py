"""Explain KGIN's recommendations: intents, their relations, relational paths.

    python run_recbole_kgin.py --explain saved/KGIN-....pth --user 196 [--item 242] [--top 5] [--json]

Everything is read from a trained checkpoint (no retraining) in evaluation mode, and
named with the dataset's own tokens (user/item ids, relation names, entity ids).

What is reported (paper Sec. 4.4, Figure 5):

- ``beta``: the user's attention over intents (Eq. 8) at the first hop, i.e. from the
  ego user vector (``softmax(e_u . z_p)`` with the latent table, or
  ``softmax(e_u . e_p)`` with ``intent_attention: intent``), sorted;
- ``alpha``: each intent's attention over relations, ``softmax_r(W[p])`` (Eq. 1);
- relational paths behind an item: ``item -r1-> e1`` and ``item -r1-> e1 -r2-> e2``;
- the top-k items for the user (training items excluded) with their scores;
- intent distinctness: pairwise distance correlation and cosine between intents.

**Path contribution.** In evaluation the score ``s(u, i) = e_u . e_i`` with
``e_i = e_i^(0) + sum_l e_i^(l) / |e_i^(l)|`` is linear in the KG messages once the
per-node norms ``n_l(x) = |e_x^(l)|`` (unnormalised hop outputs) are fixed, so each path
has an exact additive share of the hop term it belongs to:

- one hop, ``(i, r, t)``: ``share = (e_t^(0) * e_r) . e_u / (|N_i| n_1(i))``;
- two hops, ``(i, r1, e1, r2, e2)``:
  ``share = (e_e2^(0) * e_r2 * e_r1) . e_u / (|N_i| |N_e1| n_1(e1) n_2(i))``,

where ``e_u`` is the user's final vector and ``*`` is the elementwise product. Shares
of all one-hop (two-hop) paths add up to the hop-1 (hop-2) term of the score exactly.
A path's affinity to intent ``p`` is ``prod_k alpha_p(r_k) * K^hops`` (``K`` relations;
uniform attention gives 1). The chosen intents are the user's top ``--intents`` by
``beta``; their affinity is the ``beta``-weighted mean of theirs. Paths are ranked by
``contribution = share * affinity``: paths that both move the score and run through
relations the user's intents attend to. Per intent, relations are listed twice: by
``alpha`` (what the intent is) and by the summed contribution of the item's paths that
leave the item through them (what that intent draws on for this item). On small data
``alpha`` is weakly identified (relation vectors can absorb what the intents would
select), so the second list is the one grounded in the score.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from recbole_kgin.data.item_names import read_item_names
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.inference.trained import check_data
from recbole_kgin.model import KGIN
from recbole_kgin.model.independence import distance_correlation_matrix
from recbole_kgin.quick_start import load_checkpoint, restore


@dataclass
class RelationalPath:
    """One relational path from an item and its share of the user-item score."""

    nodes: List[str]  # item, entity [, entity]
    relations: List[str]
    share: float
    intent_affinity: float
    contribution: float


@dataclass
class PathTable:
    """All paths from one item: node ids, relation ids, shares (n,), affinities (n, P)."""

    nodes: List[List[int]]
    relations: List[List[int]]
    shares: torch.Tensor
    affinities: torch.Tensor


@dataclass
class Explanation:
    user: str
    # sorted by weight: {"intent", "weight", "top_relations" (alpha), "relations_behind_item"}
    intents: List[Dict[str, Any]]
    item: str
    item_name: str  # from the dataset's .item file; "" when it has none
    score: float
    score_terms: Dict[str, float]  # ego, hop-1, hop-2, remaining hops
    paths: List[RelationalPath]
    recommendations: List[Dict[str, Any]]
    chosen_intents: List[int]
    figures: Dict[str, str] = field(default_factory=dict)


def load_kgin(model_file: str, trusted: bool = False) -> Tuple[Any, KGIN, Any]:
    """(config, model in eval mode, training dataset) from a KGIN checkpoint, read by
    :func:`recbole_kgin.runtime.checkpoints.read_checkpoint` (``trusted`` as there), on
    the data it was trained on (:func:`recbole_kgin.inference.trained.check_data`)."""
    checkpoint = load_checkpoint(model_file, trusted)
    if checkpoint["config"]["model"] != "KGIN":
        raise UserInputError(
            f"'{model_file}' holds a {checkpoint['config']['model']} model: --explain needs a KGIN checkpoint"
        )
    check_data(model_file, checkpoint["config"], checkpoint.get("data_checksums"))
    config, model, _, train_data, _, _ = restore(checkpoint, device="cpu", name=f"'{model_file}'")
    return config, model.eval(), train_data._dataset


class Explainer:
    """Explanations for one trained KGIN (see the module docstring)."""

    def __init__(self, model: KGIN, dataset, item_names: Optional[Dict[str, str]] = None) -> None:
        self.model = model.eval()
        self.dataset = dataset
        self.item_names = item_names or {}  # item token -> title, where the dataset has one
        self.uid_field, self.iid_field = dataset.uid_field, dataset.iid_field
        self.relation_names = list(dataset.field2id_token[dataset.relation_field][1 : model.n_kg_relations + 1])
        self.entity_tokens = dataset.field2id_token[dataset.entity_field]
        self.item_tokens = dataset.field2id_token[self.iid_field]
        with torch.no_grad():
            self.user_final, self.item_final = model.forward()
            self._hops()
        self.history = dataset.inter_matrix(form="csr")

    # --- tokens ------------------------------------------------------------------
    def user_id(self, token: str) -> int:
        try:
            return int(self.dataset.token2id(self.uid_field, str(token)))
        except ValueError:
            raise UserInputError(f"unknown user '{token}': not a user id of dataset {self.dataset.dataset_name}") from None

    def item_id(self, token: str) -> int:
        try:
            return int(self.dataset.token2id(self.iid_field, str(token)))
        except ValueError:
            raise UserInputError(
                f"unknown item '{token}': not a KG-linked item id of dataset {self.dataset.dataset_name}"
            ) from None

    def node_name(self, entity: int) -> str:
        if entity < self.model.n_items:
            token = str(self.item_tokens[entity])
            return f"item {labelled(token, self.item_names.get(token, ''))}"
        return str(self.entity_tokens[entity])

    # --- intents -----------------------------------------------------------------
    def intent_weights(self, user: int) -> torch.Tensor:
        """beta (P,): the user's first-hop attention over intents."""
        model = self.model
        with torch.no_grad():
            ego = model.user_embedding[user]
            keys = model.intent_latent if model.intent_attention == "latent" else model.intent_embeddings()
            return torch.softmax(keys @ ego, dim=0)

    def relation_attention(self) -> torch.Tensor:
        """alpha (P, K): each intent's attention over relations."""
        with torch.no_grad():
            return torch.softmax(self.model.intent_logits, dim=1)

    def top_relations(self, intent: int, top: int) -> List[Dict[str, Any]]:
        alpha = self.relation_attention()[intent]
        order = torch.argsort(alpha, descending=True)[:top]
        return [{"relation": self.relation_names[r], "weight": float(alpha[r])} for r in order.tolist()]

    def intent_distinctness(self) -> Dict[str, List[List[float]]]:
        """Pairwise distance correlation and cosine between the intent embeddings."""
        with torch.no_grad():
            intents = self.model.intent_embeddings().double()
            unit = torch.nn.functional.normalize(intents, dim=1)
            return {
                "distance_correlation": distance_correlation_matrix(intents).tolist(),
                "cosine": (unit @ unit.t()).tolist(),
            }

    # --- recommendations and paths -----------------------------------------------
    def recommend(self, user: int, top: int) -> List[Dict[str, Any]]:
        with torch.no_grad():
            scores = self.item_final @ self.user_final[user]
        scores[0] = -np.inf  # [PAD]
        seen = self.history.indices[self.history.indptr[user] : self.history.indptr[user + 1]]
        scores[torch.as_tensor(seen, dtype=torch.long)] = -np.inf
        best = torch.topk(scores, min(top, int(torch.isfinite(scores).sum())))
        tokens = [str(self.item_tokens[i]) for i in best.indices.tolist()]
        return [
            {"item": token, "name": self.item_names.get(token, ""), "score": score}
            for token, score in zip(tokens, best.values.tolist())
        ]

    def _hops(self) -> None:
        """Hop outputs e^(1), e^(2) of all entities and the norms n_1, n_2 of their
        unnormalised versions (evaluation, plain dense ops)."""
        model = self.model
        kg = model.kg
        heads, relations, tails = kg.heads, kg.relations, kg.tails
        self.degree = torch.bincount(heads, minlength=model.n_entities).double()
        entity = model.entity_embedding.detach().double()
        relation = model.relation_embedding.detach().double()
        self.norms, self.hop_vectors = [], []
        current = entity
        for _ in range(min(2, model.context_hops)):
            messages = current[tails] * relation[relations]
            raw = torch.zeros_like(entity).index_add_(0, heads, messages) / self.degree.clamp(min=1)[:, None]
            norm = torch.linalg.vector_norm(raw, dim=1).clamp_min(1e-12)
            current = raw / norm[:, None]
            self.norms.append(norm)
            self.hop_vectors.append(current)

    def _edges_from(self, heads: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kg = self.model.kg
        mask = torch.isin(kg.heads, heads)
        return kg.heads[mask], kg.relations[mask], kg.tails[mask]

    def path_table(self, user: int, item: int) -> PathTable:
        """Every one- and two-hop path from ``item``, its exact share of the user's
        score and its per-intent affinity ``prod_k alpha_p(r_k) * K^hops``."""
        model = self.model
        u = self.user_final[user].double()
        entity = model.entity_embedding.detach().double()
        relation = model.relation_embedding.detach().double()
        alpha = self.relation_attention().double() * model.n_kg_relations  # (P, K), 1 = uniform
        n1 = self.norms[0]
        _, r1, e1 = self._edges_from(torch.tensor([item]))
        nodes = [[item, t] for t in e1.tolist()]
        relations = [[r] for r in r1.tolist()]
        shares = [(entity[e1] * relation[r1]) @ u / (self.degree[item] * n1[item])]
        affinities = [alpha[:, r1].t()]
        if len(self.hop_vectors) >= 2 and len(e1):
            mids, r2, e2 = self._edges_from(e1.unique())
            for first_tail, first_relation in zip(e1.tolist(), r1.tolist()):
                from_mid = mids == first_tail
                rel2, tail2 = r2[from_mid], e2[from_mid]
                message = entity[tail2] * relation[rel2] * relation[first_relation]
                scale = self.degree[item] * self.degree[first_tail] * n1[first_tail] * self.norms[1][item]
                shares.append(message @ u / scale)
                affinities.append((alpha[:, first_relation][:, None] * alpha[:, rel2]).t())
                nodes += [[item, first_tail, t] for t in tail2.tolist()]
                relations += [[first_relation, r] for r in rel2.tolist()]
        return PathTable(nodes, relations, torch.cat(shares), torch.cat(affinities))

    def top_paths(self, table: PathTable, beta: torch.Tensor, chosen: Sequence[int], top: int) -> List[RelationalPath]:
        """Paths ranked by ``share * affinity`` under the chosen intents (module docstring)."""
        weights = beta.double()[list(chosen)]
        affinity = (table.affinities[:, list(chosen)] * weights).sum(1) / weights.sum()
        contribution = table.shares * affinity
        order = torch.argsort(contribution, descending=True)[:top].tolist()
        return [
            RelationalPath(
                nodes=[self.node_name(n) for n in table.nodes[k]],
                relations=[self.relation_names[r] for r in table.relations[k]],
                share=float(table.shares[k]),
                intent_affinity=float(affinity[k]),
                contribution=float(contribution[k]),
            )
            for k in order
        ]

    def relations_behind(self, table: PathTable, intent: int, top: int) -> List[Dict[str, Any]]:
        """Relations ranked by the contribution of the paths that leave the item
        through them, under one intent: ``sum share * affinity_p`` per first relation."""
        first = torch.tensor([rels[0] for rels in table.relations], dtype=torch.long)
        totals = torch.zeros(self.model.n_kg_relations, dtype=torch.float64)
        totals.index_add_(0, first, table.shares * table.affinities[:, intent])
        used = torch.unique(first)
        order = used[torch.argsort(totals[used], descending=True)][:top].tolist()
        return [{"relation": self.relation_names[r], "contribution": float(totals[r])} for r in order]

    def score_terms(self, user: int, item: int) -> Dict[str, float]:
        """The score split into its ego term, its hop-1 and hop-2 terms (which the
        paths' shares add up to) and the rest (hops >= 3)."""
        u = self.user_final[user].double()
        terms = {"ego": float(self.model.entity_embedding.detach()[item].double() @ u)}
        for hop, vectors in enumerate(self.hop_vectors, start=1):
            terms[f"hop {hop}"] = float(vectors[item] @ u)
        rest = float(self.item_final[item].double() @ u) - sum(terms.values())
        if self.model.context_hops > len(self.hop_vectors):
            terms["hops >= 3"] = rest
        return terms

    # --- the whole report ---------------------------------------------------------
    def explain(
        self, user_token: str, item_token: Optional[str] = None, top: int = 5, n_intents: int = 2
    ) -> Explanation:
        user = self.user_id(user_token)
        recommendations = self.recommend(user, top)
        if item_token is None:
            if not recommendations:
                raise UserInputError(f"user '{user_token}' has no unseen item to explain: pass --item")
            item_token = recommendations[0]["item"]
        item = self.item_id(item_token)
        beta = self.intent_weights(user)
        order = torch.argsort(beta, descending=True).tolist()
        chosen = order[: max(1, min(n_intents, len(order)))]
        table = self.path_table(user, item)
        intents = [
            {
                "intent": p,
                "weight": float(beta[p]),
                "top_relations": self.top_relations(p, top),
                "relations_behind_item": self.relations_behind(table, p, top),
            }
            for p in order
        ]
        return Explanation(
            user=str(user_token),
            intents=intents,
            item=str(item_token),
            item_name=self.item_names.get(str(item_token), ""),
            score=float(self.item_final[item] @ self.user_final[user]),
            score_terms=self.score_terms(user, item),
            paths=self.top_paths(table, beta, chosen, top),
            recommendations=recommendations,
            chosen_intents=chosen,
        )


def labelled(token: str, name: str) -> str:
    """An item as ``2571 (Matrix, The)`` where it has a name, else its bare id."""
    return f"{token} ({name})" if name else token


def render_text(explanation: Explanation, distinctness: Dict[str, List[List[float]]]) -> str:
    lines = [f"user {explanation.user}", "", "intents (beta, the user's attention):"]
    for intent in explanation.intents:
        relations = ", ".join(f"{r['relation']} {r['weight']:.3f}" for r in intent["top_relations"])
        behind = ", ".join(f"{r['relation']} {r['contribution']:+.3f}" for r in intent["relations_behind_item"])
        lines.append(f"  intent {intent['intent']}: {intent['weight']:.3f}")
        lines.append(f"    top relations (alpha):            {relations}")
        lines.append(f"    relations behind item {explanation.item}: {behind}")
    lines += ["", f"item {labelled(explanation.item, explanation.item_name)}: score {explanation.score:.4f} = "
              + " + ".join(f"{v:.4f} ({k})" for k, v in explanation.score_terms.items())]
    lines.append(f"top paths under intents {explanation.chosen_intents} (contribution = share x affinity):")
    for path in explanation.paths:
        hops = [path.nodes[0]]
        for relation, node in zip(path.relations, path.nodes[1:]):
            hops.append(f"-[{relation}]-> {node}")
        lines.append(
            f"  {path.contribution:+.4f}  (share {path.share:+.4f}, affinity {path.intent_affinity:.3f})  "
            + " ".join(hops)
        )
    lines += ["", "top recommendations (training items excluded):"]
    lines += [
        f"  {i + 1}. item {r['item']}  {r['score']:.4f}" + (f"  {r['name']}" if r["name"] else "")
        for i, r in enumerate(explanation.recommendations)
    ]
    lines += ["", "intent distinctness (distance correlation | cosine, off-diagonal):"]
    dcor, cosine = np.array(distinctness["distance_correlation"]), np.array(distinctness["cosine"])
    for p in range(len(dcor)):
        row = " ".join(f"{dcor[p, q]:.2f}|{cosine[p, q]:+.2f}" for q in range(len(dcor)) if q != p)
        lines.append(f"  intent {p}: {row}")
    if explanation.figures:
        lines += ["", "figures: " + ", ".join(explanation.figures.values())]
    return "\n".join(lines)


RELATIONS_PER_INTENT = 8  # bars per intent panel in intent_relations.png


def save_figures(explainer: Explainer, explanation: Explanation, folder: Path) -> Dict[str, str]:
    """``intent_relations.png``: one panel per intent with its top relations by alpha
    (named, against the uniform 1/K), a fixed size whatever the number of relations;
    ``user_<U>_intents.png``: the user's beta."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    alpha = explainer.relation_attention().numpy()
    n_intents, n_relations = alpha.shape
    columns = min(n_intents, 2)
    rows = (n_intents + columns - 1) // columns
    shown = min(RELATIONS_PER_INTENT, n_relations)
    figure, grid = plt.subplots(rows, columns, figsize=(7 * columns, 0.35 * shown * rows + 1.2), squeeze=False)
    for intent, axes in enumerate(grid.flat):
        if intent >= n_intents:
            axes.axis("off")
            continue
        top = explainer.top_relations(intent, shown)
        axes.barh(range(len(top))[::-1], [entry["weight"] for entry in top], color="tab:blue")
        axes.set_yticks(range(len(top))[::-1])
        axes.set_yticklabels([entry["relation"] for entry in top], fontsize=8)
        axes.axvline(1.0 / n_relations, color="grey", linestyle="--", linewidth=1, label=f"uniform 1/{n_relations}")
        axes.set_title(f"intent {intent}: top {shown} of {n_relations} relations", fontsize=10)
        axes.set_xlabel("alpha (attention over relations)", fontsize=8)
        axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    heatmap = folder / "intent_relations.png"
    figure.savefig(heatmap, dpi=120)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(5, 3))
    weights = sorted(explanation.intents, key=lambda i: i["intent"])
    axes.bar([f"intent {i['intent']}" for i in weights], [i["weight"] for i in weights])
    axes.set_ylabel("beta")
    axes.set_title(f"user {explanation.user}: attention over intents")
    figure.tight_layout()
    bars = folder / f"user_{explanation.user}_intents.png"
    figure.savefig(bars, dpi=120)
    plt.close(figure)
    return {"heatmap": str(heatmap), "intents": str(bars)}


def run_explain(
    model_file: str,
    user: str,
    item: Optional[str] = None,
    top: int = 5,
    n_intents: int = 2,
    output: Optional[str] = None,
    as_json: bool = False,
    trusted: bool = False,
) -> str:
    """Explain ``user`` (and ``item``) from a checkpoint (``trusted``: see
    :func:`recbole_kgin.runtime.checkpoints.read_checkpoint`); writes figures and the text
    (or JSON) next to them in ``output`` and returns what is printed."""
    config, model, dataset = load_kgin(model_file, trusted)
    names = read_item_names(
        config["data_path"], config["dataset"], dataset.iid_field, config["field_separator"], config["encoding"] or "utf-8"
    )
    explainer = Explainer(model, dataset, names)
    explanation = explainer.explain(user, item, top, n_intents)
    folder = Path(output or Path("explanations") / Path(model_file).stem)
    explanation.figures = save_figures(explainer, explanation, folder)
    distinctness = explainer.intent_distinctness()
    if as_json:
        text = json.dumps({**asdict(explanation), "intent_distinctness": distinctness}, indent=2)
        (folder / f"user_{explanation.user}.json").write_text(text)
    else:
        text = render_text(explanation, distinctness)
        (folder / f"user_{explanation.user}.txt").write_text(text + "\n")
    return text
