"""Config layering, model lookup and data lookup."""

from __future__ import annotations

import shutil
import sys

import pytest
import yaml

from conftest import FAST
from recbole_kgin.config import PROPERTIES_DIR, Config
from recbole_kgin.data.location import EMBEDDED_PATH
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.model import KGIN, RecBoleKGIN
from recbole_kgin.utils import get_model, get_trainer
from recbole_kgin.runtime.resumable import ResumableTrainer
from recbole_kgin.runtime.trainer import KGINTrainer
from toy_data import write_toy_dataset


def test_plugin_model_first_then_recbole():
    assert get_model("KGIN") is KGIN
    from recbole.model.general_recommender import BPR
    from recbole.model.knowledge_aware_recommender.kgin import KGIN as BuiltinKGIN

    assert get_model("BPR") is BPR
    assert get_model("RecBoleKGIN") is RecBoleKGIN and issubclass(RecBoleKGIN, BuiltinKGIN)
    trainer = get_trainer(KGIN.type, "KGIN")
    assert issubclass(trainer, KGINTrainer) and issubclass(trainer, ResumableTrainer)
    from recbole.trainer import KGATTrainer

    assert issubclass(get_trainer(KGIN.type, "KGAT"), KGATTrainer)


@pytest.mark.parametrize("name", ["kgin", "NoSuchModel", "Kgat"])
def test_unknown_model_is_one_clear_line(name):
    with pytest.raises(UserInputError) as error:
        get_model(name)
    message = str(error.value)
    assert name in message and "\n" not in message and "case-sensitive" in message


def test_layers_recbole_then_plugin_overall_model_dataset_then_user(tmp_path, toy_root):
    untuned = Config("KGIN", "toy", config_dict={**FAST, "data_path": str(toy_root)})  # no tuned file for toy
    assert untuned["context_hops"] == 3  # plugin model/KGIN.yaml over RecBole's KGIN.yaml (2)
    assert untuned["ind"] == "distance"  # idem (RecBole: cosine)
    config = Config("KGIN", "ml-100k", config_dict=FAST)
    assert config["topk"] == [10, 20]  # plugin overall.yaml over RecBole's [10]
    # plugin model/KGIN/ml-100k.yaml (the tuned comparison's best) over model/KGIN.yaml
    tuned = yaml.safe_load((PROPERTIES_DIR / "model" / "KGIN" / "ml-100k.yaml").read_text())
    assert {key: config[key] for key in tuned if key not in FAST} == {key: value for key, value in tuned.items() if key not in FAST}
    assert config["kg_reverse_r"] is True  # plugin overall over RecBole's knowledge_base.yaml
    assert config["val_interval"] == {"rating": "[4,inf)"}  # plugin dataset/ml-100k.yaml
    assert config["learner"] == "adam"  # untouched RecBole default

    user_file = tmp_path / "mine.yaml"
    user_file.write_text("context_hops: 2\nlearning_rate: 0.01\n")
    config = Config("KGIN", "ml-100k", [str(user_file)], {**FAST, "learning_rate": 0.005})
    assert config["context_hops"] == 2  # user file over plugin property files
    assert config["learning_rate"] == 0.005  # config dict over user file


def test_recbole_builtin_kgin_keeps_recbole_defaults():
    config = Config("RecBoleKGIN", "ml-100k", config_dict=FAST)
    assert config["context_hops"] == 2 and config["ind"] == "cosine" and config["mess_dropout_rate"] == 0.0


def test_dataset_keys_from_plugin_files_count_as_dataset_arguments():
    config = Config("KGIN", "ml-100k", config_dict=FAST)
    assert "val_interval" in config.parameters["Dataset"]


def test_command_line_of_the_host_program_is_not_read(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--epochs=77", "--learning_rate=9"])
    config = Config("KGIN", "ml-100k", config_dict=FAST)
    assert config["epochs"] == 1 and config["learning_rate"] != 9


def test_data_lookup_order(tmp_path, monkeypatch):
    # 3. embedded ml-100k when nothing else exists
    assert Config("KGIN", "ml-100k", config_dict=FAST)["data_path"] == str(EMBEDDED_PATH)
    # 2. ./dataset/<name> beats the embedded copy
    local = tmp_path / "dataset" / "ml-100k"
    shutil.copytree(EMBEDDED_PATH, local)
    assert Config("KGIN", "ml-100k", config_dict=FAST)["data_path"] == str(local)
    # 1. --data_path beats both
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(EMBEDDED_PATH, elsewhere / "ml-100k")
    config = Config("KGIN", "ml-100k", config_dict={**FAST, "data_path": str(elsewhere)})
    assert config["data_path"] == str(elsewhere / "ml-100k")


def test_missing_dataset_names_paths_and_files(tmp_path):
    with pytest.raises(UserInputError) as error:
        Config("KGIN", "nowhere", config_dict={**FAST, "data_path": str(tmp_path / "x")})
    message = str(error.value)
    assert "\n" not in message
    for fragment in ["x/nowhere", "dataset/nowhere", "nowhere.inter", "nowhere.kg", "nowhere.link", "--data_path"]:
        assert fragment in message


def test_general_model_needs_only_the_interactions(tmp_path):
    write_toy_dataset(tmp_path / "data" / "toy")
    (tmp_path / "data" / "toy" / "toy.kg").unlink()
    assert Config("BPR", "toy", config_dict={**FAST, "data_path": str(tmp_path / "data")})
    with pytest.raises(UserInputError, match="toy.kg"):
        Config("KGIN", "toy", config_dict={**FAST, "data_path": str(tmp_path / "data")})


def test_rating_filter_is_skipped_when_the_column_is_absent(tmp_path, caplog):
    folder = tmp_path / "data" / "ml-1m"
    write_toy_dataset(folder)  # writes ml-1m.inter with a rating column ...
    lines = (folder / "ml-1m.inter").read_text().splitlines()
    rows = ["\t".join(line.split("\t")[:2]) for line in lines]  # ... which we drop
    (folder / "ml-1m.inter").write_text("\n".join(rows) + "\n")
    config = Config("KGIN", "ml-1m", config_dict={**FAST, "data_path": str(tmp_path / "data")})
    assert config["val_interval"] is None
    assert "val_interval on 'rating' skipped" in caplog.text


@pytest.mark.parametrize(
    "key, value",
    [("context_hops", 0), ("n_factors", -1), ("node_dropout_rate", 1.0), ("mess_dropout_rate", "x"),
     ("ind", "pearson"), ("learning_rate", 0), ("train_batch_size", 0), ("intent_attention", "both"),
     ("user_self_connection", "maybe"), ("epochs", 1.5)],
)
def test_bad_config_values_name_the_field(key, value):
    with pytest.raises(UserInputError) as error:
        Config("KGIN", "ml-100k", config_dict={**FAST, key: value})
    message = str(error.value)
    assert f"{key}=" in message and f"--{key}=" in message and "\n" not in message


def test_bad_recbole_values_become_one_line_errors():
    with pytest.raises(UserInputError, match="bad config"):
        Config("KGIN", "ml-100k", config_dict={**FAST, "metrics": ["NoSuchMetric"]})
    with pytest.raises(UserInputError, match="bad config"):
        Config("KGIN", "ml-100k", config_dict={**FAST, "eval_args": {"mode": "sometimes"}})


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        Config("KGIN", "ml-100k", [str(tmp_path / "missing.yaml")], FAST)
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: 1\nlearning_rate: [0.1\n")
    with pytest.raises(UserInputError, match=r"broken.yaml' line \d+: not valid YAML"):
        Config("KGIN", "ml-100k", [str(broken)], FAST)
    listing = tmp_path / "list.yaml"
    listing.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(UserInputError, match="expected 'key: value' lines"):
        Config("KGIN", "ml-100k", [str(listing)], FAST)


def _attack(marker) -> str:
    """A config string that, run as Python, creates ``marker``."""
    return f"__import__('os').system('touch {marker}')"


def test_a_search_space_string_is_never_run(toy_root, tmp_path):
    from recbole_kgin.experiments.search_space import load_space

    marker = tmp_path / "PWNED"
    space = tmp_path / "space.yaml"
    space.write_text(f'learning_rate: {{choice: [0.01]}}\nnote: "{_attack(marker)}"\n')
    fixed = {key: value for key, value in load_space(str(space)).items() if not isinstance(value, dict)}
    config = Config("BPR", "toy", config_dict={**FAST, "data_path": str(toy_root), **fixed})  # as a trial does
    assert config["note"] == _attack(marker) and not marker.exists()


def test_command_line_values_are_literals_or_text_never_code(toy_root, tmp_path, capsys):
    from recbole_kgin.cli import main

    marker = tmp_path / "PWNED"
    data = ["--dataset", "toy", f"--data_path={toy_root}"]
    assert main(["--check", *data, f"--foo={_attack(marker)}"]) == 0
    assert not marker.exists()
    config = Config("BPR", "toy", config_dict={**FAST, "data_path": str(toy_root), "tag": "2024-1", "lr": "1e-3"})
    assert config["tag"] == "2024-1" and config["lr"] == 0.001  # text stays text; literals are typed
    assert main(["--check", *data, "--epochs=1/0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad config value epochs='1/0'") and err.count("\n") == 1


def test_a_config_file_cannot_name_python_objects(tmp_path):
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text("epochs: 1\nnote: !!python/name:os.system\n")
    with pytest.raises(UserInputError, match=r"hostile.yaml'.*not valid YAML"):
        Config("KGIN", "ml-100k", [str(hostile)], FAST)
