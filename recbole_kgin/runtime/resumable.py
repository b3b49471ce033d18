"""Checkpoints that let a killed run resume exactly, and a clear stop on NaN/inf.

Every trainer that recbole-kgin hands out (its own and RecBole's, see
:func:`recbole_kgin.utils.get_trainer`) is wrapped with :class:`ResumableTrainer`:

- after each validation it writes ``<best checkpoint>.last.pth``: model, optimizer,
  epoch, early-stopping state, best validation result, the path of the best
  checkpoint and every random state the next epoch draws from (torch, numpy, Python,
  the loaders' generators) and the run's timing history. ``--resume <that file>``
  continues from the next epoch and ends exactly as the uninterrupted run would (CPU;
  same seed and config);
- it times every epoch: ``epoch_seconds`` (training seconds of each epoch) and
  ``valid_curve`` (``[epoch, validation score, seconds since training began]`` per
  validation), both carried across a resume (the seconds count the run's own
  training and validation, not the time it lay dead);
- checkpoints are plain data (:mod:`recbole_kgin.runtime.checkpoints`: read back without
  running code), written to a temporary file of their own and renamed, so a kill or a
  second writer never leaves a half-written file; both kinds carry ``data_checksums``,
  the SHA-256 of the dataset's atomic files (:mod:`recbole_kgin.inference.trained` checks them
  before a trained model is used);
- a loss that is NaN or infinite stops training with :class:`TrainingDiverged`,
  naming the epoch and batch and the checkpoints that were kept.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from recbole_kgin.runtime.checkpoints import RESUME_KEYS, check_keys, read_checkpoint, save_checkpoint
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.data.checksum import data_checksums


class TrainingDiverged(Exception):
    """The training loss became NaN or infinite."""


def last_checkpoint_path(best_checkpoint: str) -> str:
    stem, suffix = os.path.splitext(best_checkpoint)
    return f"{stem}.last{suffix}"


def _generators(train_data) -> List[torch.Generator]:
    loaders = [train_data, getattr(train_data, "general_dataloader", None), getattr(train_data, "kg_dataloader", None)]
    found = []
    for loader in loaders:
        generator = getattr(loader, "generator", None) if loader is not None else None
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


class ResumableTrainer:
    """Mixin for RecBole trainers (put before the trainer class in the bases)."""

    epoch_seconds: List[float]
    valid_curve: List[List[float]]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_seconds, self.valid_curve = [], []
        self._seconds_before = 0.0  # training seconds of the run before it was resumed
        self._data_checksums = None  # hashed at the first save
        self._trusted = False  # whether the checkpoints it resumed from were vouched for

    def data_checksums(self):
        """SHA-256 of the dataset's atomic files, hashed once per trainer."""
        if self._data_checksums is None:
            self._data_checksums = data_checksums(self.config)
        return self._data_checksums

    def _seconds_since_start(self) -> float:
        return self._seconds_before + time.perf_counter() - self._fit_started

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._batch_index = 0
        self._epoch_index = self.start_epoch
        self._fit_started = time.perf_counter()

        def after_validation(epoch_idx, valid_score):
            self.valid_curve.append([epoch_idx, float(valid_score), self._seconds_since_start()])
            if saved:
                self._save_last_checkpoint(epoch_idx, train_data)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        return super().fit(train_data, valid_data, verbose, saved, show_progress, after_validation)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._epoch_index, self._batch_index = epoch_idx, 0
        started = time.perf_counter()
        losses = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_seconds.append(time.perf_counter() - started)
        return losses

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's evaluation; the best checkpoint is read as plain data (RecBole's
        trainer module reads it, :mod:`recbole_kgin.compat.fixes` fix 1) unless the run
        resumed from a trusted checkpoint."""
        if load_best_model and self._trusted:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = read_checkpoint(checkpoint_file, trusted=True)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
            load_best_model = False
        return super().evaluate(eval_data, load_best_model, model_file, show_progress)

    def _check_nan(self, loss) -> None:
        if not bool(torch.isfinite(loss).all()):
            kept = [path for path in (self.saved_model_file, last_checkpoint_path(self.saved_model_file)) if os.path.isfile(path)]
            raise TrainingDiverged(
                f"training loss became {loss.item()} at epoch {self._epoch_index} batch {self._batch_index}; "
                f"kept: {', '.join(kept) or 'no checkpoint yet'}; lower learning_rate or reg/sim weights "
                f"and rerun (or --resume the .last checkpoint)"
            )
        self._batch_index += 1

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's best checkpoint (the same fields) plus ``data_checksums``, as plain data."""
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        target = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "data_checksums": self.data_checksums(),
        }
        save_checkpoint(state, target)
        if verbose:
            self.logger.info(f"Saving current: {target}")

    def _save_last_checkpoint(self, epoch: int, train_data) -> None:
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "best_valid_result": self.best_valid_result,
            "best_checkpoint": self.saved_model_file,
            "data_checksums": self.data_checksums(),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "loaders": [g.get_state() for g in _generators(train_data)],
            },
            "history": {
                "epoch_seconds": self.epoch_seconds,
                "valid_curve": self.valid_curve,
                "seconds": self._seconds_since_start(),
            },
        }
        save_checkpoint(state, last_checkpoint_path(self.saved_model_file))

    def resume_checkpoint(
        self, resume_file, train_data=None, checkpoint: Optional[Dict[str, Any]] = None, trusted: bool = False
    ) -> None:
        """Restore a ``.last`` checkpoint (everything) or a best checkpoint (RecBole's
        fields only: the run continues, but not bit for bit). ``checkpoint``: the file
        already read (:func:`recbole_kgin.runtime.checkpoints.read_checkpoint`); read here
        otherwise. ``trusted``: the caller vouches for the file, and so for the best
        checkpoint it names, which the final evaluation reads (both may then need full
        unpickling). A checkpoint whose content does not fit the model and optimizer
        built from its config raises :class:`UserInputError`."""
        if checkpoint is None:
            checkpoint = read_checkpoint(resume_file, trusted)
        self._trusted = trusted
        check_keys(checkpoint, resume_file, RESUME_KEYS)
        try:
            self._restore(checkpoint, str(resume_file), train_data)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            raise UserInputError(
                f"checkpoint '{resume_file}' does not fit the model and optimizer built from its own config "
                f"({type(error).__name__}: {' '.join(str(error).split())[:200]})"
            ) from None
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def _restore(self, checkpoint: Dict[str, Any], resume_file: str, train_data) -> None:
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")
        self.saved_model_file = checkpoint.get("best_checkpoint", resume_file)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        history = checkpoint.get("history", {})  # absent from best checkpoints (RecBole's fields)
        self.epoch_seconds = list(history.get("epoch_seconds", []))
        self.valid_curve = [list(entry) for entry in history.get("valid_curve", [])]
        self._seconds_before = float(history.get("seconds", 0.0))
        rng = checkpoint.get("rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
            if train_data is not None:
                for generator, state in zip(_generators(train_data), rng["loaders"]):
                    generator.set_state(state)


def resumable(trainer_class: type) -> type:
    """``trainer_class`` with :class:`ResumableTrainer` mixed in (same name)."""
    from recbole.trainer import Trainer

    if not issubclass(trainer_class, Trainer) or issubclass(trainer_class, ResumableTrainer):
        return trainer_class
    return type(trainer_class.__name__, (ResumableTrainer, trainer_class), {"__module__": trainer_class.__module__})
