"""Hyper-parameter search with Ray Tune that prunes on validation, never on test.

    python run_recbole_kgin.py --tune tuning/KGIN.yaml --dataset ml-1m --num_samples 20
    python tuning/run_tune.py tuning/KGIN.yaml --dataset ml-1m --num_samples 20   # the same

Every trial trains through recbole-kgin's pipeline and reports the **validation**
metric (``valid_metric``) after **every** epoch, so the ASHA scheduler (default) can
stop weak trials early; RecBole's own early stopping still applies inside a trial.
A trial also hands Ray a checkpoint of its training (recbole_kgin.runtime.resumable's ``.last``
state) at the first report after every ``checkpoint_seconds`` (default 300) of training,
so a search killed and resumed (``resume``) continues each unfinished trial from its last
checkpoint and ends as it would have uninterrupted (CPU, same seeds). Ray keeps each
trial's latest two checkpoints; they are deleted once every trial has ended. A trial
resumed or restarted reports some epochs twice; its row counts each epoch's latest report.
The test set is touched once, at the end, when the best configuration is retrained
and evaluated. A trial that raises (bad value, out of memory) is marked failed and
the search goes on.

Search algorithms: ``random`` (default: the configurations are drawn once, without
replacement, by :func:`recbole_kgin.experiments.search_space.plan_trials` from the config's ``seed``,
a full grid where the space is discrete and small enough, and Ray runs that list),
``optuna`` or ``hyperopt`` when installed. Resources per
trial: ``--cpus_per_trial``/``--gpus_per_trial``, as Ray reads them; a trial trains
with at most ``int(cpus_per_trial)`` torch threads (at least one) and on the GPUs Ray
assigned it (none: CPU). ``--address`` (or ``RAY_ADDRESS``) attaches to a running Ray
cluster; without it a local Ray starts. The dataset reaches every node as
``--data_on_nodes`` says (:mod:`recbole_kgin.data.on_nodes`: shipped through Ray's
object store by default on a cluster, or read from shared storage) and is checked on
every node before any trial trains.

Outputs in ``results/tune-<Model>-<dataset>`` (or ``--output``): ``trials.md`` and
``trials.csv`` (config, best valid score, epochs run, status, node and threads per trial),
``best_<Model>_<dataset>.yaml`` (a property file for ``--config_files``) and Ray's
own records under ``ray/``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from recbole_kgin.config import Config
from recbole_kgin.data.on_nodes import MODES, SHARED, SHIP, DatasetFiles, describe, prepare_every_node, prepare_here, read_payload
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.common.atomic import replacing, write_text_atomically
from recbole_kgin.experiments.search_space import has_grid, load_space, plan_trials, to_ray

SEARCHERS = ("random", "optuna", "hyperopt")
PLANNED = "planned"  # the one Ray parameter of a planned search: the trial's configuration
SCHEDULERS = ("asha", "fifo")
QUIET = {"show_progress": False, "state": "WARNING"}
CHECKPOINT_SECONDS = 300.0  # a trial's training time between two checkpoints
# before the Ray node id in a trial's reports: Ray reads its progress.csv back with pandas on
# restore, and pandas 2.3's CSV reader crashes the process (SIGSEGV) on an id such as
# 9e2915614309aa6..., which it parses as a float with a huge exponent (pandas issue 62617)
NODE_TAG = "node-"
IDENTITY_FILE = "recbole-kgin-search.json"  # beside Ray's records: which search they are of
TRIAL_CHECKPOINT = "trial.pth"  # the trial's checkpoint is its ``.last`` file (recbole_kgin.runtime.resumable)


@dataclass
class TrialRow:
    trial: str
    params: Dict[str, Any]
    best_valid_score: Optional[float]
    epochs_run: int
    status: str  # completed, stopped by ASHA, stopped by RecBole, failed: ...
    node: str = ""  # the Ray node id the trial ran on
    threads: Optional[int] = None  # torch threads it trained with (at its last report)
    seconds: float = 0.0  # the trial's wall-clock time, training and validation (Ray's time_total_s)

    @property
    def capped(self) -> bool:
        """The trial ran to the search's epoch cap without stopping on its own."""
        return self.status == "completed"


def _trainable(
    params: Dict[str, Any],
    model: str,
    dataset: str,
    config_files: Optional[List[str]],
    fixed: Dict[str, Any],
    data: Tuple[DatasetFiles, str, Any],
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
) -> None:
    """One trial: check (or write) the dataset on this node, train (from Ray's checkpoint
    of it, if it has one), and report the validation metrics after every epoch, with the
    node and the threads it ran on, and a checkpoint every ``checkpoint_seconds``."""
    import ray
    import torch
    from ray.air import Checkpoint, session
    from recbole.utils import init_seed

    from recbole_kgin.quick_start import build
    from recbole_kgin.runtime.resumable import last_checkpoint_path

    expected, mode, payload_ref = data
    params = params.get(PLANNED, params)
    problem, data_path = prepare_here(expected, mode, lambda: ray.get(payload_ref))
    if problem is not None:
        raise UserInputError(f"dataset on node {ray.get_runtime_context().get_node_id()[:12]}: {problem}")
    # RecBole sets CUDA_VISIBLE_DEVICES to gpu_id: give it the GPUs Ray assigned (none: CPU)
    devices = {"data_path": data_path, "gpu_id": ",".join(str(gpu) for gpu in ray.get_gpu_ids())}
    config = Config(model, dataset, config_files, {**fixed, **params, **QUIET, **devices})
    init_seed(config["seed"], config["reproducibility"])
    _, (train_data, valid_data, _), _, trainer = build(config, saved=False)
    scratch = tempfile.mkdtemp(prefix="recbole-kgin-trial-")
    trial_file = os.path.join(scratch, TRIAL_CHECKPOINT)
    restored = session.get_checkpoint()
    if restored is not None:
        restored.to_directory(scratch)
        trainer.resume_checkpoint(last_checkpoint_path(trial_file), train_data)
    trainer.saved_model_file = trial_file  # its .last state is what Ray keeps
    latest: Dict[str, float] = {}
    valid_epoch = trainer._valid_epoch
    node = NODE_TAG + ray.get_runtime_context().get_node_id()

    def remembering_valid_epoch(*args, **kwargs):
        score, result = valid_epoch(*args, **kwargs)
        latest.clear()
        latest.update(result)
        return score, result

    last_checkpoint = time.monotonic()

    def report(epoch: int, score: float) -> None:
        nonlocal last_checkpoint
        metrics = {
            "valid_score": float(score),
            "epoch": epoch + 1,
            "stopped_by_recbole": trainer.cur_step > trainer.stopping_step,
            "node": node,
            "threads": torch.get_num_threads(),
            **{f"valid/{name}": float(value) for name, value in latest.items()},
        }
        if time.monotonic() - last_checkpoint < checkpoint_seconds:
            session.report(metrics)
            return
        trainer._save_last_checkpoint(epoch, train_data)
        session.report(metrics, checkpoint=Checkpoint.from_directory(scratch))  # Ray copies it
        last_checkpoint = time.monotonic()

    trainer._valid_epoch = remembering_valid_epoch
    try:
        trainer.fit(train_data, valid_data, verbose=False, saved=False, show_progress=False, callback_fn=report)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as ``taskset`` sets it): what a
    local Ray offers trials, so that a search pinned to one core runs one 1-CPU trial
    at a time instead of Ray's default of every CPU of the machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _search_algorithm(name: str, space: Dict[str, Any], metric: str, mode: str, max_concurrent: Optional[int]):
    if name == "random":
        return None  # Ray's BasicVariantGenerator: random samples, grid entries expanded
    if has_grid(space):
        raise UserInputError(f"--search {name} cannot expand 'grid' entries: use choice, or --search random")
    try:
        if name == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            searcher = OptunaSearch(metric=metric, mode=mode)
        else:
            from ray.tune.search.hyperopt import HyperOptSearch

            searcher = HyperOptSearch(metric=metric, mode=mode)
    except (ImportError, AssertionError):
        raise UserInputError(f"--search {name} needs the package: pip install {name}") from None
    if max_concurrent:
        from ray.tune.search import ConcurrencyLimiter

        searcher = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    return searcher


def final_run(frame, max_epochs: Optional[int] = None):
    """A trial's reports (Ray's metrics frame, one row per report, in order) as its final
    run made them. A trial resumed from a checkpoint reports epochs again that its earlier
    run had reported: each report of epoch e replaces the earlier reports of epochs e and
    later. A report of epoch 1 starts a new run (the trial restarted from scratch). The
    trial's record is its last run that finished (stopped by RecBole, or at
    ``max_epochs``), else its last run: Ray restarts a finished trial from scratch where
    the experiment record it resumes from was written while the trial still ran, and
    that restart must not replace the finished run."""
    if frame is None or "epoch" not in getattr(frame, "columns", []):
        return frame
    runs: List[List[int]] = []
    for position, epoch in enumerate(frame["epoch"]):
        if not runs or epoch == 1:
            runs.append([])
        kept = runs[-1]
        while kept and frame["epoch"].iloc[kept[-1]] >= epoch:
            kept.pop()
        kept.append(position)

    def finished(run: List[int]) -> bool:
        last = frame.iloc[run[-1]]
        stopped = "stopped_by_recbole" in frame.columns and bool(last["stopped_by_recbole"])
        return stopped or (max_epochs is not None and last["epoch"] >= max_epochs)

    complete = [run for run in runs if finished(run)]
    return frame.iloc[(complete or runs)[-1]]


def trial_reports(result):
    """A trial's reports, one row per report in order, from Ray's ``result.json`` in its
    folder (JSON lines; a line cut short by a kill is skipped); Ray's own
    ``metrics_dataframe`` where that file is absent. Ray's ``progress.csv``, behind
    ``metrics_dataframe``, keeps the columns of the first report the trial's first
    process wrote: a trial restored in a new process whose first report carries a
    checkpoint appends rows with one field more (``should_checkpoint``), and Ray then
    cannot read the file and reports the trial as empty."""
    import json

    import pandas as pd

    path = Path(result.path) / "result.json" if result.path else None
    if path is None or not path.is_file():
        return result.metrics_dataframe
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return pd.DataFrame.from_records(records) if records else None


def _trial_order(result) -> str:
    """A trial's place in its search: Ray names trial folders ``<trainable>_<experiment>_<5-digit
    counter>_...`` in the order it created them, while a resumed search lists them in another."""
    return os.path.basename(str(result.path or "").rstrip("/"))


def _trial_rows(result_grid, max_epochs: int, bigger: bool) -> List[TrialRow]:
    rows = []
    for index, result in enumerate(sorted(result_grid, key=_trial_order)):
        frame = final_run(trial_reports(result), max_epochs)
        reported = frame is not None and "valid_score" in getattr(frame, "columns", [])
        scores = list(frame["valid_score"]) if reported else []
        best = (max(scores) if bigger else min(scores)) if scores else None
        if result.error is not None:
            lines = [line.strip() for line in str(result.error).splitlines() if line.strip()]
            status = "failed: " + (lines[-1] if lines else type(result.error).__name__)
        elif scores and bool(frame["stopped_by_recbole"].iloc[-1]):
            status = "stopped by RecBole (no improvement)"
        elif len(scores) < max_epochs:
            status = "stopped by ASHA"
        else:
            status = "completed"
        config = dict(result.config or {})
        params = dict(config.get(PLANNED, config))
        node = str(frame["node"].iloc[-1]).removeprefix(NODE_TAG) if scores and "node" in frame.columns else ""
        threads = int(frame["threads"].iloc[-1]) if scores and "threads" in frame.columns else None
        seconds = float(frame["time_total_s"].iloc[-1]) if scores and "time_total_s" in frame.columns else 0.0
        rows.append(TrialRow(f"trial {index}", params, best, len(scores), status, node, threads, seconds))
    return rows


def format_trials(rows: Sequence[TrialRow]) -> str:
    keys = sorted({k for row in rows for k in row.params})
    header = ["trial", *keys, "best valid", "epochs", "status", "seconds", "node", "threads"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.trial] + [_short(row.params.get(k, "")) for k in keys]
        cells += ["" if row.best_valid_score is None else f"{row.best_valid_score:.4f}", str(row.epochs_run), row.status]
        cells += [f"{row.seconds:.0f}"]
        cells += [row.node[:12], "" if row.threads is None else str(row.threads)]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def plain_value(value: Any) -> Any:
    """A Ray-sampled value (numpy scalars included) as a plain Python value for YAML/JSON."""
    if hasattr(value, "item"):
        return value.item()
    return value


def write_best_config(path: Path, model: str, dataset: str, values: Dict[str, Any], score: float, metric: str) -> None:
    """A property file for ``run_recbole_kgin.py --config_files``; ``data_path`` is left
    out (a folder of this machine): the command in its header says where it goes."""
    shown = os.path.relpath(path) if Path(os.path.abspath(path)).is_relative_to(Path.cwd()) else str(path)
    header = (
        f"# Best {model} configuration on {dataset} found by recbole-kgin's Ray Tune search\n"
        f"# (validation {metric} = {score:.4f}). Use it with:\n"
        f"#   python run_recbole_kgin.py --model {model} --dataset {dataset} --config_files {shown} --data_path=DIR\n"
        f"# where DIR holds the folder {dataset}/ with the atomic files (leave it out for RecBole's default).\n"
    )
    kept = {k: plain_value(v) for k, v in sorted(values.items()) if k != "data_path"}
    write_text_atomically(path, header + yaml.safe_dump(kept, sort_keys=True))


def run_tune(
    space_file: str,
    model: str,
    dataset: str,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[Dict[str, Any]] = None,
    num_samples: int = 10,
    search: str = "random",
    scheduler: str = "asha",
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    address: Optional[str] = None,
    output: Optional[str] = None,
    max_concurrent: Optional[int] = None,
    grace_period: int = 1,
    retrain: bool = True,
    resume: bool = False,
    data_on_nodes: Optional[str] = None,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
) -> Dict[str, Any]:
    """Run the search; returns ``{"trials", "best_params", "best_trial", "best_valid_score",
    "best_config_file", "test_result", "retrained_valid_score", "valid_metric", "plan"}``
    (``plan``: ``grid`` or ``sample`` for the random search, else the searcher's name)
    (the retrained values are None when ``retrain`` is False). With ``resume``, a search
    whose Ray records are in the output folder continues: its finished trials are kept
    (Ray's ``Tuner.restore``), unfinished ones continue from their last checkpoint (taken
    every ``checkpoint_seconds`` of a trial's training) or, without one, run again. ``data_on_nodes``: ``ship``
    (default with ``address``) or ``shared`` (default otherwise), see
    :mod:`recbole_kgin.data.on_nodes`; checked on every node before any trial."""
    data_mode = data_on_nodes or (SHIP if address else SHARED)
    _check_options(search, scheduler, num_samples, cpus_per_trial, gpus_per_trial, data_mode)
    space = load_space(space_file)
    # Resolve and check everything once in the driver; trials get absolute paths.
    config_files = [os.path.abspath(f) for f in config_file_list or []]
    base = Config(model, dataset, config_files, {**(config_dict or {}), **QUIET})
    fixed = {**(config_dict or {}), "data_path": os.path.dirname(os.path.abspath(base["data_path"]))}
    metric, bigger = base["valid_metric"], base["valid_metric_bigger"]
    # a trial's threads: its CPUs, unless the user capped them (governed either way)
    threads = {"cpu_threads": max(1, int(cpus_per_trial)) if base["cpu_threads"] == "auto" else base["cpu_threads"]}
    plan_kind = None
    if search == "random":  # the drawn configurations, each run once
        plan, plan_kind = plan_trials(space, num_samples, int(base["seed"]))
        space, num_samples = {PLANNED: {"grid": plan}}, 1
    output_dir = Path(output or f"results/tune-{model}-{dataset}").resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    trial_args = dict(
        model=model, dataset=dataset, config_files=config_files or None, fixed={**fixed, **threads},
        checkpoint_seconds=checkpoint_seconds,
    )  # fmt: skip
    rows = _run_search(
        trial_args, describe(Path(base["data_path"]), dataset), data_mode, space, search, scheduler, bigger,
        base["epochs"], grace_period, num_samples, max_concurrent, cpus_per_trial, gpus_per_trial, address,
        output_dir / "ray", resume,
    )  # fmt: skip
    _write_trials(rows, output_dir)
    finished = [row for row in rows if row.best_valid_score is not None and not row.status.startswith("failed")]
    if not finished:
        raise UserInputError(f"every trial failed; see {output_dir / 'trials.md'}")
    pick = max if bigger else min
    best = pick(finished, key=lambda row: row.best_valid_score)
    best_file = output_dir / f"best_{model}_{dataset}.yaml"
    write_best_config(best_file, model, dataset, {**fixed, **best.params}, best.best_valid_score, metric)
    retrain_settings = {**threads, "data_path": fixed["data_path"]}
    test_result, retrained_valid_score = (
        _retrain_best(model, dataset, config_files, best_file, retrain_settings) if retrain else (None, None)
    )
    return {
        "trials": rows,
        "best_params": best.params,
        "best_trial": best,
        "plan": plan_kind or search,
        "best_valid_score": best.best_valid_score,
        "best_config_file": str(best_file),
        "test_result": test_result,
        "retrained_valid_score": retrained_valid_score,
        "valid_metric": metric,
    }


def _check_options(search: str, scheduler: str, num_samples: int, cpus: float, gpus: float, data_mode: str) -> None:
    if search not in SEARCHERS:
        raise UserInputError(f"--search {search}: choose one of {', '.join(SEARCHERS)}")
    if scheduler not in SCHEDULERS:
        raise UserInputError(f"--scheduler {scheduler}: choose one of {', '.join(SCHEDULERS)}")
    if num_samples < 1 or cpus <= 0 or gpus < 0:
        raise UserInputError("--num_samples must be >= 1, --cpus_per_trial > 0, --gpus_per_trial >= 0")
    if data_mode not in MODES:
        raise UserInputError(f"--data_on_nodes {data_mode}: choose {' or '.join(MODES)}")


def search_identity(
    space: Dict[str, Any], trial_args: Dict[str, Any], search: str, scheduler: str, max_epochs: int,
    grace_period: int, num_samples: int,
) -> str:  # fmt: skip
    """What makes two searches the same one, as JSON: the space (the planned trials of a
    random search), the trials' fixed settings (without ``data_path``, which differs
    from machine to machine for the same data), searcher, scheduler, epoch cap, grace
    period and samples."""
    fixed = {key: value for key, value in trial_args["fixed"].items() if key != "data_path"}
    what = {
        "model": trial_args["model"], "dataset": trial_args["dataset"], "space": space, "fixed": fixed,
        "search": search, "scheduler": scheduler, "max_epochs": max_epochs, "grace_period": grace_period,
        "num_samples": num_samples,
    }  # fmt: skip
    return json.dumps(what, sort_keys=True, default=str)


def _same_search(experiment: Path, identity: str) -> bool:
    """Ray's records in ``experiment`` are of the search ``identity`` describes; records
    without the identity file (written before it was kept) count as the same search."""
    recorded = experiment / IDENTITY_FILE
    return not recorded.is_file() or recorded.read_text() == identity


def _run_search(
    trial_args: Dict[str, Any], expected: DatasetFiles, data_mode: str, space: Dict[str, Any], search: str,
    scheduler: str, bigger: bool, max_epochs: int, grace_period: int, num_samples: int,
    max_concurrent: Optional[int], cpus_per_trial: float, gpus_per_trial: float, address: Optional[str],
    ray_folder: Path, resume: bool,
) -> List[TrialRow]:  # fmt: skip
    """Start (or attach to) Ray, ship or check the dataset on every node, run the trials
    (a new search, or the one Ray recorded in ``ray_folder`` when ``resume``) and return
    one row per trial; once every trial has ended, their checkpoints are deleted."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    mode = "max" if bigger else "min"
    search_algorithm = _search_algorithm(search, space, "valid_score", mode, max_concurrent)
    # Ray's TensorBoard logger renames each metric with an "@" (recall@20 -> recall_20) and
    # says so at INFO, once per metric and epoch of every trial, into RecBole's log
    logging.getLogger("tensorboardX").setLevel(logging.WARNING)
    # Ray's own Ctrl-C handler ends the trials and returns from fit() as if the search had
    # finished, so an interrupted search would be recorded as complete (its unfinished
    # trials' reports as their results): let Ctrl-C interrupt the process instead; Ray's
    # record of the experiment, saved as it runs, resumes it.
    sigint_setting = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    started_here = not ray.is_initialized()
    if started_here:
        # without an address, a Ray of our own: ray.init() alone would attach to the last
        # cluster `ray start` launched on this machine, even a stopped one
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False,
                 **({} if address else {"num_cpus": usable_cpus()}))
    try:
        trial_scheduler = (
            ASHAScheduler(max_t=max_epochs, grace_period=grace_period, reduction_factor=2)
            if scheduler == "asha"
            else FIFOScheduler()
        )
        payload_ref = ray.put(read_payload(expected)) if data_mode == SHIP else None
        prepare_every_node(expected, data_mode, payload_ref)
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, data=(expected, data_mode, payload_ref), **trial_args),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
        )
        name = f"{trial_args['model']}-{trial_args['dataset']}"
        experiment = ray_folder / name
        identity = search_identity(space, trial_args, search, scheduler, max_epochs, grace_period, num_samples)
        if resume and tune.Tuner.can_restore(experiment) and not _same_search(experiment, identity):
            kept = experiment.with_name(f"{name}.other-search-{time.strftime('%Y%m%d-%H%M%S')}")
            experiment.rename(kept)
            logging.getLogger().warning(
                f"{experiment} holds Ray's records of another search (other space, settings or budget): "
                f"moved to {kept.name}; this search starts anew"
            )
        if resume and tune.Tuner.can_restore(experiment):
            forget_missing_checkpoints(experiment)
            tag_node_ids(experiment)
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=False)
        else:
            tuner = _new_tuner(
                trainable, space, trial_scheduler, search_algorithm, mode, num_samples, max_concurrent, search,
                ray_folder, name,
            )  # fmt: skip
        experiment.mkdir(parents=True, exist_ok=True)
        write_text_atomically(experiment / IDENTITY_FILE, identity)
        result_grid = tuner.fit()
        if result_grid.num_terminated + result_grid.num_errors == len(result_grid):  # over, not interrupted
            for finished_checkpoint in experiment.glob("*/checkpoint_*"):
                shutil.rmtree(finished_checkpoint, ignore_errors=True)
        return _trial_rows(result_grid, max_epochs, bigger)
    finally:
        if sigint_setting is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = sigint_setting
        if started_here:
            ray.shutdown()


def tag_node_ids(experiment: Path) -> int:
    """Put :data:`NODE_TAG` before every untagged node id in the ``node`` column of the
    trials' ``progress.csv`` (reports written before ids were tagged), so that restoring
    the search does not crash pandas; returns the number of files rewritten."""
    rewritten = 0
    for progress in experiment.glob("*/progress.csv"):
        with open(progress, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        if not rows or "node" not in rows[0]:
            continue
        column = rows[0].index("node")
        untagged = [row for row in rows[1:] if len(row) > column and row[column] and not row[column].startswith(NODE_TAG)]
        if not untagged:
            continue
        for row in untagged:
            row[column] = NODE_TAG + row[column]
        with replacing(progress) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)  # Ray writes it with csv's default line ends
        rewritten += 1
    return rewritten


def forget_missing_checkpoints(experiment: Path) -> List[str]:
    """Make Ray's record of ``experiment`` forget trial checkpoints whose folders are gone
    (records copied to another machine without them): Ray 2.6 fails a trial whose
    checkpoint cannot be restored, while a trial without one starts again. Rewrites the
    newest ``experiment_state-*.json`` (the one Ray restores from); returns the trial ids
    it changed."""
    import json

    import cloudpickle

    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return []
    record = json.loads(states[-1].read_text())
    forgotten = []
    for index, trial_json in enumerate(record.get("checkpoints", [])):
        trial = json.loads(trial_json)
        encoded = trial.get("checkpoint_manager")
        if not isinstance(encoded, dict) or "value" not in encoded:
            continue
        manager = cloudpickle.loads(bytes.fromhex(encoded["value"]))
        latest = getattr(manager, "_latest_persisted_checkpoint", None)
        path = getattr(latest, "dir_or_data", None)
        if not isinstance(path, str) or os.path.isdir(path):
            continue
        fresh = type(manager)(checkpoint_config=manager._checkpoint_strategy)
        trial["checkpoint_manager"] = {**encoded, "value": cloudpickle.dumps(fresh).hex()}
        record["checkpoints"][index] = json.dumps(trial)
        forgotten.append(trial.get("trial_id", str(index)))
    if forgotten:
        write_text_atomically(states[-1], json.dumps(record))
    return forgotten


def _retrain_best(
    model: str, dataset: str, config_files: List[str], best_file: Path, settings: Dict[str, Any]
) -> Tuple[Dict[str, Any], float]:
    """Train the best configuration again on the search's data (``settings``: its
    ``data_path``, and threads as in the trials, for the same numbers) and evaluate it on
    test: ``(test_result, best_valid_score)``."""
    from recbole_kgin.quick_start import run_recbole_kgin

    retrained = run_recbole_kgin(model, dataset, config_files + [str(best_file)], {**QUIET, **settings})
    return dict(retrained["test_result"]), retrained["best_valid_score"]


def _new_tuner(trainable, space, scheduler, search_algorithm, mode, num_samples, max_concurrent, search, ray_folder, name):
    from ray import air, tune

    return tune.Tuner(
        trainable,
        param_space=to_ray(space),
        tune_config=tune.TuneConfig(
            metric="valid_score",
            mode=mode,
            scheduler=scheduler,
            search_alg=search_algorithm,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent if search == "random" else None,
        ),
        run_config=air.RunConfig(
            name=name,
            storage_path=str(ray_folder),
            verbose=1,
            failure_config=air.FailureConfig(max_failures=0, fail_fast=False),
            # two: Ray's record of the experiment lags up to 10 s behind the trials, so at a
            # kill it may still name the checkpoint before the latest
            checkpoint_config=air.CheckpointConfig(num_to_keep=2),
        ),
    )


def _write_trials(rows: Sequence[TrialRow], output_dir: Path) -> None:
    write_text_atomically(output_dir / "trials.md", format_trials(rows) + "\n")
    keys = sorted({k for row in rows for k in row.params})
    with replacing(output_dir / "trials.csv") as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", *keys, "best_valid_score", "epochs_run", "status", "seconds", "node", "threads"])
        for row in rows:
            writer.writerow([row.trial, *[row.params.get(k, "") for k in keys],
                             "" if row.best_valid_score is None else row.best_valid_score, row.epochs_run, row.status,
                             row.seconds, row.node, "" if row.threads is None else row.threads])
