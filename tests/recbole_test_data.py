"""RecBole 1.2.1's own model-test dataset, rebuilt from the ml-100k in the recbole wheel.

RecBole's ``tests/test_data/test/`` (https://github.com/RUCAIBox/RecBole, tag v1.2.1,
MIT licence; its files' SHA-256 below) is a slice of the MovieLens-100K files that the
recbole wheel embeds, with the Freebase KG of KB4Rec. MovieLens' terms forbid
redistributing it, so this project commits no row of it: the slice is cut again from
the wheel by the rule it follows, and checked byte for byte against RecBole's files.

- ``test.user``: the first 200 users (ids 1-200); ``test.item``: the first 300 items;
- ``test.inter``: the interactions of users 1-200 with items 1-200, in file order,
  the last row with one stray trailing field (``\\t1``), as RecBole ships it;
- ``test.link``: the links of items 1-200; ``test.kg``: the triples whose head or tail
  is one of those linked entities.

Files are joined by ``\\n`` without a final newline, as RecBole's are.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, List

import recbole

WHEEL_ML_100K = Path(recbole.__file__).resolve().parent / "dataset_example" / "ml-100k"

# sha256 of tests/test_data/test/test.<suffix> at RecBole v1.2.1
RECBOLE_SHA256 = {
    "inter": "cc4bbdd60e45d7690e52d17b1511263ed5009503cc8f5d55c33c338622c8368d",
    "item": "f2f13a11243ed5a53e01becbdbfec15689439ca467ed3fc5cab621d49869944b",
    "kg": "f7c3288a385bca7c6fe6eb0d4d8d4a9bfb4ea9232ae9da5c923bbaaf9f9895d8",
    "link": "253966f16a2bd866d8d943485f65ec70b1876e2457f7ef2cca6482d467819d6b",
    "user": "03ebf7b27f0eae3d6cd5b346204ce50d9a1cb80b5140bdbbe340b6602d386d8d",
}
STRAY_FIELD = "1"  # the extra field on test.inter's last row


def _rows(suffix: str) -> List[str]:
    return (WHEEL_ML_100K / f"ml-100k.{suffix}").read_text(encoding="utf-8").splitlines()


def recbole_test_files() -> Dict[str, str]:
    """suffix -> file text of RecBole's ``test`` dataset."""
    user, item, inter, link, kg = (_rows(s) for s in ("user", "item", "inter", "link", "kg"))
    kept_inter = [r for r in inter[1:] if int(r.split("\t")[0]) <= 200 and int(r.split("\t")[1]) <= 200]
    kept_inter[-1] += "\t" + STRAY_FIELD
    kept_link = [r for r in link[1:] if int(r.split("\t")[0]) <= 200]
    entities = {r.split("\t")[1] for r in kept_link}
    kept_kg = [r for r in kg[1:] if r.split("\t")[0] in entities or r.split("\t")[2] in entities]
    parts = {
        "user": user[:201],
        "item": item[:301],
        "inter": inter[:1] + kept_inter,
        "link": link[:1] + kept_link,
        "kg": kg[:1] + kept_kg,
    }
    return {suffix: "\n".join(lines) for suffix, lines in parts.items()}


def write_recbole_test_dataset(root: Path) -> Path:
    """Write ``root/test/test.*``, identical to RecBole's; returns ``root``."""
    folder = root / "test"
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, text in recbole_test_files().items():
        data = text.encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        if digest != RECBOLE_SHA256[suffix]:
            raise AssertionError(f"rebuilt test.{suffix} differs from RecBole v1.2.1's ({digest})")
        (folder / f"test.{suffix}").write_bytes(data)
    return root
