"""Claims on the units of work of a comparison, so that several processes share one
output folder: start the same command on every core and each unit runs once.

A unit (one model's search, one seed run) is claimed with an exclusive ``flock`` on
``<output>/claims/<unit>.lock``. The kernel drops the lock when its process ends, so a
killed process leaves no stale claim: the next process to ask gets the unit and resumes
it from the records on disk (Ray's, or the seed run's last checkpoint). A process that
finds a unit claimed moves on to the others and comes back to it at the end, waiting
until the other process lets go, then reads the finished result from the cache.

Where ``fcntl`` is missing (Windows) every claim is granted: one process per folder.
"""

from __future__ import annotations

from contextlib import contextmanager
from logging import getLogger
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:
    fcntl = None


@contextmanager
def claim(folder: Path, unit: str, wait: bool) -> Iterator[bool]:
    """Hold ``unit`` for the block: yields True once it is this process's, False at once
    when another process holds it and ``wait`` is False (with ``wait`` True it blocks
    until the other process lets go)."""
    if fcntl is None:
        yield True
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{unit}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                getLogger().info(f"{unit}: another process is on it; coming back to it at the end")
                yield False
                return
            getLogger().info(f"{unit}: waiting for the other process that is on it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield True  # closing the handle lets go
