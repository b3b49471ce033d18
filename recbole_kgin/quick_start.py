"""Train-and-evaluate entry points, RecBole's quick start with recbole-kgin's lookup."""

from __future__ import annotations

import os
from logging import getLogger
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.dataset import KnowledgeBasedDataset
from recbole.utils import ModelType, get_environment, init_logger, init_seed, set_color

from recbole_kgin.config import Config, restore_config
from recbole_kgin.runtime.checkpoints import RESUME_KEYS, check_keys, read_checkpoint
from recbole_kgin.runtime.cpu_memory import keep_freed_memory_for_reuse
from recbole_kgin.runtime.distributed import is_distributed, whole_loader
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.utils import get_model, get_trainer
from recbole_kgin.data import startup_cache
from recbole_kgin.data.checksum import data_checksums
from recbole_kgin.data.validate import require_valid


def reserve_checkpoint_path(path: str) -> str:
    """``path``, or ``path`` with ``-1``, ``-2``... before ``.pth`` if it is taken.

    RecBole names checkpoints ``<Model>-<time to the second>.pth``; two runs started in
    the same second (parallel trials, a comparison) would overwrite each other. The
    name is reserved by creating the file exclusively.
    """
    stem, suffix = os.path.splitext(path)
    candidate, index = path, 0
    while True:
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return candidate
        except FileExistsError:
            index += 1
            candidate = f"{stem}-{index}{suffix}"


def prepare_data(config: Config):
    """The dataset and its ``(train, valid, test)`` loaders, its files checked first;
    split with ``split_seed`` where set (callers seed with ``seed`` before and after).
    With ``startup_cache`` they come from :mod:`recbole_kgin.data.startup_cache` where a
    run on the same files and data settings kept them, and are kept there otherwise."""
    logger = getLogger()
    files = data_checksums(config) if config["startup_cache"] else None  # hashed once, compared after the build
    cached = startup_cache.load(config, files=files) if config["startup_cache"] else None
    if cached is not None:
        dataset, loaders, warnings = cached
        for warning in warnings:
            logger.warning(warning)
        logger.info(set_color("startup cache", "blue") + f": {config['dataset']} read back, not rebuilt")
        logger.info(dataset)
        return dataset, loaders
    warnings = require_valid(config)
    for warning in warnings:
        logger.warning(warning)
    with startup_cache.recorded_rng(config) as record:
        if config["split_seed"] is not None:
            init_seed(config["split_seed"], config["reproducibility"])
        if config["kg_items_only"] and config["MODEL_TYPE"] != ModelType.KNOWLEDGE:
            dataset = KnowledgeBasedDataset(config)  # RecBole's KG filtering: linked items only
        else:
            dataset = create_dataset(config)
        loaders = data_preparation(config, dataset)
    logger.info(dataset)
    if config["startup_cache"]:
        startup_cache.save(config, dataset, loaders, warnings, record, files=files)
    return dataset, loaders


def build(config: Config, saved: bool = True):
    """Dataset, loaders, model and trainer for ``config`` (its files checked first).

    Returns ``(dataset, (train, valid, test), model, trainer)``.
    """
    dataset, (train_data, valid_data, test_data) = prepare_data(config)
    if is_distributed(config):  # rank 0 evaluates every user (recbole_kgin.runtime.distributed)
        valid_data, test_data = whole_loader(valid_data, config), whole_loader(test_data, config)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    if config["device"].type == "cpu" and config["cpu_malloc_tuning"] and keep_freed_memory_for_reuse():
        getLogger().info(set_color("glibc malloc", "blue") + ": freed blocks kept for reuse")
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    getLogger().info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    if saved and config["local_rank"] + (config["offset"] or 0) == 0:  # the one rank that saves
        trainer.saved_model_file = reserve_checkpoint_path(trainer.saved_model_file)
    return dataset, (train_data, valid_data, test_data), model, trainer


def run_recbole_kgin(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[Dict[str, Any]] = None,
    saved: bool = True,
) -> Dict[str, Any]:
    """Train ``model`` on ``dataset`` and evaluate it, like ``recbole.quick_start.run_recbole``.

    Args:
        model: model name; recbole-kgin's models first (``KGIN``), then RecBole's.
        dataset: dataset name; see :mod:`recbole_kgin.data.location` for where it is found.
        config_file_list: YAML config files.
        config_dict: config overrides of the highest priority.
        saved: keep the best checkpoint (and evaluate the test set with it).

    Returns:
        ``{"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}``
        as RecBole's, and ``"train_loss"``: the training loss of every epoch.
    """
    config = Config(model, dataset, config_file_list, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)

    _, loaders, _, trainer = build(config, saved)
    return _fit_and_test(config, trainer, loaders, saved)


def _fit_and_test(config: Config, trainer, loaders, saved: bool) -> Dict[str, Any]:
    """Fit with early stopping, then test (with the best checkpoint when ``saved``)."""
    train_data, valid_data, test_data = loaders
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(
        test_data, load_best_model=saved, show_progress=config["show_progress"]
    )
    logger = getLogger()
    logger.info(
        "The running environment of this training is as follows:\n"
        + get_environment(config).draw()
    )
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    if is_distributed(config):
        torch.distributed.destroy_process_group()
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "train_loss": [float(loss) for loss in trainer.train_loss_dict.values()],
    }


def load_checkpoint(path: str, trusted: bool = False) -> Dict[str, Any]:
    """The checkpoint in ``path`` (:func:`recbole_kgin.runtime.checkpoints.read_checkpoint`:
    plain data only unless ``trusted``, checked) with its ``"config"`` rebuilt as a
    :class:`recbole_kgin.config.Config`."""
    checkpoint = read_checkpoint(path, trusted)
    config = checkpoint["config"]
    return {**checkpoint, "config": restore_config(config) if isinstance(config, Mapping) else config}


def resume_recbole_kgin(checkpoint_file: str, trusted: bool = False) -> Dict[str, Any]:
    """Continue a run from its ``.last`` checkpoint (or, less exactly, its best one)
    with the checkpoint's own config; returns what :func:`run_recbole_kgin` returns.
    ``trusted``: read a file that needs full unpickling too (see
    :func:`load_checkpoint`)."""
    checkpoint = load_checkpoint(checkpoint_file, trusted)
    check_keys(checkpoint, checkpoint_file, RESUME_KEYS)
    config = checkpoint["config"]
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    _, loaders, _, trainer = build(config, saved=False)
    trainer.resume_checkpoint(checkpoint_file, train_data=loaders[0], checkpoint=checkpoint, trusted=trusted)
    return _fit_and_test(config, trainer, loaders, saved=True)


def restore(checkpoint: Dict[str, Any], device: Optional[str] = None, name: str = "the checkpoint") -> Tuple[Any, ...]:
    """``(config, model, dataset, train, valid, test)`` from a read checkpoint
    (:func:`load_checkpoint`); the model on ``device``
    (default: the checkpoint's) with its trained weights. Weights that do not fit the
    model its config and data build raise :class:`UserInputError` naming ``name``."""
    config = checkpoint["config"]
    if device is not None:
        config["device"] = torch.device(device)
    init_seed(config["seed"], config["reproducibility"])
    dataset, (train_data, valid_data, test_data) = prepare_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
        model.load_other_parameter(checkpoint.get("other_parameter"))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise UserInputError(
            f"{name} does not fit {config['dataset']} in {config['data_path']}: its weights do not fit the "
            f"{config['model']} built from its config and data (the dataset changed since training, or the "
            f"checkpoint is of other data; {type(error).__name__}: {' '.join(str(error).split())[:160]}); retrain"
        ) from None
    return config, model, dataset, train_data, valid_data, test_data


def load_data_and_model(model_file: str, trusted: bool = False) -> Tuple[Any, ...]:
    """Rebuild ``(config, model, dataset, train, valid, test)`` from a checkpoint that
    RecBole or recbole-kgin wrote, as ``recbole.quick_start.load_data_and_model``
    (RecBole's own files need ``trusted``, see :func:`load_checkpoint`)."""
    checkpoint = load_checkpoint(model_file, trusted)
    init_logger(checkpoint["config"])
    return restore(checkpoint)
