"""A trained model from Python: loaded once, then recommendations, vectors, explanations.

    import recbole_kgin

    trained = recbole_kgin.load("saved/KGIN-....pth")
    trained.recommend(["196", "186"], k=10)  # pandas.DataFrame: user_id, rank, item_id, score[, title]
    trained.vectors().users                  # (U, d) final user vectors (KGIN)
    trained.explain("196")                   # intents, relations and paths behind the top item (KGIN)

The checkpoint is read and its dataset rebuilt once (:func:`recbole_kgin.inference.trained.load_trained`,
with its checks); every call reuses them. Recommendations are those of ``--recommend``
(:mod:`recbole_kgin.inference.recommend`: training and validation items left out by default),
vectors those of ``--export`` (:mod:`recbole_kgin.inference.export`), explanations those of
``--explain`` (:mod:`recbole_kgin.inference.explain`, whose own list of top items leaves out
training items).
"""

from __future__ import annotations

from typing import Iterable, Optional, Union

import pandas as pd

from recbole_kgin.inference.trained import Trained, load_trained
from recbole_kgin.data.item_names import read_item_names
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.inference.explain import Explainer, Explanation
from recbole_kgin.inference.export import Vectors, kgin_vectors, no_vectors
from recbole_kgin.model import KGIN
from recbole_kgin.inference.recommend import Columns, check_k, check_rankable, ranked_batches, user_ids


class LoadedModel:
    """A trained model and its dataset, loaded once (see the module docstring)."""

    def __init__(self, trained: Trained) -> None:
        self.trained = trained
        self._columns: Optional[Columns] = None
        self._vectors: Optional[Vectors] = None
        self._explainer: Optional[Explainer] = None

    @property
    def model(self):
        return self.trained.model

    @property
    def dataset(self):
        return self.trained.dataset

    def recommend(
        self,
        users: Union[str, Iterable[str]] = "all",
        k: int = 10,
        exclude_seen: bool = True,
        show_progress: bool = False,
    ) -> pd.DataFrame:
        """Top ``k`` items of ``users`` ("all", one user id, or several): a DataFrame
        with len(users) * k rows (fewer where a user has fewer unseen items) and the
        columns of ``--recommend``'s file."""
        check_rankable(self.trained)
        check_k(k, self.dataset, "recommend(k={k})")
        if users == "all":
            tokens = None
        else:
            tokens = [users] if isinstance(users, str) else [str(user) for user in users]
            if not tokens:
                raise UserInputError("recommend(users=[]): pass 'all', a user id or a list of user ids")
        ids = user_ids(tokens, "users", self.dataset)
        if self._columns is None:
            self._columns = Columns(self.trained)
        frames = [
            pd.DataFrame(self._columns.of(batch))
            for batch in ranked_batches(self.trained, ids, k, exclude_seen, show_progress)
        ]
        return pd.concat(frames, ignore_index=True)

    def vectors(self) -> Vectors:
        """KGIN's user, item, entity, relation and intent vectors and attentions (computed once)."""
        if self._vectors is None:
            self._vectors = kgin_vectors(self.trained)
        return self._vectors

    def explain(self, user: str, item: Optional[str] = None, top: int = 5, intents: int = 2) -> Explanation:
        """Why KGIN recommends ``item`` (default: its top item) to ``user``, as ``--explain``."""
        if not isinstance(self.model, KGIN):
            raise no_vectors(self.trained, ".explain")
        if top < 1 or intents < 1:
            raise UserInputError("explain(top=, intents=) must be >= 1")
        if self._explainer is None:
            config = self.trained.config
            names = read_item_names(
                config["data_path"], config["dataset"], self.dataset.iid_field, config["field_separator"],
                config["encoding"] or "utf-8",
            )  # fmt: skip
            self._explainer = Explainer(self.model, self.trained.train_data._dataset, names)
        return self._explainer.explain(str(user), item, top, intents)


def load(model_file: str, trusted: bool = False) -> LoadedModel:
    """Load a checkpoint (``saved/<Model>-....pth``) once; see :class:`LoadedModel`.
    ``trusted``: read a checkpoint that needs full unpickling too (only one you trust:
    :func:`recbole_kgin.runtime.checkpoints.read_checkpoint`)."""
    return LoadedModel(load_trained(model_file, trusted=trusted))
