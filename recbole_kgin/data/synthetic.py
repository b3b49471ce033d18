"""Synthetic atomic files with the shapes of the KGIN paper's datasets (Table 1).

The paper's data (Amazon-Book, Last-FM, Alibaba-iFashion) is not shipped here; for
speed and memory at that size only the shape matters: the counts of users, items,
interactions, entities, relations and triples, and heavy-tailed degrees. The files
are seeded and deterministic:

- interactions: every user gets two items, the rest of the interactions go to users
  drawn with Zipf-like weights (exponent ``USER_EXPONENT``) and items drawn with
  Zipf-like popularity (``ITEM_EXPONENT``); duplicates are removed, so the count is
  met by drawing in rounds;
- KG: every item is the head of one triple (so RecBole's KG filter keeps every item);
  the other heads and all tails are drawn over all entities with Zipf-like weights
  (``ENTITY_EXPONENT``), relations with Zipf-like frequencies; self-loops and
  duplicates are removed the same way;
- ``.link`` maps item ``i`` to entity ``e<i>``: the items are the first entities.

Written as ``<name>.inter`` (user_id, item_id), ``<name>.kg`` and ``<name>.link``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import pandas as pd

from recbole_kgin.common.atomic import replacing
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.common.resources import user_cache_dir

USER_EXPONENT = 0.8
ITEM_EXPONENT = 1.0
ENTITY_EXPONENT = 1.0
RELATION_EXPONENT = 1.0
SEED = 2021


@dataclass(frozen=True)
class Shape:
    users: int
    items: int
    interactions: int
    entities: int  # items included
    relations: int
    triples: int

    def scaled(self, scale: float) -> "Shape":
        """Every count times ``scale`` (relations kept; below 1 a share, above 1 a multiple),
        at least 2 users and items."""
        if scale == 1.0:
            return self
        size = lambda n: max(2, int(round(n * scale)))  # noqa: E731
        items = size(self.items)
        return Shape(size(self.users), items, size(self.interactions), max(items + 1, size(self.entities)),
                     self.relations, size(self.triples))


# KGIN paper, Table 1.
PAPER_SHAPES: Dict[str, Shape] = {
    "amazon-book": Shape(70_679, 24_915, 847_733, 88_572, 39, 2_557_746),
    "last-fm": Shape(23_566, 48_123, 3_034_796, 58_266, 9, 464_567),
    "alibaba-ifashion": Shape(114_737, 30_040, 1_781_093, 59_156, 51, 279_155),
}


def zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities over ``n`` ids, ``(rank + 1) ** -exponent`` with the ranks shuffled."""
    weights = (np.arange(1, n + 1, dtype=np.float64)) ** -exponent
    return rng.permutation(weights / weights.sum())


def _unique_pairs(
    fixed: np.ndarray, target: int, draw: Callable[[int], np.ndarray], n_right: int, rng: np.random.Generator
) -> np.ndarray:
    """``target`` distinct (left, right) pairs: all ``fixed`` ones, then drawn ones.

    ``draw(k)`` returns k candidate pairs as a (k, 2) int64 array; rounds draw what
    is missing (plus 10%) until ``target`` distinct pairs exist.
    """
    keys = np.unique(fixed[:, 0] * n_right + fixed[:, 1])
    while len(keys) < target:
        missing = target - len(keys)
        pairs = draw(int(missing * 1.1) + 16)
        drawn = np.setdiff1d(np.unique(pairs[:, 0] * n_right + pairs[:, 1]), keys)
        keys = np.concatenate([keys, rng.permutation(drawn)[:missing]])
    keys = np.sort(keys)
    return np.stack([keys // n_right, keys % n_right], axis=1)


def generate(shape: Shape, seed: int = SEED) -> Tuple[np.ndarray, np.ndarray]:
    """(interactions (n, 2) user, item; triples (m, 3) head, relation, tail)."""
    if shape.interactions < 2 * shape.users or shape.interactions > shape.users * shape.items // 2:
        raise UserInputError(f"synthetic shape {shape}: interactions must be in [2 x users, users x items / 2]")
    rng = np.random.default_rng(seed)
    user_p = zipf_weights(shape.users, USER_EXPONENT, rng)
    item_p = zipf_weights(shape.items, ITEM_EXPONENT, rng)
    first = np.stack([np.repeat(np.arange(shape.users), 2), rng.choice(shape.items, 2 * shape.users, p=item_p)], axis=1)
    interactions = _unique_pairs(
        first,
        shape.interactions,
        lambda k: np.stack([rng.choice(shape.users, k, p=user_p), rng.choice(shape.items, k, p=item_p)], axis=1),
        shape.items,
        rng,
    )

    entity_p = zipf_weights(shape.entities, ENTITY_EXPONENT, rng)
    relation_p = zipf_weights(shape.relations, RELATION_EXPONENT, rng)
    n_right = shape.relations * shape.entities  # a triple as (head, relation * N + tail)

    def draw_triples(k: int, heads: Optional[np.ndarray] = None) -> np.ndarray:
        heads = rng.choice(shape.entities, k, p=entity_p) if heads is None else heads
        tails = rng.choice(shape.entities, k, p=entity_p)
        tails = np.where(tails == heads, (tails + 1) % shape.entities, tails)  # no self-loops
        relations = rng.choice(shape.relations, k, p=relation_p)
        return np.stack([heads, relations * shape.entities + tails], axis=1)

    item_triples = draw_triples(shape.items, np.arange(shape.items))
    pairs = _unique_pairs(item_triples, shape.triples, draw_triples, n_right, rng)
    triples = np.stack([pairs[:, 0], pairs[:, 1] // shape.entities, pairs[:, 1] % shape.entities], axis=1)
    return interactions, triples


def write_atomic_files(folder: Path, name: str, interactions: np.ndarray, triples: np.ndarray, n_items: int) -> None:
    """``<name>.inter``, ``.kg``, ``.link`` in ``folder`` (tokens u<i>, i<i>, e<i>, r<i>),
    each through a temporary file and a rename."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = {
        "inter": pd.DataFrame({"user_id:token": "u" + pd.Series(interactions[:, 0]).astype(str),
                               "item_id:token": "i" + pd.Series(interactions[:, 1]).astype(str)}),
        "kg": pd.DataFrame({"head_id:token": "e" + pd.Series(triples[:, 0]).astype(str),
                            "relation_id:token": "r" + pd.Series(triples[:, 1]).astype(str),
                            "tail_id:token": "e" + pd.Series(triples[:, 2]).astype(str)}),
        "link": pd.DataFrame({"item_id:token": "i" + pd.Series(np.arange(n_items)).astype(str),
                              "entity_id:token": "e" + pd.Series(np.arange(n_items)).astype(str)}),
    }
    for suffix, table in tables.items():
        path = folder / f"{name}.{suffix}"
        with replacing(path) as temporary:
            table.to_csv(temporary, sep="\t", index=False)


def default_root() -> Path:
    """Where generated datasets go unless a folder is given: the user's cache."""
    return user_cache_dir("synthetic")


MAX_SCALE = 16.0  # 16x the Amazon-Book shape: 13.6M interactions, 40.9M triples


def dataset_name(shape_name: str, scale: float) -> str:
    return f"synthetic-{shape_name}" + ("" if scale == 1.0 else f"-x{scale:g}")


def ensure_synthetic(shape_name: str, scale: float = 1.0, root: Optional[str] = None) -> Tuple[str, Path]:
    """Generate ``shape_name`` at ``scale`` under ``root`` unless its files are there;
    returns (dataset name, data_path folder holding ``<name>/``)."""
    if shape_name not in PAPER_SHAPES:
        raise UserInputError(f"unknown synthetic shape '{shape_name}': one of {', '.join(PAPER_SHAPES)}")
    if not 0 < scale <= MAX_SCALE:
        raise UserInputError(f"--scale {scale}: must be in (0, {MAX_SCALE:g}]")
    name = dataset_name(shape_name, scale)
    data_path = Path(root) if root else default_root()
    folder = data_path / name
    if not all((folder / f"{name}.{suffix}").is_file() for suffix in ("inter", "kg", "link")):
        shape = PAPER_SHAPES[shape_name].scaled(scale)
        interactions, triples = generate(shape)
        write_atomic_files(folder, name, interactions, triples, shape.items)
    return name, data_path
