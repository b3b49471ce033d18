"""Per-user test metrics and the paired test that compares two models on them.

RecBole reports a metric's mean over test users; a significance test needs each
user's value. :func:`capture_per_user` wraps a trainer's evaluator for one
evaluation and keeps, per test user (RecBole's internal user id, in the full-ranking
loader's order), Recall@k and NDCG@k, computed by RecBole's own metric classes from
the same top-k structure the reported means come from.

:func:`paired_wilcoxon` pairs two models' per-user values by user and runs the
Wilcoxon signed-rank test (two-sided): per-user Recall/NDCG are bounded, skewed and
mostly tied at 0, so a paired t-test's normality does not hold, while the signed-rank
test needs only the paired differences to be symmetric about their median under the
null. Zero differences are dropped (``zero_method="wilcox"``), as is usual.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

PER_USER_METRICS = ("recall", "ndcg")


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


def mean_over_runs(runs: Sequence[Mapping[int, float]]) -> Dict[int, float]:
    """Per user, the mean of their values over runs (seeds); users missing from any run
    (a split where they had no test item) are left out."""
    if not runs:
        return {}
    common = set(runs[0])
    for run in runs[1:]:
        common &= set(run)
    return {user: float(np.mean([run[user] for run in runs])) for user in sorted(common)}


def paired_wilcoxon(first: Mapping[int, float], second: Mapping[int, float]) -> Dict[str, Optional[float]]:
    """Wilcoxon signed-rank test (two-sided) of ``first`` against ``second`` over the
    users both have. Returns ``users`` (pairs), ``mean_difference`` (first - second),
    ``statistic`` and ``p_value`` (None where every difference is 0)."""
    from scipy.stats import wilcoxon

    users: List[int] = sorted(set(first) & set(second))
    differences = np.array([first[user] - second[user] for user in users], dtype=float)
    outcome: Dict[str, Optional[float]] = {
        "users": len(users),
        "mean_difference": float(differences.mean()) if len(users) else None,
        "statistic": None,
        "p_value": None,
    }
    if np.count_nonzero(differences):
        result = wilcoxon(differences, zero_method="wilcox", alternative="two-sided")
        outcome["statistic"], outcome["p_value"] = float(result.statistic), float(result.pvalue)
    return outcome
