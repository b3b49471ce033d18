"""recbole-kgin's models. ``KGIN`` is ours; ``RecBoleKGIN`` is RecBole's built-in KGIN."""

from recbole_kgin.model.kgin import KGIN
from recbole_kgin.model.recbole_kgin import RecBoleKGIN

__all__ = ["KGIN", "RecBoleKGIN"]
