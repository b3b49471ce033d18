"""KGAT/KGIN text format -> RecBole atomic files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import TOY
from recbole_kgin.cli import main
from recbole_kgin.config import Config
from recbole_kgin.data.convert import convert_kgat
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.quick_start import build


def write_kgat(folder):
    """6 users, 8 items (entities 0-7), 4 more entities, 3 relations."""
    folder.mkdir(parents=True)
    train = {0: [0, 1, 2, 3], 1: [1, 2, 4, 5, 6], 2: [0, 3, 5, 7], 3: [2, 4, 6, 7], 4: [0, 1, 5, 6], 5: [3, 4, 6, 7]}
    test = {0: [4], 1: [7], 2: [1], 3: [0], 4: [2], 5: [1]}
    (folder / "train.txt").write_text("".join(f"{u} {' '.join(map(str, i))}\n" for u, i in train.items()))
    (folder / "test.txt").write_text("".join(f"{u} {' '.join(map(str, i))}\n" for u, i in test.items()))
    triples = [(i, i % 3, 8 + i % 4) for i in range(8)] + [(8, 2, 9), (10, 1, 11)]
    (folder / "kg_final.txt").write_text("".join(f"{h} {r} {t}\n" for h, r, t in triples))
    (folder / "user_list.txt").write_text("org_id remap_id\n" + "".join(f"U{u} {u}\n" for u in range(6)))
    (folder / "item_list.txt").write_text("org_id remap_id freebase_id\n" + "".join(f"I{i} {i} m.{i}\n" for i in range(8)))
    (folder / "entity_list.txt").write_text("org_id remap_id\n" + "".join(f"m.{e} {e}\n" for e in range(12)))
    (folder / "relation_list.txt").write_text("org_id remap_id\n" + "".join(f"rel.{r} {r}\n" for r in range(3)))
    return sum(map(len, train.values())), sum(map(len, test.values())), len(triples)


def test_round_trip_preserves_counts_and_original_ids(tmp_path):
    n_train, n_test, n_triples = write_kgat(tmp_path / "kgat")
    counts = convert_kgat(str(tmp_path / "kgat"), "mini", str(tmp_path / "out"))
    folder = tmp_path / "out" / "mini"
    assert counts["mini.train.inter"] + counts["mini.valid.inter"] == n_train
    assert counts["mini.valid.inter"] == 6  # one per user: 10% of 4-5 items rounds up to 1
    assert counts["mini.test.inter"] == n_test and counts["mini.kg"] == n_triples and counts["mini.link"] == 8
    assert (folder / "mini.link").read_text().splitlines()[1] == "I0\tm.0"
    assert "m.8\trel.2\tm.9" in (folder / "mini.kg").read_text()
    assert (folder / "mini.test.inter").read_text().splitlines()[1] == "U0\tI4"

    config = Config("KGIN", "mini", [str(folder / "mini.yaml")], {**TOY, "data_path": str(tmp_path / "out")})
    dataset, (train, valid, test), _, _ = build(config, saved=False)
    assert dataset.user_num - 1 == 6 and dataset.item_num - 1 == 8
    assert len(train._dataset) + len(valid._dataset) == n_train and len(test._dataset) == n_test
    assert len(dataset.kg_feat) == 2 * n_triples  # with inverse relations


def test_refuses_to_overwrite_without_force_and_leaves_no_temporary_files(tmp_path):
    write_kgat(tmp_path / "kgat")
    convert_kgat(str(tmp_path / "kgat"), "mini", str(tmp_path / "out"))
    marker = tmp_path / "out" / "mini" / "mine.txt"
    marker.write_text("a user's file")
    with pytest.raises(UserInputError, match="already exists: pass --force"):
        convert_kgat(str(tmp_path / "kgat"), "mini", str(tmp_path / "out"))
    assert marker.read_text() == "a user's file"
    convert_kgat(str(tmp_path / "kgat"), "mini", str(tmp_path / "out"), force=True)
    assert not marker.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mini"]


def test_two_conversions_replacing_one_folder_at_once_both_succeed(tmp_path, monkeypatch):
    write_kgat(tmp_path / "kgat")
    output = tmp_path / "out"
    convert_kgat(str(tmp_path / "kgat"), "mini", str(output))
    rename, other = os.rename, []

    def rename_then_let_the_other_in(source, destination):
        rename(source, destination)
        if Path(destination) == output / "mini" and not other:  # this copy is in place, the old one not yet removed
            other.append("started")
            convert_kgat(str(tmp_path / "kgat"), "mini", str(output), force=True, seed=1)

    monkeypatch.setattr(os, "rename", rename_then_let_the_other_in)
    convert_kgat(str(tmp_path / "kgat"), "mini", str(output), force=True)
    assert other and sorted(p.name for p in output.iterdir()) == ["mini"]
    assert sorted(p.name for p in (output / "mini").iterdir()) == [
        "mini.kg", "mini.link", "mini.test.inter", "mini.train.inter", "mini.valid.inter", "mini.yaml"
    ]


def test_bad_input_is_one_line(tmp_path, capsys):
    write_kgat(tmp_path / "kgat")
    (tmp_path / "kgat" / "kg_final.txt").write_text("0 1\n")
    assert main(["--convert", str(tmp_path / "kgat"), "--dataset", "mini", "--output", str(tmp_path / "out")]) == 2
    assert "kg_final.txt:1: expected 'head relation tail'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "mini").exists()
    assert main(["--convert", str(tmp_path / "nowhere"), "--dataset", "mini"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["--convert", str(tmp_path / "kgat")]) == 2
    assert "--convert needs --dataset" in capsys.readouterr().err


def test_cli_prints_the_command_to_run(tmp_path, capsys):
    write_kgat(tmp_path / "kgat")
    assert main(["--convert", str(tmp_path / "kgat"), "--dataset", "mini", "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "mini.kg: 10 rows" in out and "--config_files" in out
