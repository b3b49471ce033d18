"""A trained KGIN's vectors, named by the dataset's tokens, to a folder.

    python run_recbole_kgin.py --export saved/KGIN-....pth --output DIR [--force]

writes ``.npy`` arrays (float32; ``numpy.load``) and token files (UTF-8, one token per
line, line k names row k), plus a ``README.md`` saying what each is (:data:`ARRAYS`).
Scores are inner products of the final vectors: ``score(u, i) = users[u] . items[i]``,
exactly what the model ranks by (``full_sort_predict``). ``[PAD]`` rows are left out.
The folder is written whole or not at all (:mod:`recbole_kgin.inference.outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from recbole_kgin.inference.trained import Trained, load_trained
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.model import KGIN
from recbole_kgin.inference.outputs import refuse_to_overwrite, written_whole

# array file -> (token file naming its rows, what it is); U users, I items, N entities,
# K relations, P intents, d the embedding size
ARRAYS = {
    "user_vectors.npy": ("users.txt", "(U, d) final user vectors e_u* = e_u^(0) + sum_l e_u^(l) (Eq. 12)"),
    "item_vectors.npy": ("items.txt", "(I, d) final item vectors e_i* = e_i^(0) + sum_l e_i^(l)"),
    "entity_vectors.npy": (
        "entities.txt",
        "(N, d) entity embeddings e^(0) before propagation; rows 0..I-1 are the items' entities, "
        "in the order of items.txt",
    ),
    "relation_vectors.npy": ("relations.txt", "(K, d) relation embeddings e_r"),
    "intent_vectors.npy": ("", "(P, d) intent embeddings e_p = sum_r alpha[p, r] e_r (Eq. 1); row p is intent p"),
    "intent_relation_attention.npy": (
        "relations.txt (columns)",
        "(P, K) alpha: each intent's attention over relations, softmax of the intent logits",
    ),
    "user_intent_attention.npy": (
        "users.txt",
        "(U, P) beta: each user's attention over intents at the first hop, from the ego user "
        "vector (later hops recompute it from each hop's user vector)",
    ),
}


@dataclass
class Vectors:
    """A trained KGIN's vectors; ``*_tokens`` name the rows (``[PAD]`` left out).

    Shapes: ``users`` (U, d), ``items`` (I, d), ``entities`` (N, d), ``relations``
    (K, d), ``intents`` (P, d), ``intent_relation_attention`` (P, K),
    ``user_intent_attention`` (U, P); ``scores = users @ items.T`` (U, I).
    """

    user_tokens: List[str]
    item_tokens: List[str]
    entity_tokens: List[str]
    relation_tokens: List[str]
    users: np.ndarray
    items: np.ndarray
    entities: np.ndarray
    relations: np.ndarray
    intents: np.ndarray
    intent_relation_attention: np.ndarray
    user_intent_attention: np.ndarray

    def arrays(self) -> Dict[str, np.ndarray]:
        """File name -> array, as :data:`ARRAYS` lists them."""
        return {
            "user_vectors.npy": self.users,
            "item_vectors.npy": self.items,
            "entity_vectors.npy": self.entities,
            "relation_vectors.npy": self.relations,
            "intent_vectors.npy": self.intents,
            "intent_relation_attention.npy": self.intent_relation_attention,
            "user_intent_attention.npy": self.user_intent_attention,
        }

    def tokens(self) -> Dict[str, List[str]]:
        return {
            "users.txt": self.user_tokens,
            "items.txt": self.item_tokens,
            "entities.txt": self.entity_tokens,
            "relations.txt": self.relation_tokens,
        }


def no_vectors(trained: Trained, what: str) -> UserInputError:
    return UserInputError(
        f"'{trained.model_file}' holds {trained.model_name}, which has no KGIN vectors (intents, relations, "
        f"relational paths): {what} needs a KGIN checkpoint; recommendations work for any model"
    )


def kgin_vectors(trained: Trained) -> Vectors:
    """The vectors of a trained KGIN (:class:`Vectors`); another model is a one-line error."""
    model, dataset = trained.model, trained.dataset
    if not isinstance(model, KGIN):
        raise no_vectors(trained, "--export")
    model.eval()

    def tokens(field: str, count: int) -> List[str]:
        return [str(token) for token in dataset.field2id_token[field][1:count]]

    def array(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().float().cpu().numpy().copy()

    with torch.no_grad():
        users, items = model.forward()
        keys = model.intent_latent if model.intent_attention == "latent" else model.intent_embeddings()
        beta = torch.softmax(model.user_embedding @ keys.t(), dim=1)
        return Vectors(
            user_tokens=tokens(dataset.uid_field, model.n_users),
            item_tokens=tokens(dataset.iid_field, model.n_items),
            entity_tokens=tokens(dataset.entity_field, model.n_entities),
            relation_tokens=tokens(dataset.relation_field, model.n_kg_relations + 1),
            users=array(users[1:]),
            items=array(items[1:]),
            entities=array(model.entity_embedding[1:]),
            relations=array(model.relation_embedding),
            intents=array(model.intent_embeddings()),
            intent_relation_attention=array(torch.softmax(model.intent_logits, dim=1)),
            user_intent_attention=array(beta[1:]),
        )


def readme(vectors: Vectors, trained: Trained) -> str:
    """The folder's README.md: where the vectors come from, each file, how scores form."""
    shapes = {name: "x".join(str(n) for n in array.shape) for name, array in vectors.arrays().items()}
    lines = [
        f"# KGIN vectors of {trained.config['dataset']}",
        "",
        f"From `{trained.model_file}` (recbole-kgin `--export`). Arrays are float32 `.npy` "
        "(`numpy.load`); token files are UTF-8, one dataset token per line, line k naming row k.",
        "",
        "| file | shape | rows named by | what |",
        "|---|---|---|---|",
    ]
    for name, (token_file, what) in ARRAYS.items():
        lines.append(f"| `{name}` | {shapes[name]} | {token_file or 'intent number'} | {what} |")
    lines += [
        "",
        "Scores: `score(u, i) = user_vectors[u] . item_vectors[i]` (Eq. 13), the model's ranking "
        "(`full_sort_predict`); `user_vectors @ item_vectors.T` scores every item for every user. "
        "Recommendations leave out the items a user has seen.",
        "",
    ]
    return "\n".join(lines)


def write_vectors(vectors: Vectors, trained: Trained, output: Path, force: bool = False) -> None:
    """Write ``vectors`` and README.md into the folder ``output``, whole or not at all."""
    with written_whole(output, force, folder=True) as folder:
        for name, values in vectors.arrays().items():
            np.save(folder / name, values)
        for name, tokens in vectors.tokens().items():
            (folder / name).write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8")
        (folder / "README.md").write_text(readme(vectors, trained), encoding="utf-8")


def export_to_folder(
    model_file: str, output: str, force: bool = False, dataset: Optional[str] = None, trusted: bool = False
) -> str:
    """``--export``: load ``model_file`` and write its vectors into ``output``; returns
    the line the command prints (``trusted``: see :func:`recbole_kgin.inference.trained.load_trained`)."""
    path = Path(output)
    refuse_to_overwrite(path, force, folder=True)
    trained = load_trained(model_file, dataset, trusted)
    vectors = kgin_vectors(trained)
    write_vectors(vectors, trained, path, force)
    return (
        f"KGIN on {trained.config['dataset']}: vectors of {len(vectors.user_tokens)} users, "
        f"{len(vectors.item_tokens)} items, {len(vectors.entity_tokens)} entities, "
        f"{len(vectors.relation_tokens)} relations, {len(vectors.intents)} intents written to {path}"
    )
