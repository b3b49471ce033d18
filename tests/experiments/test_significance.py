"""Comparing two models over training runs: pairing, ties, the bootstrap interval, Holm."""

from __future__ import annotations

import numpy as np
import pytest

from recbole_kgin.experiments.significance import compare_runs, holm, run_value


def runs(values_per_run, users=50):
    """{(split, seed): {user: value}} with every user at the run's value."""
    return {key: {user: value for user in range(users)} for key, value in values_per_run.items()}


def test_a_consistent_gain_over_runs_is_significant_and_keeps_its_sign():
    ours = runs({(1, s): 0.40 + 0.01 * (s % 2) for s in range(1, 6)})
    theirs = runs({(1, s): 0.35 + 0.002 * s for s in range(1, 6)})
    outcome = compare_runs(ours, theirs)
    assert outcome["pairs"] == 5 and outcome["p_value"] < 0.001
    assert outcome["difference"] == pytest.approx(0.406 - 0.356)
    assert outcome["relative"] == pytest.approx((0.406 - 0.356) / 0.356)
    assert outcome["ci_low"] <= outcome["difference"] <= outcome["ci_high"] and outcome["ci_low"] > 0
    assert outcome["boot_low"] <= outcome["difference"] <= outcome["boot_high"] and outcome["boot_low"] > 0
    assert outcome["unit"] == "run" and outcome["units"] == 5 and outcome["splits"] == 1
    reverse = compare_runs(theirs, ours)
    assert reverse["difference"] == pytest.approx(-outcome["difference"]) and reverse["p_value"] == pytest.approx(outcome["p_value"])


def test_runs_pair_by_split_and_seed_not_by_order():
    """Seeds that move both models alike: paired, the gain is clear; a pairing by position
    of a shuffled dict would not be."""
    level = {1: 0.30, 2: 0.40, 3: 0.50, 4: 0.35, 5: 0.45}
    ours = runs({(7, s): level[s] + 0.01 for s in level})
    theirs = runs({(7, s): level[s] for s in reversed(level)})
    outcome = compare_runs(ours, theirs)
    assert outcome["difference"] == pytest.approx(0.01)
    # every pair the same gap: no variance, the t-test is undefined, never p = 0
    assert outcome["p_value"] is None and outcome["statistic"] is None
    assert outcome["ci_low"] is None and outcome["ci_high"] is None  # the t-test's interval is undefined too
    assert outcome["boot_low"] == pytest.approx(0.01) and outcome["boot_high"] == pytest.approx(0.01)
    # a run only one model has is left out
    outcome = compare_runs({**ours, (8, 1): {0: 1.0}}, theirs)
    assert outcome["pairs"] == 5


def test_training_variance_enters_the_test():
    """A per-user test on seed means would call this certain (every user gains in every
    run pair on average); over runs, noise between seeds leaves it open."""
    ours = runs({(1, s): v for s, v in enumerate([0.364, 0.352, 0.341], start=1)})
    theirs = runs({(1, s): v for s, v in enumerate([0.329, 0.344, 0.335], start=1)})
    outcome = compare_runs(ours, theirs)
    assert outcome["difference"] > 0 and outcome["p_value"] > 0.05
    assert outcome["ci_low"] < outcome["difference"] < outcome["ci_high"]
    assert outcome["boot_low"] < outcome["difference"] < outcome["boot_high"]


def test_the_interval_is_the_t_tests_own_so_that_it_agrees_with_p():
    """p < 0.05 exactly where the 95% interval excludes 0, and the interval is the
    t-distribution's over the run differences (here 5 runs: t(4) quantile 2.776)."""
    rng = np.random.default_rng(3)
    for _ in range(100):
        gaps = rng.normal(0.01, 0.01, size=5)
        ours = runs({(1, s): 0.4 + gap for s, gap in enumerate(gaps, start=1)})
        theirs = runs({(1, s): 0.4 for s in range(1, 6)})
        outcome = compare_runs(ours, theirs, samples=200)
        excludes_zero = outcome["ci_low"] > 0 or outcome["ci_high"] < 0
        assert excludes_zero == (outcome["p_value"] < 0.05)
        half = 2.7764451 * np.std(np.round(gaps, 10), ddof=1) / np.sqrt(5)
        assert outcome["ci_high"] - outcome["ci_low"] == pytest.approx(2 * half, rel=1e-6)


def test_runs_on_several_splits_are_tested_over_the_splits_not_as_independent_runs():
    """Three splits of five seeds: the split moves the gap, the seeds barely do. Over the
    15 runs as if independent, p would be tiny; the unit is the split (3 observations)."""
    gap = {1: 0.010, 2: 0.030, 3: 0.002}
    ours = runs({(split, s): 0.40 + gap[split] + 0.0001 * s for split in gap for s in range(1, 6)})
    theirs = runs({(split, s): 0.40 for split in gap for s in range(1, 6)})
    outcome = compare_runs(ours, theirs, samples=500)
    assert outcome["pairs"] == 15 and outcome["splits"] == 3 and outcome["unit"] == "split" and outcome["units"] == 3
    split_gaps = [gap[split] + 0.0003 for split in gap]
    assert outcome["difference"] == pytest.approx(np.mean(split_gaps))
    from scipy.stats import ttest_1samp, ttest_rel

    assert outcome["p_value"] == pytest.approx(ttest_1samp(split_gaps, 0).pvalue, rel=1e-6)
    as_if_independent = ttest_rel([run_value(ours[k]) for k in sorted(ours)], [run_value(theirs[k]) for k in sorted(ours)])
    assert as_if_independent.pvalue < 0.05 < outcome["p_value"]
    # an unbalanced split (fewer seeds) weighs as one split, like the others
    fewer = {key: value for key, value in ours.items() if not (key[0] == 2 and key[1] > 1)}
    assert compare_runs(fewer, theirs, samples=100)["difference"] == pytest.approx(np.mean(split_gaps), abs=1e-4)


def test_the_bootstrap_draws_a_splits_users_once_for_all_its_runs():
    """Runs of one split test the same users, and a user hard for one run is hard for
    the others. Four runs with the same per-user gaps: one user draw shared by the runs
    gives the user-sampling interval of those gaps (2 x 1.96 x sd / sqrt(users) wide); a
    draw per run would average four independent draws and narrow it (to about two
    thirds)."""
    rng = np.random.default_rng(1)
    gaps = rng.normal(0.01, 0.3, size=400)
    zero = {u: 0.5 for u in range(400)}
    four = compare_runs(
        {(1, s): {u: 0.5 + gaps[u] for u in range(400)} for s in range(4)}, {(1, s): zero for s in range(4)}, samples=4000
    )
    assert four["boot_high"] - four["boot_low"] == pytest.approx(2 * 1.96 * gaps.std() / np.sqrt(400), rel=0.08)


def test_a_split_drawn_twice_gets_two_inner_draws():
    """Two splits, one with no spread at all: a sample that draws the noisy split twice
    must draw its users twice; reusing one draw for both copies makes them move together
    and widens the interval."""
    rng = np.random.default_rng(2)
    gaps = rng.normal(0.0, 0.3, size=400)
    zero = {u: 0.5 for u in range(400)}
    ours = {(1, 1): {u: 0.5 + gaps[u] for u in range(400)}, (1, 2): {u: 0.5 + gaps[u] for u in range(400)},
            (2, 1): zero, (2, 2): zero}  # fmt: skip
    theirs = {key: zero for key in ours}
    outcome = compare_runs(ours, theirs, samples=20000)
    # the statistic is the mean of two drawn splits' inner means; the noisy split's has sd
    # s. Simulated: independent inner draws give a 95% width of 2.13 s, one draw reused for
    # both copies 2.66 s
    s = gaps.std() / np.sqrt(400)
    width = outcome["boot_high"] - outcome["boot_low"]
    assert width == pytest.approx(2.13 * s, rel=0.08) and width < 2.4 * s


def test_paired_runs_must_have_tested_the_same_users():
    with pytest.raises(ValueError, match=r"runs \(1, 1\) of the two models tested different users"):
        compare_runs({(1, 1): {0: 0.5, 1: 0.4}}, {(1, 1): {0: 0.5, 2: 0.4}})


def test_ties_up_to_float_noise_are_ties():
    values = [0.1, 0.2, 0.3, 0.7]
    ours = {(1, s): {u: v for u, v in enumerate(values)} for s in range(4)}
    # the same values, summed in another order and nudged by float noise
    theirs = {(1, s): {u: v + (1e-15 if u % 2 else -1e-15) for u, v in enumerate(values)} for s in range(4)}
    assert run_value(ours[(1, 0)]) == pytest.approx(run_value(theirs[(1, 0)]), abs=1e-14)
    outcome = compare_runs(ours, theirs)
    assert outcome["difference"] == 0.0 and outcome["p_value"] == 1.0 and outcome["statistic"] == 0.0
    assert outcome["ci_low"] is None and outcome["ci_high"] is None  # as for a constant nonzero gap
    assert outcome["boot_low"] == outcome["boot_high"] == 0.0


def test_one_pair_gives_no_p_value_and_none_gives_nothing():
    one = compare_runs(runs({(1, 1): 0.5}), runs({(1, 1): 0.4}))
    assert one["pairs"] == 1 and one["p_value"] is None and one["difference"] == pytest.approx(0.1)
    assert one["boot_low"] is None and one["boot_high"] is None  # no training variance to show
    none = compare_runs(runs({(1, 1): 0.5}), runs({(2, 1): 0.4}))
    assert none["pairs"] == 0 and none["difference"] is None and none["p_value"] is None


def test_the_bootstrap_widens_with_user_noise_and_is_reproducible():
    rng = np.random.default_rng(0)
    base = {(1, s): {u: float(rng.random()) for u in range(300)} for s in range(5)}
    shifted = {key: {u: v + 0.02 for u, v in users.items()} for key, users in base.items()}
    noisy = {key: {u: v + 0.02 + float(rng.normal(0, 0.3)) for u, v in users.items()} for key, users in base.items()}
    tight, wide = compare_runs(shifted, base, seed=1), compare_runs(noisy, base, seed=1)
    assert tight["boot_high"] - tight["boot_low"] < 1e-9
    assert wide["boot_high"] - wide["boot_low"] > 0.02
    assert compare_runs(noisy, base, seed=1) == wide


def test_holm_adjusts_step_down_and_keeps_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, None, 0.001]) == [pytest.approx(0.5), None, pytest.approx(0.002)]
    assert holm([0.4, 0.6]) == pytest.approx([0.8, 0.8])  # monotone, capped at 1
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_holm_over_a_planned_family_counts_tests_not_yet_run_as_p_one():
    assert holm([0.01, 0.04], family_size=4) == pytest.approx([0.04, 0.12])
    assert holm([0.01, None, 0.04], family_size=2) == holm([0.01, None, 0.04])
    with pytest.raises(ValueError):
        holm([0.01, 0.02, 0.03], family_size=2)
    rng = np.random.default_rng(0)
    for _ in range(200):  # an upper bound of the adjusted values once the rest have run, whatever they are
        seen, later = rng.uniform(0, 0.2, size=3), rng.uniform(0, 1, size=4)
        interim = holm(list(seen), family_size=7)
        final = holm(list(seen) + list(later))[:3]
        assert all(f <= i + 1e-12 for f, i in zip(final, interim))
