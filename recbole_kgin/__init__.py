"""recbole-kgin: KGIN (Wang et al., WWW 2021) as a RecBole model plugin.

Importing the package installs the fixes RecBole 1.2.1 needs on current Python packages
(:mod:`recbole_kgin.compat.fixes`), lets RecBole's KGCN and KGNNLS rank all items in item-major form
(the same scores, up to 10x faster: :mod:`recbole_kgin.compat.kgcn_ranking`), propagates RecBole's
KGAT and LightGCN over compressed-row matrices (the same math:
:mod:`recbole_kgin.compat.kgat_propagation`, :mod:`recbole_kgin.compat.lightgcn_propagation`) and notes torch's
thread count, so that a later ``torch.set_num_threads`` of the user's is respected
(:mod:`recbole_kgin.runtime.threads`).

``recbole_kgin.load("saved/KGIN-....pth")`` gives a trained model back, loaded once, with
``.recommend(users, k)``, ``.vectors()`` and ``.explain(user)`` (:mod:`recbole_kgin.inference.loaded`).
"""

from typing import TYPE_CHECKING

from recbole_kgin.compat import fixes, kgat_propagation, kgcn_ranking, lightgcn_propagation
from recbole_kgin.runtime import threads

if TYPE_CHECKING:
    from recbole_kgin.inference.loaded import LoadedModel

fixes.apply()
kgcn_ranking.install()
kgat_propagation.install()
lightgcn_propagation.install()
threads.remember_torch_threads()

__version__ = "0.1.0"


def load(model_file: str, trusted: bool = False) -> "LoadedModel":
    """A trained model from its checkpoint, loaded once, with ``.recommend(users, k)``,
    ``.vectors()`` and ``.explain(user)`` (:class:`recbole_kgin.inference.loaded.LoadedModel`);
    ``trusted`` as in :func:`recbole_kgin.runtime.checkpoints.read_checkpoint`."""
    from recbole_kgin.inference.loaded import load as load_model

    return load_model(model_file, trusted)
