"""A tuned comparison: every model searched with the same budget, its best configuration
retrained over seeds and splits, and compared with KGIN over those runs.

    python run_recbole_kgin.py --dataset lastfm --data_path=DIR \\
        --compare KGIN,KGAT,KGCN,CKE,BPR,LightGCN --tune_trials 20 --seeds 5 --split_seeds 2

The protocol, the same for every model:

1. **Shared settings**: :data:`PROTOCOL` (training batch 2048, embedding size 64) under
   the user's settings, which apply to every model alike (``--train_batch_size=...``).
2. **Search**: a Ray Tune search over the model's packaged space (``tuning/<Model>.yaml``)
   of ``tune_trials`` configurations, a full grid where the space is discrete and no
   larger, otherwise drawn without replacement
   (:func:`recbole_kgin.experiments.search_space.plan_trials`). Every trial trains with RecBole's
   early stopping on the **validation** metric (``stopping_step``) and a cap of
   ``tune_epochs`` epochs (default: ``max_epochs``, the seed runs' cap); ``scheduler``
   ``fifo`` (default) prunes nothing, ``asha`` stops trials that trail at its rungs
   (from ``grace_period`` epochs). A best trial that ran to the cap is reported: the cap
   bound it.
3. **Runs**: the best configuration retrained with seeds ``1..seeds`` on the split the
   search validated on (``split_seed`` = the config's ``seed``: the seeds vary the
   initialisation, dropout, negatives and batch order, not which interactions are test),
   each until early stopping, ``max_epochs`` at most. The first model and the best
   other model (by its search's best validation score, never a test figure) run the same seeds on
   ``split_seeds`` more splits (``split_seed + 1``, ...), which shows how much the split
   moves the result. Seeds are shared by all models, so that runs pair.
4. **Tests** (:mod:`recbole_kgin.experiments.significance`): the first model against every other, on
   Recall@k and NDCG@k at the largest k, over the runs on the search's split paired by
   seed, and against the best other model also over every split (the splits' mean
   differences, since runs on one split are not independent): mean difference, paired
   t-test and its 95% interval, a 95% bootstrap interval over runs and test users,
   relative effect, and Holm's adjustment over every test the comparison plans.

Outputs in ``DIR`` (default ``results/compare-<dataset>``): ``tuned.md`` (the tables),
``tuned.json``, ``tuned.csv``, ``runs.csv`` (one row per run), ``curves.png``,
``comparison.png``; ``search/<Model>/`` (``trials.md``, ``trials.csv``,
``best_<Model>_<dataset>.yaml``, ``search.json``); ``tuned/<Model>/<dataset>.yaml`` (the
best configuration as a property file, its search in the header); ``runs/`` (one
finished run each, per-user test values beside it). The outputs are rewritten after
every model, the models not finished yet listed as such. Everything is cached: a
finished search (same space, budget and settings) and a finished run (same resolved
config and data) are not redone; a killed search resumes from Ray's records, a killed
run from its last validation.

Several processes can share one comparison: start the same command on every core
(``taskset -c 0 python run_recbole_kgin.py ... &``, ``taskset -c 1 ...``). Each model's
search and each run is claimed by one process (:mod:`recbole_kgin.experiments.claims`); the others
go on to what is free and, at the end, wait for what they skipped and read it from the
cache. ``--force`` redoes everything in every process: use it with one process only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from recbole.utils import init_logger

from recbole_kgin.common.atomic import write_text_atomically
from recbole_kgin.experiments.claims import CLAIM_TIMEOUT, claim
from recbole_kgin.experiments.compare import ModelConfig, RunResult, configs_for, output_folder, run_one
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.experiments.search_space import resolve_space
from recbole_kgin.experiments.significance import compare_runs, holm
from recbole_kgin.experiments.tuned_records import Budget, ModelSummary, Run
from recbole_kgin.experiments.tuned_report import write_outputs

# Settings every model of a comparison trains with, unless the user sets them for all.
PROTOCOL = {"train_batch_size": 2048, "embedding_size": 64}
PROTOCOL_VERSION = 2  # part of a search's cache key: a search of another protocol is redone
SIGNIFICANCE_LEVEL = 0.05
# Training settings of the comparison that a shipped property file carries beside the
# searched values, so that a run on its defaults trains as the comparison's runs did.
TRAINING_KEYS = (
    "stopping_step", "train_batch_size", "embedding_size", "learner", "weight_decay", "clip_grad_norm", "eval_step",
)  # fmt: skip


def table_metrics(ks: Sequence[int]) -> List[str]:
    """Recall and NDCG at every k of the config's ``topk``: recall@10, ndcg@10, recall@20, ..."""
    return [f"{name}@{k}" for k in sorted(ks) for name in ("recall", "ndcg")]


def _search_key(space: Path, model: str, dataset: str, budget: Budget, settings: Dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(space.read_bytes())
    what = [PROTOCOL_VERSION, model, dataset, budget.trials, budget.trial_cap, budget.scheduler, budget.grace_period, settings]
    digest.update(json.dumps(what, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]


def search_model(
    model: str,
    dataset: str,
    config_file_list: Optional[List[str]],
    config_dict: Dict[str, Any],
    budget: Budget,
    folder: Path,
    force: bool,
) -> Dict[str, Any]:
    """The model's search, or its cached result: the best ``params`` and
    ``best_valid_score``, and what the search spent (``trials``, ``trial_epochs``,
    ``trial_seconds``, ``best_trial_epochs``, ``best_trial_capped``, ``capped_trials``)."""
    from recbole_kgin.experiments.tune import plain_value, run_tune

    space = resolve_space(model)
    key = _search_key(space, model, dataset, budget, config_dict)
    record = folder / "search.json"
    if record.is_file() and not force:
        cached = json.loads(record.read_text())
        if cached.get("key") == key:
            if "capped_trials" not in cached:  # a record from before the count was kept: read it off trials.csv
                cached["capped_trials"] = _capped_trials(folder / "trials.csv")
            return cached
    outcome = run_tune(
        str(space), model, dataset, config_file_list, {**config_dict, "epochs": budget.trial_cap},
        num_samples=budget.trials, scheduler=budget.scheduler, cpus_per_trial=budget.cpus_per_trial,
        gpus_per_trial=budget.gpus_per_trial, address=budget.address, output=str(folder), retrain=False,
        resume=not force, grace_period=budget.grace_period, data_on_nodes=budget.data_on_nodes,
    )  # fmt: skip
    rows, best = outcome["trials"], outcome["best_trial"]
    result = {
        "key": key,
        "model": model,
        "space": space.name,
        "params": {name: plain_value(value) for name, value in outcome["best_params"].items()},
        "best_valid_score": outcome["best_valid_score"],
        "valid_metric": outcome["valid_metric"],
        "plan": outcome["plan"],
        "trials": len(rows),
        "tune_epochs": budget.trial_cap,
        "scheduler": budget.scheduler,
        "trial_epochs": sum(row.epochs_run for row in rows),
        "trial_seconds": sum(row.seconds for row in rows),
        "best_trial_epochs": best.epochs_run,
        "best_trial_capped": best.capped,
        "capped_trials": sum(row.capped for row in rows),
    }
    write_text_atomically(record, json.dumps(result, indent=2))
    return result


def _capped_trials(trials_csv: Path) -> Optional[int]:
    """How many trials of a search's ``trials.csv`` ran to its epoch cap (status
    ``completed``: neither RecBole's early stopping nor the scheduler ended them); None
    without the file."""
    if not trials_csv.is_file():
        return None
    with open(trials_csv, newline="", encoding="utf-8") as handle:
        return sum(row["status"] == "completed" for row in csv.DictReader(handle))


def write_property_file(
    path: Path, model: str, dataset: str, search: Dict[str, Any], training: Dict[str, Any], command: str
) -> None:
    """The best configuration as ``properties/model/<Model>/<dataset>.yaml``, its search in
    the header: the searched values over the comparison's ``training`` settings."""
    header = (
        f"# {model} on {dataset}: best of a Ray Tune search by recbole-kgin's tuned comparison,\n"
        f"# {search['trials']} trials ({search['plan']}) over {Path(search['space']).name}, early stopping on\n"
        f"# validation {search['valid_metric']} inside each, at most {search['tune_epochs']} epochs, "
        f"scheduler {search['scheduler']}\n"
        f"# (best {search['best_valid_score']:.4f}); never on test.\n"
        f"# Every model trained with: {', '.join(f'{key}={value}' for key, value in sorted(training.items()))}\n"
        f"# Command: {command}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, header + yaml.safe_dump({**training, **search["params"]}, sort_keys=True))


def summarize(model: str, search: Dict[str, Any], runs: Sequence[Run], budget: Budget, metrics: Sequence[str]) -> ModelSummary:
    """Mean ± std over the model's runs on the search's split (the first split seed
    among ``runs``), and its budget: the search's and every run's hours."""
    spent = dict(
        trials=search.get("trials", 0), plan=search.get("plan", ""), trial_epochs=search.get("trial_epochs", 0),
        search_hours=search.get("trial_seconds", 0.0) / 3600, best_trial_epochs=search.get("best_trial_epochs", 0),
        best_trial_capped=bool(search.get("best_trial_capped", False)), capped_trials=search.get("capped_trials"),
    )  # fmt: skip
    finished = [run for run in runs if run.result.status in ("ok", "cached")]
    main_split = [run for run in finished if run.split_seed == min(r.split_seed for r in finished)] if finished else []
    if not main_split:
        errors = "; ".join(run.result.error for run in runs if run.result.error) or "no finished run"
        return ModelSummary(model, search.get("params", {}), search.get("best_valid_score"), 0, {}, {}, 0, 0, 0, 0,
                            **spent, error=errors)  # fmt: skip
    mean, std = {}, {}
    for metric in metrics:
        values = [run.result.test_result[metric] for run in main_split if metric in run.result.test_result]
        if values:
            mean[metric] = statistics.mean(values)
            std[metric] = statistics.stdev(values) if len(values) > 1 else 0.0
    return ModelSummary(
        model=model,
        params=search["params"],
        search_valid_score=search["best_valid_score"],
        seeds=len(main_split),
        mean=mean,
        std=std,
        best_epoch=statistics.mean(run.result.best_epoch or 0 for run in main_split),
        seconds_per_epoch=statistics.mean(run.result.train_seconds_per_epoch or 0.0 for run in main_split),
        minutes_to_converge=statistics.mean(seconds_to_best(run.result) / 60 for run in main_split),
        capped_runs=sum(run.result.epochs_run >= budget.max_epochs for run in finished),
        runs=len(finished),
        run_hours=sum(run.result.valid_curve[-1][2] for run in finished if run.result.valid_curve) / 3600,
        **spent,
    )


def seconds_to_best(run: RunResult) -> float:
    """Wall-clock seconds from the start of training to the end of the best epoch's validation."""
    for epoch, _, seconds in run.valid_curve:
        if epoch == run.best_epoch:
            return seconds
    return run.valid_curve[-1][2] if run.valid_curve else 0.0


def best_other(models: Sequence[str], summaries: Sequence[ModelSummary]) -> Optional[str]:
    """The model after the first with the best validation score of its search (never a
    test figure: which model earns the runs on more splits must not look at test data);
    None where no other model has finished."""
    others = [s for s in summaries if s.model != models[0] and s.seeds and s.search_valid_score is not None]
    return max(others, key=lambda s: s.search_valid_score).model if others else None


def significance(
    models: Sequence[str], summaries: Sequence[ModelSummary], runs: Dict[str, List[Run]], k: int, split_seeds: int = 0
) -> Optional[Dict[str, Any]]:
    """The first model against every other finished one on Recall@k and NDCG@k
    (:func:`recbole_kgin.experiments.significance.compare_runs`): over the seeds on the
    search's split for every model alike, and, for the best other model once both have
    run ``split_seeds`` more splits, over the splits (``"scope": "every split"``).
    p-values are Holm-adjusted over the family the comparison plans (2 tests per other
    model, 2 more across splits where ``split_seeds``; those not yet run count as p = 1).
    None where the first model or every other is missing."""
    first = models[0]
    finished = {s.model for s in summaries if s.seeds}
    others = [s.model for s in summaries if s.model != first and s.model in finished]
    if first not in finished or not others:
        return None
    main = min(run.split_seed for run in runs[first])
    rival = best_other(models, summaries)
    metrics = (f"recall@{k}", f"ndcg@{k}")

    def per_user(model: str, metric: str, every_split: bool) -> Dict[Any, Dict[int, float]]:
        return {run.key: run.users[metric] for run in runs[model]
                if metric in run.users and (every_split or run.split_seed == main)}  # fmt: skip

    tests = []
    for other in others:
        for metric in metrics:
            outcome = compare_runs(per_user(first, metric, False), per_user(other, metric, False))
            tests.append({"against": other, "metric": metric, "scope": f"split {main}", **outcome})
    if split_seeds and rival in others:
        for metric in metrics:
            outcome = compare_runs(per_user(first, metric, True), per_user(rival, metric, True))
            if outcome["splits"] and outcome["splits"] > 1:
                tests.append({"against": rival, "metric": metric, "scope": "every split", **outcome})
    family = 2 * (len(models) - 1) + (2 if split_seeds and len(models) > 1 else 0)
    for test, adjusted in zip(tests, holm([test["p_value"] for test in tests], family)):
        test["p_holm"] = adjusted
    return {
        "model": first,
        "best_other": rival,
        "ranked_by": "the search's best validation score",
        "family": family,
        "test": (
            "t-test of the paired differences, two-sided, over the runs (seeds) on the search's split, and over the "
            "splits' mean differences for the model with runs on more splits (with 3 splits, 2 degrees of freedom: "
            "it rarely rejects and mainly shows how the split moves the gap); its 95% interval; a 95% bootstrap "
            "interval that also resamples the test users; Holm"
        ),
        "level": SIGNIFICANCE_LEVEL,
        "comparisons": tests,
    }


@dataclass
class _Protocol:
    """What every model of one comparison shares."""

    dataset: str
    config_file_list: Optional[List[str]]
    settings: Dict[str, Any]  # the protocol's and the user's config values, for every model
    budget: Budget
    output: Path
    force: bool
    command: str
    ks: Sequence[int]
    metrics: Sequence[str]
    claim_timeout: float = CLAIM_TIMEOUT  # seconds to wait for a unit another process holds


def run_tuned_comparison(
    models: Sequence[str],
    dataset: str,
    budget: Budget,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[Dict[str, Any]] = None,
    output_dir: Optional[str] = None,
    force: bool = False,
    command: str = "",
    claim_timeout: float = CLAIM_TIMEOUT,
) -> Dict[str, Any]:
    """Search, run over seeds and splits, test and tabulate every model (see the module note);
    ``claim_timeout``: seconds to wait for a unit another process holds."""
    budget.check()
    user_settings = dict(config_dict or {})
    if {"seed", "epochs", "split_seed"} & set(user_settings):
        raise UserInputError(
            "the tuned comparison sets seed, split_seed and epochs itself: use --seeds, --tune_epochs, --max_epochs"
        )
    settings = {**PROTOCOL, **user_settings}
    for model in models:
        resolve_space(model)  # every model needs a space before anything runs
    configs = configs_for(models, dataset, config_file_list, settings)  # checked before anything trains
    first = next(entry.config for entry in configs.values() if entry.config is not None)
    init_logger(first)  # now, not at the first training: the claims log which units they skip
    ks = sorted(first["topk"])
    metrics = table_metrics(ks)
    output = output_folder(dataset, output_dir)
    for sub in ("runs", "configs", "search", "tuned"):
        (output / sub).mkdir(parents=True, exist_ok=True)
    protocol = _Protocol(dataset, config_file_list, settings, budget, output, force, command, ks, metrics, claim_timeout)
    searches: Dict[str, Dict[str, Any]] = {}
    runs: Dict[str, List[Run]] = {}
    finished: Dict[str, ModelSummary] = {}

    def write(pending: Sequence[str]) -> Dict[str, Any]:
        summaries = [finished[name] for name in models if name in finished]
        test = significance(models, summaries, runs, ks[-1], budget.split_seeds)
        write_outputs(summaries, test, runs, budget, settings, output, metrics, pending)
        return {"summaries": summaries, "significance": test, "output": str(output), "metrics": metrics,
                "settings": settings}  # fmt: skip

    for wait in (False, True):  # first what no other process is on, then wait for the rest
        for model in models:
            if model in finished:
                continue
            done = _search_and_run(model, configs[model], protocol, searches, runs, wait)
            if done is None:  # another process is on it
                continue
            finished[model] = done
            write([name for name in models if name not in finished])
    rival = best_other(models, list(finished.values()))
    splitting = [models[0], rival] if budget.split_seeds and rival and finished[models[0]].seeds else []
    for wait in (False, True):
        for model in list(splitting):
            if _split_runs(model, configs[model], protocol, searches[model], runs, wait) is not None:
                finished[model] = summarize(model, searches[model], runs[model], budget, metrics)
                splitting.remove(model)
    return write([])


def _search_and_run(
    model: str,
    entry: ModelConfig,
    protocol: _Protocol,
    searches: Dict[str, Dict[str, Any]],
    runs: Dict[str, List[Run]],
    wait: bool,
) -> Optional[ModelSummary]:
    """One model's search and runs on the search's split (``searches[model]``,
    ``runs[model]``) and its summary; None, with nothing recorded, where another process
    holds its search or one of its runs and ``wait`` is False (the runs that were free
    are done)."""
    if entry.error:
        return ModelSummary(model, {}, None, 0, {}, {}, 0, 0, 0, 0, error=entry.error)
    p = protocol
    with claim(p.output / "claims", f"{model}-search", wait, p.claim_timeout) as held:
        if not held:
            return None
        try:
            search = search_model(model, p.dataset, p.config_file_list, {**p.settings, **entry.extra}, p.budget,
                                  p.output / "search" / model, p.force)  # fmt: skip
        except UserInputError as error:  # every trial failed: the model is reported, the others go on
            return ModelSummary(model, {}, None, 0, {}, {}, 0, 0, 0, 0, error=str(error))
    training = {key: p.settings[key] for key in TRAINING_KEYS if key in p.settings}
    write_property_file(p.output / "tuned" / model / f"{p.dataset}.yaml", model, p.dataset, search, training, p.command)
    searches[model] = search
    model_runs = _runs(model, entry, protocol, search, int(entry.config["seed"]), wait)
    if model_runs is None:
        return None
    runs[model] = model_runs
    return summarize(model, search, model_runs, p.budget, p.metrics)


def _split_runs(
    model: str, entry: ModelConfig, protocol: _Protocol, search: Dict[str, Any], runs: Dict[str, List[Run]], wait: bool
) -> Optional[List[Run]]:
    """The model's runs on the extra splits, added to ``runs[model]`` (once); None where
    another process holds one of them and ``wait`` is False."""
    base = int(entry.config["seed"])
    known = {run.key for run in runs[model]}
    added: List[Run] = []
    for split_seed in range(base + 1, base + 1 + protocol.budget.split_seeds):
        split_runs = _runs(model, entry, protocol, search, split_seed, wait)
        if split_runs is None:
            return None
        added += [run for run in split_runs if run.key not in known]
    runs[model] = runs[model] + added
    return added


def _runs(
    model: str, entry: ModelConfig, protocol: _Protocol, search: Dict[str, Any], split_seed: int, wait: bool
) -> Optional[List[Run]]:
    """Seeds ``1..seeds`` of the model's best configuration on split ``split_seed``;
    None where another process holds one of them and ``wait`` is False."""
    p = protocol
    main_split = split_seed == int(entry.config["seed"])
    model_runs, skipped = [], False
    for seed in range(1, p.budget.seeds + 1):
        unit = f"{model}-seed{seed}" if main_split else f"{model}-split{split_seed}-seed{seed}"
        with claim(p.output / "claims", unit, wait, p.claim_timeout) as held:
            if not held:
                skipped = True
                continue
            settings = {**p.settings, **entry.extra, **search["params"], "split_seed": split_seed, "seed": seed,
                        "epochs": p.budget.max_epochs}  # fmt: skip
            result, users = run_one(model, p.dataset, p.config_file_list, settings, p.output, p.force, per_user_ks=p.ks)
        model_runs.append(Run(split_seed, seed, result, users))
    return None if skipped else model_runs
