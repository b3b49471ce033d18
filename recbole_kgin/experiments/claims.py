"""Claims on the units of work of a comparison, so that several processes share one
output folder: start the same command on every core and each unit runs once.

A unit (one model's search, one seed run) is claimed with an exclusive lock on
``<output>/claims/<unit>.lock`` (the ``filelock`` package: an ``flock`` on POSIX). The
kernel drops the lock when its process ends, so a killed process leaves no stale claim:
the next process to ask gets the unit and resumes it from the records on disk (Ray's,
or the seed run's last checkpoint). A process that finds a unit claimed moves on to
the others and comes back to it at the end, waiting until the other process lets go,
then reads the finished result from the cache. It waits ``timeout`` seconds at most
(``--claim_timeout``, default a day): a holder that hangs ends the wait with one line
naming the unit and its lock file, as does a lock file this user may not open (or a
folder in its place).
"""

from __future__ import annotations

from contextlib import contextmanager
from logging import getLogger
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from recbole_kgin.common.errors import UserInputError

CLAIM_TIMEOUT = 24 * 3600.0
"""Seconds a process waits for a unit that another process holds."""


@contextmanager
def claim(folder: Path, unit: str, wait: bool, timeout: float = CLAIM_TIMEOUT) -> Iterator[bool]:
    """Hold ``unit`` for the block: yields True once it is this process's, False at once
    when another process holds it and ``wait`` is False (with ``wait`` True it blocks
    until the other process lets go, ``timeout`` seconds at most, then raises
    :class:`UserInputError`)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"cannot create the claims folder {folder} ({error.strerror}): check --output") from None
    path = folder / f"{unit}.lock"
    lock = FileLock(path)
    try:
        held = _try(lock)
        if not held and wait:
            getLogger().info(f"{unit}: waiting for the other process that is on it")
            lock.acquire(timeout=timeout)
            held = True
    except Timeout:
        raise UserInputError(
            f"{unit}: waited {timeout:g} s for the process that holds {path}; if it hangs, end it and run the "
            f"command again (or raise --claim_timeout)"
        ) from None
    except OSError as error:  # PermissionError: another user's file; IsADirectoryError: a folder there
        hint = "another user's file?" if isinstance(error, PermissionError) else "not a file of yours?"
        raise UserInputError(
            f"{unit}: cannot lock {path} ({error.strerror}; {hint}): use an --output folder of your own"
        ) from None
    if not held:
        getLogger().info(f"{unit}: another process is on it; coming back to it at the end")
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def _try(lock: FileLock) -> bool:
    """Take ``lock`` if it is free; whether it was."""
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    return True
