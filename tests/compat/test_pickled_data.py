"""RecBole unpickles saved datasets and dataloaders it finds in ``checkpoint_dir``
(compat fix 11): a planted file there must never run, and RecBole's keys that would
write such files are refused in one line."""

from __future__ import annotations

import os
import pickle

import pytest

from conftest import TOY
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.config import Config
from recbole_kgin.quick_start import prepare_data


class _Planted:
    """Unpickling this writes a marker file: what an attacker's pickle would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_files_planted_in_the_checkpoint_folder_are_never_unpickled(toy_root, tmp_path):
    saved = tmp_path / "saved"
    saved.mkdir()
    marker = tmp_path / "planted-code-ran"
    for name in ("toy-KnowledgeBasedDataset.pth", "toy-for-KGIN-dataloader.pth"):
        (saved / name).write_bytes(pickle.dumps(_Planted(str(marker))))
    config = Config("KGIN", "toy", config_dict={**TOY, "data_path": str(toy_root), "checkpoint_dir": str(saved)})
    dataset, (train_data, _, _) = prepare_data(config)
    assert not marker.exists()
    assert dataset.inter_num > 0 and len(train_data) > 0


def test_recboles_own_loaders_read_nothing_either():
    import recbole.data
    import recbole.data.utils

    assert recbole.data.utils.load_split_dataloaders({"checkpoint_dir": "/nonexistent"}) is None
    assert recbole.data.create_dataset is recbole.data.utils.create_dataset
    assert recbole.data.create_dataset.__module__ == "recbole_kgin.compat.fixes"


@pytest.mark.parametrize(
    "key, value",
    [("save_dataset", True), ("save_dataloaders", True), ("dataset_save_path", "x.pth"), ("dataloaders_save_path", "y.pth")],
)
def test_recboles_pickle_keys_are_refused_in_one_line(toy_root, key, value):
    with pytest.raises(UserInputError, match=f"bad config value {key}=.*never unpickles"):
        Config("KGIN", "toy", config_dict={**TOY, "data_path": str(toy_root), key: value})
