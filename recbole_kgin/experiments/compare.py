"""Train several models under one protocol and tabulate them.

    python run_recbole_kgin.py --dataset ml-1m --compare KGIN,KGAT,KGCN,CKE [--output DIR] [--force]

Every model gets the same dataset, split (``eval_args``), seed, negative sampling,
full-ranking evaluation, metrics and early stopping on the validation metric; test
metrics are those of the best validation epoch. RecBole keeps only KG-linked items for
knowledge-aware models; when the list has one, models without KG (BPR, ...) get
``kg_items_only: True`` so that they see those same interactions. Model hyper-parameters come from the
property files (``properties/model/<Model>.yaml``, then
``properties/model/<Model>/<dataset>.yaml``) and the command line.

Outputs in ``DIR`` (default ``results/compare-<dataset>``): ``results.md``,
``results.csv``, ``results.json``, ``comparison.png``, ``configs/<Model>-<hash>.yaml``
(the resolved config of each run, its data named by checksums, not by folder), ``runs/<Model>-<hash>.json`` (one finished run
each) and ``checkpoints/<Model>-<hash>.pth`` (its best model). A run whose resolved
config (and data files) hash to an existing ``runs/`` entry is not trained again
unless ``force``; a run that was killed continues from its last validation
(``checkpoints/<Model>-<hash>.last.pth``, deleted when the run is done) unless
``force``. Every model's config is checked before any model trains: when none is valid
the command stops with the first error; otherwise a model that fails is reported with
its error and the others still run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import traceback
from dataclasses import asdict, dataclass, field
from enum import Enum
from logging import getLogger
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import yaml
from recbole.utils import ModelType, init_logger, init_seed
from tqdm import tqdm

from recbole_kgin.common.atomic import replacing, write_text_atomically
from recbole_kgin.config import Config
from recbole_kgin.data.checksum import data_checksums
from recbole_kgin.data.location import reads_kg
from recbole_kgin.data.location import expected_files
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.quick_start import build
from recbole_kgin.runtime.resumable import last_checkpoint_path
from recbole_kgin.utils import get_model

MAIN_METRICS = ("recall@20", "ndcg@20", "recall@10", "ndcg@10")
# Keys that change how a run is shown, where it writes or how fast it computes, not what
# it computes (the speed keys change float rounding at most; the start-up cache serves
# the data bit for bit).
UNHASHED_KEYS = {
    "show_progress", "state", "checkpoint_dir", "gpu_id", "device", "log_wandb", "wandb_project", "worker",
    "cpu_threads", "thread_governor", "cpu_malloc_tuning", "fused_kernel", "distributed_timeout", "startup_cache",
}  # fmt: skip


@dataclass
class RunResult:
    """One model's row in the comparison."""

    model: str
    status: str  # "ok", "cached" or "failed"
    config_hash: str = ""
    test_result: Dict[str, float] = field(default_factory=dict)
    best_valid_score: Optional[float] = None
    best_epoch: Optional[int] = None
    epochs_run: int = 0
    train_seconds_per_epoch: Optional[float] = None
    parameters: Optional[int] = None
    error: str = ""
    valid_metric: str = ""
    # (epoch, validation score, wall-clock seconds since training began) per validation
    valid_curve: List[List[float]] = field(default_factory=list)


def plain(value: Any) -> Any:
    """A YAML/JSON-safe copy of a config value (enums and devices as strings)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Enum):
        return value.name
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def resolved_config(config: Config) -> Dict[str, Any]:
    return {key: plain(value) for key, value in sorted(config.final_config_dict.items())}


def recorded_config(config: Config) -> Dict[str, Any]:
    """The resolved config as a run's record keeps it (``configs/<Model>-<hash>.yaml``):
    without ``data_path``, a folder of the machine that ran it, and with
    ``data_checksums``, the SHA-256 of each of the dataset's atomic files, which say
    on any machine which data the run read."""
    settings = resolved_config(config)
    settings.pop("data_path", None)
    settings["data_checksums"] = data_checksums(config)
    return settings


def config_hash(config: Config) -> str:
    """Hash of what determines a run's result: the resolved config and the data files."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in resolved_config(config).items() if k not in UNHASHED_KEYS}
    settings.pop("data_path", None)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    knowledge = reads_kg(config)
    for name in expected_files(config["dataset"], True, config["benchmark_filename"]):
        path = Path(config["data_path"]) / name
        if path.is_file() and (knowledge or name.endswith(".inter")):
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def train_and_test(
    config: Config, per_user_ks: Sequence[int] = (), checkpoint: Optional[Path] = None
) -> Tuple[RunResult, Dict[str, Dict[int, float]]]:
    """Fit with early stopping on validation, test at the best validation epoch.

    With ``checkpoint`` the best model is saved there and the training state after
    every validation beside it (``<checkpoint stem>.last.pth``); a run that finds that
    state (a killed run of the same config) continues from it, timing included, and
    deletes it once tested. Returns the run and, for ``per_user_ks``, each test user's
    Recall/NDCG at those k (:func:`recbole_kgin.experiments.significance.capture_per_user`; empty
    without ks)."""
    from recbole_kgin.experiments.significance import capture_per_user

    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    getLogger().info(config)
    _, (train_data, valid_data, test_data), model, trainer = build(config, saved=checkpoint is None)
    last = None
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        last = Path(last_checkpoint_path(str(checkpoint)))
        if last.is_file() and checkpoint.is_file():
            trainer.resume_checkpoint(str(last), train_data)
        trainer.saved_model_file = str(checkpoint)
    best_valid_score, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=config["show_progress"])
    with capture_per_user(trainer, test_data, per_user_ks) as per_user:
        test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
    best_epoch = None
    for epoch, score, _ in trainer.valid_curve:  # RecBole keeps the later of equal scores
        if score == float(best_valid_score):
            best_epoch = int(epoch)
    epoch_seconds = trainer.epoch_seconds
    row = RunResult(
        model=config["model"],
        status="ok",
        test_result={k: float(v) for k, v in test_result.items()},
        best_valid_score=float(best_valid_score),
        best_epoch=best_epoch,
        epochs_run=len(epoch_seconds),
        train_seconds_per_epoch=sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else None,
        parameters=sum(p.numel() for p in model.parameters()),
        valid_metric=str(config["valid_metric"]).lower(),
        valid_curve=[list(entry) for entry in trainer.valid_curve],
    )
    if last is not None:
        last.unlink(missing_ok=True)
    return row, per_user


def _model_type(model: str) -> Optional[ModelType]:
    try:
        return get_model(model).type
    except UserInputError:
        return None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def output_folder(dataset: str, output_dir: Optional[str] = None) -> Path:
    """Where a comparison writes: ``output_dir``, else ``results/compare-<dataset>``."""
    return Path(output_dir or f"results/compare-{dataset}")


@dataclass
class ModelConfig:
    """A model's checked config for a comparison, or the error that stops it; ``extra``
    holds the settings the comparison adds for that model (``kg_items_only``)."""

    config: Optional[Config]
    error: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


def configs_for(
    models: Sequence[str], dataset: str, config_file_list: Optional[List[str]], config_dict: Dict[str, Any]
) -> Dict[str, ModelConfig]:
    """Every model's config, built and checked before any model trains; when none is
    valid, the first error is raised."""
    model_types = {model: _model_type(model) for model in models}
    with_kg = ModelType.KNOWLEDGE in model_types.values()
    configs: Dict[str, ModelConfig] = {}
    first_error: Optional[UserInputError] = None
    for model in models:
        # Models without KG see the knowledge-aware models' data: KG-linked items only.
        extra = {"kg_items_only": True} if with_kg and model_types[model] == ModelType.GENERAL else {}
        try:
            configs[model] = ModelConfig(Config(model, dataset, config_file_list, {**config_dict, **extra}), "", extra)
        except UserInputError as error:
            first_error = first_error or error
            configs[model] = ModelConfig(None, str(error), extra)
    if first_error is not None and all(entry.config is None for entry in configs.values()):
        raise first_error
    return configs


def run_one(
    model: str,
    dataset: str,
    config_file_list: Optional[List[str]],
    config_dict: Dict[str, Any],
    output: Path,
    force: bool = False,
    per_user_ks: Sequence[int] = (),
    config: Optional[Config] = None,
) -> Tuple[RunResult, Dict[str, Dict[int, float]]]:
    """Train and test one model (or reuse its finished run in ``output/runs``, or
    continue its killed run from ``output/checkpoints``).

    A failure is returned as a row with status ``failed`` and its error, not raised.
    With ``per_user_ks`` the per-user test metrics are kept beside the run
    (``runs/<Model>-<hash>.users.json``) and returned."""
    config = config or Config(model, dataset, config_file_list, config_dict)
    digest = config_hash(config)
    run_file = output / "runs" / f"{model}-{digest}.json"
    users_file = output / "runs" / f"{model}-{digest}.users.json"
    write_text_atomically(output / "configs" / f"{model}-{digest}.yaml", yaml.safe_dump(recorded_config(config), sort_keys=True))
    if run_file.is_file() and not force and (not per_user_ks or users_file.is_file()):
        cached = RunResult(**json.loads(run_file.read_text()))
        cached.status = "cached"
        per_user = json.loads(users_file.read_text()) if per_user_ks else {}
        return cached, {name: {int(user): value for user, value in values.items()} for name, values in per_user.items()}
    checkpoint = output / "checkpoints" / f"{model}-{digest}.pth"
    if force:  # train again from the first epoch
        Path(last_checkpoint_path(str(checkpoint))).unlink(missing_ok=True)
    per_user: Dict[str, Dict[int, float]] = {}
    try:
        row, per_user = train_and_test(config, per_user_ks, checkpoint=checkpoint)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # a failing model must not stop the others
        getLogger().error(f"{model} failed:\n{traceback.format_exc()}")
        row = RunResult(model=model, status="failed", error=_one_line(error))
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    row.config_hash = digest
    if row.status == "ok":
        if per_user_ks:
            write_text_atomically(users_file, json.dumps(per_user))
        write_text_atomically(run_file, json.dumps(asdict(row), indent=2))
    return row, per_user


def run_comparison(
    models: Sequence[str],
    dataset: str,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[Dict[str, Any]] = None,
    output_dir: Optional[str] = None,
    force: bool = False,
) -> List[RunResult]:
    """Run (or reuse) every model; write the outputs; return the rows in order."""
    rows: List[RunResult] = []
    configs = configs_for(models, dataset, config_file_list, dict(config_dict or {}))
    output = output_folder(dataset, output_dir)
    (output / "runs").mkdir(parents=True, exist_ok=True)
    (output / "configs").mkdir(parents=True, exist_ok=True)
    progress = tqdm(models, desc="compare", unit="model", ncols=100)
    for model in progress:
        progress.set_postfix_str(model)
        entry = configs[model]
        if entry.config is None:
            rows.append(RunResult(model=model, status="failed", error=entry.error))
            continue
        row, _ = run_one(model, dataset, config_file_list, {}, output, force, config=entry.config)
        rows.append(row)
    write_outputs(rows, output)
    return rows


def metric_names(rows: Sequence[RunResult]) -> List[str]:
    names: List[str] = []
    for row in rows:
        names += [name for name in row.test_result if name not in names]
    return names


def format_markdown(rows: Sequence[RunResult]) -> str:
    """The comparison as a markdown table (test metrics at the best valid epoch)."""
    metrics = metric_names(rows)
    header = ["model", "status", *metrics, "best epoch", "s/epoch", "parameters", "best valid"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.model, row.status if row.status != "failed" else f"failed: {row.error}"]
        cells += [f"{row.test_result[m]:.4f}" if m in row.test_result else "" for m in metrics]
        cells += [
            "" if row.best_epoch is None else str(row.best_epoch),
            "" if row.train_seconds_per_epoch is None else f"{row.train_seconds_per_epoch:.2f}",
            "" if row.parameters is None else f"{row.parameters:,}",
            "" if row.best_valid_score is None else f"{row.best_valid_score:.4f}",
        ]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def write_outputs(rows: Sequence[RunResult], output: Path) -> None:
    """results.md, results.csv, results.json and comparison.png in ``output``."""
    write_text_atomically(output / "results.md", format_markdown(rows) + "\n")
    write_text_atomically(output / "results.json", json.dumps([asdict(row) for row in rows], indent=2))
    metrics = metric_names(rows)
    columns = ["model", "status", "config_hash", *metrics, "best_epoch", "epochs_run",
               "train_seconds_per_epoch", "parameters", "best_valid_score", "error"]
    with replacing(output / "results.csv") as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            record = {key: value for key, value in asdict(row).items() if key in columns}
            record.update(row.test_result)
            writer.writerow(record)
    plot_comparison(rows, output / "comparison.png")


def plot_comparison(rows: Sequence[RunResult], path: Path, metrics: Optional[Sequence[str]] = None) -> None:
    """Grouped bars of test metrics (default: the main ones present), one group per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finished = [row for row in rows if row.test_result]
    metrics = [m for m in metrics or MAIN_METRICS if any(m in row.test_result for row in finished)]
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(metrics) * max(1, len(finished)) / 2), 4))
    width = 0.8 / max(1, len(finished))
    for index, row in enumerate(finished):
        positions = [m_index + index * width for m_index in range(len(metrics))]
        axes.bar(positions, [row.test_result.get(m, 0.0) for m in metrics], width, label=row.model)
    axes.set_xticks([m_index + 0.4 - width / 2 for m_index in range(len(metrics))])
    axes.set_xticklabels(metrics)
    axes.set_ylabel("test score (best valid epoch)")
    axes.set_title("model comparison")
    if finished:
        axes.legend(fontsize="small")
    figure.tight_layout()
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
