"""Outputs written whole (recbole_kgin/inference/outputs.py): synced to disk before they
take the target's name, and the folder's new entry synced after."""

from __future__ import annotations

import os

import pytest

from recbole_kgin.inference.outputs import written_whole


@pytest.fixture
def events(monkeypatch):
    """What reaches the disk, in order: ("fsync", path) and ("replace", target)."""
    seen = []
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(descriptor):
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        fsync(descriptor)

    def recorded_replace(source, target):
        seen.append(("replace", str(target)))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)
    return seen


def test_a_file_is_synced_before_the_rename_and_its_folder_after(tmp_path, events):
    target = tmp_path / "recs.csv"
    with written_whole(target, force=False) as temporary:
        temporary.write_text("user,item\n")
    assert events == [("fsync", str(temporary)), ("replace", str(target)), ("fsync", str(tmp_path))]
    assert target.read_text() == "user,item\n"


def test_a_folder_is_synced_file_by_file_before_the_rename(tmp_path, events):
    target = tmp_path / "vectors"
    target.mkdir()
    (target / "old.npy").write_text("replaced with --force")
    with written_whole(target, force=True, folder=True) as temporary:
        (temporary / "users.npy").write_text("u")
        (temporary / "items").mkdir()
        (temporary / "items" / "items.npy").write_text("i")
    synced_before = {path for kind, path in events[: events.index(("replace", str(target)))] if kind == "fsync"}
    assert synced_before == {str(temporary / "users.npy"), str(temporary / "items" / "items.npy"),
                             str(temporary / "items"), str(temporary)}  # fmt: skip
    assert events[-1] == ("fsync", str(tmp_path))
    assert sorted(path.name for path in target.rglob("*")) == ["items", "items.npy", "users.npy"]
