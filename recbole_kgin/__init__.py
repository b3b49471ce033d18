"""recbole-kgin: KGIN (Wang et al., WWW 2021) as a RecBole model plugin.

Importing the package installs the fixes RecBole 1.2.1 needs on today's stack
(:mod:`recbole_kgin.compat`) and notes torch's thread count, so that a later
``torch.set_num_threads`` of the user's is respected (:mod:`recbole_kgin.threads`).
"""

from recbole_kgin import compat, threads

compat.apply()
threads.remember_torch_threads()

__version__ = "0.1.0"
