"""Model and trainer lookup: recbole-kgin's classes first, then RecBole's."""

from __future__ import annotations

import importlib

from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import ModelType
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_kgin.errors import UserInputError


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
    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError):
        raise UserInputError(
            f"unknown model '{model_name}': not a recbole-kgin model "
            f"({', '.join(sorted(models))}) nor a RecBole model; names are case-sensitive "
            f"(e.g. KGIN, KGAT, KGCN, CKE, BPR)"
        ) from None


def get_trainer(model_type: ModelType, model_name: str) -> type:
    """``recbole_kgin.trainer.<model_name>Trainer`` if it exists, else RecBole's choice."""
    trainer_module = importlib.import_module("recbole_kgin.trainer")
    trainer = getattr(trainer_module, f"{model_name}Trainer", None)
    if trainer is not None:
        return trainer
    return recbole_get_trainer(model_type, model_name)
