"""Folders of YAML files that ship inside the package: ``properties/`` and ``tuning/``.

In a wheel, setup.py maps the repository's top-level ``properties/`` and ``tuning/``
into the package (``recbole_kgin/properties``, ``recbole_kgin/tuning``); in a source
checkout or an editable install they sit beside the package.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # recbole_kgin/


def packaged_dir(name: str) -> Path:
    """``recbole_kgin/<name>`` when installed from a wheel, else ``<checkout>/<name>``."""
    installed = PACKAGE_DIR / name
    return installed if installed.is_dir() else PACKAGE_DIR.parent / name
