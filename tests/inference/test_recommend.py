"""Recommendations, exported vectors and the Python API from a trained checkpoint
(KGIN on the embedded ml-100k, one small epoch), and their one-line errors."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.utils.case_study import full_sort_topk

import recbole_kgin
import recbole_kgin.inference.recommend as recommend
from conftest import FAST, REPO_ROOT
from recbole_kgin.data.checksum import data_checksums
from recbole_kgin.inference.trained import load_trained
from recbole_kgin.cli import main
from recbole_kgin.data.location import EMBEDDED_PATH
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.quick_start import run_recbole_kgin

SMALL = {**FAST, "embedding_size": 16, "context_hops": 2, "train_batch_size": 4096}


def train(model: str, dataset: str, folder: Path, **settings) -> str:
    """Train in ``folder`` (RecBole writes log/ into the working folder); the best checkpoint."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        run_recbole_kgin(model, dataset, config_dict={**SMALL, "checkpoint_dir": str(folder / "saved"), **settings})
    (checkpoint,) = glob.glob(str(folder / "saved" / f"{model}-*[0-9].pth"))  # not the .last one
    return checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return train("KGIN", "ml-100k", tmp_path_factory.mktemp("ml-100k"))


@pytest.fixture(scope="module")
def trained(checkpoint):
    return load_trained(checkpoint)


def read_csv(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"user_id": str, "item_id": str, "title": str}, keep_default_na=False)


def token_ids(trained, field, tokens):
    return [int(trained.dataset.field2token_id[field][str(token)]) for token in tokens]


def history(loader, user):
    matrix = loader._dataset.inter_matrix(form="csr")
    return set(matrix.indices[matrix.indptr[user] : matrix.indptr[user + 1]].tolist())


def one_error_line(stderr: str) -> str:
    """The error line; warnings (RecBole's note on ml-100k's unlinked items) may precede it."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stderr.rstrip("\n").endswith(errors[0]), stderr
    return errors[0]


def test_all_users_get_recbole_test_ranking_with_titles(checkpoint, trained, tmp_path):
    output = tmp_path / "out" / "recs.csv"
    assert main(["--recommend", checkpoint, "--top", "10", "--output", str(output)]) == 0
    recs = read_csv(output)
    dataset = trained.dataset
    assert list(recs.columns) == ["user_id", "rank", "item_id", "score", "title"]
    n_users = dataset.user_num - 1
    assert recs["user_id"].tolist() == [u for u in dataset.field2id_token["user_id"][1:] for _ in range(10)]
    assert recs["rank"].tolist() == list(range(1, 11)) * n_users
    assert (recs.groupby("user_id", sort=False)["score"].diff().dropna() <= 0).all()
    lines = (EMBEDDED_PATH / "ml-100k.item").read_text(encoding="utf-8", errors="replace").splitlines()[1:]
    titles = dict(line.split("\t")[:2] for line in lines)
    assert recs["title"].tolist() == [titles[item] for item in recs["item_id"]]

    # the list RecBole's test evaluation ranks: train and valid history masked, test items kept
    test_users = trained.test_data.uid_list[:200].numpy()
    scores, items = full_sort_topk(test_users, trained.model, trained.test_data, 10)
    item_tokens, user_tokens = dataset.field2id_token["item_id"], dataset.field2id_token["user_id"]
    for row, user in enumerate(test_users):
        mine = recs[recs["user_id"] == user_tokens[user]]
        assert mine["item_id"].tolist() == [item_tokens[i] for i in items[row].tolist()]
        assert np.allclose(mine["score"].to_numpy(), scores[row].numpy(), atol=1e-6)
        assert not set(token_ids(trained, "item_id", mine["item_id"])) & (
            history(trained.train_data, user) | history(trained.valid_data, user)
        )


@pytest.mark.slow
def test_a_users_file_and_a_list_give_the_same_rows_as_all_users(checkpoint, tmp_path):
    everyone = tmp_path / "all.csv"
    assert main(["--recommend", checkpoint, "--top", "5", "--output", str(everyone)]) == 0
    expected = read_csv(everyone).set_index("user_id")
    users_file = tmp_path / "users.txt"
    users_file.write_text("user_id:token\n196\n\n186\n196\n")  # header, blank line, duplicate
    from_file, from_list = tmp_path / "file.parquet", tmp_path / "list.parquet"
    assert main(["--recommend", checkpoint, "--users", str(users_file), "--top", "5", "--output", str(from_file)]) == 0
    assert main(["--recommend", checkpoint, "--users", "186, 196", "--top", "5", "--output", str(from_list)]) == 0
    file_rows, list_rows = pd.read_parquet(from_file), pd.read_parquet(from_list)
    assert file_rows["user_id"].tolist() == ["196"] * 5 + ["186"] * 5  # the order asked, duplicates once
    assert list_rows["user_id"].tolist() == ["186"] * 5 + ["196"] * 5
    for rows in (file_rows, list_rows):
        for user, mine in rows.groupby("user_id"):
            assert mine["item_id"].tolist() == expected.loc[user, "item_id"].tolist()
            assert np.allclose(mine["score"], expected.loc[user, "score"], atol=1e-6)


def test_batches_do_not_change_the_result(checkpoint, monkeypatch):
    loaded = recbole_kgin.load(checkpoint)
    whole = loaded.recommend("all", k=7)
    monkeypatch.setattr(recommend, "SCORES_PER_BATCH", 3 * loaded.dataset.item_num)  # 3 users a batch
    pd.testing.assert_frame_equal(loaded.recommend("all", k=7), whole)


def test_seen_items_come_back_when_asked(trained):
    from recbole_kgin.inference.loaded import LoadedModel

    loaded = LoadedModel(trained)
    user = trained.test_data.uid_list[0].item()
    token = str(trained.dataset.field2id_token["user_id"][user])
    with torch.no_grad():
        scores = trained.model.full_sort_predict(Interaction({"user_id": torch.tensor([user])})).view(-1)
    scores[0] = -np.inf
    best = torch.argsort(scores, descending=True)[:20].tolist()
    seen = history(trained.train_data, user) | history(trained.valid_data, user)
    assert set(best) & seen  # a seen item among the 20 best: the test below means something
    everything = loaded.recommend(token, k=20, exclude_seen=False)
    assert token_ids(trained, "item_id", everything["item_id"]) == best
    unseen = loaded.recommend([token], k=20)
    ranked = torch.argsort(scores, descending=True).tolist()
    assert token_ids(trained, "item_id", unseen["item_id"]) == [i for i in ranked if i not in seen][:20]


def test_ties_go_to_the_lower_item_id_also_at_the_cut():
    scores = torch.tensor(
        [[1.0, 3.0, 2.0, 3.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]
    )
    values, items = recommend.top_k(scores, 3)
    for row in range(3):
        reference = sorted(range(6), key=lambda i: (-float(scores[row, i]), i))[:3]
        assert items[row].tolist() == reference
        assert values[row].tolist() == scores[row, reference].tolist()
    assert items.tolist() == [[1, 3, 2], [0, 1, 2], [5, 4, 3]]
    assert recommend.top_k(torch.full((1, 6), 2.0), 4)[1].tolist() == [[0, 1, 2, 3]]


def test_export_holds_the_vectors_the_scores_come_from(checkpoint, trained, tmp_path):
    output = tmp_path / "vectors"
    assert main(["--export", checkpoint, "--output", str(output)]) == 0
    read = lambda name: (output / name).read_text(encoding="utf-8").splitlines()  # noqa: E731
    users, items, entities = read("users.txt"), read("items.txt"), read("entities.txt")
    user_vectors, item_vectors = np.load(output / "user_vectors.npy"), np.load(output / "item_vectors.npy")
    assert user_vectors.shape == (len(users), 16) and item_vectors.shape == (len(items), 16)

    picked = [users.index("196"), users.index("1"), len(users) - 1]
    with torch.no_grad():
        model_scores = trained.model.full_sort_predict(
            Interaction({"user_id": torch.tensor(token_ids(trained, "user_id", [users[u] for u in picked]))})
        ).view(len(picked), -1)
    item_ids = token_ids(trained, "item_id", items)
    assert np.allclose(user_vectors[picked] @ item_vectors.T, model_scores[:, item_ids].numpy(), atol=1e-5)

    links = dict(line.split("\t") for line in (EMBEDDED_PATH / "ml-100k.link").read_text().splitlines()[1:])
    assert entities[: len(items)] == [links[item] for item in items]  # item rows first, in item order
    assert np.load(output / "entity_vectors.npy").shape == (len(entities), 16)
    relations = read("relations.txt")
    alpha, beta = np.load(output / "intent_relation_attention.npy"), np.load(output / "user_intent_attention.npy")
    intents = trained.config["n_factors"]
    assert alpha.shape == (intents, len(relations)) and beta.shape == (len(users), intents)
    assert np.allclose(alpha.sum(1), 1, atol=1e-5) and np.allclose(beta.sum(1), 1, atol=1e-5)
    assert np.allclose(np.load(output / "intent_vectors.npy"), alpha @ np.load(output / "relation_vectors.npy"), atol=1e-5)
    readme = (output / "README.md").read_text()
    for name in ["user_vectors.npy", "item_vectors.npy", "entity_vectors.npy", "relation_vectors.npy",
                 "intent_vectors.npy", "user_intent_attention.npy", "score(u, i) = user_vectors[u] . item_vectors[i]"]:
        assert name in readme


def test_python_api_loads_once_and_answers_all_three(checkpoint, tmp_path, monkeypatch):
    loaded = recbole_kgin.load(checkpoint)
    monkeypatch.setattr("recbole_kgin.inference.trained.load_checkpoint", lambda *a, **k: pytest.fail("read again"))
    monkeypatch.setattr("recbole_kgin.quick_start.restore", lambda *a, **k: pytest.fail("rebuilt"))
    recs = loaded.recommend(["196", "186"], k=5)
    assert list(recs.columns) == ["user_id", "rank", "item_id", "score", "title"] and len(recs) == 10
    alone = loaded.recommend("196", k=5)  # a batch of one: scores may differ in the last bit (BLAS)
    pd.testing.assert_frame_equal(alone, recs[recs["user_id"] == "196"].reset_index(drop=True), rtol=1e-6)
    vectors = loaded.vectors()
    assert loaded.vectors() is vectors
    row = vectors.user_tokens.index("196")
    top = recs[recs["user_id"] == "196"]
    items = [vectors.item_tokens.index(item) for item in top["item_id"]]
    assert np.allclose(vectors.users[row] @ vectors.items[items].T, top["score"], atol=1e-5)
    explanation = loaded.explain("196", top=3)
    assert explanation.user == "196" and len(explanation.recommendations) == 3 and explanation.paths
    with pytest.raises(UserInputError, match="unknown user 'nobody' in users"):
        loaded.recommend(["196", "nobody"])
    for k in (1377, 0):
        with pytest.raises(UserInputError) as refused:
            loaded.recommend("196", k=k)
        assert str(refused.value) == f"recommend(k={k}): choose 1 to 1376, the number of items of dataset ml-100k"


def _nothing_written(folder: Path, output: Path) -> None:
    assert not output.exists()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--users", "196,nobody,ghost"], "unknown user 'nobody' (and 1 more) in --users: not a user id of dataset ml-100k"),
        (["--users", "{users_file}"], "unknown user 'x9' in users file '"),
        (["--users", "no/such.txt"], "unknown user 'no/such.txt' in --users (no file 'no/such.txt' either)"),
        (["--users", "{empty_file}"], "holds no user ids: write one user id per line"),
        (["--top", "5000"], "--top 5000: choose 1 to 1376, the number of items of dataset ml-100k"),
        (["--top", "0"], "--top 0: choose 1 to"),
        (["--exclude_seen", "maybe"], "--exclude_seen takes true or false, not 'maybe'"),
        (["--dataset", "lastfm"], "was trained on ml-100k, not lastfm: pass a checkpoint of lastfm"),
        (["--epochs=3"], "--recommend takes no config overrides"),
    ],
)
def test_bad_recommend_input_is_one_line_and_writes_nothing(checkpoint, tmp_path, capsys, argv, fragment):
    (tmp_path / "users.txt").write_text("196\nx9\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    argv = [a.format(users_file=tmp_path / "users.txt", empty_file=tmp_path / "empty.txt") for a in argv]
    output = tmp_path / "out" / "recs.csv"
    assert main(["--recommend", checkpoint, "--output", str(output), *argv]) == 2
    assert fragment in one_error_line(capsys.readouterr().err)
    assert not output.exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_outputs_are_never_replaced_unasked_nor_left_half_written(checkpoint, tmp_path, capsys, monkeypatch):
    output = tmp_path / "recs.csv"
    output.write_text("mine\n")
    assert main(["--recommend", checkpoint, "--users", "196", "--output", str(output)]) == 2
    assert "'" + str(output) + "' exists: pass --force to replace it" in one_error_line(capsys.readouterr().err)
    assert main(["--recommend", checkpoint, "--users", "196", "--output", str(tmp_path / "recs.json")]) == 2
    assert "name a .csv or .parquet file" in one_error_line(capsys.readouterr().err)
    folder = tmp_path / "vectors"
    folder.mkdir()
    (folder / "keep.npy").write_text("mine")
    assert main(["--export", checkpoint, "--output", str(folder)]) == 2
    assert "exists: pass --force" in one_error_line(capsys.readouterr().err)
    assert main(["--recommend", checkpoint]) == 2
    assert "--recommend needs --output" in one_error_line(capsys.readouterr().err)

    # a run that dies half-way (here after its first batch) leaves the old file as it was, and no temporary
    monkeypatch.setattr(recommend, "SCORES_PER_BATCH", 100 * 1377)
    write = recommend._CsvWriter.write
    calls = []

    def die_on_second_batch(self, columns):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        write(self, columns)

    monkeypatch.setattr(recommend._CsvWriter, "write", die_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        main(["--recommend", checkpoint, "--output", str(output), "--force"])
    assert output.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs.csv", "vectors"]
    monkeypatch.setattr(recommend._CsvWriter, "write", write)
    assert main(["--recommend", checkpoint, "--users", "196", "--output", str(output), "--force"]) == 0
    assert len(read_csv(output)) == 10

    def disk_full(*args):
        raise OSError("disk full")

    monkeypatch.setattr("recbole_kgin.inference.export.readme", disk_full)  # after the arrays are written
    with pytest.raises(OSError):
        main(["--export", checkpoint, "--output", str(folder), "--force"])
    assert [p.name for p in folder.iterdir()] == ["keep.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs.csv", "vectors"]


@pytest.mark.slow
def test_the_script_exits_2_with_one_line(checkpoint, tmp_path):
    output = tmp_path / "recs.csv"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_recbole_kgin.py"), "--recommend", checkpoint, "--users", "nobody",
         "--output", str(output)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 2
    assert "unknown user 'nobody'" in one_error_line(completed.stderr)
    _nothing_written(tmp_path, output)


# --- checkpoints and the data they were trained on (the toy dataset: quick) -------------
@pytest.fixture
def toy_checkpoint(tmp_path, toy_root):
    return train("KGIN", "toy", tmp_path, data_path=str(toy_root), topk=[5], valid_metric="Recall@5"), toy_root


def test_checkpoints_carry_the_checksums_of_the_data_files(toy_checkpoint):
    checkpoint, toy_root = toy_checkpoint
    stored = torch.load(checkpoint, weights_only=False)["data_checksums"]
    assert set(stored) == {"toy.inter", "toy.kg", "toy.link"}
    last = checkpoint.replace(".pth", ".last.pth")
    assert torch.load(last, weights_only=False)["data_checksums"] == stored
    assert stored == data_checksums({"data_path": str(toy_root / "toy"), "dataset": "toy"})


def test_a_changed_dataset_is_refused(toy_checkpoint, tmp_path, capsys):
    checkpoint, toy_root = toy_checkpoint
    inter = toy_root / "toy" / "toy.inter"
    original = inter.read_text()
    inter.write_text(original + "u0\ti11\t5\n")
    output = tmp_path / "recs.csv"
    assert main(["--recommend", checkpoint, "--output", str(output)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{toy_root / 'toy' / 'toy.inter'} changed since '{checkpoint}' was trained" in line
    assert main(["--export", checkpoint, "--output", str(tmp_path / "vectors")]) == 2
    assert "toy.inter changed since" in one_error_line(capsys.readouterr().err)
    assert main(["--explain", checkpoint, "--user", "u0", "--output", str(tmp_path / "why")]) == 2
    assert "toy.inter changed since" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "why").exists()
    inter.write_text(original)
    (toy_root / "toy" / "toy.kg").unlink()
    assert main(["--recommend", checkpoint, "--output", str(output)]) == 2
    assert "toy.kg is missing" in one_error_line(capsys.readouterr().err)
    _nothing_written(tmp_path, output)
    assert not (tmp_path / "vectors").exists()


def test_a_checkpoint_without_checksums_warns_and_is_still_checked_for_fit(toy_checkpoint, tmp_path, capsys, caplog):
    checkpoint, toy_root = toy_checkpoint
    state = torch.load(checkpoint, weights_only=False)
    del state["data_checksums"]
    old = str(tmp_path / "old.pth")
    torch.save(state, old)
    assert main(["--recommend", old, "--top", "3", "--output", str(tmp_path / "recs.csv")]) == 0
    assert "holds no checksums of its dataset's files" in caplog.text
    assert len(read_csv(tmp_path / "recs.csv")) == 3 * 20

    with open(toy_root / "toy" / "toy.inter", "a") as handle:  # a new user: the weights no longer fit
        handle.write("u99\ti1\t5\nu99\ti2\t5\nu99\ti3\t5\n")
    output = tmp_path / "again.csv"
    assert main(["--recommend", old, "--output", str(output)]) == 2
    assert f"'{old}' does not fit toy in {toy_root / 'toy'}" in one_error_line(capsys.readouterr().err)
    _nothing_written(tmp_path, output)


def test_other_models_are_ranked_and_say_they_have_no_kgin_vectors(tmp_path, toy_root, capsys):
    checkpoint = train("BPR", "toy", tmp_path, data_path=str(toy_root), topk=[5], valid_metric="Recall@5")
    output = tmp_path / "recs.csv"
    assert main(["--recommend", checkpoint, "--top", "3", "--output", str(output)]) == 0
    recs = read_csv(output)
    assert "title" not in recs.columns and len(recs) == 3 * 20
    trained = load_trained(checkpoint)
    users = trained.test_data.uid_list.numpy()
    _, items = full_sort_topk(users, trained.model, trained.test_data, 3)
    tokens = trained.dataset.field2id_token
    for row, user in enumerate(users):
        mine = recs[recs["user_id"] == tokens["user_id"][user]]["item_id"].tolist()
        assert mine == [tokens["item_id"][i] for i in items[row].tolist()]

    assert main(["--export", checkpoint, "--output", str(tmp_path / "vectors")]) == 2
    assert "holds BPR, which has no KGIN vectors" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "vectors").exists()
    loaded = recbole_kgin.load(checkpoint)
    assert len(loaded.recommend("u1", k=2)) == 2
    for call in (loaded.vectors, lambda: loaded.explain("u1")):
        with pytest.raises(UserInputError, match="holds BPR, which has no KGIN vectors"):
            call()


@pytest.mark.parametrize("model", ["NeuMF", "CFKG"])
def test_models_without_a_full_ranking_are_ranked_by_predict_a_few_rows_a_call(model, tmp_path, toy_root, monkeypatch):
    checkpoint = train(model, "toy", tmp_path, data_path=str(toy_root), topk=[5], valid_metric="Recall@5")
    trained = load_trained(checkpoint)
    with pytest.raises(NotImplementedError):
        trained.model.full_sort_predict(Interaction({"user_id": torch.tensor([1])}))
    monkeypatch.setattr(recommend, "PREDICT_ROWS_PER_CALL", 10)  # calls end inside a user's 13 rows
    rows_per_call = []
    predict = type(trained.model).predict

    def counted(self, interaction):
        rows_per_call.append(len(interaction))
        return predict(self, interaction)

    monkeypatch.setattr(type(trained.model), "predict", counted)
    output = tmp_path / "recs.csv"
    assert main(["--recommend", checkpoint, "--top", "3", "--output", str(output)]) == 0
    assert max(rows_per_call) == 10 and sum(rows_per_call) == 20 * trained.dataset.item_num
    recs = read_csv(output)
    assert len(recs) == 3 * 20
    users = trained.test_data.uid_list.numpy()
    scores, items = full_sort_topk(users, trained.model, trained.test_data, 3)  # predict on all rows at once
    tokens = trained.dataset.field2id_token
    for row, user in enumerate(users):
        mine = recs[recs["user_id"] == tokens["user_id"][user]]
        assert mine["item_id"].tolist() == [tokens["item_id"][i] for i in items[row].tolist()]
        assert np.allclose(mine["score"].to_numpy(), scores[row].numpy(), atol=1e-6)


def test_a_sequential_model_is_refused_in_one_line(tmp_path, toy_root, capsys):
    inter = toy_root / "toy" / "toy.inter"
    header, *rows = inter.read_text().splitlines()
    inter.write_text("\n".join([f"{header}\ttimestamp:float"] + [f"{row}\t{t}" for t, row in enumerate(rows)]) + "\n")
    checkpoint = train(
        "GRU4Rec", "toy", tmp_path, data_path=str(toy_root), topk=[5], valid_metric="Recall@5",
        train_neg_sample_args=None, load_col={"inter": ["user_id", "item_id", "timestamp"]},
        eval_args={"order": "TO", "split": {"LS": "valid_and_test"}, "group_by": "user", "mode": "full"},
    )  # fmt: skip
    output = tmp_path / "recs.csv"
    assert main(["--recommend", checkpoint, "--output", str(output)]) == 2
    assert f"'{checkpoint}' holds GRU4Rec, a sequential model: recommendations rank general and knowledge-aware" in (
        one_error_line(capsys.readouterr().err)
    )
    _nothing_written(tmp_path, output)
    with pytest.raises(UserInputError, match="holds GRU4Rec, a sequential model"):
        recbole_kgin.load(checkpoint).recommend("u1")
