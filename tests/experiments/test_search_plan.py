"""The configurations a random search runs: drawn once, without replacement, a grid where it fits."""

from __future__ import annotations

import itertools
import math

import pytest

from recbole_kgin.experiments.search_space import plan_trials

DISCRETE = {"learning_rate": {"choice": [1e-3, 1e-2, 1e-4]}, "n_layers": {"choice": [1, 2]}, "ind": "distance"}


def key(config):
    return tuple(sorted((name, str(value)) for name, value in config.items()))


def test_a_small_discrete_space_runs_as_a_grid_each_combination_once():
    configs, kind = plan_trials(DISCRETE, trials=10, seed=1)
    assert kind == "grid" and len(configs) == 6
    expected = {key({"learning_rate": lr, "n_layers": n, "ind": "distance"}) for lr, n in itertools.product([1e-3, 1e-2, 1e-4], [1, 2])}
    assert {key(c) for c in configs} == expected
    assert all(list(c) == ["learning_rate", "n_layers", "ind"] for c in configs)  # the space's order


@pytest.mark.parametrize("trials", [1, 4, 5])
def test_a_larger_space_is_sampled_without_replacement_and_reproducibly(trials):
    configs, kind = plan_trials(DISCRETE, trials=trials, seed=7)
    assert kind == "sample" and len(configs) == trials
    assert len({key(c) for c in configs}) == trials  # no combination twice
    assert configs == plan_trials(DISCRETE, trials=trials, seed=7)[0]


def test_seeds_draw_different_subsets():
    draws = {tuple(key(c) for c in plan_trials(DISCRETE, trials=3, seed=seed)[0]) for seed in range(20)}
    assert len(draws) > 1


def test_with_continuous_entries_every_combination_runs_equally_often():
    space = {"n_layers": {"choice": [1, 2, 3]}, "reg_weight": {"loguniform": [1e-6, 1e-2]}, "rate": {"uniform": [0.1, 0.2]}}
    configs, kind = plan_trials(space, trials=7, seed=3)
    assert kind == "sample" and len(configs) == 7
    counts = [sum(c["n_layers"] == n for c in configs) for n in (1, 2, 3)]
    assert sorted(counts) == [2, 2, 3]
    assert all(1e-6 <= c["reg_weight"] <= 1e-2 and 0.1 <= c["rate"] <= 0.2 for c in configs)
    logs = [math.log10(c["reg_weight"]) for c in configs]
    assert max(logs) - min(logs) > 1  # log-uniform spreads over decades
    assert len({c["reg_weight"] for c in configs}) == 7


def test_randint_is_discrete_and_grid_entries_cross_everything():
    configs, kind = plan_trials({"hops": {"randint": [1, 4]}}, trials=5, seed=0)
    assert kind == "grid" and sorted(c["hops"] for c in configs) == [1, 2, 3]
    configs, _ = plan_trials({"lr": {"grid": [0.1, 0.2]}, "n": {"choice": [1, 2, 3]}}, trials=2, seed=0)
    assert len(configs) == 4 and sorted(c["lr"] for c in configs) == [0.1, 0.1, 0.2, 0.2]
    assert len({c["n"] for c in configs if c["lr"] == 0.1}) == 2  # two distinct draws per grid point
