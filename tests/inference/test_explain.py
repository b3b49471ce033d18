"""Explanations from a trained checkpoint, on a toy KG where one relation separates
two user groups."""

from __future__ import annotations

import glob
import json

import pytest
import torch

from conftest import TOY
from recbole_kgin.cli import main
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.inference.explain import Explainer, load_kgin, run_explain
from recbole_kgin.quick_start import run_recbole_kgin
from toy_data import GROUP_SIZE, write_colors

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("colors")
    history = write_colors(root / "data" / "colors")
    settings = {**TOY, "data_path": str(root / "data"), "checkpoint_dir": str(root / "saved"), "epochs": 60,
                "learning_rate": 0.01, "n_factors": 2, "train_batch_size": 128, "stopping_step": 1000, "seed": 0}
    run_recbole_kgin("KGIN", "colors", config_dict=settings)
    (checkpoint,) = glob.glob(str(root / "saved" / "KGIN-*[0-9].pth"))  # not the .last one
    return checkpoint, history


def unseen_item_of_the_users_colour(user, history):
    pool = range(0, 20) if int(user[1:]) < GROUP_SIZE else range(20, 40)
    return next(f"i{i}" for i in pool if f"i{i}" not in history[user])


@pytest.mark.parametrize("user", ["u0", "u5", "u40", "u45"])
def test_the_separating_relation_comes_first(trained, user):
    checkpoint, history = trained
    _, model, dataset = load_kgin(checkpoint)
    explainer = Explainer(model, dataset)
    explanation = explainer.explain(user, unseen_item_of_the_users_colour(user, history), top=3, n_intents=1)
    top_intent = explanation.intents[0]
    assert top_intent["weight"] == max(i["weight"] for i in explanation.intents)
    assert top_intent["relations_behind_item"][0]["relation"] == "color"
    assert explanation.paths[0].relations[0] == "color"
    colour = "red" if int(user[1:]) < GROUP_SIZE else "blue"
    assert explanation.paths[0].nodes[1] == colour


def test_path_shares_add_up_to_the_hop_terms_of_the_score(trained):
    checkpoint, _ = trained
    _, model, dataset = load_kgin(checkpoint)
    explainer = Explainer(model, dataset)
    user, item = explainer.user_id("u3"), explainer.item_id("i7")
    table = explainer.path_table(user, item)
    hops = torch.tensor([len(r) for r in table.relations])
    terms = explainer.score_terms(user, item)
    assert float(table.shares[hops == 1].sum()) == pytest.approx(terms["hop 1"], abs=1e-6)
    assert float(table.shares[hops == 2].sum()) == pytest.approx(terms["hop 2"], abs=1e-6)
    score = float(model.full_sort_predict(_users(user)).view(-1)[item])
    assert sum(terms.values()) == pytest.approx(score, abs=1e-5)


def _users(user):
    from recbole.data.interaction import Interaction

    return Interaction({"user_id": torch.tensor([user])})


def test_cli_writes_text_json_and_figures_without_retraining(trained, tmp_path, capsys, monkeypatch):
    checkpoint, history = trained
    import recbole_kgin.quick_start as quick_start

    monkeypatch.setattr(quick_start, "run_recbole_kgin", lambda *a, **k: pytest.fail("retrained"))
    output = tmp_path / "why"
    assert main(["--explain", checkpoint, "--user", "u1", "--top", "3", "--output", str(output)]) == 0
    text = capsys.readouterr().out
    for fragment in ["intents (beta", "top relations (alpha)", "top paths under intents", "top recommendations", "intent distinctness"]:
        assert fragment in text
    recommended = [line.split()[2] for line in text.splitlines() if line.strip().startswith(("1.", "2.", "3."))]
    assert len(recommended) == 3 and not set(recommended) & {i[1:] for i in history["u1"]}
    top_line = next(line for line in text.splitlines() if line.strip().startswith("1."))
    number = int(recommended[0][1:])
    name = f"{'red' if number < 20 else 'blue'} thing {number}"
    assert top_line.endswith(name)  # named from colors.item
    assert f"item {recommended[0]} ({name}): score" in text
    assert "-[color]-> red" in text or "-[color]-> blue" in text
    assert (output / "intent_relations.png").read_bytes()[:4] == b"\x89PNG"
    assert (output / "user_u1_intents.png").read_bytes()[:4] == b"\x89PNG"
    assert (output / "user_u1.txt").read_text().strip() == text.strip()

    assert main(["--explain", checkpoint, "--user", "u1", "--item", "i3", "--json", "--output", str(output)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["item"] == "i3" and report["item_name"] == "red thing 3" and len(report["intents"]) == 2
    assert all(r["name"] == f"{'red' if int(r['item'][1:]) < 20 else 'blue'} thing {r['item'][1:]}" for r in report["recommendations"])
    assert abs(sum(i["weight"] for i in report["intents"]) - 1) < 1e-6
    assert len(report["intent_distinctness"]["distance_correlation"]) == 2


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--user", "nobody"], "unknown user 'nobody'"),
        (["--user", "u1", "--item", "i999"], "unknown item 'i999'"),
        ([], "--explain needs --user"),
    ],
)
def test_unknown_tokens_are_one_line_errors(trained, argv, fragment, capsys):
    checkpoint, _ = trained
    assert main(["--explain", checkpoint, *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_missing_or_foreign_checkpoints_are_refused(tmp_path, toy_root):
    with pytest.raises(UserInputError, match="not found"):
        run_explain(str(tmp_path / "none.pth"), "u1")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="is not a readable checkpoint"):
        run_explain(str(tmp_path / "junk.pth"), "u1")
    run_recbole_kgin("BPR", "toy", config_dict={**TOY, "data_path": str(toy_root)})
    (bpr,) = glob.glob("saved/BPR-*[0-9].pth")
    with pytest.raises(UserInputError, match="holds a BPR model"):
        run_explain(bpr, "u1")


def test_intent_relations_figure_stays_readable_with_many_relations(tmp_path):
    """lastfm has 120 relations: one strip of 120 columns was 5,280 px wide; each
    intent's top relations, named, keep the figure a page wide."""
    import struct

    from recbole_kgin.inference.explain import RELATIONS_PER_INTENT, Explanation, save_figures

    alpha = torch.softmax(torch.randn(4, 120, generator=torch.Generator().manual_seed(0)), dim=1)
    asked = []

    class ManyRelations:
        relation_names = [f"domain.type.relation_{r}" for r in range(120)]

        def relation_attention(self):
            return alpha

        def top_relations(self, intent, top):
            asked.append((intent, top))
            order = torch.argsort(alpha[intent], descending=True)[:top]
            return [{"relation": self.relation_names[r], "weight": float(alpha[intent, r])} for r in order.tolist()]

    explanation = Explanation(
        user="u", intents=[{"intent": p, "weight": 0.25} for p in range(4)], item="i", item_name="", score=0.0,
        score_terms={}, paths=[], recommendations=[], chosen_intents=[0],
    )  # fmt: skip
    figures = save_figures(ManyRelations(), explanation, tmp_path)
    header = open(figures["heatmap"], "rb").read(24)
    width, height = struct.unpack(">II", header[16:24])
    assert width <= 1800 and height <= 1200
    assert asked == [(p, RELATIONS_PER_INTENT) for p in range(4)]


def test_item_names_come_from_the_item_file_when_it_has_a_title_column(tmp_path):
    from recbole_kgin.data.item_names import read_item_names

    assert read_item_names(str(tmp_path), "none", "item_id") == {}  # no .item file
    (tmp_path / "a.item").write_text("item_id:token\tgenre:token\n1\tDrama\n")
    assert read_item_names(str(tmp_path), "a", "item_id") == {}  # no title-like column
    (tmp_path / "b.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\n1\tToy Story\t1995\n2\t\t1995\n3\n"
    )
    assert read_item_names(str(tmp_path), "b", "item_id") == {"1": "Toy Story"}  # empty and short rows skipped
    (tmp_path / "c.item").write_text("artist_name:token_seq,item_id:token\nQueen,7\n")
    assert read_item_names(str(tmp_path), "c", "item_id", separator=",") == {"7": "Queen"}
