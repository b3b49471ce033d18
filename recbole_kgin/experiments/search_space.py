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

Spaces for every model of the tuned comparison ship with the package (``tuning/`` in the
repository, ``recbole_kgin/tuning`` in a wheel): ``--tune KGIN`` finds the packaged
``KGIN.yaml`` by model name; a path to a file of your own still works.
"""

from __future__ import annotations

import itertools
import math
from numbers import Real
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

import yaml

from recbole_kgin.common.errors import UserInputError
from recbole_kgin.common.resources import packaged_dir

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


DISCRETE = ("choice", "grid", "randint")


def _values(sampler: str, arguments: List[Any]) -> List[Any]:
    """The finite values of a discrete entry (``randint``: its integers, high excluded)."""
    return list(range(arguments[0], arguments[1])) if sampler == "randint" else list(arguments)


def plan_trials(space: Dict[str, Any], trials: int, seed: int) -> Tuple[List[Dict[str, Any]], str]:
    """The configurations a search of ``trials`` trials runs, drawn once and reproducibly
    (``seed``): ``(configurations, "grid" | "sample")``.

    Discrete entries (``choice``, ``randint``) span a grid of combinations. Where the space
    has no continuous entry and its grid holds at most ``trials`` combinations, every
    combination runs once (``grid``: fewer trials than asked where the grid is smaller).
    Otherwise ``trials`` combinations are drawn **without replacement** (each combination
    at most once; where the grid is smaller than ``trials``, every combination runs
    equally often, give or take one) and continuous entries (``uniform``, ``loguniform``)
    are sampled afresh for each trial. ``grid`` entries keep Ray's meaning: every value
    of theirs is crossed with all of the above, so a space with ``grid`` entries runs
    ``trials`` times the product of their lengths. Plain values are fixed in every
    configuration.
    """
    rng = np.random.default_rng(seed)
    fixed = {key: value for key, value in space.items() if not isinstance(value, dict)}
    samplers = {key: next(iter(value.items())) for key, value in space.items() if isinstance(value, dict)}
    crossed = {key: list(args) for key, (sampler, args) in samplers.items() if sampler == "grid"}
    discrete = {key: _values(sampler, args) for key, (sampler, args) in samplers.items() if sampler in ("choice", "randint")}
    continuous = {key: (sampler, args) for key, (sampler, args) in samplers.items() if sampler not in DISCRETE}
    keys = list(discrete)
    sizes = [len(discrete[key]) for key in keys]
    combinations = math.prod(sizes)
    if not continuous and combinations <= trials:
        indices, kind = list(range(combinations)), "grid"
    else:
        rounds, rest = divmod(trials, combinations)
        indices = [int(i) for _ in range(rounds) for i in rng.permutation(combinations)]
        indices += [int(i) for i in rng.choice(combinations, size=rest, replace=False)]
        kind = "sample"
    drawn = []
    for index in indices:
        config = dict(fixed)
        for key, size in zip(reversed(keys), reversed(sizes)):  # mixed radix: last key fastest
            index, position = divmod(index, size)
            config[key] = discrete[key][position]
        for key, (sampler, (low, high)) in continuous.items():
            value = rng.uniform(low, high) if sampler == "uniform" else math.exp(rng.uniform(math.log(low), math.log(high)))
            config[key] = float(value)
        drawn.append({key: config[key] for key in space if key in config})
    if not crossed:
        return drawn, kind
    planned = []
    for values in itertools.product(*crossed.values()):
        for config in drawn:
            planned.append({**config, **dict(zip(crossed, values))})
    return [{key: config[key] for key in space} for config in planned], kind
