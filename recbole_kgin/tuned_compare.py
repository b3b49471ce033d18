"""A comparison a reviewer would accept: every model tuned with the same budget,
its best configuration retrained over seeds, and a paired significance test.

    python run_recbole_kgin.py --dataset lastfm --data_path=../shared/datasets \\
        --compare KGIN,KGAT,KGCN,CKE,BPR --tune_trials 12 --seeds 3

For every model in the list:

1. a Ray Tune search over its packaged space (``tuning/<Model>.yaml``) with the same
   budget for every model: ``tune_trials`` trials, ``tune_epochs`` epochs at most per
   trial, ASHA pruning on the **validation** metric (:mod:`recbole_kgin.tune`);
2. the best configuration retrained with seeds ``1..seeds`` until RecBole's early
   stopping, on the split the search validated on (``split_seed``: the seeds vary the
   model's initialisation, dropout, negatives and batch order, not which interactions
   are test), with ``max_epochs`` as a cap that should not bind: a run that reaches it
   is flagged (``cap``) in the table;
3. per model: mean ± std over seeds of Recall/NDCG at each ``topk`` (10, 20), best
   epoch, s/epoch, and minutes to converge (wall-clock from the first epoch to the end
   of the best epoch's validation); then a Wilcoxon signed-rank test
   (:mod:`recbole_kgin.significance`) of the first model (KGIN) against the best other
   model (by mean test Recall@20, the largest k) on per-user test Recall@20 and
   NDCG@20, each user's value averaged over seeds;
4. figures: the validation metric against epoch and against wall-clock seconds (mean
   over seeds, one line per model), beside the bar chart of test metrics.

Outputs in ``DIR`` (default ``results/compare-<dataset>``): ``tuned.md``, ``tuned.csv``,
``tuned.json``, ``curves.png``, ``comparison.png``; ``search/<Model>/`` (the search:
``trials.md``, ``trials.csv``, ``best_<Model>_<dataset>.yaml``, ``search.json``);
``tuned/<Model>/<dataset>.yaml`` (the best configuration as a property file, with the
search that produced it in its header: copy it to ``properties/model/`` to make it the
default); ``runs/`` (one finished seed run each, per-user metrics beside it).
The tables and figures are rewritten after every model, so a comparison that is
killed (or still running) shows the models finished so far, the others listed as not
run yet; until every model is in, the significance test is against the best *finished*
other model. Everything is cached: a finished search (same space, budget and settings)
and a finished seed run (same resolved config and data) are not redone, a killed search
resumes from Ray's records, its finished trials kept, and a killed seed run from its
last validation.

Several processes can share one comparison: start the same command on every core
(``taskset -c 0 python run_recbole_kgin.py ... &``, ``taskset -c 1 ...``). Each model's
search and each seed run is claimed by one process (:mod:`recbole_kgin.claims`); the
others go on to what is free and, at the end, wait for what they skipped and read it
from the cache, so every process ends with the full table. ``--force`` redoes everything
in every process: use it with one process only.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from recbole.utils import init_logger

from recbole_kgin.atomic import replacing, write_text_atomically
from recbole_kgin.claims import CLAIM_TIMEOUT, claim
from recbole_kgin.compare import ModelConfig, RunResult, configs_for, output_folder, plot_comparison, run_one
from recbole_kgin.errors import UserInputError
from recbole_kgin.search_space import resolve_space
from recbole_kgin.significance import mean_over_runs, paired_wilcoxon

SIGNIFICANCE_LEVEL = 0.05
# Training settings of the comparison that a shipped property file carries beside the
# searched values, so that a run on its defaults trains as the seed runs did.
TRAINING_KEYS = ("stopping_step", "train_batch_size", "learner", "weight_decay", "clip_grad_norm", "eval_step")


def table_metrics(ks: Sequence[int]) -> List[str]:
    """Recall and NDCG at every k of the config's ``topk``: recall@10, ndcg@10, recall@20, ..."""
    return [f"{name}@{k}" for k in sorted(ks) for name in ("recall", "ndcg")]


@dataclass
class Budget:
    """What every model gets: search trials and epochs per trial, seeds, the retraining cap."""

    trials: int
    tune_epochs: int
    seeds: int
    max_epochs: int
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    address: Optional[str] = None
    grace_period: int = 1  # epochs before ASHA may stop a trial
    data_on_nodes: Optional[str] = None  # see recbole_kgin.data.on_nodes

    def check(self) -> None:
        if self.trials < 1 or self.seeds < 1 or self.tune_epochs < 1 or self.max_epochs < 1:
            raise UserInputError("--tune_trials, --seeds, --tune_epochs and --max_epochs must be >= 1")


@dataclass
class ModelSummary:
    """One model's row: seeds aggregated."""

    model: str
    params: Dict[str, Any]
    search_valid_score: Optional[float]
    seeds: int
    mean: Dict[str, float]
    std: Dict[str, float]
    best_epoch: float
    seconds_per_epoch: float
    minutes_to_converge: float
    capped_runs: int
    error: str = ""


def _search_key(space: Path, model: str, dataset: str, budget: Budget, settings: Dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(space.read_bytes())
    what = [model, dataset, budget.trials, budget.tune_epochs, budget.grace_period, settings]
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
    """The model's search, or its cached result: ``{"params", "best_valid_score", "key"}``."""
    from recbole_kgin.tune import plain_value, run_tune

    space = resolve_space(model)
    key = _search_key(space, model, dataset, budget, config_dict)
    record = folder / "search.json"
    if record.is_file() and not force:
        cached = json.loads(record.read_text())
        if cached.get("key") == key:
            return cached
    outcome = run_tune(
        str(space), model, dataset, config_file_list, {**config_dict, "epochs": budget.tune_epochs},
        num_samples=budget.trials, cpus_per_trial=budget.cpus_per_trial, gpus_per_trial=budget.gpus_per_trial,
        address=budget.address, output=str(folder), retrain=False, resume=not force,
        grace_period=budget.grace_period, data_on_nodes=budget.data_on_nodes,
    )  # fmt: skip
    result = {
        "key": key,
        "model": model,
        "space": str(space),
        "params": {name: plain_value(value) for name, value in outcome["best_params"].items()},
        "best_valid_score": outcome["best_valid_score"],
        "valid_metric": outcome["valid_metric"],
        "trials": budget.trials,
        "tune_epochs": budget.tune_epochs,
    }
    write_text_atomically(record, json.dumps(result, indent=2))
    return result


def write_property_file(
    path: Path, model: str, dataset: str, search: Dict[str, Any], training: Dict[str, Any], command: str
) -> None:
    """The best configuration as ``properties/model/<Model>/<dataset>.yaml``, its search in
    the header: the searched values over the comparison's ``training`` settings."""
    header = (
        f"# {model} on {dataset}: best of a Ray Tune search by recbole-kgin's tuned comparison,\n"
        f"# {search['trials']} trials over {Path(search['space']).name}, at most {search['tune_epochs']} epochs each,\n"
        f"# ASHA on validation {search['valid_metric']} (best {search['best_valid_score']:.4f}); never on test.\n"
        f"# Command: {command}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, header + yaml.safe_dump({**training, **search["params"]}, sort_keys=True))


def summarize(
    model: str, search: Dict[str, Any], runs: Sequence[RunResult], max_epochs: int, metrics: Sequence[str]
) -> ModelSummary:
    """Mean ± std over the seed runs of one model."""
    finished = [run for run in runs if run.status in ("ok", "cached")]
    if not finished:
        errors = "; ".join(run.error for run in runs if run.error) or "no finished run"
        return ModelSummary(model, search.get("params", {}), search.get("best_valid_score"), 0, {}, {}, 0, 0, 0, 0, errors)
    mean, std = {}, {}
    for metric in metrics:
        values = [run.test_result[metric] for run in finished if metric in run.test_result]
        if values:
            mean[metric] = statistics.mean(values)
            std[metric] = statistics.stdev(values) if len(values) > 1 else 0.0
    return ModelSummary(
        model=model,
        params=search["params"],
        search_valid_score=search["best_valid_score"],
        seeds=len(finished),
        mean=mean,
        std=std,
        best_epoch=statistics.mean(run.best_epoch or 0 for run in finished),
        seconds_per_epoch=statistics.mean(run.train_seconds_per_epoch or 0.0 for run in finished),
        minutes_to_converge=statistics.mean(_seconds_to_best(run) / 60 for run in finished),
        capped_runs=sum(run.epochs_run >= max_epochs for run in finished),
    )


def _seconds_to_best(run: RunResult) -> float:
    """Wall-clock seconds from the start of training to the end of the best epoch's validation."""
    for epoch, _, seconds in run.valid_curve:
        if epoch == run.best_epoch:
            return seconds
    return run.valid_curve[-1][2] if run.valid_curve else 0.0


def significance(
    models: Sequence[str],
    summaries: Sequence[ModelSummary],
    per_user: Dict[str, List[Dict[str, Dict[int, float]]]],
    k: int,
) -> Optional[Dict[str, Any]]:
    """The first model against the best other (by mean test recall@k) on per-user
    recall@k and ndcg@k."""
    rank_metric = f"recall@{k}"
    scored = [s for s in summaries if s.seeds and rank_metric in s.mean]
    first = next((s for s in scored if s.model == models[0]), None)
    others = [s for s in scored if s.model != models[0]]
    if first is None or not others:
        return None
    rival = max(others, key=lambda s: s.mean[rank_metric])
    tests = {}
    for metric in (rank_metric, f"ndcg@{k}"):
        ours = mean_over_runs([run[metric] for run in per_user[first.model] if metric in run])
        theirs = mean_over_runs([run[metric] for run in per_user[rival.model] if metric in run])
        tests[metric] = paired_wilcoxon(ours, theirs)
    return {
        "model": first.model,
        "against": rival.model,
        "ranked_by": rank_metric,
        "test": "Wilcoxon signed-rank, two-sided",
        "metrics": tests,
    }


def _cell(summary: ModelSummary, metric: str) -> str:
    if metric not in summary.mean:
        return ""
    return f"{summary.mean[metric]:.4f} ± {summary.std[metric]:.4f}"


def format_table(
    summaries: Sequence[ModelSummary],
    test: Optional[Dict[str, Any]],
    budget: Budget,
    metrics: Sequence[str],
    pending: Sequence[str] = (),
) -> str:
    """The markdown table, its significance line and its budget; ``pending`` models
    (not run yet) get a row that says so."""
    header = ["model", *metrics, "best epoch", "s/epoch", "min to converge", "seeds", "cap"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in summaries:
        if summary.error:
            lines.append(f"| {summary.model} | failed: {summary.error.replace('|', '/')} |" + " |" * (len(header) - 2))
            continue
        cells = [summary.model] + [_cell(summary, metric) for metric in metrics]
        if test and summary.model == test["model"]:
            for index, metric in enumerate(metrics, start=1):
                p_value = test["metrics"].get(metric, {}).get("p_value")
                if p_value is not None and p_value < SIGNIFICANCE_LEVEL:
                    cells[index] += " *"
        cells += [
            f"{summary.best_epoch:.1f}",
            f"{summary.seconds_per_epoch:.2f}",
            f"{summary.minutes_to_converge:.1f}",
            str(summary.seeds),
            f"{summary.capped_runs} of {summary.seeds} hit the cap" if summary.capped_runs else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for model in pending:
        lines.append(f"| {model} | not run yet |" + " |" * (len(header) - 2))
    lines.append("")
    lines.append(
        f"Budget per model: {budget.trials} search trials of at most {budget.tune_epochs} epochs (ASHA on validation), "
        f"then {budget.seeds} seed(s) of the best configuration, early stopping, cap {budget.max_epochs} epochs."
    )
    if test:
        parts = []
        for metric, outcome in test["metrics"].items():
            if outcome["p_value"] is None:
                parts.append(f"{metric}: no difference on any of {outcome['users']} users")
            else:
                parts.append(
                    f"{metric}: mean per-user difference {outcome['mean_difference']:+.4f}, "
                    f"p = {outcome['p_value']:.2g} over {outcome['users']} users"
                )
        rival = "the best other model finished so far" if pending else "the best other model"
        lines.append(
            f"{test['model']} vs {test['against']} ({rival} by mean test {test['ranked_by']}), {test['test']} "
            f"on per-user test values averaged over seeds: " + "; ".join(parts)
            + f". * marks p < {SIGNIFICANCE_LEVEL}."
        )
    return "\n".join(lines)


def plot_curves(runs: Dict[str, List[RunResult]], metric: str, path: Path) -> None:
    """Validation metric against epoch and against wall-clock seconds, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for model, model_runs in runs.items():
        curves = [run.valid_curve for run in model_runs if run.valid_curve]
        if not curves:
            continue
        length = min(len(curve) for curve in curves)  # epochs every seed reached
        epochs = [curves[0][i][0] + 1 for i in range(length)]
        scores = [statistics.mean(curve[i][1] for curve in curves) for i in range(length)]
        seconds = [statistics.mean(curve[i][2] for curve in curves) for i in range(length)]
        by_epoch.plot(epochs, scores, label=model)
        by_time.plot(seconds, scores, label=model)
    by_epoch.set_xlabel("epoch")
    by_time.set_xlabel("wall-clock seconds of training and validation")
    by_time.set_xscale("symlog", linthresh=10)
    for axes in (by_epoch, by_time):
        axes.set_ylabel(f"validation {metric} (mean over seeds)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


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
    """Search, retrain over seeds and tabulate every model (see the module note);
    ``claim_timeout``: seconds to wait for a unit another process holds."""
    budget.check()
    settings = dict(config_dict or {})
    if {"seed", "epochs", "split_seed"} & set(settings):
        raise UserInputError(
            "the tuned comparison sets seed, split_seed and epochs itself: use --seeds, --tune_epochs, --max_epochs"
        )
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
    finished: Dict[str, ModelSummary] = {}
    runs: Dict[str, List[RunResult]] = {}
    per_user: Dict[str, List[Dict[str, Dict[int, float]]]] = {}
    for wait in (False, True):  # first what no other process is on, then wait for the rest
        for model in models:
            if model in finished:
                continue
            summary = _compare_one(model, configs[model], protocol, runs, per_user, wait)
            if summary is None:  # another process is on it
                continue
            finished[model] = summary
            pending = [name for name in models if name not in finished]
            if pending:  # the models finished so far, should the command be killed before the end
                done = [finished[name] for name in models if name in finished]
                write_outputs(done, significance(models, done, per_user, ks[-1]), runs, budget, output, metrics, pending)
    summaries = [finished[model] for model in models]
    test = significance(models, summaries, per_user, ks[-1])
    write_outputs(summaries, test, runs, budget, output, metrics)
    return {"summaries": summaries, "significance": test, "output": str(output), "metrics": metrics}


@dataclass
class _Protocol:
    """What every model of one comparison shares."""

    dataset: str
    config_file_list: Optional[List[str]]
    settings: Dict[str, Any]  # the user's config values, for every model
    budget: Budget
    output: Path
    force: bool
    command: str
    ks: Sequence[int]
    metrics: Sequence[str]
    claim_timeout: float  # seconds to wait for a unit another process holds


def _compare_one(
    model: str,
    entry: ModelConfig,
    protocol: _Protocol,
    runs: Dict[str, List[RunResult]],
    per_user: Dict[str, List[Dict[str, Dict[int, float]]]],
    wait: bool,
) -> Optional[ModelSummary]:
    """One model's search and seed runs (``runs[model]``, ``per_user[model]``) and its
    summary; None, with nothing recorded, where another process holds its search or one
    of its seed runs and ``wait`` is False (the seed runs that were free are done)."""
    if entry.error:
        return ModelSummary(model, {}, None, 0, {}, {}, 0, 0, 0, 0, entry.error)
    p, claims = protocol, protocol.output / "claims"
    model_settings = {**p.settings, **entry.extra}
    with claim(claims, f"{model}-search", wait, p.claim_timeout) as held:
        if not held:
            return None
        try:
            search = search_model(model, p.dataset, p.config_file_list, model_settings, p.budget,
                                  p.output / "search" / model, p.force)  # fmt: skip
        except UserInputError as error:  # every trial failed: the model is reported, the others go on
            return ModelSummary(model, {}, None, 0, {}, {}, 0, 0, 0, 0, str(error))
    training = {key: p.settings[key] for key in TRAINING_KEYS if key in p.settings}
    write_property_file(p.output / "tuned" / model / f"{p.dataset}.yaml", model, p.dataset, search, training, p.command)
    split = {"split_seed": entry.config["seed"]}  # the split the search validated on
    model_runs, model_users, skipped = [], [], False
    for seed in range(1, p.budget.seeds + 1):
        with claim(claims, f"{model}-seed{seed}", wait, p.claim_timeout) as held:
            if not held:
                skipped = True
                continue
            seed_settings = {**model_settings, **search["params"], **split, "seed": seed, "epochs": p.budget.max_epochs}
            row, users = run_one(model, p.dataset, p.config_file_list, seed_settings, p.output, p.force, per_user_ks=p.ks)
        model_runs.append(row)
        if users:
            model_users.append(users)
    if skipped:
        return None
    runs[model], per_user[model] = model_runs, model_users
    return summarize(model, search, model_runs, p.budget.max_epochs, p.metrics)


def write_outputs(
    summaries: Sequence[ModelSummary],
    test: Optional[Dict[str, Any]],
    runs: Dict[str, List[RunResult]],
    budget: Budget,
    output: Path,
    metrics: Sequence[str],
    pending: Sequence[str] = (),
) -> None:
    """tuned.md, tuned.json, tuned.csv, curves.png and comparison.png (seed means) of
    the finished models; ``pending`` names the models not run yet (md and json)."""
    write_text_atomically(output / "tuned.md", format_table(summaries, test, budget, metrics, pending) + "\n")
    document = {"budget": asdict(budget), "models": [asdict(s) for s in summaries], "pending": list(pending), "significance": test}
    write_text_atomically(output / "tuned.json", json.dumps(document, indent=2))
    columns = ["model", *[f"{m}_{kind}" for m in metrics for kind in ("mean", "std")],
               "best_epoch", "seconds_per_epoch", "minutes_to_converge", "seeds", "capped_runs", "error"]  # fmt: skip
    lines = [",".join(columns)]
    for s in summaries:
        values = [s.model] + [str(getattr(s, kind).get(m, "")) for m in metrics for kind in ("mean", "std")]
        values += [str(s.best_epoch), str(s.seconds_per_epoch), str(s.minutes_to_converge), str(s.seeds),
                   str(s.capped_runs), json.dumps(s.error)]  # fmt: skip
        lines.append(",".join(values))
    write_text_atomically(output / "tuned.csv", "\n".join(lines) + "\n")
    metric = next((r.valid_metric for rs in runs.values() for r in rs if r.valid_metric), "valid score")
    plot_curves(runs, metric, output / "curves.png")
    means = [
        RunResult(model=s.model, status="ok", test_result=dict(s.mean))
        for s in summaries
        if s.mean
    ]
    plot_comparison(means, output / "comparison.png", metrics)
