"""The tables, files and figures of a tuned comparison (:mod:`recbole_kgin.experiments.tuned_compare`).

``tuned.md`` holds, in order: the protocol line; the results table (mean ± std over the
seeds on the search's split, and what each model spent); the tests of the first model
against every other; the first model and the best other on every split; one row per run.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from recbole_kgin.common.atomic import replacing, write_text_atomically
from recbole_kgin.experiments.compare import RunResult, plot_comparison
from recbole_kgin.experiments.tuned_records import Budget, ModelSummary, Run

def _cell(summary: ModelSummary, metric: str) -> str:
    if metric not in summary.mean:
        return ""
    return f"{summary.mean[metric]:.4f} ± {summary.std[metric]:.4f}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "/") for cell in cells) + " |"


def _header(columns: Sequence[str]) -> List[str]:
    return [_row(columns), "|" + "---|" * len(columns)]


def protocol_line(
    budget: Budget, settings: Dict[str, Any], models: Sequence[str], rival: Optional[str], pending: Sequence[str] = ()
) -> str:
    """One paragraph that says what every model got; the runs on more splits, which
    start once every model has run, as planned while ``pending`` models remain."""
    scheduler = (
        "no pruning" if budget.scheduler == "fifo" else f"ASHA pruning on validation from epoch {budget.grace_period}"
    )
    patience = settings.get("stopping_step", "RecBole's default")
    text = (
        f"Protocol, the same for every model: training batch {settings.get('train_batch_size')}, embedding size "
        f"{settings.get('embedding_size')}; search of {budget.trials} trials per model (a full grid where the space "
        f"is that small, else drawn without replacement), early stopping on validation (patience {patience}) inside "
        f"every trial, at most {budget.trial_cap} epochs, {scheduler}; then {budget.seeds} runs of the best "
        f"configuration (seeds 1-{budget.seeds}, shared by all models) on the split the search validated on, early "
        f"stopping, at most {budget.max_epochs} epochs."
    )
    if budget.split_seeds and models and pending:
        text += (
            f" Once every model has run, {models[0]} and the best other model also run the same seeds on "
            f"{budget.split_seeds} more split(s)."
        )
    elif budget.split_seeds and models and rival:
        text += f" {models[0]} and {rival} also ran the same seeds on {budget.split_seeds} more split(s)."
    return text


def format_table(
    summaries: Sequence[ModelSummary],
    test: Optional[Dict[str, Any]],
    budget: Budget,
    settings: Dict[str, Any],
    metrics: Sequence[str],
    pending: Sequence[str] = (),
) -> str:
    """The results table (mean ± std over the search's split; ``*`` on the first model's
    cell where :func:`better_than_every_other`), its budget columns, and ``pending``
    models listed as not run yet; then the tests."""
    models = [s.model for s in summaries] + list(pending)
    lines = [protocol_line(budget, settings, models, test["best_other"] if test else None, pending), ""]
    header = ["model", *metrics, "best epoch", "train s/epoch", "trials", "trials capped", "trial-epochs",
              "search h (sum)", "best trial: epochs", "runs", "runs capped", "run h (sum)"]  # fmt: skip
    lines += _header(header)
    for summary in summaries:
        if summary.error:
            lines.append(_row([summary.model, f"failed: {summary.error}"] + [""] * (len(header) - 2)))
            continue
        cells = [summary.model] + [_cell(summary, metric) for metric in metrics]
        if test and summary.model == test["model"]:
            for index, metric in enumerate(metrics, start=1):
                if better_than_every_other(test, metric):
                    cells[index] += " *"
        best_trial = f"{summary.best_trial_epochs}" + (" (hit the cap)" if summary.best_trial_capped else "")
        cells += [
            f"{summary.best_epoch:.1f}", f"{summary.seconds_per_epoch:.2f}", f"{summary.trials} ({summary.plan})",
            "" if summary.capped_trials is None else str(summary.capped_trials),
            str(summary.trial_epochs), f"{summary.search_hours:.2f}", best_trial, str(summary.runs),
            str(summary.capped_runs), f"{summary.run_hours:.2f}",
        ]  # fmt: skip
        lines.append(_row(cells))
    for model in pending:
        lines.append(_row([model, "not run yet"] + [""] * (len(header) - 2)))
    lines += ["", column_legend(budget)]
    if test:
        lines += ["", *format_tests(test, bool(pending))]
    return "\n".join(lines)


def column_legend(budget: Budget) -> str:
    """What the results table's columns hold."""
    threads = f"{budget.cpus_per_trial:g} thread" + ("" if budget.cpus_per_trial == 1 else "s")
    return (
        f"Columns: metrics are mean ± std over the {budget.seeds} seeds on the search's split; best epoch, train "
        f"s/epoch (training only, validation excluded) are means over the same runs; trials: 'grid' is the "
        f"space's full grid, 'sample' configurations drawn without replacement; trials capped: trials that ran to "
        f"the {budget.trial_cap}-epoch cap without early stopping; trial-epochs: epochs trained over every trial; "
        f"search h (sum) and run h (sum): wall-clock hours of training and validation summed over every trial or "
        f"run (a trial trains on {threads}, a run on the CPUs its process may use), not the time the comparison "
        f"took; runs capped: runs (every split) that reached "
        f"the {budget.max_epochs}-epoch cap."
    )


def better_than_every_other(test: Dict[str, Any], metric: str) -> bool:
    """Every test of ``metric`` found the first model ahead, Holm-adjusted p < level."""
    tests = [t for t in test["comparisons"] if t["metric"] == metric]
    return bool(tests) and all(
        t["p_holm"] is not None and t["p_holm"] < test["level"] and t["difference"] > 0 for t in tests
    )


def format_tests(test: Dict[str, Any], partial: bool = False) -> List[str]:
    """The first model against each other: what the test ran over, the means, the
    difference with the t-test's interval and the bootstrap's, relative effect, t-test
    p, Holm-adjusted p."""
    first = test["model"]
    run, family = len(test["comparisons"]), test.get("family", len(test["comparisons"]))
    scope = (
        f"over the {run} tests below" if family == run else
        f"over the {family} tests planned, {run} below: until the other {family - run} have run they count as "
        f"p = 1, so these adjusted values can only fall"
    )
    lines = [
        f"{first} against each other model{' finished so far' if partial else ''}: {test['test']} {scope}. "
        f"Runs pair by (split, seed); 'over' says what one observation of the test is. Over seeds on one split "
        f"the t-test and its interval hold that split's test users fixed (they speak of this test set); the "
        f"bootstrap also draws the users (and the splits, over several), but with few runs it understates the "
        f"training part, so neither interval contains the other. Means here are of unrounded per-user values.",
        "",
        *_header(["vs", "metric", "over", first, "other", "difference [t-test 95% CI]", "bootstrap 95% (runs, users)",
                  "relative", "p", "p (Holm)"]),  # fmt: skip
    ]
    for t in test["comparisons"]:
        if not t["pairs"]:
            lines.append(_row([t["against"], t["metric"], "no paired runs"] + [""] * 7))
            continue
        relative = "" if t["relative"] is None else f"{100 * t['relative']:+.1f}%"
        undefined = t["p_value"] is None and (t.get("units") or t["pairs"]) >= 2
        lines.append(_row([
            t["against"], t["metric"], _over(t), f"{t['mean_ours']:.4f}", f"{t['mean_theirs']:.4f}",
            f"{t['difference']:+.4f} {_interval(t.get('ci_low'), t.get('ci_high'))}".rstrip(),
            _interval(t.get("boot_low"), t.get("boot_high")), relative,
            "undefined: every unit the same gap" if undefined else _p(t["p_value"]), _p(t["p_holm"]),
        ]))  # fmt: skip
    return lines


def _over(test: Dict[str, Any]) -> str:
    """``5 seeds, split 2020`` or ``3 splits (15 runs)``."""
    if test.get("unit") == "split":
        return f"{test['units']} splits ({test['pairs']} runs)"
    scope = test.get("scope", "")
    return f"{test['pairs']} seeds" + (f", {scope}" if scope else "")


def _interval(low: Optional[float], high: Optional[float]) -> str:
    return "" if low is None or high is None else f"[{low:+.4f}, {high:+.4f}]"


def _p(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.2g}"


def format_splits(runs: Dict[str, List[Run]], models: Sequence[str], metrics: Sequence[str]) -> List[str]:
    """Mean ± std over seeds on every split, for the models that ran more than one split."""
    lines: List[str] = []
    for model in models:
        by_split: Dict[int, List[Run]] = {}
        for run in runs.get(model, []):
            if run.result.test_result:
                by_split.setdefault(run.split_seed, []).append(run)
        if len(by_split) < 2:
            continue
        if not lines:
            lines = _header(["model", "split seed", "runs", *metrics])
        for split_seed, split_runs in sorted(by_split.items()):
            cells = [model, str(split_seed), str(len(split_runs))]
            for metric in metrics:
                values = [run.result.test_result[metric] for run in split_runs if metric in run.result.test_result]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.4f} ± {spread:.4f}" if values else "")
            lines.append(_row(cells))
    return lines


RUN_COLUMNS = ["model", "split_seed", "seed", "status", "best_epoch", "epochs_run", "train_seconds_per_epoch", "run_seconds"]


def run_rows(runs: Dict[str, List[Run]], metrics: Sequence[str]) -> List[Dict[str, Any]]:
    """One record per run, in model, split and seed order."""
    rows = []
    for model, model_runs in runs.items():
        for run in sorted(model_runs, key=lambda r: r.key):
            result = run.result
            rows.append({
                "model": model, "split_seed": run.split_seed, "seed": run.seed, "status": result.status,
                "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                "train_seconds_per_epoch": result.train_seconds_per_epoch,
                "run_seconds": result.valid_curve[-1][2] if result.valid_curve else None,
                **{metric: result.test_result.get(metric) for metric in metrics},
            })  # fmt: skip
    return rows


def format_runs(rows: Sequence[Dict[str, Any]], metrics: Sequence[str]) -> List[str]:
    lines = _header(["model", "split seed", "seed", *metrics, "best epoch", "epochs", "s/epoch"])
    for row in rows:
        values = ["" if row[m] is None else f"{row[m]:.4f}" for m in metrics]
        per_epoch = "" if row["train_seconds_per_epoch"] is None else f"{row['train_seconds_per_epoch']:.2f}"
        lines.append(_row([row["model"], str(row["split_seed"]), str(row["seed"]), *values,
                           str(row["best_epoch"]), str(row["epochs_run"]), per_epoch]))  # fmt: skip
    return lines


def write_outputs(
    summaries: Sequence[ModelSummary],
    test: Optional[Dict[str, Any]],
    runs: Dict[str, List[Run]],
    budget: Budget,
    settings: Dict[str, Any],
    output: Path,
    metrics: Sequence[str],
    pending: Sequence[str] = (),
) -> None:
    """tuned.md, tuned.json, tuned.csv, runs.csv, curves.png and comparison.png of the
    finished models; ``pending`` names the models not run yet."""
    rows = run_rows({s.model: runs.get(s.model, []) for s in summaries}, metrics)
    splits = format_splits(runs, [s.model for s in summaries], metrics)
    text = format_table(summaries, test, budget, settings, metrics, pending)
    if splits:
        text += "\n\nEvery split (seeds 1-{}):\n\n".format(budget.seeds) + "\n".join(splits)
    text += "\n\nEvery run:\n\n" + "\n".join(format_runs(rows, metrics)) + "\n"
    write_text_atomically(output / "tuned.md", text)
    document = {
        "budget": asdict(budget), "settings": settings, "models": [asdict(s) for s in summaries],
        "pending": list(pending), "significance": test, "runs": rows,
    }  # fmt: skip
    write_text_atomically(output / "tuned.json", json.dumps(document, indent=2))
    write_text_atomically(output / "tuned.csv", _summary_csv(summaries, metrics))
    write_text_atomically(output / "runs.csv", _csv(RUN_COLUMNS + list(metrics), rows))
    metric = next((r.result.valid_metric for rs in runs.values() for r in rs if r.result.valid_metric), "valid score")
    main_runs = {s.model: [r.result for r in runs.get(s.model, []) if r.split_seed == _main_split(runs, s.model)] for s in summaries}
    plot_curves(main_runs, metric, output / "curves.png")
    means = [RunResult(model=s.model, status="ok", test_result=dict(s.mean)) for s in summaries if s.mean]
    plot_comparison(means, output / "comparison.png", metrics)


def _main_split(runs: Dict[str, List[Run]], model: str) -> Optional[int]:
    seeds = [run.split_seed for run in runs.get(model, [])]
    return min(seeds) if seeds else None


def _csv(columns: Sequence[str], rows: Sequence[Dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _summary_csv(summaries: Sequence[ModelSummary], metrics: Sequence[str]) -> str:
    columns = ["model", *[f"{m}_{kind}" for m in metrics for kind in ("mean", "std")], "best_epoch",
               "seconds_per_epoch", "minutes_to_converge", "seeds", "capped_runs", "trials", "plan", "trial_epochs",
               "search_hours", "best_trial_epochs", "best_trial_capped", "capped_trials", "run_hours", "error"]  # fmt: skip
    rows = []
    for s in summaries:
        record = {key: value for key, value in asdict(s).items() if key in columns}
        record.update({f"{m}_{kind}": getattr(s, kind).get(m, "") for m in metrics for kind in ("mean", "std")})
        rows.append(record)
    return _csv(columns, rows)


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
