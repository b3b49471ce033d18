"""Files and folders written whole or not at all, never over a user's output unasked.

:func:`written_whole` hands out a temporary path beside the target (same folder, hence
the same file system) and renames it into place only when the block that fills it
ends without an error, synced to disk before the rename (and its folder after), so a
crash leaves the old target or the whole new one; on an error (or Ctrl-C) the
temporary path is removed and the target is as it was. An existing target is replaced
only with ``force`` (``--force``); an empty folder counts as free.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from recbole_kgin.common.atomic import fsync_all, fsync_folder
from recbole_kgin.common.errors import UserInputError


def refuse_to_overwrite(target: Path, force: bool, folder: bool) -> None:
    """Raise a one-line :class:`UserInputError` when ``target`` holds something that
    writing it would replace and ``force`` is false, or is of the other kind (a
    folder where a file goes, or the reverse)."""
    if not target.exists():
        return
    if target.is_dir() != folder:
        kind = "a folder" if target.is_dir() else "a file"
        raise UserInputError(f"--output '{target}' is {kind}: name a {'folder' if folder else 'file'} there instead")
    if folder and not any(target.iterdir()):
        return
    if not force:
        raise UserInputError(f"--output '{target}' exists: pass --force to replace it, or choose another --output")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


@contextmanager
def written_whole(target: Path, force: bool, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary file (or, with ``folder``, an empty temporary folder) beside
    ``target``; it is synced to disk and becomes ``target`` when the block completes, and
    is removed if the block raises. Checks :func:`refuse_to_overwrite` before and again
    at the rename."""
    target = Path(target)
    refuse_to_overwrite(target, force, folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    if folder:
        temporary.mkdir()
    try:
        yield temporary
        refuse_to_overwrite(target, force, folder)
        fsync_all(temporary)
        if folder and target.exists():  # a folder cannot be renamed over a non-empty one
            old = target.parent / f".{target.name}.{uuid.uuid4().hex}.old"
            os.replace(target, old)
            os.replace(temporary, target)
            _remove(old)
        else:
            os.replace(temporary, target)
    except BaseException:
        _remove(temporary)
        raise
    fsync_folder(target.parent)
