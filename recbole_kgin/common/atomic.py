"""Files replaced whole: a reader, a kill or a second writer never sees a torn file.

Each write goes to a temporary file of its own in the target's folder (a name no
other writer uses, created exclusively), is flushed to disk, then renamed over the
target; the rename is atomic, so the target is always one writer's complete file.
A write that fails leaves the target as it was and removes its temporary file.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def fsync_folder(folder: PathLike) -> None:
    """Flush ``folder``'s entries (names created, renamed or removed in it) to disk; does
    nothing where a folder cannot be opened (e.g. on Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # not supported here (e.g. Windows): the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_all(path: PathLike) -> None:
    """Flush ``path`` to disk: a file's content, or a folder's files and subfolders all
    the way down, then its own entries (symbolic links are not followed)."""
    path = Path(path)
    if path.is_symlink():
        return
    if path.is_dir():
        for entry in path.iterdir():
            fsync_all(entry)
        fsync_folder(path)
    elif path.is_file():
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())


@contextmanager
def replacing(path: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; write it in the block. When the
    block ends, the file is synced to disk and renamed to ``path``; when the block
    raises, the temporary file is removed and ``path`` is left untouched."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield temporary
        fsync_all(temporary)
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    fsync_folder(target.parent)


def write_text_atomically(path: PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) as :func:`replacing` does."""
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
