"""recbole_kgin/data/on_nodes.py: what a node checks and writes (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recbole_kgin.data import on_nodes
from recbole_kgin.data.on_nodes import SHARED, SHIP, describe, prepare_here, problem_with, read_payload
from recbole_kgin.errors import UserInputError


@pytest.fixture
def folder(tmp_path):
    data = tmp_path / "data" / "toy"
    data.mkdir(parents=True)
    (data / "toy.inter").write_text("user_id:token\titem_id:token\nu1\ti1\n")
    (data / "toy.kg").write_text("head_id:token\trelation_id:token\ttail_id:token\ni1\tr\te1\n")
    (data / "notes.txt").write_text("not an atomic file")
    return data


def test_describe_lists_the_atomic_files_with_sizes_and_checksums(folder):
    files = describe(folder, "toy")
    assert [name for name, _, _ in files.files] == ["toy.inter", "toy.kg"]
    assert files.files[0][1] == (folder / "toy.inter").stat().st_size and len(files.files[0][2]) == 64
    before = files.digest
    (folder / "toy.kg").write_text("head_id:token\trelation_id:token\ttail_id:token\ni1\tr\te2\n")
    assert describe(folder, "toy").digest != before
    with pytest.raises(UserInputError, match="no atomic files named other"):
        describe(folder, "other")


def test_problems_name_the_file_and_what_differs(folder, tmp_path):
    expected = describe(folder, "toy")
    assert problem_with(folder, expected) is None
    other = tmp_path / "other"
    other.mkdir()
    assert problem_with(other, expected) == f"{other / 'toy.inter'} is missing"
    (other / "toy.inter").write_text("short")
    assert problem_with(other, expected).startswith(f"{other / 'toy.inter'} has 5 bytes, the driver's ")
    same_size = (folder / "toy.inter").read_text().replace("u1", "u2")
    (other / "toy.inter").write_text(same_size)
    assert problem_with(other, expected) == f"{other / 'toy.inter'} differs from the driver's file (SHA-256)"


def test_a_shipped_copy_is_written_once_checked_and_repaired(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(on_nodes.tempfile, "gettempdir", lambda: str(tmp_path / "node"))
    expected = describe(folder, "toy")
    problem, data_path = prepare_here(expected, SHIP, lambda: read_payload(expected))
    copy = Path(data_path) / "toy"
    assert problem is None and copy.parent == tmp_path / "node" / "recbole-kgin-datasets" / expected.digest
    assert sorted(p.name for p in copy.iterdir()) == ["toy.inter", "toy.kg"]

    def no_fetch():
        raise AssertionError("a checked copy was fetched again")

    assert prepare_here(expected, SHIP, no_fetch) == (None, data_path)
    (copy / "toy.kg").write_text("broken")
    assert prepare_here(expected, SHIP, lambda: read_payload(expected)) == (None, data_path)
    assert (copy / "toy.kg").read_bytes() == (folder / "toy.kg").read_bytes()
    assert not [p for p in copy.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_shared_mode_reads_the_drivers_path(folder):
    expected = describe(folder, "toy")
    assert prepare_here(expected, SHARED, lambda: {}) == (None, str(folder.parent))
    (folder / "toy.kg").unlink()
    assert prepare_here(expected, SHARED, lambda: {})[0] == f"{folder / 'toy.kg'} is missing"
