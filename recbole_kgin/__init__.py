"""recbole-kgin: KGIN (Wang et al., WWW 2021) as a RecBole model plugin.

Importing the package installs the fixes RecBole 1.2.1 needs on today's stack
(:mod:`recbole_kgin.compat`).
"""

from recbole_kgin import compat

compat.apply()

__version__ = "0.1.0"
