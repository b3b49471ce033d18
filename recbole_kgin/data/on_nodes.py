"""A dataset on every node of a Ray cluster, checked before any trial trains.

A search attached to a cluster (``--address``) runs trials on nodes that may not hold
``<data_path>/<dataset>/``, or hold other files under that path. Two ways to get the
data to them, both checked on every alive node before the search starts:

- ``ship`` (default on a cluster): the driver reads the dataset's atomic files
  (``<dataset>.*`` in its folder) into Ray's object store; each node writes them once
  into a node-local folder keyed by their checksums
  (``<tempdir>/recbole-kgin-datasets/<digest>/<dataset>/``) and trials read from there;
- ``shared``: every node must read the same files at the driver's absolute path
  (shared storage).

Either way each node compares every file's size and SHA-256 with the driver's; a node
where a file is missing or differs stops the search with one line naming the node, the
path and the fix. Trials run the same check (cheap) before they train, so a node that
joins later is covered too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from recbole_kgin.errors import UserInputError

SHIP, SHARED = "ship", "shared"
MODES = (SHIP, SHARED)
LOCAL_ROOT_NAME = "recbole-kgin-datasets"


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(folder: Path, dataset: str) -> DatasetFiles:
    """The atomic files ``<dataset>.*`` in ``folder`` (absolute), with sizes and checksums."""
    folder = folder.resolve()
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.startswith(f"{dataset}."))
    if not names:
        raise UserInputError(f"{folder}: no atomic files named {dataset}.* to send to the cluster's nodes")
    return DatasetFiles(dataset, str(folder), tuple((name, (folder / name).stat().st_size, _sha256(folder / name)) for name in names))


def problem_with(folder: Path, expected: DatasetFiles) -> Optional[str]:
    """What differs between ``folder`` and ``expected`` (first file only), or None."""
    for name, size, checksum in expected.files:
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size} bytes, the driver's {size}"
        if _sha256(path) != checksum:
            return f"{path} differs from the driver's file (SHA-256)"
    return None


def read_payload(expected: DatasetFiles) -> Dict[str, bytes]:
    """The files' bytes, to put into Ray's object store once."""
    return {name: (Path(expected.folder) / name).read_bytes() for name, _, _ in expected.files}


def local_root(expected: DatasetFiles) -> Path:
    """This node's folder for a shipped dataset (its ``data_path``)."""
    return Path(tempfile.gettempdir()) / LOCAL_ROOT_NAME / expected.digest


def write_local_copy(expected: DatasetFiles, fetch: Callable[[], Dict[str, bytes]]) -> Tuple[Optional[str], Path]:
    """Write the shipped files (``fetch()``, called only when needed) on this node unless
    a checked copy is there; returns (problem or None, the ``data_path`` to use), each
    file hashed once. Concurrent trials on one node write apart and rename."""
    root = local_root(expected)
    target = root / expected.name
    if target.is_dir() and problem_with(target, expected) is None:
        return None, root
    staging = root / f".{expected.name}.{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    for name, content in fetch().items():
        (staging / name).write_bytes(content)
    if target.is_dir():  # a stale or broken copy
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:  # another trial renamed its copy first
        shutil.rmtree(staging, ignore_errors=True)
    return problem_with(target, expected), root


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
