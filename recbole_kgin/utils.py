"""Model and trainer lookup: recbole-kgin's classes first, then RecBole's."""

from __future__ import annotations

import importlib
import importlib.util

from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import ModelType
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_kgin.common.errors import UserInputError


def plugin_models() -> dict:
    """Name -> class of every model recbole-kgin provides."""
    module = importlib.import_module("recbole_kgin.model")
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, AbstractRecommender)
    }


def get_model(model_name: str) -> type:
    """The model class called ``model_name``: recbole-kgin's first, then RecBole's.

    ``KGIN`` is recbole-kgin's model; RecBole's built-in KGIN is ``RecBoleKGIN``.
    """
    models = plugin_models()
    if model_name in models:
        return models[model_name]
    model_class = _recbole_model(model_name)
    if model_class is None:
        raise UserInputError(
            f"unknown model '{model_name}': not a recbole-kgin model "
            f"({', '.join(sorted(models))}) nor a RecBole model; names are case-sensitive "
            f"(e.g. KGIN, KGAT, KGCN, CKE, BPR)"
        )
    return model_class


RECBOLE_MODEL_FAMILIES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


def _recbole_model(model_name: str):
    """RecBole's class ``model_name`` or None.

    Like ``recbole.utils.get_model``, but a family whose optional dependency is
    missing (``exlib_recommender`` imports lightgbm and xgboost) is skipped instead
    of crashing every lookup of an unknown name.
    """
    for family in RECBOLE_MODEL_FAMILIES:
        module_path = f"recbole.model.{family}.{model_name.lower()}"
        try:
            found = importlib.util.find_spec(module_path) is not None
        except ImportError:
            continue
        if not found:
            continue
        try:
            module = importlib.import_module(module_path)
        except ImportError as error:
            raise UserInputError(
                f"model '{model_name}' needs the package '{error.name}': pip install {error.name}"
            ) from None
        model_class = getattr(module, model_name, None)
        if isinstance(model_class, type):
            return model_class
    return None


def get_trainer(model_type: ModelType, model_name: str) -> type:
    """``recbole_kgin.runtime.trainer.<model_name>Trainer`` if it exists, else RecBole's choice;
    either way made resumable (:mod:`recbole_kgin.runtime.resumable`), able to train across
    processes (:mod:`recbole_kgin.runtime.distributed`) and given the thread policy
    (:mod:`recbole_kgin.runtime.threads`)."""
    from recbole_kgin.runtime.distributed import distributed
    from recbole_kgin.runtime.resumable import resumable
    from recbole_kgin.runtime.threads import thread_governed

    trainer_module = importlib.import_module("recbole_kgin.runtime.trainer")
    trainer = getattr(trainer_module, f"{model_name}Trainer", None)
    if trainer is None:
        trainer = recbole_get_trainer(model_type, model_name)
    return thread_governed(distributed(resumable(trainer)))

