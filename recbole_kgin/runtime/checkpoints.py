"""Checkpoints as plain data, read without running code.

recbole-kgin's trainers save a checkpoint as tensors, numbers, strings, lists and
dicts; the config goes in as the plain dicts of its layers, not as a pickled
``Config`` object. :func:`read_checkpoint` reads it with ``torch.load(weights_only=True)``,
which besides plain data accepts only the few types RecBole keeps in a checkpoint
(:data:`SAFE_TYPES`: its enums, numpy arrays and scalars, SciPy sparse matrices), so
reading a file can run no code.

A file that needs anything else, such as a checkpoint RecBole itself wrote (it pickles
the whole ``Config``) or one crafted to run a command when unpickled, is refused with one
line, unless the caller says the file is trusted (``--trust_checkpoint``): only then is
it fully unpickled. Either way the content is checked (the keys a checkpoint has, their
types, the config values a rebuilt run needs) before anything uses it.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from enum import Enum
from logging import getLogger
from numbers import Real
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Union

import numpy as np
import scipy.sparse as sp
import torch
from recbole.utils import EvaluatorType, FeatureSource, FeatureType, InputType, ModelType

from recbole_kgin.common.atomic import replacing
from recbole_kgin.common.errors import UserInputError

_NUMPY_DTYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                 np.uint64, np.float16, np.float32, np.float64)  # fmt: skip
SAFE_TYPES = [
    ModelType, InputType, EvaluatorType, FeatureType, FeatureSource,
    np.core.multiarray._reconstruct, np.core.multiarray.scalar, np.ndarray, np.dtype,
    *{type(np.dtype(kind)) for kind in _NUMPY_DTYPES},
    sp.csr_matrix, sp.csc_matrix, sp.coo_matrix,
]  # fmt: skip
"""What a checkpoint may hold besides plain data and tensors."""

CONFIG_LAYERS = ("file_config_dict", "variable_config_dict", "cmd_config_dict", "external_config_dict",
                 "internal_config_dict", "final_config_dict", "parameters")  # fmt: skip
"""The attributes of a RecBole ``Config`` that hold its values; a checkpoint keeps these."""

REQUIRED_CONFIG = {"model": str, "dataset": str, "seed": int, "reproducibility": bool, "data_path": str}
"""Config values a run rebuilt from a checkpoint reads first, with their types."""

KEY_TYPES = {
    "state_dict": Mapping, "epoch": int, "cur_step": int, "best_valid_score": Real, "optimizer": Mapping,
    "other_parameter": (Mapping, type(None)), "best_valid_result": (Mapping, type(None)),
    "best_checkpoint": str, "rng": Mapping, "history": Mapping,
}  # fmt: skip
"""The keys a checkpoint may hold, with their types."""

RESUME_KEYS = ("epoch", "cur_step", "best_valid_score", "optimizer")
"""What a checkpoint needs so that training can continue from it."""

_SAFE_LEAVES = (str, int, float, bool, type(None), torch.device, torch.Tensor, np.number, np.bool_)


def _plain(value: Any, where: str) -> Any:
    """``value`` with every part a checkpoint may hold; anything else as its text."""
    if isinstance(value, Mapping):
        return {key: _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(item, where) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, _SAFE_LEAVES) or (isinstance(value, Enum) and type(value) in SAFE_TYPES):
        return value
    getLogger().warning(f"config value {where} ({type(value).__name__}) saved in the checkpoint as text")
    return str(value)


def config_state(config) -> Dict[str, Any]:
    """A Config as the plain data a checkpoint keeps: its model, dataset and layers."""
    layers = {name: _plain(getattr(config, name), name) for name in CONFIG_LAYERS}
    return {"model": config.model, "dataset": config.dataset, **layers}


def save_checkpoint(state: Mapping[str, Any], path: Union[str, Path]) -> None:
    """Write ``state`` (its ``"config"`` a Config) to ``path`` as plain data, replacing
    the file whole (:mod:`recbole_kgin.common.atomic`)."""
    plain = {**state, "config": config_state(state["config"])}
    with replacing(path) as temporary:
        torch.save(plain, temporary)


def read_plain(path: Union[str, Path], map_location: Any = "cpu") -> Any:
    """``torch.load`` of ``path`` that accepts plain data, tensors and :data:`SAFE_TYPES`
    only; raises :class:`UserInputError` for anything else."""
    return _read(path, False, map_location)


def _read(path: Union[str, Path], trusted: bool, map_location: Any) -> Any:
    if not trusted and not zipfile.is_zipfile(path):
        raise UserInputError(f"checkpoint '{path}' is not a readable checkpoint (not a file that torch.save wrote)")
    try:
        if trusted:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(SAFE_TYPES), warnings.catch_warnings():
            # torch warns of any pickle protocol but 2 before it refuses the file: the refusal says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if trusted or "Weights only load failed" not in str(error):
            raise UserInputError(f"checkpoint '{path}' is not a readable checkpoint ({_one_line(error)})") from None
        names = re.findall(r"GLOBAL ([\w.]+)", str(error))
        held = f" (it names {names[0]})" if names else ""
        raise UserInputError(
            f"checkpoint '{path}' holds more than plain data{held}, as RecBole's own and older recbole-kgin "
            f"checkpoints do; unpickling it can run code: pass --trust_checkpoint only if you trust the file"
        ) from None
    except Exception as error:  # a truncated, empty or foreign file: torch and zipfile raise many kinds
        raise UserInputError(f"checkpoint '{path}' is not a readable checkpoint ({_one_line(error)})") from None


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


def _bad(path: Union[str, Path], problem: str) -> UserInputError:
    return UserInputError(f"checkpoint '{path}': {problem}; pass a saved/*.pth file that a run wrote")


def _checked_config(path: Union[str, Path], config: Any) -> Any:
    """``config`` as read: the plain layers recbole-kgin saves (a Mapping), or, from a
    trusted file, a pickled RecBole Config; either with the values a rebuilt run needs."""
    if isinstance(config, Mapping):  # plain data, as recbole-kgin saves it
        kinds = {"model": str, "dataset": str, **{name: Mapping for name in CONFIG_LAYERS}}
        missing = [name for name, kind in kinds.items() if not isinstance(config.get(name), kind)]
        if missing:
            raise _bad(path, f"its config lacks '{missing[0]}' (or it has the wrong type)")
        values = config["final_config_dict"]
    elif hasattr(config, "final_config_dict"):  # a trusted file: a pickled Config
        values = config.final_config_dict
    else:
        raise _bad(path, f"its config is a {type(config).__name__}, not a RecBole config")
    for name, kind in REQUIRED_CONFIG.items():
        if name not in values:
            raise _bad(path, f"its config lacks '{name}'")
        if not isinstance(values[name], kind) or (kind is int and isinstance(values[name], bool)):
            raise _bad(path, f"its config's '{name}' is {values[name]!r}, not a {kind.__name__}")
    return config


def check_keys(checkpoint: Mapping[str, Any], path: Union[str, Path], required: Iterable[str]) -> None:
    """Raise :class:`UserInputError` naming the first of ``required`` that ``checkpoint`` lacks."""
    for key in required:
        if key not in checkpoint:
            raise _bad(path, f"'{key}' is missing")


def read_checkpoint(path: Union[str, Path], trusted: bool = False) -> Dict[str, Any]:
    """The checkpoint in ``path`` as a dict, checked, its tensors on the CPU; its
    ``"config"`` the plain layers of :func:`config_state` (a trusted RecBole file: the
    pickled Config), which :func:`recbole_kgin.quick_start.load_checkpoint` rebuilds.
    ``trusted``: the caller vouches for the file, so one that needs
    full unpickling (RecBole's own, older recbole-kgin ones) is read too; without it
    such a file is refused. Raises :class:`UserInputError` (one line) for a missing,
    unreadable or malformed file."""
    if not Path(path).is_file():
        raise UserInputError(f"checkpoint '{path}' not found: pass a saved/*.pth file")
    checkpoint = _read(path, trusted, "cpu")
    if not isinstance(checkpoint, dict):
        raise _bad(path, f"it holds a {type(checkpoint).__name__}, not a checkpoint's dict")
    check_keys(checkpoint, path, ("config", "state_dict"))
    for key, kind in KEY_TYPES.items():
        if key in checkpoint and not isinstance(checkpoint[key], kind):
            raise _bad(path, f"'{key}' is a {type(checkpoint[key]).__name__}")
    if not all(isinstance(value, torch.Tensor) for value in checkpoint["state_dict"].values()):
        raise _bad(path, "'state_dict' holds values other than tensors")
    return {**checkpoint, "config": _checked_config(path, checkpoint["config"])}
