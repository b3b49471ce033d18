"""What a tuned comparison records (:mod:`recbole_kgin.experiments.tuned_compare`), and
its report reads (:mod:`recbole_kgin.experiments.tuned_report`): the budget every model
gets, each run, and each model's summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from recbole_kgin.common.errors import UserInputError
from recbole_kgin.experiments.compare import RunResult

SCHEDULERS = ("fifo", "asha")


@dataclass
class Budget:
    """What every model gets: search trials and their epoch cap, seeds and extra splits
    of the runs, the runs' epoch cap, and how trials are scheduled."""

    trials: int
    tune_epochs: Optional[int]  # a trial's epoch cap; None: max_epochs
    seeds: int
    max_epochs: int
    split_seeds: int = 0  # extra splits for the first model and the best other
    scheduler: str = "fifo"
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    address: Optional[str] = None
    grace_period: int = 1  # epochs before ASHA may stop a trial
    data_on_nodes: Optional[str] = None  # see recbole_kgin.data.on_nodes

    @property
    def trial_cap(self) -> int:
        return self.tune_epochs or self.max_epochs

    def check(self) -> None:
        if self.trials < 1 or self.seeds < 1 or self.trial_cap < 1 or self.max_epochs < 1:
            raise UserInputError("--tune_trials, --seeds, --tune_epochs and --max_epochs must be >= 1")
        if self.split_seeds < 0:
            raise UserInputError("--split_seeds must be >= 0")
        if self.scheduler not in SCHEDULERS:
            raise UserInputError(f"--scheduler {self.scheduler}: a tuned comparison takes {' or '.join(SCHEDULERS)}")


@dataclass
class Run:
    """One finished (or failed) run of a model: its split, its seed, its result and its
    per-user test values (``{"recall@20": {user: value}, ...}``)."""

    split_seed: int
    seed: int
    result: RunResult
    users: Dict[str, Dict[int, float]] = field(default_factory=dict)

    @property
    def key(self) -> Tuple[int, int]:
        return (self.split_seed, self.seed)


@dataclass
class ModelSummary:
    """One model's row: its runs on the search's split aggregated, and its budget."""

    model: str
    params: Dict[str, Any]
    search_valid_score: Optional[float]
    seeds: int
    mean: Dict[str, float]
    std: Dict[str, float]
    best_epoch: float
    seconds_per_epoch: float
    minutes_to_converge: float
    capped_runs: int  # runs, on every split, that ran to max_epochs
    runs: int = 0  # finished runs on every split
    trials: int = 0
    plan: str = ""  # grid or sample
    trial_epochs: int = 0
    search_hours: float = 0.0
    best_trial_epochs: int = 0
    best_trial_capped: bool = False
    capped_trials: Optional[int] = None  # trials that ran to the search's epoch cap (None: not recorded)
    run_hours: float = 0.0  # every run's training and validation, extra splits included
    error: str = ""
