"""A run's processed dataset and loaders, kept between runs so that a second start on
the same data skips RecBole's dataset build (``startup_cache: True``, the default).

An entry is keyed by what shapes the data and nothing else:

- the SHA-256 of every atomic file of the dataset (:func:`recbole_kgin.data.checksum.data_checksums`):
  a changed, added or removed file is a new key;
- every config value, except those that only training, evaluation metrics or the
  model's own hyper-parameters read (:func:`data_key_values`); a value that RecBole's
  data and sampler code reads by name always counts, whatever its kind;
- the state of the random generators (Python's, numpy's, torch's) when the build
  starts, unless ``split_seed`` sets them there;
- the versions of recbole-kgin's cache format, RecBole, torch and Python.

An entry also holds the generators' states after the build, which a read sets: a run
that reads its data back continues exactly as the run that built it.

So a stale entry is never served: a different file or data setting looks up another
key. Entries live in ``$XDG_CACHE_HOME/recbole-kgin/startup`` (``~/.cache/...``), a
folder only its owner may enter; they are pickles, so each carries an HMAC-SHA256
made with a secret key kept in that folder (mode 0600) and is unpickled only when its
HMAC verifies: a file planted or altered by anyone who cannot read the key is rebuilt
over, never run. A folder that another user owns or may write, or a key file others
may read, turns the cache off with one warning. Entries are written whole (a unique
temporary file, then a rename); the ``MAX_ENTRIES`` most recently used are kept.
"""

from __future__ import annotations

import copyreg
import functools
import hashlib
import hmac
import io
import json
import os
import pickle
import random
import re
import stat
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from logging import getLogger
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np
import recbole
import torch
import yaml

from recbole_kgin.common.atomic import replacing
from recbole_kgin.common.resources import packaged_dir, user_cache_dir
from recbole_kgin.data.checksum import data_checksums

FORMAT = 1  # bump when what an entry holds changes
MAX_ENTRIES = 8
KEY_BYTES = 32
SUFFIX = ".entry"

# Read only by training, evaluation, logging and the runtime, never by RecBole's data
# and sampler code (tests/data/test_startup_cache.py checks this against RecBole's source).
NOT_DATA_KEYS = frozenset({
    "epochs", "learning_rate", "learner", "weight_decay", "clip_grad_norm", "stopping_step", "eval_step",
    "loss_decimal_place", "metric_decimal_place", "metrics", "topk", "valid_metric", "valid_metric_bigger",
    "show_progress", "state", "log_wandb", "wandb_project", "gpu_id", "use_gpu", "device",
    "cpu_threads", "thread_governor", "cpu_malloc_tuning", "fused_kernel", "distributed_timeout",
    "startup_cache", "enable_amp", "enable_scaler", "reproducibility",
})  # fmt: skip

_DATA_SOURCES = ("data", "sampler")
_READ = re.compile(r"config\[\s*[\"'](\w+)[\"']\s*\]")


@functools.lru_cache(maxsize=None)
def recbole_data_keys() -> FrozenSet[str]:
    """Config keys that RecBole's data and sampler code reads by name (from its source),
    with ``<phase>_neg_sample_args`` spelled out for every phase."""
    root = Path(recbole.__file__).resolve().parent
    found = set()
    for folder in _DATA_SOURCES:
        for path in (root / folder).rglob("*.py"):
            found.update(_READ.findall(path.read_text(encoding="utf-8")))
    return frozenset(found | {f"{phase}_neg_sample_args" for phase in ("train", "valid", "test")})


@functools.lru_cache(maxsize=None)
def model_keys(model: str) -> FrozenSet[str]:
    """The keys of the model's own property files (RecBole's and recbole-kgin's)."""
    keys = set()
    for folder in (Path(recbole.__file__).resolve().parent / "properties", packaged_dir("properties")):
        path = folder / "model" / f"{model}.yaml"
        if path.is_file():
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            keys.update(loaded)
    return frozenset(keys)


def data_key_values(config: Any, data_keys: Optional[Iterable[str]] = None) -> Dict[str, str]:
    """The config values an entry is keyed by: all but :data:`NOT_DATA_KEYS` and the
    model's hyper-parameters, except those the data code reads (``data_keys``, default
    :func:`recbole_data_keys`); each as its ``repr``, sorted by key."""
    read = frozenset(data_keys) if data_keys is not None else recbole_data_keys()
    skipped = (NOT_DATA_KEYS | model_keys(config["model"])) - read
    values = config.final_config_dict
    return {key: repr(values[key]) for key in sorted(values) if key not in skipped}


def rng_states() -> Tuple[Any, Any, torch.Tensor]:
    """The global states of Python's, numpy's and torch's (CPU) random generators."""
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def set_rng_states(states: Tuple[Any, Any, torch.Tensor]) -> None:
    python, numpy_state, torch_state = states
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)


def rng_digest(config: Any) -> str:
    """What of the generators' states the build depends on: nothing where
    ``split_seed`` reseeds them, else their current states' SHA-256."""
    if config["split_seed"] is not None:
        return f"split_seed {config['split_seed']}"
    python, numpy_state, torch_state = rng_states()
    digest = hashlib.sha256(repr(python).encode())
    digest.update(repr(numpy_state[0]).encode() + numpy_state[1].tobytes() + repr(numpy_state[2:]).encode())
    digest.update(torch_state.numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Recording:
    """The generators around one build: what it started from, and where it left them."""

    start: str
    end: Optional[Tuple[Any, Any, torch.Tensor]] = None


@contextmanager
def recorded_rng(config: Any) -> Iterator[Recording]:
    """Record the generators' digest before the block and their states after it."""
    record = Recording(rng_digest(config))
    yield record
    record.end = rng_states()


def entry_key(config: Any, start: str, files: Optional[Dict[str, str]] = None) -> str:
    """The hex SHA-256 naming the entry of ``config``'s data, built from generators
    in the state ``start`` (:func:`rng_digest`) from files of the checksums ``files``
    (:func:`data_checksums`, computed here where not given)."""
    recipe = {
        "rng": start,
        "format": FORMAT,
        "versions": [recbole.__version__, torch.__version__, sys.version],
        "files": data_checksums(config) if files is None else files,
        "config": data_key_values(config),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def private_folder(folder: Optional[Path] = None) -> Optional[Path]:
    """The cache folder (created 0700 where missing), or None, with a warning, where it
    is not this user's alone."""
    folder = folder or user_cache_dir("startup")
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        getLogger().warning(
            f"startup cache {folder} is not a folder of this user's alone (mode {stat.filemode(info.st_mode)}, "
            f"owner {info.st_uid}): not used; remove it or run 'chmod 700 {folder}'"
        )
        return None
    return folder


def secret_key(folder: Path) -> Optional[bytes]:
    """The folder's HMAC key, made (0600) on first use; None, with a warning, where
    the key file is not this user's alone or not a key."""
    path = folder / "hmac.key"
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(os.urandom(KEY_BYTES))
    info = os.lstat(path)
    secret = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or len(secret) != KEY_BYTES:
        getLogger().warning(f"startup cache key {path} is not this user's alone: cache not used; remove {folder}")
        return None
    return secret


def _sign(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()


def generator_from_state(state: torch.Tensor) -> torch.Generator:
    """A torch generator in ``state`` (how an entry stores the loaders' generators)."""
    generator = torch.Generator()
    generator.set_state(state)
    return generator


def tensors_from_flat(flat: torch.Tensor, lengths: np.ndarray) -> np.ndarray:
    """The object array of tensors (``None`` where a length is -1) that
    :func:`_reduce_array` flattened."""
    sizes = lengths.tolist()
    pieces = torch.split(flat, [max(size, 0) for size in sizes])
    array = np.empty(len(sizes), dtype=object)
    for index, (size, piece) in enumerate(zip(sizes, pieces)):  # one by one: numpy would read a list's tensors as sequences
        array[index] = None if size < 0 else piece
    return array


def sets_from_flat(flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The object array of sets of integers that :func:`_reduce_array` flattened."""
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    values = flat.tolist()
    array = np.empty(len(lengths), dtype=object)
    for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        array[index] = set(values[start:end])
    return array


def _reduce_array(array: np.ndarray) -> Any:
    """A numpy array as pickle takes it, except RecBole's per-user (per-entity) object
    arrays, which become one flat array and the lengths: of 1-d tensors of one dtype
    (and ``None``s), its item lists; of sets of integers, its samplers' used ids.
    Thousands of small objects pickle and unpickle slowly one by one."""
    items = array.tolist() if array.dtype == object and array.ndim == 1 and len(array) else None
    if not items:
        return array.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
    tensors = [item for item in items if item is not None]
    if tensors and all(isinstance(item, torch.Tensor) and item.dim() == 1 and item.dtype == tensors[0].dtype for item in tensors):
        lengths = np.array([-1 if item is None else len(item) for item in items], dtype=np.int64)
        return tensors_from_flat, (torch.cat(tensors), lengths)
    if all(isinstance(item, set) for item in items) and all(
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) for item in items for value in item
    ):
        lengths = np.array([len(item) for item in items], dtype=np.int64)
        flat = np.fromiter((value for item in items for value in item), dtype=np.int64, count=int(lengths.sum()))
        return sets_from_flat, (flat, lengths)
    return array.__reduce_ex__(pickle.HIGHEST_PROTOCOL)


def _pickled(value: Any) -> bytes:
    """``value`` pickled: torch generators (which do not pickle) as their states, object
    arrays of tensors as one tensor (:func:`_reduce_array`)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {
        **copyreg.dispatch_table,
        torch.Generator: lambda generator: (generator_from_state, (generator.get_state(),)),
        np.ndarray: _reduce_array,
    }  # fmt: skip
    pickler.dump(value)
    return buffer.getvalue()


def save(
    config: Any,
    dataset: Any,
    loaders: Tuple[Any, Any, Any],
    warnings: Sequence[str],
    record: Recording,
    folder: Optional[Path] = None,
    files: Optional[Dict[str, str]] = None,
) -> Optional[Path]:
    """Keep ``(dataset, loaders)``, the data check's ``warnings`` and the generators'
    states after the build (``record``) under ``config``'s key; the path written, or
    None where the cache is not usable. ``files``: the checksums of the dataset's files
    before the build; where the files differ now (another process wrote them meanwhile),
    nothing is kept, since the build may have read either version."""
    folder = private_folder(folder)
    secret = folder and secret_key(folder)
    if not secret:
        return None
    if files is not None and data_checksums(config) != files:
        getLogger().warning(f"{config['dataset']}: its files changed while they were read; not kept in the startup cache")
        return None
    payload = _pickled((dataset, tuple(loaders), list(warnings), record.end))
    path = folder / (entry_key(config, record.start, files) + SUFFIX)
    with replacing(path) as temporary:
        temporary.write_bytes(_sign(secret, payload) + payload)
    _evict(folder)
    return path


def load(
    config: Any, folder: Optional[Path] = None, files: Optional[Dict[str, str]] = None
) -> Optional[Tuple[Any, Tuple[Any, Any, Any], list]]:
    """``(dataset, (train, valid, test), warnings)`` of ``config``'s key (``files``: the
    data files' checksums, computed where not given), bound to
    ``config``, the generators set as the build left them; None
    where there is no entry, the cache is not usable, or the entry fails its HMAC (then
    it is removed, with a warning)."""
    folder = private_folder(folder)
    secret = folder and secret_key(folder)
    if not secret:
        return None
    path = folder / (entry_key(config, rng_digest(config), files) + SUFFIX)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    mac, payload = blob[: hashlib.sha256().digest_size], blob[hashlib.sha256().digest_size :]
    if not hmac.compare_digest(mac, _sign(secret, payload)):
        getLogger().warning(f"startup cache entry {path} fails its HMAC check: not read, removed and rebuilt")
        path.unlink(missing_ok=True)
        return None
    dataset, loaders, warnings, end = pickle.loads(payload)
    set_rng_states(end)
    _bind(config, dataset, loaders)
    os.utime(path)  # most recently used
    return dataset, tuple(loaders), warnings


def _bind(config: Any, dataset: Any, loaders: Sequence[Any]) -> None:
    """Point the cached objects at this run's config (its data values are the key's)."""
    dataset.config = config
    for loader in loaders:
        loader._dataset.config = config
        loader.update_config(config)


def _evict(folder: Path) -> None:
    entries = sorted(folder.glob("*" + SUFFIX), key=lambda path: path.stat().st_mtime, reverse=True)
    for path in entries[MAX_ENTRIES:]:
        path.unlink(missing_ok=True)
