"""Checkpoints are plain data: reading one runs no code, and a bad one is one line."""

from __future__ import annotations

import glob
import os

import pytest
import torch
from recbole.trainer import Trainer

from conftest import TOY
from recbole_kgin.config import restore_config
from recbole_kgin.quick_start import load_checkpoint
from recbole_kgin.runtime.checkpoints import SAFE_TYPES, config_state, save_checkpoint
from recbole_kgin.cli import main
from recbole_kgin.config import Config
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.quick_start import build, run_recbole_kgin


class RunsACommand:
    """Unpickling this runs ``command`` in a shell, as a crafted checkpoint would."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture
def trained(toy_root, tmp_path):
    """(best checkpoint, .last checkpoint) of a 2-epoch BPR run on the toy data."""
    settings = {**TOY, "data_path": str(toy_root), "epochs": 2, "checkpoint_dir": str(tmp_path / "saved")}
    run_recbole_kgin("BPR", "toy", config_dict=settings)
    (last,) = glob.glob(str(tmp_path / "saved" / "*.last.pth"))
    return last.replace(".last.pth", ".pth"), last


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("action", [["--resume"], ["--explain", "--user", "u1", "--item", "i1"]])
def test_a_crafted_checkpoint_runs_nothing_and_is_refused_in_one_line(tmp_path, capsys, action):
    marker = tmp_path / "PWNED"
    crafted = tmp_path / "crafted.pth"
    torch.save({"config": RunsACommand(f"touch {marker}"), "state_dict": {}}, crafted)
    assert main([action[0], str(crafted), *action[1:]]) == 2
    err = one_line_error(capsys)
    assert "holds more than plain data (it names posix.system)" in err and "pass --trust_checkpoint" in err
    assert not marker.exists()
    # vouched for, it is unpickled (and its content still checked)
    assert main([action[0], str(crafted), *action[1:], "--trust_checkpoint"]) == 2
    assert marker.exists()
    assert "its config is a int, not a RecBole config" in one_line_error(capsys)


def test_our_checkpoints_load_weights_only_and_rebuild_the_same_config(trained):
    best, last = trained
    for path in (best, last):
        with torch.serialization.safe_globals(SAFE_TYPES):
            raw = torch.load(path, weights_only=True)
        assert isinstance(raw["config"], dict) and raw["config"]["model"] == "BPR"
    checkpoint = load_checkpoint(last)
    config = checkpoint["config"]
    assert isinstance(config, Config) and config["model"] == "BPR" and config["epochs"] == 2
    again = restore_config(config_state(config))
    assert again.final_config_dict == config.final_config_dict and str(again) == str(config)


def test_a_well_formed_checkpoint_with_wrong_content_is_one_line(trained, tmp_path, capsys):
    _, last = trained
    checkpoint = load_checkpoint(last)
    del checkpoint["config"].final_config_dict["seed"]
    no_seed = tmp_path / "no-seed.pth"
    save_checkpoint(checkpoint, no_seed)
    assert main(["--resume", str(no_seed)]) == 2
    assert f"checkpoint '{no_seed}': its config lacks 'seed'" in one_line_error(capsys)

    checkpoint = load_checkpoint(last)
    checkpoint["state_dict"] = {name: tensor[:1] for name, tensor in checkpoint["state_dict"].items()}
    wrong_shapes = tmp_path / "wrong-shapes.pth"
    save_checkpoint(checkpoint, wrong_shapes)
    assert main(["--resume", str(wrong_shapes)]) == 2
    assert "does not fit the model and optimizer built from its own config" in one_line_error(capsys)

    for key, value, fragment in [("epoch", "3", "'epoch' is a str"), ("optimizer", None, "'optimizer' is missing")]:
        checkpoint = load_checkpoint(last)
        if value is None:
            del checkpoint[key]
        else:
            checkpoint[key] = value
        save_checkpoint(checkpoint, tmp_path / "bad.pth")
        assert main(["--resume", str(tmp_path / "bad.pth")]) == 2
        assert fragment in one_line_error(capsys)


def test_recboles_own_checkpoints_need_the_trust_flag(toy_root, tmp_path, capsys):
    config = Config("BPR", "toy", config_dict={**TOY, "data_path": str(toy_root), "epochs": 2})
    _, (train_data, valid_data, _), _, trainer = build(config, saved=False)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    pickled = tmp_path / "recbole.pth"
    Trainer._save_checkpoint(trainer, 0, verbose=False, saved_model_file=str(pickled))  # RecBole's own format, epoch 0 of 2

    with pytest.raises(UserInputError, match="holds more than plain data.*pass --trust_checkpoint"):
        load_checkpoint(pickled)
    assert load_checkpoint(pickled, trusted=True)["config"]["model"] == "BPR"
    assert main(["--resume", str(pickled)]) == 2
    one_line_error(capsys)
    assert main(["--resume", str(pickled), "--trust_checkpoint"]) == 0  # evaluates the file it names as best
    assert capsys.readouterr().out.startswith(f"resumed {pickled}")
