"""Config values typed from text as Python literals, never evaluated.

RecBole types a config string by ``eval()``-ing it, which runs whatever code the string
holds; here text becomes a value only by ``ast.literal_eval`` (numbers, strings,
lists, dicts, tuples, booleans, None), so ``2024-1`` stays the text it is and
``__import__('os')`` stays a string.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import yaml


def typed_value(text: str) -> Any:
    """``"1"`` -> 1, ``"1e-3"`` -> 0.001, ``"[10,20]"`` -> [10, 20], ``"True"``/``"true"``
    -> True, ``"None"`` -> None; text that is no literal (``"ml-1m"``, ``"2024-1"``)
    stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return text


class PlainYamlLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (plain values only: no tag builds a Python object) with
    RecBole's float resolver, which also reads ``1e-3`` (no dot) as a float."""


PlainYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        """^(?:
     [-+]?(?:[0-9][0-9_]*)\\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\\.[0-9_]*
    |[-+]?\\.(?:inf|Inf|INF)
    |\\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
