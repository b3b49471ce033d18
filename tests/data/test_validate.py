"""The atomic-file checker: every error class, with small malformed files."""

from __future__ import annotations

import pytest

from conftest import TOY
from recbole_kgin.cli import main
from recbole_kgin.config import Config
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.quick_start import run_recbole_kgin
from recbole_kgin.data.validate import validate_dataset
from toy_data import write_toy_dataset

FIELDS = {"user": "user_id", "item": "item_id", "head": "head_id", "relation": "relation_id",
          "tail": "tail_id", "entity": "entity_id"}


@pytest.fixture
def toy(tmp_path):
    folder = tmp_path / "data" / "toy"
    write_toy_dataset(folder)
    return folder


def check(folder, knowledge=True):
    return validate_dataset(str(folder), "toy", knowledge, FIELDS)


def replace_line(path, number, text):
    lines = path.read_text().split("\n")
    lines[number - 1] = text
    path.write_text("\n".join(lines))


def test_the_toy_dataset_is_clean_except_for_its_duplicate_triple(toy):
    report = check(toy)
    assert report.ok, report.errors
    assert report.warnings == [
        "toy.kg: 1 duplicate triple(s); KGIN counts each once, RecBole's own models (KGAT, KGCN, CKE) every copy"
    ]
    assert report.counts["toy.inter"] == 120 and report.counts["triples"] == 29


@pytest.mark.parametrize(
    "file, line, text, fragment",
    [
        ("toy.inter", 1, "user_id\titem_id:token\trating:float", "toy.inter:1: header column 1 'user_id' is not name:type"),
        ("toy.inter", 1, "user_id:token\titem_id:int\trating:float", "'item_id:int' is not name:type"),
        ("toy.inter", 1, "uid:token\titem_id:token\trating:float", "toy.inter:1: required field(s) user_id missing"),
        ("toy.kg", 1, "head_id:token\trel:token\ttail_id:token", "toy.kg:1: required field(s) relation_id missing"),
        ("toy.link", 1, "item_id:token\tent:token", "toy.link:1: required field(s) entity_id missing"),
        ("toy.inter", 4, "u0\ti3", "toy.inter:4: 2 columns where the header has 3"),
        ("toy.inter", 5, "u0\ti3\tfive", "toy.inter:5: 'five' in float column 'rating' is not a number"),
    ],
)
def test_malformed_files_give_one_line_with_file_line_and_fix(toy, file, line, text, fragment):
    replace_line(toy / file, line, text)
    report = check(toy)
    assert not report.ok and fragment in report.errors[0]
    assert "\n" not in report.errors[0] and ";" in report.errors[0]  # what is wrong; what to do


def test_extra_trailing_fields_warn_with_the_line_and_are_read_as_recbole_reads_them(toy):
    lines = (toy / "toy.inter").read_text().split("\n")
    replace_line(toy / "toy.inter", 5, lines[4] + "\t1")
    replace_line(toy / "toy.inter", 9, lines[8] + "\tx\ty")
    report = check(toy)
    assert report.ok, report.errors
    assert (
        "toy.inter:5: more columns than the header's 3 (2 row(s)); RecBole reads the first 3 and drops the rest"
        in report.warnings[0]
    )
    assert report.counts["toy.inter"] == 120  # no row lost
    config = Config("KGIN", "toy", config_dict={**TOY, "data_path": str(toy.parent)})
    from recbole.data import create_dataset

    dataset = create_dataset(config)  # RecBole's own reading: the rows are kept, the field dropped
    assert dataset.inter_num == 120 and "rating" in dataset.inter_feat.columns


def test_encoding_crlf_empty_and_missing_files(toy):
    (toy / "toy.link").write_bytes("item_id:token\tentity_id:token\ni1\te_\xe9\n".encode("latin-1"))
    assert "toy.link:2: bytes not valid utf-8" in check(toy).errors[0]
    (toy / "toy.link").write_bytes(b"item_id:token\tentity_id:token\r\ni1\te_i1\r\n")
    assert check(toy).ok  # CRLF files read as RecBole reads them (text mode)
    (toy / "toy.link").write_text("")
    assert "toy.link:1: empty file" in check(toy).errors[0]
    (toy / "toy.link").write_text("item_id:token\tentity_id:token\n")
    assert "toy.link:2: no rows after the header" in check(toy).errors[0]
    (toy / "toy.link").unlink()
    assert "toy.link: file not found" in check(toy).errors[0]
    assert check(toy, knowledge=False).ok  # general models need no .link


def test_warnings_count_self_loops_unused_links_and_unlinked_items(toy):
    with open(toy / "toy.kg", "a") as handle:
        handle.write("genre1\tfilm.genre\tgenre1\n")
    with open(toy / "toy.link", "a") as handle:
        handle.write("i99\te_i99\n")
    lines = (toy / "toy.link").read_text().splitlines()
    (toy / "toy.link").write_text("\n".join(line for line in lines if not line.startswith("i3\t")) + "\n")
    report = check(toy)
    assert report.ok
    text = "\n".join(report.warnings)
    assert "toy.kg: 1 self-loop triple(s)" in text
    assert "toy.link: 1 of 12 linked item(s) never occur in the interactions" in text
    assert "toy.link: 1 linked entity id(s) appear in no triple" in text
    inter = (toy / "toy.inter").read_text().splitlines()[1:]
    dropped = sum(1 for line in inter if line.split("\t")[1] == "i3")
    assert f"toy: 1 of 12 interacted item(s) have no KG link; RecBole drops their {dropped} interaction(s)" in text


def test_runs_stop_before_recbole_with_the_first_error(toy):
    replace_line(toy / "toy.kg", 2, "oops")
    with pytest.raises(UserInputError, match="toy.kg:2: 1 columns where the header has 3"):
        run_recbole_kgin("KGIN", "toy", config_dict={**TOY, "data_path": str(toy.parent)})


def test_check_command_exit_status_and_output(toy, capsys):
    argv = ["--check", "--dataset", "toy", f"--data_path={toy.parent}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "warning: toy.kg: 1 duplicate triple(s)" in out and "toy in" in out and "OK" in out
    replace_line(toy / "toy.inter", 3, "u0")
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: toy.inter:3: 1 columns") and "ERRORS" in captured.out


def test_the_shared_ml_1m_and_lastfm_pass(tmp_path):
    from conftest import shared_dataset

    for name in ["lastfm", "ml-1m"]:
        root = shared_dataset(name)
        config = Config("KGIN", name, config_dict={"data_path": str(root), "state": "WARNING"})
        from recbole_kgin.data.validate import validate_config

        report = validate_config(config)
        assert report.ok, report.errors


def _loads_or_one_line(toy) -> str:
    """RecBole's reading of the toy files through recbole-kgin: the one-line error, or ''."""
    from recbole.data import create_dataset

    from recbole_kgin.data.validate import require_valid

    config = Config("KGIN", "toy", config_dict={**TOY, "data_path": str(toy.parent)})
    try:
        require_valid(config)
        create_dataset(config)
    except UserInputError as error:
        return str(error)
    return ""


@pytest.mark.parametrize(
    "file, line, text, fragment",
    [
        ("toy.inter", 1, "user_id:token\titem_id:token\titem_id:float",
         "toy.inter:1: header column 3 'item_id:float' names field 'item_id' again (column 2); keep one column"),
        ("toy.inter", 1, "user_id:token\titem_id:token\trating:float\titem_id:token",
         "toy.inter:1: header column 4 'item_id:token' names field 'item_id' again (column 2)"),
        ("toy.inter", 7, "nan\ti3\t4.0", "toy.inter:7: id 'nan' in column 'user_id' is read as a missing value"),
        ("toy.inter", 7, "u1\tNaN\t4.0", "toy.inter:7: id 'NaN' in column 'item_id' is read as a missing value"),
        ("toy.kg", 3, "NaN\tfilm.genre\tgenre0", "toy.kg:3: id 'NaN' in column 'head_id' is read as a missing value"),
        ("toy.inter", 2, "u0\ti1\t2.0\t7", "toy.inter:2: the first row has 4 columns where the header has 3"),
        ("toy.link", 2, "i0\te_i5", "toy.link:7: entity 'e_i5' is linked to item 'i5' here and to item 'i0' on line 2"),
        ("toy.kg", 4, 'e_i1\tfilm.genre\t"genre1', "toy.kg:4: a double quote"),
    ],
)  # fmt: skip
def test_files_that_recbole_cannot_read_fail_the_check_in_one_line(toy, file, line, text, fragment):
    lines = (toy / file).read_text().split("\n")
    if line == 1 and text.count("\t") > lines[0].count("\t"):  # a new column: every row gets a value
        lines = [lines[0]] + [row + "\t" + row.split("\t")[1] if row else row for row in lines[1:]]
        (toy / file).write_text("\n".join(lines))
    replace_line(toy / file, line, text)
    report = check(toy)
    assert not report.ok and fragment in report.errors[0], report.errors
    assert _loads_or_one_line(toy) == report.errors[0]  # no traceback from RecBole's reader


def test_a_byte_order_mark_is_named_not_taken_for_a_missing_field(toy):
    (toy / "toy.inter").write_bytes(b"\xef\xbb\xbf" + (toy / "toy.inter").read_bytes())
    report = check(toy)
    assert report.errors == [
        "toy.inter:1: starts with a byte-order mark, which RecBole would read as part of the first field's name; "
        "re-save the file without it, or set encoding: utf-8-sig in the config"
    ]
    assert validate_dataset(str(toy), "toy", True, FIELDS, encoding="utf-8-sig").ok  # the fix it names
