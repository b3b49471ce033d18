"""Folders of YAML files that ship inside the package (``properties/``, ``tuning/``), and
the user's cache folder.

In a wheel, setup.py maps the repository's top-level ``properties/`` and ``tuning/``
into the package (``recbole_kgin/properties``, ``recbole_kgin/tuning``); in a source
checkout or an editable install they sit beside the package.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # recbole_kgin/


def packaged_dir(name: str) -> Path:
    """``recbole_kgin/<name>`` when installed from a wheel, else ``<checkout>/<name>``."""
    installed = PACKAGE_DIR / name
    return installed if installed.is_dir() else PACKAGE_DIR.parent / name


CACHE_VARIABLE = "RECBOLE_KGIN_CACHE_DIR"


def user_cache_dir(name: str) -> Path:
    """``<cache>/<name>``, where ``<cache>`` is ``$RECBOLE_KGIN_CACHE_DIR`` if set, else
    ``$XDG_CACHE_HOME/recbole-kgin`` (default ``~/.cache/recbole-kgin``)."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]) / name
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "recbole-kgin" / name
