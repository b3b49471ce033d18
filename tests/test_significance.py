"""recbole_kgin/significance.py: the paired test and the per-user averaging."""

from __future__ import annotations

import numpy as np
import pytest

from recbole_kgin.significance import mean_over_runs, paired_wilcoxon


def test_a_consistent_per_user_gain_is_significant_and_its_sign_kept():
    rng = np.random.default_rng(0)
    base = {user: float(value) for user, value in enumerate(rng.random(60))}
    better = {user: value + 0.05 + 0.01 * rng.random() for user, value in base.items()}
    outcome = paired_wilcoxon(better, base)
    assert outcome["users"] == 60 and outcome["p_value"] < 1e-6
    assert outcome["mean_difference"] == pytest.approx(np.mean([better[u] - base[u] for u in base]))
    reverse = paired_wilcoxon(base, better)
    assert reverse["mean_difference"] < 0 and reverse["p_value"] == pytest.approx(outcome["p_value"])


def test_noise_is_not_significant_and_equal_values_give_no_p_value():
    rng = np.random.default_rng(1)
    first = {user: float(v) for user, v in enumerate(rng.random(200))}
    second = {user: float(v) for user, v in enumerate(rng.random(200))}
    assert paired_wilcoxon(first, second)["p_value"] > 0.05
    same = paired_wilcoxon(first, dict(first))
    assert same["p_value"] is None and same["statistic"] is None and same["mean_difference"] == 0.0


def test_only_users_both_models_have_are_paired():
    outcome = paired_wilcoxon({1: 0.5, 2: 0.25, 3: 1.0}, {2: 0.0, 3: 0.5, 4: 0.0})
    assert outcome["users"] == 2 and outcome["mean_difference"] == pytest.approx(0.375)


def test_mean_over_runs_keeps_users_present_in_every_run():
    runs = [{1: 0.0, 2: 1.0, 3: 0.5}, {1: 1.0, 2: 0.0}]
    assert mean_over_runs(runs) == {1: 0.5, 2: 0.5}
    assert mean_over_runs([]) == {}
