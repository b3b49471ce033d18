"""A dataset on every node of a Ray cluster, checked before any trial trains.

A search attached to a cluster (``--address``) runs trials on nodes that may not hold
``<data_path>/<dataset>/``, or hold other files under that path. Two ways to get the
data to them, both checked on every alive node before the search starts:

- ``ship`` (default on a cluster): the driver reads the dataset's atomic files
  (``<dataset>.*`` in its folder) into Ray's object store; each node writes them once
  into a folder of the user's own, keyed by their checksums
  (``<tempdir>/recbole-kgin-<uid>/datasets/<digest>/<dataset>/``), and trials read
  from there;
- ``shared``: every node must read the same files at the driver's absolute path
  (shared storage).

Either way each node compares every file's size and SHA-256 with the driver's; a node
where a file is missing or differs stops the search with one line naming the node, the
path and the fix. Trials run the same check (cheap) before they train, so a node that
joins later is covered too.

The shipped copy is safe from other users of a node and from concurrent trials:
``<tempdir>/recbole-kgin-<uid>`` is created with mode 0700, and an existing one is used
only if it is a real folder (no symbolic link is followed), owned by the user and closed
to others, so no other user can plant, link or edit anything in it. A copy is written
into a fresh staging folder, synced, checked and renamed into place, under a lock
(one writer per dataset and node); a checked copy is never removed, since trials may be
reading it; a copy that fails the check, or a symbolic link in its place, is set aside
and removed (a link is never followed). A failed write (a full disk, say) removes its
staging folder and becomes the node's one-line problem; a staging folder left by a
writer killed mid-copy is removed by a later one that holds the lock, once nothing has
written to it for :data:`STALE_AFTER` seconds.

Ray's own ``runtime_env`` (``working_dir``) also ships a folder to every node, but it is
set once per Ray job (a search attached to a Ray the caller started cannot add it),
becomes every worker's working folder, and caps the upload at Ray's gRPC message size
(500 MiB in Ray 2.6); the object store has none of these limits.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from filelock import FileLock, Timeout

from recbole_kgin.data.checksum import file_sha256
from recbole_kgin.common.errors import UserInputError

SHIP, SHARED = "ship", "shared"
MODES = (SHIP, SHARED)
WRITE_TIMEOUT = 600.0
"""Seconds a trial waits for another process on its node that writes the same dataset."""
STALE_AFTER = 3600.0
"""Seconds after which a staging folder nothing writes to any more is a killed writer's."""


@dataclass(frozen=True)
class DatasetFiles:
    """A dataset's atomic files as the driver sees them: ``files`` maps each file name
    to (size in bytes, SHA-256); ``digest`` hashes them all."""

    name: str
    folder: str
    files: Tuple[Tuple[str, int, str], ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256(repr(sorted(self.files)).encode()).hexdigest()[:16]


def describe(folder: Path, dataset: str) -> DatasetFiles:
    """The atomic files ``<dataset>.*`` in ``folder`` (absolute), with sizes and checksums."""
    folder = folder.resolve()
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.startswith(f"{dataset}."))
    if not names:
        raise UserInputError(f"{folder}: no atomic files named {dataset}.* to send to the cluster's nodes")
    return DatasetFiles(dataset, str(folder), tuple((name, (folder / name).stat().st_size, file_sha256(folder / name)) for name in names))


def problem_with(folder: Path, expected: DatasetFiles) -> Optional[str]:
    """What differs between ``folder`` and ``expected`` (first file only), or None."""
    for name, size, checksum in expected.files:
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size} bytes, the driver's {size}"
        if file_sha256(path) != checksum:
            return f"{path} differs from the driver's file (SHA-256)"
    return None


def read_payload(expected: DatasetFiles) -> Dict[str, bytes]:
    """The files' bytes, to put into Ray's object store once."""
    return {name: (Path(expected.folder) / name).read_bytes() for name, _, _ in expected.files}


def private_folder() -> Path:
    """This user's own folder in the temporary folder, ``recbole-kgin-<uid>``: created
    with mode 0700, or, if it exists, checked to be a real folder (not a symbolic
    link), owned by this user and closed to others; :class:`UserInputError` otherwise."""
    root = Path(tempfile.gettempdir()) / f"recbole-kgin-{os.getuid()}"
    fix = "set TMPDIR to a folder of your own, or have it removed"
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    except OSError as error:
        raise UserInputError(f"cannot create {root} ({error.strerror}); {fix}") from None
    try:
        descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:  # ELOOP: a symbolic link; ENOTDIR: a file
        raise UserInputError(f"{root} is not a folder of yours ({error.strerror}); {fix}") from None
    try:
        info = os.fstat(descriptor)
    finally:
        os.close(descriptor)
    if info.st_uid != os.getuid():
        raise UserInputError(f"{root} belongs to user id {info.st_uid}, not to you ({os.getuid()}); {fix}")
    if info.st_mode & 0o077:
        raise UserInputError(
            f"{root} is open to other users (mode {stat.S_IMODE(info.st_mode):o}); remove it and run again"
        )
    return root


def local_root(expected: DatasetFiles) -> Path:
    """This node's folder for a shipped dataset (its ``data_path``), in :func:`private_folder`."""
    return private_folder() / "datasets" / expected.digest


def write_local_copy(expected: DatasetFiles, fetch: Callable[[], Dict[str, bytes]]) -> Tuple[Optional[str], Path]:
    """Write the shipped files (``fetch()``, called only when needed) on this node unless
    a checked copy is there; returns (problem or None, the ``data_path`` to use).
    Concurrent trials on one node take turns; none removes a copy that passed the
    check (see the module note)."""
    try:
        root = local_root(expected)
    except UserInputError as error:
        return str(error), Path(tempfile.gettempdir())
    target = root / expected.name
    lock = root / f".{expected.name}.lock"
    if _is_checked_copy(target, expected):
        try:
            with FileLock(lock, timeout=0):  # only when no writer holds it
                _remove_stale_staging(root, expected.name)
        except (Timeout, OSError):
            pass
        return None, root
    try:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(lock, timeout=WRITE_TIMEOUT):
            _remove_stale_staging(root, expected.name)
            if not _is_checked_copy(target, expected):  # no other trial wrote it meanwhile
                _write_copy(root, target, fetch())
    except Timeout:
        return f"another process has been writing {target} for {WRITE_TIMEOUT:g} s; end it and run again", root
    except OSError as error:
        return f"cannot write the shipped dataset to {root} ({error.strerror or error}); free space there or set TMPDIR", root
    return problem_with(target, expected), root


def _is_checked_copy(target: Path, expected: DatasetFiles) -> bool:
    """Whether ``target`` is a real folder (not a symbolic link) holding the expected files."""
    return not target.is_symlink() and target.is_dir() and problem_with(target, expected) is None


def _remove_stale_staging(root: Path, name: str) -> None:
    """Remove the staging folders ``.<name>.*`` in ``root`` (left by writers killed
    mid-copy) that nothing has written to for :data:`STALE_AFTER` seconds; the caller
    holds the dataset's lock."""
    cutoff = time.time() - STALE_AFTER
    for entry in root.iterdir():
        if not entry.name.startswith(f".{name}.") or entry.is_symlink() or not entry.is_dir():
            continue  # the lock file, or not a staging folder
        try:
            touched = max([entry.lstat().st_mtime, *(inner.lstat().st_mtime for inner in entry.rglob("*"))])
        except OSError:  # removed meanwhile
            continue
        if touched < cutoff:
            shutil.rmtree(entry, ignore_errors=True)


def _write_copy(root: Path, target: Path, payload: Dict[str, bytes]) -> None:
    """Write ``payload`` to a staging folder in ``root``, sync it and rename it to
    ``target``; whatever is already at ``target`` (a copy that failed the check, a
    symbolic link) is set aside and removed first, never followed. The staging folder is
    removed if anything fails."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        for name, content in payload.items():
            with open(staging / name, "xb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        if os.path.lexists(target):
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.broken.", dir=root))
            os.replace(target, aside / target.name)
            shutil.rmtree(aside, ignore_errors=True)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def prepare_here(
    expected: DatasetFiles, mode: str, fetch: Callable[[], Dict[str, bytes]]
) -> Tuple[Optional[str], str]:
    """On the calling node: (problem or None, the ``data_path`` its trials use)."""
    if mode == SHIP:
        problem, root = write_local_copy(expected, fetch)
        return problem, str(root)
    folder = Path(expected.folder)
    return problem_with(folder, expected), str(folder.parent)


def prepare_every_node(expected: DatasetFiles, mode: str, payload_ref) -> Dict[str, str]:
    """Run :func:`prepare_here` on every alive node with CPUs; returns each node's
    ``data_path`` by node id, or raises :class:`UserInputError` naming the first node
    (id and address) whose files are missing or differ."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(num_cpus=0)(_prepare_on_node)
    nodes = [node for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0]
    pending = [
        check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
            expected, mode, payload_ref
        )
        for node in nodes
    ]
    paths: Dict[str, str] = {}
    problems: List[str] = []
    for node, (node_id, problem, data_path) in zip(nodes, ray.get(pending)):
        if problem is not None:
            problems.append(f"node {node_id[:12]} ({node['NodeManagerAddress']}): {problem}")
        paths[node_id] = data_path
    if problems:
        fix = (
            "ship the data with the search (--data_on_nodes ship)"
            if mode == SHARED
            else "check the node's temporary folder (free space, permissions)"
        )
        raise UserInputError(f"dataset check failed before any trial: {problems[0]}; {fix}")
    return paths


def _prepare_on_node(expected: DatasetFiles, mode: str, payload) -> Tuple[str, Optional[str], str]:
    import ray

    problem, data_path = prepare_here(expected, mode, lambda: payload)
    return ray.get_runtime_context().get_node_id(), problem, data_path
