"""Readable item names for explanations, from the title column of ``<dataset>.item``.

RecBole loads ``.item`` only when ``load_col`` asks for it, and KG models do not; an
explanation reads just the two columns it needs, once, straight from the file. Item
ids stay the reference (``item 2571 (Matrix, The)``); datasets without a ``.item``
file, or without a title-like column, keep bare ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

NAME_FIELDS = ("movie_title", "title", "item_name", "name", "artist_name", "book_title")


def read_item_names(
    folder: str, dataset: str, item_field: str, separator: str = "\t", encoding: str = "utf-8"
) -> Dict[str, str]:
    """Item token -> name from ``<folder>/<dataset>.item``'s first column named in
    :data:`NAME_FIELDS`; ``{}`` when there is no such file or column."""
    path = Path(folder) / f"{dataset}.item"
    if not path.is_file():
        return {}
    with open(path, "r", encoding=encoding, errors="replace") as handle:
        header = [field.split(":")[0] for field in handle.readline().rstrip("\r\n").split(separator)]
        name_field = next((field for field in NAME_FIELDS if field in header), None)
        if item_field not in header or name_field is None:
            return {}
        item_column, name_column = header.index(item_field), header.index(name_field)
        names = {}
        for line in handle:
            values = line.rstrip("\r\n").split(separator)
            if len(values) > max(item_column, name_column) and values[name_column]:
                names[values[item_column]] = values[name_column]
    return names
