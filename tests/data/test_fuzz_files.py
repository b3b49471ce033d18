"""Random and mutated atomic files, fed to ``--check`` and to loading (property-based).

Whatever the files hold, ``--check`` either passes and RecBole then reads the dataset,
or ends with exit status 2 and ``error:`` lines, and reading ends with a one-line
error; preparing the read dataset for training (split, samplers) either works or ends
with one line too (it finds what only RecBole's filtering shows, such as a user left
with every item): never a traceback. The examples are derived from the test's name
(the same ones on every run); raise ``EXAMPLES`` or pass ``--hypothesis-seed`` to
explore further.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st
from recbole.data import create_dataset, data_preparation

from conftest import TOY
from recbole_kgin.cli import main
from recbole_kgin.config import Config
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.data.validate import require_valid
from toy_data import write_toy_dataset

EXAMPLES = 80
FILES = ("inter", "kg", "link")
# Cells that RecBole or pandas read in a special way, next to ordinary ones.
CELLS = ["nan", "NaN", "NA", "null", "None", "", " ", "u1", "i3", "e_i3", "genre0", "1.5", "-inf", "x y", "é",
         "\ufeff", "a\tb", "a\nb", "r\r"]  # fmt: skip
HEADERS = ["user_id:token", "item_id:token", "item_id:float", "rating:float", "head_id:token", "tail_id:token",
           "relation_id:token", "entity_id:token", "x:token", "user_id", "user_id:int", "a:b:token", ":token",
           "tags:token_seq", "score:float_seq"]  # fmt: skip

cell = st.one_of(st.sampled_from(CELLS), st.text(max_size=4))
row = st.integers(min_value=1, max_value=150)  # a data row (wraps around the file's rows)
column = st.integers(min_value=0, max_value=3)
mutation = st.one_of(
    st.tuples(st.just("cell"), st.sampled_from(FILES), row, column, cell),
    st.tuples(st.just("header"), st.sampled_from(FILES), column, st.one_of(st.sampled_from(HEADERS), st.text(max_size=6))),
    st.tuples(st.just("drop cell"), st.sampled_from(FILES), row),
    st.tuples(st.just("add cell"), st.sampled_from(FILES), row, cell),
    st.tuples(st.just("drop row"), st.sampled_from(FILES), row),
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.integers(min_value=0, max_value=2000)),
    st.tuples(st.just("bytes"), st.sampled_from(FILES), st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=3)),
    st.tuples(st.just("bom"), st.sampled_from(FILES)),
    st.tuples(st.just("crlf"), st.sampled_from(FILES)),
    st.tuples(st.just("random"), st.sampled_from(FILES), st.lists(st.lists(cell, min_size=1, max_size=4), max_size=6)),
    st.tuples(st.just("delete"), st.sampled_from(FILES)),
)  # fmt: skip


def _mutate(folder: Path, change: tuple) -> None:
    kind, path = change[0], folder / f"toy.{change[1]}"
    if kind == "delete":
        path.unlink(missing_ok=True)
        return
    if not path.is_file():
        return
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[: change[2]])
        return
    if kind == "bytes":
        path.write_bytes(data[: change[2]] + change[3] + data[change[2]:])
        return
    if kind == "bom":
        path.write_bytes(b"\xef\xbb\xbf" + data)
        return
    if kind == "crlf":
        path.write_bytes(data.replace(b"\n", b"\r\n"))
        return
    try:
        lines = [line.split("\t") for line in data.decode("utf-8").split("\n")]
    except UnicodeDecodeError:  # an earlier mutation broke the encoding: leave the file so
        return
    header, rows = lines[0], [line for line in lines[1:] if line != [""]]
    if kind == "random":
        header, rows = (change[2][0], change[2][1:]) if change[2] else ([""], [])
    elif kind == "header":
        header[change[2] % len(header)] = change[3]
    elif rows:
        target = rows[(change[2] - 1) % len(rows)]
        if kind == "cell":
            target[change[3] % len(target)] = change[4]
        elif kind == "drop cell":
            target.pop()
        elif kind == "add cell":
            target.append(change[3])
        elif kind == "drop row":
            rows.remove(target)
    path.write_text("\n".join("\t".join(cells) for cells in [header, *rows]) + "\n", encoding="utf-8")


def _one_line(text: str) -> bool:
    return "Traceback" not in text and all(line.startswith("error: ") for line in text.splitlines())


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
@given(changes=st.lists(mutation, min_size=1, max_size=3))
# files that once passed the check and then crashed RecBole's reader, always tried
@example(changes=[("header", "inter", 2, "item_id:float")])
@example(changes=[("add cell", "inter", 1, "7")])
@example(changes=[("cell", "link", 1, 1, "e_i3")])
@example(changes=[("cell", "kg", 1, 2, '"')])
def test_check_and_loading_agree_and_never_crash(changes):
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        write_toy_dataset(root / "toy")
        for change in changes:
            _mutate(root / "toy", change)
        settings_ = {**TOY, "data_path": str(root)}
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            status = main(["--check", "--dataset", "toy", *[f"--{key}={value}" for key, value in settings_.items()]])
        assert status in (0, 2) and _one_line(stderr.getvalue()), stderr.getvalue()
        assert (status == 2) == bool(stderr.getvalue())
        try:
            config = Config("KGIN", "toy", None, settings_)
            require_valid(config)
            dataset = create_dataset(config)
        except UserInputError as error:
            assert status == 2, f"--check passed, reading failed: {error}"
            assert "\n" not in str(error)
            return
        assert status == 0, f"--check failed, reading passed: {stderr.getvalue()}"
        try:
            data_preparation(config, dataset)
        except UserInputError as error:
            assert "\n" not in str(error)
