"""Per-user test metrics, and the tests that compare two models over training runs.

RecBole reports a metric's mean over test users, rounded. :func:`capture_per_user` wraps
a trainer's evaluator for one evaluation and keeps, per test user (RecBole's internal
user id, in the full-ranking loader's order), Recall@k and NDCG@k, computed by RecBole's
own metric classes from the same top-k structure the reported means come from; a run's
figure is their mean, unrounded (:func:`run_value`).

A trained model is one draw of a random process (initialisation, dropout, negatives,
batch order, and the split). Two models are therefore compared over **runs**, paired
by (split seed, seed): :func:`compare_runs` gives the mean difference, a t-test of the
differences (two-sided; over the run pairs on one split, over the splits' mean
differences where the runs span several splits, since runs on one split are not
independent of each other), that test's own 95% confidence interval (it excludes 0
exactly where p < 0.05), the relative effect (difference over the other model's mean),
and a second 95% interval from a nested bootstrap that also resamples the test users
(once per split for all its runs), so that both training variance and the choice of
users widen it. :func:`holm` adjusts the p-values of all the tests a report plans
(Holm's step-down, family-wise error); tests not yet run count as p = 1, so the
adjusted values can only fall as they arrive.

Ties: run values are rounded to :data:`DECIMALS` places before they are differenced,
so that two runs equal up to float noise (a mean summed in another order) count as a
tie, never as a tiny difference of either sign. Where the units' differences have no
variance the t-test is undefined, and its interval is None in both such cases: where
every unit ties, p = 1 (and statistic 0) by convention; where every unit differs by
the same nonzero amount, statistic and p are None, never p = 0. The bootstrap interval
is computed either way (the point [d, d] where users and runs all agree).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

PER_USER_METRICS = ("recall", "ndcg")
DECIMALS = 10  # run values are compared at this precision
BOOTSTRAP_SAMPLES = 10000
BOOTSTRAP_CHUNK = 1000  # samples drawn at once: (chunk, users) weights in memory
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
    ours: Mapping[Tuple[int, int], Mapping[int, float]],
    theirs: Mapping[Tuple[int, int], Mapping[int, float]],
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
) -> Dict[str, Any]:
    """Our model against theirs on one metric, over the runs both have.

    ``ours``/``theirs`` map a run's key, ``(split_seed, seed)``, to its per-user test
    values ``{user: value}``; runs pair by key, users by id within a split.

    The unit of the test is the run where every pair shares one split, else the split:
    runs on one split share its test users and its training data, so with several
    splits each split's mean difference over its seeds is one observation (the exact
    test of a balanced nested design), never each run (pseudo-replication).

    Returns ``pairs`` (run pairs), ``splits``, ``unit`` (``"run"`` or ``"split"``),
    ``units`` (their count), ``mean_ours``, ``mean_theirs``, ``difference`` (ours -
    theirs: the mean over units), ``relative`` (difference / mean_theirs), ``statistic``
    and ``p_value`` of the t-test of the units' differences (two-sided; paired over runs
    on one split; None with fewer than 2 units or where every unit has the same nonzero
    difference), ``ci_low``/``ci_high`` (the same t-test's 95% interval of the mean
    difference: it excludes 0 exactly where p < 0.05) and ``boot_low``/``boot_high``
    (:func:`_bootstrap_interval`: splits, runs and test users resampled, so that the
    choice of users widens it too).
    """
    from scipy.stats import t as student_t
    from scipy.stats import ttest_1samp

    keys = sorted(set(ours) & set(theirs), key=repr)
    for key in keys:  # a run's figure and the bootstrap must read the same users
        if set(ours[key]) != set(theirs[key]):
            raise ValueError(f"runs {key} of the two models tested different users: they cannot be paired")
    outcome: Dict[str, Any] = dict.fromkeys(
        ("pairs", "splits", "unit", "units", "mean_ours", "mean_theirs", "difference", "relative", "statistic",
         "p_value", "ci_low", "ci_high", "boot_low", "boot_high")
    )  # fmt: skip
    outcome["pairs"] = len(keys)
    if not keys:
        return outcome
    by_split: Dict[int, List[Tuple[int, int]]] = {}
    for key in keys:
        by_split.setdefault(key[0], []).append(key)
    a = {key: round(run_value(ours[key]), DECIMALS) for key in keys}
    b = {key: round(run_value(theirs[key]), DECIMALS) for key in keys}
    if len(by_split) == 1:
        unit, groups = "run", [[key] for key in keys]
    else:
        unit, groups = "split", list(by_split.values())
    mine = np.array([np.mean([a[key] for key in group]) for group in groups])
    other = np.array([np.mean([b[key] for key in group]) for group in groups])
    differences = np.round(mine - other, DECIMALS)
    mean_difference = float(np.round(differences.mean(), DECIMALS))
    outcome.update(splits=len(by_split), unit=unit, units=len(groups), mean_ours=float(mine.mean()),
                   mean_theirs=float(other.mean()), difference=mean_difference)  # fmt: skip
    outcome["relative"] = float(mean_difference / other.mean()) if other.mean() else None
    if len(groups) >= 2:
        if not np.any(differences):
            outcome.update(statistic=0.0, p_value=1.0)  # the interval stays None: no variance
        elif not np.all(differences == differences[0]):  # else every unit the same nonzero gap: undefined
            result = ttest_1samp(differences, 0.0)
            half = student_t.ppf((1 + CONFIDENCE) / 2, len(groups) - 1) * differences.std(ddof=1) / np.sqrt(len(groups))
            outcome.update(statistic=float(result.statistic), p_value=float(result.pvalue),
                           ci_low=mean_difference - float(half), ci_high=mean_difference + float(half))  # fmt: skip
    if len(keys) >= 2:  # with one run pair the interval would hold no training variance
        tables = [_user_differences([ours[k] for k in group], [theirs[k] for k in group]) for group in by_split.values()]
        outcome["boot_low"], outcome["boot_high"] = _bootstrap_interval(tables, seed, samples)
    return outcome


def _user_differences(ours: Sequence[Mapping[int, float]], theirs: Sequence[Mapping[int, float]]) -> np.ndarray:
    """Per-user differences of the run pairs of one split, ``(runs, users)``, over the
    users every run of the split tested (one split's runs test the same users)."""
    users = sorted(set.intersection(*(set(run) for run in (*ours, *theirs))))
    return np.array([[mine[user] - other[user] for user in users] for mine, other in zip(ours, theirs)], dtype=float)


def _bootstrap_interval(tables: Sequence[np.ndarray], seed: int, samples: int) -> List[Optional[float]]:
    """The central ``CONFIDENCE`` interval of the mean difference from a nested bootstrap.

    ``tables``: per split, its ``(runs, users)`` per-user differences. Each sample draws
    the splits with replacement (where there are several), and within each drawn split its
    run pairs and, once for all of them, its users with replacement (the runs of a split
    test the same users, so one user draw serves them all); the statistic is the mean over
    drawn splits of the mean over drawn runs and users. With few runs the percentile
    interval understates the training part (5 runs: about 0.63 of the t-interval's width
    from training alone), so it is no superset of the t-test's interval; with 3 splits it
    has only 10 distinct split draws. [None, None] where a split has no common users."""
    if any(table.size == 0 for table in tables):
        return [None, None]
    rng = np.random.default_rng(seed)
    if len(tables) == 1:
        statistics = _inner_means(tables[0], rng, samples)
    else:  # each drawn split, a second draw of the same one included, gets its own inner draw
        picked = rng.integers(0, len(tables), size=(samples, len(tables)))  # splits drawn per sample
        positions = [np.stack([_inner_means(table, rng, samples) for table in tables]) for _ in range(len(tables))]
        statistics = np.mean([positions[j][picked[:, j], np.arange(samples)] for j in range(len(tables))], axis=0)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(np.round(statistics, DECIMALS), [tail, 1 - tail])
    return [float(low), float(high)]


def _inner_means(table: np.ndarray, rng: np.random.Generator, samples: int) -> np.ndarray:
    """``samples`` means of one split's ``(runs, users)`` differences over its run pairs and
    its users drawn with replacement (one user draw for all the split's runs)."""
    runs, users = table.shape
    means = np.empty(samples)
    for start in range(0, samples, BOOTSTRAP_CHUNK):
        size = min(BOOTSTRAP_CHUNK, samples - start)
        run_weights = rng.multinomial(runs, np.full(runs, 1 / runs), size=size) / runs  # (size, runs)
        user_weights = rng.multinomial(users, np.full(users, 1 / users), size=size) / users  # (size, users)
        means[start : start + size] = ((run_weights @ table) * user_weights).sum(axis=1)
    return means


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
