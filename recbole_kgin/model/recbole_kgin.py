"""RecBole 1.2.1's own KGIN, reachable beside ours under the name ``RecBoleKGIN``."""

from __future__ import annotations

import importlib.util

from recbole.model.knowledge_aware_recommender.kgin import KGIN as _RecBoleBuiltinKGIN

from recbole_kgin.common.errors import UserInputError


class RecBoleKGIN(_RecBoleBuiltinKGIN):
    """``recbole.model.knowledge_aware_recommender.kgin.KGIN``, unchanged.

    It takes RecBole's ``properties/model/KGIN.yaml`` defaults, trains with RecBole's
    KGTrainer and needs ``torch-scatter`` (``pip install --no-build-isolation
    torch-scatter``, a ~5.5 min compile where no wheel exists).
    """

    recbole_properties = "KGIN"

    def __init__(self, config, dataset) -> None:
        if importlib.util.find_spec("torch_scatter") is None:
            raise UserInputError(
                "model RecBoleKGIN (RecBole's built-in KGIN) needs torch-scatter: "
                "pip install --no-build-isolation torch-scatter, or use --model=KGIN"
            )
        super().__init__(config, dataset)
