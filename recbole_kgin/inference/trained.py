"""A trained model back from its checkpoint, on the data it was trained on.

Checkpoints that recbole-kgin writes (:mod:`recbole_kgin.runtime.resumable`) carry
``data_checksums``: the SHA-256 of every atomic file of the dataset
(``<dataset>.inter``, ``.kg``, ``.link``, ``.item``, ``.user``, ``.net`` and benchmark
splits such as ``<dataset>.train.inter``). :func:`load_trained` reads a checkpoint to
use the model (``--explain`` reads KGIN's through
:func:`recbole_kgin.inference.explain.load_kgin`, with the same :func:`check_data`): it
refuses a checkpoint of another dataset than the one asked for, and one whose dataset
files are missing or changed since training (one line each, naming the file), warns
where a checkpoint has no checksums (RecBole's own, or written before recbole-kgin
stored them), and rebuilds dataset, loaders and model with its trained weights on the
CPU, in evaluation mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from logging import getLogger
from pathlib import Path
from typing import Any, Dict, Optional

from recbole_kgin.data.checksum import file_sha256
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.quick_start import load_checkpoint, restore

def check_data(model_file: str, config: Any, stored: Optional[Dict[str, str]]) -> None:
    """Refuse (one line) when a file the model was trained on is missing or differs."""
    folder = Path(config["data_path"])
    if stored is None:
        getLogger().warning(
            f"'{model_file}' holds no checksums of its dataset's files: {config['dataset']} in {folder} "
            f"is used as it is now, unchecked"
        )
        return
    for name, checksum in sorted(stored.items()):
        path = folder / name
        if not path.is_file():
            raise UserInputError(
                f"{path} is missing, and '{model_file}' was trained with it: put the file back, or retrain"
            )
        if file_sha256(path) != checksum:
            raise UserInputError(
                f"{path} changed since '{model_file}' was trained (SHA-256 differs): put back the file "
                f"it was trained on, or retrain on the new data"
            )


@dataclass
class Trained:
    """A trained model in evaluation mode (CPU) with its dataset and RecBole's loaders."""

    model_file: str
    config: Any
    model: Any
    dataset: Any
    train_data: Any
    valid_data: Any
    test_data: Any

    @property
    def model_name(self) -> str:
        return str(self.config["model"])


def load_trained(model_file: str, dataset: Optional[str] = None, trusted: bool = False) -> Trained:
    """The model in ``model_file`` with the data it was trained on.

    Args:
        model_file: a checkpoint that recbole-kgin or RecBole wrote (``saved/*.pth``).
        dataset: the dataset the caller expects (``--dataset``); None accepts any.
        trusted: the caller vouches for the file (``--trust_checkpoint``), so one that
            needs full unpickling is read too (:func:`recbole_kgin.runtime.checkpoints.read_checkpoint`).

    Raises:
        UserInputError: no such file, not a checkpoint, another dataset than
            ``dataset``, dataset files changed since training, or weights whose sizes
            do not fit the dataset as it is now.
    """
    checkpoint = load_checkpoint(model_file, trusted)
    config = checkpoint["config"]
    if dataset is not None and dataset != config["dataset"]:
        raise UserInputError(
            f"'{model_file}' was trained on {config['dataset']}, not {dataset}: pass a checkpoint of "
            f"{dataset}, or leave --dataset out"
        )
    check_data(model_file, config, checkpoint.get("data_checksums"))
    config, model, full, train_data, valid_data, test_data = restore(checkpoint, device="cpu", name=f"'{model_file}'")
    return Trained(model_file, config, model.eval(), full, train_data, valid_data, test_data)
