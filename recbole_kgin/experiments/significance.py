"""Per-user test metrics, and the tests that compare two models over training runs.

RecBole reports a metric's mean over test users, rounded. :func:`capture_per_user` wraps
a trainer's evaluator for one evaluation and keeps, per test user (RecBole's internal
user id, in the full-ranking loader's order), Recall@k and NDCG@k, computed by RecBole's
own metric classes from the same top-k structure the reported means come from; a run's
figure is their mean, unrounded (:func:`run_value`).

A trained model is one draw of a random process (initialisation, dropout, negatives,
batch order, and the split). Two models are therefore compared over **runs**, paired
by (split seed, seed): :func:`compare_runs` gives the mean difference of the run values,
a paired t-test over the pairs (two-sided), the relative effect (difference over the
other model's mean) and a 95% confidence interval of the difference from a two-level
bootstrap that resamples the run pairs and, inside each, the test users, so that
both training variance and the choice of users widen it. :func:`holm` adjusts the
p-values of all the tests a report plans (Holm's step-down, family-wise error); tests
not yet run count as p = 1, so the adjusted values can only fall as they arrive.

Ties: run values are rounded to :data:`DECIMALS` places before they are differenced,
so that two runs equal up to float noise (a mean summed in another order) count as a
tie, never as a tiny difference of either sign; where every pair ties, the test
reports p = 1. Where every pair differs by the same nonzero amount the differences
have no variance and the t-test is undefined: statistic and p are None, never 0.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Hashable, Iterator, List, Mapping, Optional, Sequence

import numpy as np

PER_USER_METRICS = ("recall", "ndcg")
DECIMALS = 10  # run values are compared at this precision
BOOTSTRAP_SAMPLES = 10000
CONFIDENCE = 0.95


@contextmanager
def capture_per_user(trainer, eval_data, ks: Sequence[int]) -> Iterator[Dict[str, Dict[int, float]]]:
    """Within the block, the next evaluation of ``eval_data`` also fills the yielded
    dict: ``{"recall@20": {user_id: value, ...}, "ndcg@20": {...}, ...}`` for ``ks``
    (nothing is wrapped without ks)."""
    from recbole.evaluator.metrics import NDCG, Recall

    captured: Dict[str, Dict[int, float]] = {}
    if not ks:
        yield captured
        return
    evaluate = trainer.evaluator.evaluate
    users = [int(user) for user in eval_data.uid_list]

    def evaluate_and_keep(struct):
        result = evaluate(struct)
        for name, metric_class in (("recall", Recall), ("ndcg", NDCG)):
            metric = metric_class(trainer.config)
            pos_index, pos_len = metric.used_info(struct)
            values = metric.metric_info(pos_index, pos_len)  # (users, max k)
            if len(values) != len(users):
                raise RuntimeError(f"per-user {name}: {len(values)} rows for {len(users)} test users")
            for k in ks:
                captured[f"{name}@{k}"] = dict(zip(users, values[:, k - 1].tolist()))
        return result

    trainer.evaluator.evaluate = evaluate_and_keep
    try:
        yield captured
    finally:
        trainer.evaluator.evaluate = evaluate


def run_value(per_user: Mapping[int, float]) -> float:
    """A run's figure for one metric: the mean over its test users, unrounded."""
    return float(np.mean(list(per_user.values()))) if per_user else float("nan")


def compare_runs(
    ours: Mapping[Hashable, Mapping[int, float]],
    theirs: Mapping[Hashable, Mapping[int, float]],
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
) -> Dict[str, Optional[float]]:
    """Our model against theirs on one metric, over the runs both have.

    ``ours``/``theirs`` map a run's key, ``(split_seed, seed)``, to its per-user test
    values ``{user: value}``; runs pair by key, users by id within a pair. Returns
    ``pairs``, ``mean_ours``, ``mean_theirs``, ``difference`` (ours - theirs, mean over
    pairs), ``relative`` (difference / mean_theirs), ``statistic`` and ``p_value`` of the
    paired t-test over pairs (two-sided; None with fewer than 2 pairs or where every
    pair differs by the same nonzero amount), ``ci_low`` and
    ``ci_high`` (the bootstrap's 2.5% and 97.5% quantiles of the mean difference).
    """
    from scipy.stats import ttest_rel

    keys = sorted(set(ours) & set(theirs), key=repr)
    a = np.round([run_value(ours[key]) for key in keys], DECIMALS)
    b = np.round([run_value(theirs[key]) for key in keys], DECIMALS)
    outcome: Dict[str, Optional[float]] = dict.fromkeys(
        ("pairs", "mean_ours", "mean_theirs", "difference", "relative", "statistic", "p_value", "ci_low", "ci_high")
    )
    outcome["pairs"] = len(keys)
    if not keys:
        return outcome
    differences = np.round(a - b, DECIMALS)
    outcome.update(mean_ours=float(a.mean()), mean_theirs=float(b.mean()), difference=float(differences.mean()))
    outcome["relative"] = float(differences.mean() / b.mean()) if b.mean() else None
    if len(keys) >= 2:
        if not np.any(differences):
            outcome["statistic"], outcome["p_value"] = 0.0, 1.0
        else:
            if not np.all(differences == differences[0]):  # else every pair the same nonzero gap: undefined
                result = ttest_rel(a, b)
                outcome["statistic"], outcome["p_value"] = float(result.statistic), float(result.pvalue)
    outcome["ci_low"], outcome["ci_high"] = _bootstrap_interval(
        [_user_differences(ours[key], theirs[key]) for key in keys], seed, samples
    )
    return outcome


def _user_differences(ours: Mapping[int, float], theirs: Mapping[int, float]) -> np.ndarray:
    """Per-user differences of one run pair, over the users both runs tested."""
    users = sorted(set(ours) & set(theirs))
    return np.array([ours[user] - theirs[user] for user in users], dtype=float)


def _bootstrap_interval(runs: Sequence[np.ndarray], seed: int, samples: int) -> List[float]:
    """The central ``CONFIDENCE`` interval of the mean difference: each bootstrap sample
    draws the run pairs with replacement and, within each drawn pair, its users with
    replacement; its statistic is the mean over drawn pairs of their user means."""
    rng = np.random.default_rng(seed)
    count = len(runs)
    run_means = np.empty((count, samples))
    for index, differences in enumerate(runs):  # (runs, samples): a user resample per run and sample
        if len(differences) == 0:
            run_means[index] = 0.0
            continue
        draws = rng.integers(0, len(differences), size=(samples, len(differences)))
        run_means[index] = differences[draws].mean(axis=1)
    picked = rng.integers(0, count, size=(samples, count))  # run pairs drawn per sample
    statistics = np.round(run_means[picked, np.arange(samples)[:, None]].mean(axis=1), DECIMALS)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(statistics, [tail, 1 - tail])
    return [float(low), float(high)]


def holm(p_values: Sequence[Optional[float]], family_size: Optional[int] = None) -> List[Optional[float]]:
    """Holm's step-down adjustment of a family of p-values (None stays None and is not
    counted): the i-th smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j)).

    ``family_size``: m where the family holds tests that have not run yet (at least the
    p-values given); those count as p = 1, which ranks them last. Holm's adjusted values
    never rise when a p-value falls, so these are upper bounds of the final ones."""
    present = [(p, index) for index, p in enumerate(p_values) if p is not None]
    size = len(present) if family_size is None else family_size
    if size < len(present):
        raise ValueError(f"a family of {size} tests cannot hold {len(present)} p-values")
    adjusted: List[Optional[float]] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(sorted(present)):
        running = max(running, min(1.0, (size - rank) * p))
        adjusted[index] = running
    return adjusted
