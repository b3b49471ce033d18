"""Search spaces as YAML files, in Ray Tune's vocabulary.

    learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
    node_dropout_rate: {uniform: [0.0, 0.6]}
    context_hops: {choice: [1, 2, 3]}
    n_factors: {grid: [2, 4]}
    embedding_size: {randint: [32, 129]}   # upper bound excluded, as in tune.randint
    ind: distance                           # a plain value is fixed for every trial

Each key is a config key; its value is a plain value or a one-key mapping
``{choice|grid: [values...]}`` or ``{uniform|loguniform|randint: [low, high]}``.
Anything else is refused with a one-line error naming the file and the key.

Spaces for KGIN, KGAT, KGCN, CKE and BPR ship with the package (``tuning/`` in the
repository, ``recbole_kgin/tuning`` in a wheel): ``--tune KGIN`` finds the packaged
``KGIN.yaml`` by model name; a path to a file of your own still works.
"""

from __future__ import annotations

from numbers import Real
from pathlib import Path
from typing import Any, Dict

import yaml

from recbole_kgin.errors import UserInputError
from recbole_kgin.resources import packaged_dir

SAMPLERS = ("choice", "grid", "uniform", "loguniform", "randint")


def _bad(file: str, key: str, problem: str) -> UserInputError:
    return UserInputError(
        f"search space '{file}', key '{key}': {problem} "
        f"(use {{choice|grid: [v1, v2, ...]}} or {{uniform|loguniform|randint: [low, high]}})"
    )


def check_entry(file: str, key: str, value: Any) -> None:
    """Raise :class:`UserInputError` if ``value`` is not a valid space entry."""
    if not isinstance(value, dict):
        return
    if len(value) != 1 or next(iter(value)) not in SAMPLERS:
        raise _bad(file, key, f"unknown sampler {list(value)}")
    sampler, arguments = next(iter(value.items()))
    if not isinstance(arguments, list) or not arguments:
        raise _bad(file, key, f"{sampler} needs a non-empty list")
    if sampler in ("choice", "grid"):
        return
    if len(arguments) != 2 or not all(isinstance(a, Real) and not isinstance(a, bool) for a in arguments):
        raise _bad(file, key, f"{sampler} needs [low, high] numbers, got {arguments}")
    low, high = arguments
    if low >= high:
        raise _bad(file, key, f"{sampler} needs low < high, got {arguments}")
    if sampler == "loguniform" and low <= 0:
        raise _bad(file, key, f"loguniform needs low > 0, got {arguments}")
    if sampler == "randint" and not all(isinstance(a, int) for a in arguments):
        raise _bad(file, key, f"randint needs integers, got {arguments}")


SPACES_DIR = packaged_dir("tuning")


def packaged_spaces() -> Dict[str, Path]:
    """Model name -> the search space that ships with the package."""
    return {path.stem: path for path in sorted(SPACES_DIR.glob("*.yaml"))}


def resolve_space(name_or_file: str) -> Path:
    """A space file: ``name_or_file`` itself when it is a file, else the packaged
    space of that model name (``KGIN`` -> ``tuning/KGIN.yaml``)."""
    path = Path(name_or_file)
    if path.is_file():
        return path
    spaces = packaged_spaces()
    if name_or_file in spaces:
        return spaces[name_or_file]
    raise UserInputError(
        f"search space '{name_or_file}' not found: pass a YAML file, or the name of a "
        f"packaged space ({', '.join(spaces) or 'none installed'})"
    )


def load_space(file: str) -> Dict[str, Any]:
    """The raw (validated) space of ``file`` (a path, or a packaged space's model
    name): config key -> value or sampler spec."""
    path = resolve_space(file)
    try:
        space = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserInputError(f"search space '{file}'{where}: not valid YAML") from None
    if not isinstance(space, dict) or not space:
        raise UserInputError(f"search space '{file}': expected 'key: sampler' lines")
    for key, value in space.items():
        check_entry(file, str(key), value)
    return space


def to_ray(space: Dict[str, Any]) -> Dict[str, Any]:
    """The space as Ray Tune domains (``tune.choice``, ``tune.grid_search``, ...)."""
    from ray import tune

    makers = {
        "choice": lambda a: tune.choice(a),
        "grid": lambda a: tune.grid_search(a),
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(*a),
    }
    converted = {}
    for key, value in space.items():
        if isinstance(value, dict):
            sampler, arguments = next(iter(value.items()))
            converted[key] = makers[sampler](arguments)
        else:
            converted[key] = value
    return converted


def has_grid(space: Dict[str, Any]) -> bool:
    return any(isinstance(v, dict) and "grid" in v for v in space.values())
