"""A small KG dataset in RecBole atomic files, for fast, exact tests."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence, Tuple

import numpy as np


def write_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            handle.write("\t".join(str(value) for value in row) + "\n")


def toy_triples() -> list:
    """Items i0..i11 with a genre and a director; directors have a country."""
    triples = []
    for item in range(12):
        triples.append((f"e_i{item}", "film.genre", f"genre{item % 3}"))
        triples.append((f"e_i{item}", "film.director", f"director{item % 4}"))
    for director in range(4):
        triples.append((f"director{director}", "person.country", f"country{director % 2}"))
    triples.append(("e_i0", "film.genre", "genre0"))  # a duplicate triple
    return triples


def write_toy_dataset(folder: Path, n_users: int = 20, seed: int = 0) -> Tuple[int, int]:
    """Write toy.inter/.kg/.link into ``folder``; returns (n_users, n_items)."""
    rng = np.random.default_rng(seed)
    name = folder.name
    inter = []
    for user in range(n_users):
        liked = rng.choice(12, size=6, replace=False)
        inter += [(f"u{user}", f"i{item}", float(rng.integers(1, 6))) for item in liked]
    write_atomic(folder / f"{name}.inter", ["user_id:token", "item_id:token", "rating:float"], inter)
    write_atomic(folder / f"{name}.kg", ["head_id:token", "relation_id:token", "tail_id:token"], toy_triples())
    write_atomic(folder / f"{name}.link", ["item_id:token", "entity_id:token"], [(f"i{i}", f"e_i{i}") for i in range(12)])
    return n_users, 12


N_ITEMS, GROUP_SIZE = 40, 30


def write_colors(folder, n_shapes=10):
    """Items 0-19 are red, 20-39 blue; every item also has one of 10 shapes, spread
    evenly over both colours. Users 0-29 like red items, 30-59 blue ones: colour
    alone separates the groups."""
    rng = np.random.default_rng(0)
    triples = []
    for i in range(N_ITEMS):
        triples.append((f"e{i}", "color", "red" if i < 20 else "blue"))
        triples.append((f"e{i}", "shape", f"shape{i % n_shapes}"))
    inter = []
    for user in range(2 * GROUP_SIZE):
        pool = range(0, 20) if user < GROUP_SIZE else range(20, 40)
        inter += [(f"u{user}", f"i{i}") for i in rng.choice(list(pool), size=10, replace=False)]
    write_atomic(folder / "colors.inter", ["user_id:token", "item_id:token"], inter)
    write_atomic(folder / "colors.kg", ["head_id:token", "relation_id:token", "tail_id:token"], triples)
    write_atomic(folder / "colors.link", ["item_id:token", "entity_id:token"], [(f"i{i}", f"e{i}") for i in range(N_ITEMS)])
    names = [(f"i{i}", f"{'red' if i < 20 else 'blue'} thing {i}", i % n_shapes) for i in range(N_ITEMS)]
    write_atomic(folder / "colors.item", ["item_id:token", "item_name:token_seq", "shape:token"], names)
    history = {}
    for user, item in inter:
        history.setdefault(user, set()).add(item)
    return history


def write_toy_split(folder: Path, n_users: int = 20, seed: int = 0) -> None:
    """The toy dataset with a fixed split: ``toy.train.inter`` (4 items per user),
    ``.valid.inter`` and ``.test.inter`` (1 each), for ``benchmark_filename``; the
    reference model reads the training interactions from the file itself."""
    rng = np.random.default_rng(seed)
    name = folder.name
    parts = {"train": [], "valid": [], "test": []}
    for user in range(n_users):
        liked = [f"i{item}" for item in rng.choice(12, size=6, replace=False)]
        for part, items in (("train", liked[:4]), ("valid", liked[4:5]), ("test", liked[5:])):
            parts[part] += [(f"u{user}", item) for item in items]
    for part, rows in parts.items():
        write_atomic(folder / f"{name}.{part}.inter", ["user_id:token", "item_id:token"], rows)
    write_atomic(folder / f"{name}.kg", ["head_id:token", "relation_id:token", "tail_id:token"], toy_triples())
    write_atomic(folder / f"{name}.link", ["item_id:token", "entity_id:token"], [(f"i{i}", f"e_i{i}") for i in range(12)])
