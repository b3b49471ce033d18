"""recbole_kgin/data/on_nodes.py: what a node checks and writes (no Ray needed)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from pathlib import Path

import pytest

from other_users import ATTACKER, VICTIM, needs_other_users, run_as, shared_tmp
from recbole_kgin.data import on_nodes
from recbole_kgin.data.on_nodes import SHARED, SHIP, describe, prepare_here, problem_with, read_payload
from recbole_kgin.common.errors import UserInputError


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
    (tmp_path / "node").mkdir()
    monkeypatch.setattr(on_nodes.tempfile, "gettempdir", lambda: str(tmp_path / "node"))
    expected = describe(folder, "toy")
    problem, data_path = prepare_here(expected, SHIP, lambda: read_payload(expected))
    copy = Path(data_path) / "toy"
    private = tmp_path / "node" / f"recbole-kgin-{os.getuid()}"
    assert problem is None and copy.parent == private / "datasets" / expected.digest
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert sorted(p.name for p in copy.iterdir()) == ["toy.inter", "toy.kg"]

    def no_fetch():
        raise AssertionError("a checked copy was fetched again")

    assert prepare_here(expected, SHIP, no_fetch) == (None, data_path)
    (copy / "toy.kg").write_text("broken")
    assert prepare_here(expected, SHIP, lambda: read_payload(expected)) == (None, data_path)
    assert (copy / "toy.kg").read_bytes() == (folder / "toy.kg").read_bytes()
    assert not [p for p in copy.parent.iterdir() if p.is_dir() and p.name.startswith(".")]  # no staging folder left


def test_a_killed_writers_staging_folder_is_removed_and_one_in_use_kept(folder, tmp_path, monkeypatch):
    (tmp_path / "node").mkdir()
    monkeypatch.setattr(on_nodes.tempfile, "gettempdir", lambda: str(tmp_path / "node"))
    expected = describe(folder, "toy")
    root = on_nodes.local_root(expected)
    root.mkdir(parents=True)
    long_ago = time.time() - on_nodes.STALE_AFTER - 60

    def staging(written: float) -> Path:
        """A staging folder as a writer leaves it, its file last written at ``written``."""
        planted = Path(tempfile.mkdtemp(prefix=".toy.", dir=root))
        (planted / "toy.inter").write_text("half a copy")
        for path in (planted / "toy.inter", planted):
            os.utime(path, (written, written))
        return planted

    killed, writing = staging(long_ago), staging(time.time())
    slow = staging(long_ago)
    os.utime(slow / "toy.inter")  # a writer still writing its file
    assert prepare_here(expected, SHIP, lambda: read_payload(expected))[0] is None  # writes the copy
    assert not killed.exists() and writing.is_dir() and slow.is_dir()

    def no_fetch():
        raise AssertionError("a checked copy was fetched again")

    killed = staging(long_ago)  # the copy is in place: a trial that only checks it removes it too
    assert prepare_here(expected, SHIP, no_fetch)[0] is None
    assert not killed.exists() and writing.is_dir() and slow.is_dir()
    assert (root / "toy" / "toy.inter").read_bytes() == (folder / "toy.inter").read_bytes()


def test_shared_mode_reads_the_drivers_path(folder):
    expected = describe(folder, "toy")
    assert prepare_here(expected, SHARED, lambda: {}) == (None, str(folder.parent))
    (folder / "toy.kg").unlink()
    assert prepare_here(expected, SHARED, lambda: {})[0] == f"{folder / 'toy.kg'} is missing"


# --- other users of the node, concurrent trials, faults ------------------------------

VICTIM_PREPARES = """
import json, sys
from pathlib import Path
from recbole_kgin.data.on_nodes import SHIP, describe, prepare_here, read_payload
expected = describe(Path(sys.argv[1]), "toy")
print(json.dumps(prepare_here(expected, SHIP, lambda: read_payload(expected))))
"""


@pytest.fixture
def shared():
    yield from shared_tmp()


def _victim_prepares(shared: Path, folder: Path):
    """The victim's trial on a node whose temporary folder is ``shared``: (problem, data_path)."""
    completed = run_as(VICTIM, VICTIM_PREPARES, str(folder), env={"TMPDIR": str(shared)})
    assert completed.returncode == 0, completed.stderr  # no traceback
    return json.loads(completed.stdout)


def _attacker(code: str, *args) -> None:
    completed = run_as(ATTACKER, "import os, shutil, sys\n" + code, *map(str, args))
    assert completed.returncode == 0, completed.stderr


def _victims_dataset(shared: Path) -> Path:
    folder = shared / "victim-data" / "toy"
    folder.mkdir(parents=True)
    (folder / "toy.inter").write_text("user_id:token\titem_id:token\nu1\ti1\n")
    for path in (folder.parent, folder, folder / "toy.inter"):
        os.chown(path, VICTIM, VICTIM)
    return folder


# Where a node's copy goes: recbole-kgin-<uid>/datasets/<digest>, and, for the attacks
# to reach it too, where a copy used to go: recbole-kgin-datasets/<digest>.
def _predictable(shared: Path, digest: str):
    return [shared / f"recbole-kgin-{VICTIM}", shared / "recbole-kgin-datasets" / digest]


@needs_other_users
def test_a_link_planted_by_another_user_is_never_followed(shared):
    folder = _victims_dataset(shared)
    digest = describe(folder, "toy").digest
    victims = shared / "victim-notes"  # a folder of the victim's, where the links point
    for kept in (victims / "toy", victims / "datasets" / digest / "toy"):
        kept.mkdir(parents=True)
        (kept / "notes.txt").write_text("mine")
    for path in [victims, *victims.rglob("*")]:
        os.chown(path, VICTIM, VICTIM)
    links = _predictable(shared, digest)
    _attacker("os.symlink(sys.argv[2], sys.argv[1]); os.makedirs(os.path.dirname(sys.argv[3]), exist_ok=True); "
              "os.symlink(sys.argv[2], sys.argv[3])", links[0], victims, links[1])  # fmt: skip
    problem, _ = _victim_prepares(shared, folder)
    assert problem is not None and "is not a folder of yours" in problem and "\n" not in problem
    assert sorted(p.name for p in victims.rglob("*")) == sorted(["datasets", digest, "notes.txt", "notes.txt", "toy", "toy"])


@needs_other_users
@pytest.mark.parametrize("with_copy", [False, True], ids=["empty folder", "identical copy"])
def test_a_folder_planted_by_another_user_is_refused_in_one_line(shared, with_copy):
    folder = _victims_dataset(shared)
    digest = describe(folder, "toy").digest
    for planted in _predictable(shared, digest):
        # the attacker's folder, open for reading (0755), holding an identical copy to edit later
        _attacker("os.makedirs(sys.argv[1], mode=0o755, exist_ok=True)\n"
                  "if sys.argv[3] == 'True':\n"
                  "    os.makedirs(os.path.join(sys.argv[1], 'datasets', sys.argv[4], 'toy'))\n"
                  "    os.makedirs(os.path.join(sys.argv[1], 'toy'))\n"
                  "    for copy in ('datasets/' + sys.argv[4] + '/toy', 'toy'):\n"
                  "        shutil.copy(sys.argv[2], os.path.join(sys.argv[1], copy, 'toy.inter'))",
                  planted, folder / "toy.inter", with_copy, digest)  # fmt: skip
    problem, data_path = _victim_prepares(shared, folder)
    assert problem == (
        f"{shared / f'recbole-kgin-{VICTIM}'} belongs to user id {ATTACKER}, not to you ({VICTIM}); "
        f"set TMPDIR to a folder of your own, or have it removed"
    )


# The same attacks arranged by this user (no second user needed): the defences do not
# depend on who planted the link or the folder.
@pytest.fixture
def node(tmp_path, monkeypatch) -> Path:
    """This test's node temporary folder."""
    (tmp_path / "node").mkdir()
    monkeypatch.setattr(on_nodes.tempfile, "gettempdir", lambda: str(tmp_path / "node"))
    return tmp_path / "node"


def _notes(folder: Path, digest: str) -> Path:
    """A folder of the user's own, with files where a copy would go if a link to it were followed."""
    for kept in (folder / "toy", folder / "datasets" / digest / "toy"):
        kept.mkdir(parents=True)
        (kept / "notes.txt").write_text("mine")
    folder.chmod(0o700)
    return folder


def test_a_link_at_the_private_folders_path_is_never_followed(folder, node, tmp_path):
    expected = describe(folder, "toy")
    notes = _notes(tmp_path / "notes", expected.digest)
    (node / f"recbole-kgin-{os.getuid()}").symlink_to(notes)
    problem, _ = prepare_here(expected, SHIP, lambda: read_payload(expected))
    assert problem is not None and "is not a folder of yours" in problem and "\n" not in problem
    assert sorted(p.name for p in notes.rglob("*")) == sorted(["datasets", expected.digest, "notes.txt", "notes.txt", "toy", "toy"])


@pytest.mark.parametrize("pointing_to", ["other files", "identical copy", "nothing"])
def test_a_link_at_the_copys_path_is_replaced_by_a_real_copy_never_followed(folder, node, tmp_path, pointing_to):
    expected = describe(folder, "toy")
    notes = _notes(tmp_path / "notes", expected.digest)
    if pointing_to == "identical copy":
        for name, _, _ in expected.files:
            (notes / "toy" / name).write_bytes((folder / name).read_bytes())
    before = {path: path.read_bytes() for path in notes.rglob("*") if path.is_file()}
    root = on_nodes.local_root(expected)
    root.mkdir(parents=True)
    (root / "toy").symlink_to(notes / ("toy" if pointing_to != "nothing" else "gone"))
    problem, data_path = prepare_here(expected, SHIP, lambda: read_payload(expected))
    copy = Path(data_path) / "toy"
    assert problem is None and not copy.is_symlink() and sorted(p.name for p in copy.iterdir()) == ["toy.inter", "toy.kg"]
    assert {path: path.read_bytes() for path in notes.rglob("*") if path.is_file()} == before


def test_a_private_folder_of_another_user_id_is_refused_in_one_line(folder, node, monkeypatch):
    expected = describe(folder, "toy")
    me, other = os.getuid(), os.getuid() + 1  # this process stands for user ``other``; the folder is not theirs
    planted = node / f"recbole-kgin-{other}"
    (planted / "datasets" / expected.digest / "toy").mkdir(parents=True)  # an identical copy, to edit later
    for name, _, _ in expected.files:
        (planted / "datasets" / expected.digest / "toy" / name).write_bytes((folder / name).read_bytes())
    planted.chmod(0o755)
    monkeypatch.setattr(os, "getuid", lambda: other)
    problem, _ = prepare_here(expected, SHIP, lambda: read_payload(expected))
    assert problem == (
        f"{planted} belongs to user id {me}, not to you ({other}); "
        f"set TMPDIR to a folder of your own, or have it removed"
    )


def test_a_private_folder_open_to_others_is_refused(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(on_nodes.tempfile, "gettempdir", lambda: str(tmp_path / "node"))
    (tmp_path / "node" / f"recbole-kgin-{os.getuid()}").mkdir(parents=True, mode=0o755)
    problem, _ = prepare_here(describe(folder, "toy"), SHIP, lambda: {})
    assert problem.endswith("is open to other users (mode 755); remove it and run again")


def _racing_trial(root: str, rounds: int, barrier, results) -> None:
    """One trial per round on a fresh dataset: prepare it, read what it got for a while,
    as training does, and, once both trials are done, check that its copy is still the
    one it checked (not removed and replaced by the other's); puts what went wrong."""
    import tempfile as child_tempfile

    child_tempfile.tempdir = root
    failures = []
    try:
        for index in range(rounds):
            source = Path(root) / f"source-{index}" / "toy"
            expected = describe(source, "toy")
            barrier.wait(timeout=60)
            problem, data_path = prepare_here(expected, SHIP, lambda: read_payload(expected))
            failures.append(problem)
            copy = Path(data_path) / "toy"
            checked = copy.stat().st_ino
            for _ in range(20):
                failures.append(problem_with(copy, expected))
            barrier.wait(timeout=60)
            if copy.stat().st_ino != checked:
                failures.append(f"round {index}: the copy this trial checked was replaced")
    except BaseException as error:
        barrier.abort()  # the other trial stops waiting for this one
        failures.append(repr(error))
    results.put([failure for failure in failures if failure])


def test_trials_racing_on_one_node_never_remove_each_others_copy(tmp_path):
    import multiprocessing

    rounds = 20
    for index in range(rounds):  # fresh data each round: both trials find no copy and write one
        source = tmp_path / f"source-{index}" / "toy"
        source.mkdir(parents=True)
        (source / "toy.inter").write_bytes(b"user_id:token\titem_id:token\n" + b"u1\ti%d\n" % index * 200_000)
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    trials = [context.Process(target=_racing_trial, args=(str(tmp_path), rounds, barrier, results)) for _ in range(2)]
    for trial in trials:
        trial.start()
    outcomes = [results.get(timeout=300) for _ in trials]
    for trial in trials:
        trial.join()
    assert [trial.exitcode for trial in trials] == [0, 0] and outcomes == [[], []]


def _write_with_small_disk(root: str, folder: str, results) -> None:
    import resource
    import signal
    import tempfile as child_tempfile

    child_tempfile.tempdir = root
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))  # files over 50 kB no longer fit
    expected = describe(Path(folder), "toy")
    try:
        results.put(("returned", prepare_here(expected, SHIP, lambda: read_payload(expected))))
    except BaseException as error:  # what the test must never see
        results.put(("raised", repr(error)))


def test_a_full_disk_is_one_line_and_leaves_no_partial_copy(tmp_path):
    import multiprocessing

    folder = tmp_path / "data" / "toy"
    folder.mkdir(parents=True)
    (folder / "toy.inter").write_bytes(b"user_id:token\titem_id:token\n" + b"u1\ti1\n" * 20_000)  # 150 kB
    (folder / "toy.kg").write_bytes(b"head_id:token\trelation_id:token\ttail_id:token\ni1\tr\te1\n")
    (tmp_path / "node").mkdir()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_write_with_small_disk, args=(str(tmp_path / "node"), str(folder), results))
    child.start()
    kind, outcome = results.get(timeout=120)
    child.join()
    assert kind == "returned", outcome
    problem, data_path = outcome
    assert problem.startswith(f"cannot write the shipped dataset to {data_path} (File too large)")
    assert "\n" not in problem
    assert [path.name for path in Path(data_path).iterdir() if path.is_dir()] == []  # no partial copy
