"""SHA-256 of a file, read in blocks of 1 MiB (datasets can be larger than memory wants),
and of a dataset's atomic files, as checkpoints carry them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Union


def file_sha256(path: Union[str, Path]) -> str:
    """The hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


ATOMIC_SUFFIXES = (".inter", ".kg", ".link", ".item", ".user", ".net")


def data_files(config: Any) -> List[Path]:
    """The dataset's atomic files: ``<data_path>/<dataset>[.<split>].<suffix>``, sorted."""
    folder, prefix = Path(config["data_path"]), f"{config['dataset']}."
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.iterdir()
        if path.is_file() and path.name.startswith(prefix) and path.suffix in ATOMIC_SUFFIXES
    )  # fmt: skip


def data_checksums(config: Any) -> Dict[str, str]:
    """File name -> SHA-256 of each of :func:`data_files`, stored in checkpoints."""
    return {path.name: file_sha256(path) for path in data_files(config)}
