"""Convert the KGAT/KGIN text format into RecBole atomic files.

    python run_recbole_kgin.py --convert path/to/last-fm --dataset last-fm [--output dataset] [--force]

Input (the format of the KGAT and KGIN repositories' ``data/<name>/`` folders):

- ``train.txt``, ``test.txt``: one line per user, ``user item item ...`` (remapped ids);
- ``kg_final.txt``: one triple per line, ``head relation tail``; items are the
  entities ``0..n_items-1``;
- optional ``user_list.txt``, ``item_list.txt``, ``entity_list.txt``,
  ``relation_list.txt``: a header line, then ``org_id remap_id [...]``. When present,
  the atomic files carry the original ids (user ids, item ids, Freebase entity ids,
  relation names); otherwise the remapped numbers.

Output, in ``<output>/<dataset>/``: ``<dataset>.train.inter``, ``.valid.inter``,
``.test.inter``, ``.kg``, ``.link`` and ``<dataset>.yaml``, a property file that
reproduces the split: RecBole's ``benchmark_filename: [train, valid, test]``. The
test set is ``test.txt`` as given. The format has no validation set (the authors
early-stop on test), so the closest honest equivalent is used: a seeded
``valid_ratio`` share of each user's training items (at least one per user with two
or more, never all of them) becomes the validation set.

An existing dataset folder is never overwritten without ``force``; the files are
written to a temporary folder that is renamed into place at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from recbole_kgin.common.errors import UserInputError

Interactions = List[Tuple[int, int]]


def _read_user_items(path: Path) -> Interactions:
    if not path.is_file():
        raise UserInputError(f"{path}: not found; a KGAT-format folder has train.txt, test.txt and kg_final.txt")
    pairs: Interactions = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            cells = line.split()
            if not cells:
                continue
            try:
                user, *items = (int(cell) for cell in cells)
            except ValueError:
                raise UserInputError(
                    f"{path.name}:{number}: expected 'user item item ...' as integers, got {line.strip()[:60]!r}"
                ) from None
            pairs += [(user, item) for item in items]
    return pairs


def _read_triples(path: Path) -> List[Tuple[int, int, int]]:
    if not path.is_file():
        raise UserInputError(f"{path}: not found; a KGAT-format folder has train.txt, test.txt and kg_final.txt")
    triples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            cells = line.split()
            if not cells:
                continue
            if len(cells) != 3:
                raise UserInputError(f"{path.name}:{number}: expected 'head relation tail', got {line.strip()[:60]!r}")
            try:
                triples.append(tuple(int(cell) for cell in cells))
            except ValueError:
                raise UserInputError(f"{path.name}:{number}: ids must be integers, got {line.strip()[:60]!r}") from None
    return triples


def _read_names(path: Path, column: int = 0) -> Dict[int, str]:
    """remap id -> original id from an optional ``*_list.txt`` (header skipped)."""
    if not path.is_file():
        return {}
    names = {}
    with open(path, encoding="utf-8") as handle:
        next(handle, None)
        for number, line in enumerate(handle, start=2):
            cells = line.split()
            if not cells:
                continue
            try:
                names[int(cells[1])] = cells[column]
            except (IndexError, ValueError):
                raise UserInputError(f"{path.name}:{number}: expected 'org_id remap_id ...', got {line.strip()[:60]!r}") from None
    return names


def split_validation(train: Interactions, ratio: float, seed: int) -> Tuple[Interactions, Interactions]:
    """Per user with ``n >= 2`` training items, move ``max(1, round(ratio * n))`` of
    them (never all) to validation, chosen with a seeded generator."""
    rng = np.random.default_rng(seed)
    by_user: Dict[int, List[int]] = {}
    for user, item in train:
        by_user.setdefault(user, []).append(item)
    kept, held = [], []
    for user in sorted(by_user):
        items = by_user[user]
        order = rng.permutation(len(items))
        n_valid = min(max(1, int(round(ratio * len(items)))), len(items) - 1)
        held += [(user, items[i]) for i in sorted(order[:n_valid])]
        kept += [(user, items[i]) for i in sorted(order[n_valid:])]
    return kept, held


def _write(path: Path, header: List[str], rows) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            handle.write("\t".join(str(value) for value in row) + "\n")
            count += 1
    return count


def convert_kgat(
    source: str,
    dataset: str,
    output: str = "dataset",
    force: bool = False,
    valid_ratio: float = 0.1,
    seed: int = 2020,
) -> Dict[str, int]:
    """Write ``<output>/<dataset>/`` from the KGAT-format folder ``source``; returns
    the number of rows written per file."""
    if not 0 < valid_ratio < 1:
        raise UserInputError(f"--valid_ratio={valid_ratio}: expected a share in (0, 1), e.g. 0.1")
    src = Path(source)
    if not src.is_dir():
        raise UserInputError(f"--convert {source}: not a folder; pass the KGAT-format folder (train.txt, test.txt, kg_final.txt)")
    target = Path(output) / dataset
    if target.exists() and not force:
        raise UserInputError(f"{target} already exists: pass --force to replace it, or choose another --dataset/--output")

    train = _read_user_items(src / "train.txt")
    test = _read_user_items(src / "test.txt")
    triples = _read_triples(src / "kg_final.txt")
    users = _read_names(src / "user_list.txt")
    items = _read_names(src / "item_list.txt")
    entities = _read_names(src / "entity_list.txt")
    relations = _read_names(src / "relation_list.txt")
    item_ids = sorted({i for _, i in train + test})

    def user_token(u: int) -> str:
        return users.get(u, str(u))

    def item_token(i: int) -> str:
        return items.get(i, str(i))

    def entity_token(e: int) -> str:
        return entities.get(e, f"e{e}")

    def relation_token(r: int) -> str:
        return relations.get(r, f"r{r}")

    kept, held = split_validation(train, valid_ratio, seed)
    Path(output).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dataset}.", dir=output))
    try:
        inter_header = ["user_id:token", "item_id:token"]
        counts = {}
        for part, pairs in (("train", kept), ("valid", held), ("test", test)):
            name = f"{dataset}.{part}.inter"
            counts[name] = _write(staging / name, inter_header, ((user_token(u), item_token(i)) for u, i in pairs))
        counts[f"{dataset}.kg"] = _write(
            staging / f"{dataset}.kg",
            ["head_id:token", "relation_id:token", "tail_id:token"],
            ((entity_token(h), relation_token(r), entity_token(t)) for h, r, t in triples),
        )
        counts[f"{dataset}.link"] = _write(
            staging / f"{dataset}.link",
            ["item_id:token", "entity_id:token"],
            ((item_token(i), entity_token(i)) for i in item_ids),
        )
        (staging / f"{dataset}.yaml").write_text(_property_file(source, dataset, valid_ratio, seed), encoding="utf-8")
        _replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return counts


def _property_file(source: str, dataset: str, valid_ratio: float, seed: int) -> str:
    return (
        f"# {dataset}: converted by recbole-kgin from the KGAT/KGIN-format folder {source}.\n"
        f"# Test = its test.txt; validation = {valid_ratio:g} of each user's train.txt items (seed {seed}).\n"
        f"# Use: python run_recbole_kgin.py --dataset {dataset} --config_files <this file>\n"
        "benchmark_filename: [train, valid, test]\n"
        "load_col:\n"
        "  inter: [user_id, item_id]\n"
        "  kg: [head_id, relation_id, tail_id]\n"
        "  link: [item_id, entity_id]\n"
        "kg_reverse_r: True\n"
        "eval_args:\n"
        "  group_by: user\n"
        "  order: RO\n"
        "  mode: full\n"
    )


def _replace(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``; an existing ``target`` (force) is swapped out
    first, into a fresh folder beside it (a name no other converter uses), and removed
    only once the new folder is in place."""
    backup: Optional[Path] = None
    if target.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced.", dir=target.parent))
        os.rename(target, backup / target.name)
    os.rename(staging, target)
    if backup is not None:
        shutil.rmtree(backup)
