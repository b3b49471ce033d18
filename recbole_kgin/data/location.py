"""Where a dataset's atomic files are looked up, and what must be there.

Order (first folder holding every expected file wins):
1. ``<data_path>/<dataset>`` when ``data_path`` was given (config file, dict or CLI);
2. ``./dataset/<dataset>`` (RecBole's default data folder, relative to the working dir);
3. for ``ml-100k`` only, the copy embedded in the recbole wheel (no download).

A dataset found nowhere raises :class:`UserInputError` naming the folders tried and
the files expected, instead of RecBole's interactive download prompt. A run reads the KG
files where :func:`reads_kg` says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

import recbole
from recbole.utils import ModelType

from recbole_kgin.common.errors import UserInputError

EMBEDDED_DATASET = "ml-100k"
EMBEDDED_PATH = Path(recbole.__file__).resolve().parent / "dataset_example" / EMBEDDED_DATASET
DEFAULT_DATA_ROOT = Path("dataset")


def expected_files(
    dataset: str, knowledge: bool, benchmark_filename: Optional[Sequence[str]] = None
) -> List[str]:
    """File names a run needs: the interactions (or one per benchmark split), plus
    ``.kg`` and ``.link`` for knowledge-aware models."""
    if benchmark_filename:
        names = [f"{dataset}.{part}.inter" for part in benchmark_filename]
    else:
        names = [f"{dataset}.inter"]
    if knowledge:
        names += [f"{dataset}.kg", f"{dataset}.link"]
    return names


def candidate_folders(dataset: str, data_path: Optional[str]) -> List[Path]:
    """The folders tried, in order."""
    folders = []
    if data_path:
        folders.append(Path(data_path) / dataset)
    folders.append(DEFAULT_DATA_ROOT / dataset)
    if dataset == EMBEDDED_DATASET:
        folders.append(EMBEDDED_PATH)
    unique = []
    for folder in folders:
        if folder not in unique:
            unique.append(folder)
    return unique


def resolve_dataset_folder(
    dataset: str,
    data_path: Optional[str],
    knowledge: bool,
    benchmark_filename: Optional[Sequence[str]] = None,
) -> str:
    """Absolute path of the first candidate folder that holds every expected file."""
    needed = expected_files(dataset, knowledge, benchmark_filename)
    tried = candidate_folders(dataset, data_path)
    for folder in tried:
        if all((folder / name).is_file() for name in needed):
            return os.path.abspath(folder)
    raise UserInputError(
        f"dataset '{dataset}' not found: looked in {', '.join(str(f) for f in tried)} "
        f"for {', '.join(needed)}; put the atomic files in ./dataset/{dataset}/ "
        f"or pass --data_path=<folder that contains {dataset}/>"
    )


def reads_kg(config) -> bool:
    """Whether a run reads the KG files: knowledge-aware models, and any model with
    ``kg_items_only: True`` (a no-KG model on the KG-linked items only, as the
    knowledge-aware models see them; the comparison sets it)."""
    return config["MODEL_TYPE"] == ModelType.KNOWLEDGE or bool(config["kg_items_only"])
