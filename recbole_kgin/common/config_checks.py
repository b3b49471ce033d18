"""Checks of config values, so a bad value fails at once with a one-line message.

A check is ``(predicate, expectation)``; :func:`check_config_values` applies the
common checks below plus the model class's own ``config_checks`` (same form).
"""

from __future__ import annotations

from numbers import Real
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

from recbole_kgin.common.errors import UserInputError

Check = Tuple[Callable[[Any], bool], str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def positive_int() -> Check:
    return (lambda v: _is_int(v) and v > 0, "a positive integer")


def non_negative_int() -> Check:
    return (lambda v: _is_int(v) and v >= 0, "an integer >= 0")


def positive_number() -> Check:
    return (lambda v: _is_number(v) and v > 0, "a positive number")


def non_negative_number() -> Check:
    return (lambda v: _is_number(v) and v >= 0, "a number >= 0")


def rate() -> Check:
    return (lambda v: _is_number(v) and 0 <= v < 1, "a rate in [0, 1)")


def one_of(choices: Sequence[Any]) -> Check:
    return (lambda v: v in choices, "one of " + ", ".join(map(str, choices)))


def boolean() -> Check:
    return (lambda v: isinstance(v, bool), "True or False")


NO_PICKLED_DATA = "recbole-kgin keeps processed data in its own checked cache (startup_cache) and never unpickles RecBole's"
COMMON_CHECKS: Dict[str, Check] = {
    "epochs": non_negative_int(),
    "train_batch_size": positive_int(),
    "eval_batch_size": positive_int(),
    "learning_rate": positive_number(),
    "eval_step": positive_int(),
    "stopping_step": positive_int(),
    "seed": non_negative_int(),
    "split_seed": (lambda v: v is None or (_is_int(v) and v >= 0), "None or a non-negative integer"),
    "embedding_size": positive_int(),
    "weight_decay": non_negative_number(),
    "kg_items_only": boolean(),
    "cpu_threads": (lambda v: v == "auto" or (_is_int(v) and v > 0), "auto or a positive integer"),
    "thread_governor": boolean(),
    "cpu_malloc_tuning": boolean(),
    "startup_cache": boolean(),
    "distributed_timeout": positive_number(),
    # RecBole's pickled datasets and loaders are never written nor read (compat fix 11):
    # processed data is cached by recbole-kgin itself (startup_cache)
    "save_dataset": (lambda v: v is False, f"False: {NO_PICKLED_DATA}"),
    "save_dataloaders": (lambda v: v is False, f"False: {NO_PICKLED_DATA}"),
    "dataset_save_path": (lambda v: v is None, f"unset: {NO_PICKLED_DATA}"),
    "dataloaders_save_path": (lambda v: v is None, f"unset: {NO_PICKLED_DATA}"),
}


def computed_metric_keys(metrics: Sequence[str], topk: Sequence[int]) -> List[str]:
    """The keys RecBole's evaluator reports for ``metrics`` at ``topk``: ``name@k`` for
    metrics of top-k lists (Recall, NDCG, ItemCoverage, ...), ``name`` for the others
    (AUC, GAUC, MAE, ...), lower-cased as RecBole's trainer looks them up."""
    from recbole.evaluator.register import metric_information

    keys: List[str] = []
    for metric in metrics:
        name = metric.lower()
        needs = metric_information.get(name, ())
        if "rec.topk" in needs or "rec.items" in needs:
            keys += [f"{name}@{k}" for k in topk]
        else:
            keys.append(name)
    return keys


def check_valid_metric(config: Mapping[str, Any]) -> None:
    """Raise :class:`UserInputError` unless ``valid_metric`` is one of the metrics the
    evaluator computes from ``metrics`` and ``topk``: RecBole would only fail at the
    end of the first training epoch, with a bare ``KeyError: 'recall@20'``."""
    valid_metric, metrics, topk = config.get("valid_metric"), config.get("metrics"), config.get("topk")
    if not valid_metric or not metrics:
        return
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    topk = [topk] if isinstance(topk, int) else list(topk or [])
    keys = computed_metric_keys(metrics, topk)
    if str(valid_metric).lower() not in keys:
        name, _, k = str(valid_metric).partition("@")
        fix = f"add {k} to topk" if k and name.lower() in [m.lower() for m in metrics] else f"add {name} to metrics"
        raise UserInputError(
            f"valid_metric {valid_metric} is not computed by metrics {metrics} at topk {topk} "
            f"(they give {', '.join(keys)}): set --valid_metric to one of those, or {fix}"
        )


def check_config_values(config: Mapping[str, Any], model_class: type) -> None:
    """Raise :class:`UserInputError` for the first value that fails its check."""
    checks = dict(COMMON_CHECKS)
    checks.update(getattr(model_class, "config_checks", {}))
    for key, (predicate, expectation) in checks.items():
        if key not in config:
            continue
        value = config[key]
        if not predicate(value):
            raise UserInputError(
                f"bad config value {key}={value!r}: expected {expectation} "
                f"(set it with --{key}=... or '{key}:' in a config file)"
            )
    check_valid_metric(config)
