"""Top-K recommendations of a trained model for many users, to CSV or Parquet.

    python run_recbole_kgin.py --recommend saved/KGIN-....pth [--users all|FILE|u1,u2] [--top 10]
        [--exclude_seen true|false] --output recs.csv|recs.parquet [--force]

**Scores** are the model's own ``full_sort_predict`` (RecBole's ``predict`` over every
item where a model has no full ranking, as RecBole's evaluation does), so any general
or knowledge-aware model RecBole can rank works, not only KGIN. Users are scored a
batch at a time, :data:`SCORES_PER_BATCH` scores per batch, and ``predict`` is called
on :data:`PREDICT_ROWS_PER_CALL` user-item rows at a time, so memory stays bounded
whatever the number of users and items; rows are written as each batch is ranked.

**Seen items.** With ``exclude_seen`` (the default) a user's training and validation
interactions are left out: the history RecBole's test evaluation removes before it
ranks, so the top-K here is the list the test metrics were computed on. Test
interactions stay in (they are what the test metrics count as hits). A user with
fewer than K unseen items gets fewer rows. ``[PAD]`` is never recommended.

**Ties** go to the item RecBole numbered first (the lower internal item id), so one
checkpoint always gives the same file.

**Output**: one row per user and rank, users in the order asked (``all``: the
dataset's order), ranks ascending: ``<user field>``, ``rank`` (1..K), ``<item field>``,
``score`` and, where the dataset's ``.item`` file has a title column, ``title``.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data.interaction import Interaction
from recbole.utils import ModelType, set_color
from tqdm import tqdm

from recbole_kgin.inference.trained import Trained, load_trained
from recbole_kgin.data.item_names import read_item_names
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.inference.outputs import refuse_to_overwrite, written_whole

SCORES_PER_BATCH = 1 << 22  # users per batch = this // items: ~50 MB of scores and ranks
# user-item rows per call of ``predict`` (models without ``full_sort_predict``): a call's
# temporaries add ~10-20 MB to a batch (NeuMF, CFKG, KTUP as RecBole configures them),
# ~150 MB for MKR (a d x d matrix per row)
PREDICT_ROWS_PER_CALL = 1 << 12
FORMATS = (".csv", ".parquet")


# --- which users -----------------------------------------------------------------------
def users_from_spec(spec: str, user_field: str = "user_id") -> Tuple[Optional[List[str]], str]:
    """``--users`` -> (user tokens, where they came from, for error messages):
    ``all`` -> None (every user); the path of an existing file -> its lines (one user
    id each; blank lines and a header line ``<user field>[:token]`` skipped);
    otherwise ids separated by commas."""
    if spec == "all":
        return None, "--users"
    path = Path(spec)
    if path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        if lines and lines[0].split(":")[0] == user_field:
            lines = lines[1:]
        tokens = [line for line in lines if line]
        if not tokens:
            raise UserInputError(f"users file '{spec}' holds no user ids: write one user id per line")
        return tokens, f"users file '{spec}'"
    tokens = [token.strip() for token in spec.split(",") if token.strip()]
    if not tokens:
        raise UserInputError("--users is empty: pass all, a file with one user id per line, or ids like 196,186")
    looks_like_a_file = "/" in spec or os.sep in spec or path.suffix.lower() in (".txt", ".csv", ".tsv")
    return tokens, f"--users (no file '{spec}' either)" if looks_like_a_file else "--users"


def user_ids(tokens: Optional[Sequence[str]], source: str, dataset) -> np.ndarray:
    """Internal ids (len(tokens),) of user tokens, duplicates dropped (first kept);
    None -> every user. An unknown token is a one-line :class:`UserInputError`."""
    if tokens is None:
        return np.arange(1, dataset.user_num)
    known = dataset.field2token_id[dataset.uid_field]
    unknown = [token for token in tokens if str(token) not in known or str(token) == "[PAD]"]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise UserInputError(
            f"unknown user '{unknown[0]}'{more} in {source}: not a user id of dataset {dataset.dataset_name}"
        )
    ids = dict.fromkeys(int(known[str(token)]) for token in tokens)
    return np.fromiter(ids, dtype=np.int64, count=len(ids))


# --- ranking --------------------------------------------------------------------------
def seen_items(trained: Trained) -> sp.csr_matrix:
    """(users, items) 0/1: each user's training and validation interactions."""
    shape = (trained.dataset.user_num, trained.dataset.item_num)
    seen = sp.csr_matrix(shape, dtype=np.float32)
    for loader in (trained.train_data, trained.valid_data):
        seen = seen + loader._dataset.inter_matrix(form="csr").astype(np.float32)
    return seen


def all_scores(model, dataset, users: torch.Tensor) -> torch.Tensor:
    """Scores (len(users), items) of every item for ``users`` (internal ids)."""
    interaction = dataset.join(Interaction({dataset.uid_field: users}))
    try:
        scores = model.full_sort_predict(interaction)
    except NotImplementedError:
        scores = predicted_scores(model, dataset, interaction)
    return scores.view(len(users), dataset.item_num)


def predicted_scores(model, dataset, users: Interaction) -> torch.Tensor:
    """``predict`` (len(users) * items,) over every user-item row in RecBole's order (each
    user's row repeated once per item), :data:`PREDICT_ROWS_PER_CALL` rows per call."""
    items = dataset.get_item_feature()
    total = len(users) * dataset.item_num
    scores = None  # one tensor filled in place: each call's result kept apart fragments the heap
    for start in range(0, total, PREDICT_ROWS_PER_CALL):
        rows = torch.arange(start, min(start + PREDICT_ROWS_PER_CALL, total))
        pairs = users[rows // dataset.item_num]
        pairs.update(items[rows % dataset.item_num])
        predicted = model.predict(pairs).view(-1)
        if scores is None:
            scores = predicted.new_empty(total)
        scores[start : start + len(predicted)] = predicted
    return scores


def top_k(scores: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(values, item ids), each (B, k): the k highest scores of each row, descending,
    equal scores in ascending item id (also at the cut: of items tied for the k-th
    place, the lowest ids get in)."""
    values, indices = torch.topk(scores, k, dim=1)
    at_cut = (scores >= values[:, -1:]).sum(dim=1) > k  # ties straddle the k-th place
    for row in at_cut.nonzero().view(-1).tolist():
        order = torch.sort(scores[row], descending=True, stable=True).indices[:k]
        values[row], indices[row] = scores[row, order], order
    indices, by_id = torch.sort(indices, dim=1)  # stable sorts: by id, then by score
    values = values.gather(1, by_id)
    values, by_score = torch.sort(values, dim=1, descending=True, stable=True)
    return values, indices.gather(1, by_score)


@dataclass
class RankedBatch:
    """One batch: users (B,) internal ids, items (B, k) internal ids, scores (B, k);
    ``-inf`` scores mark slots with no item (a user with fewer than k unseen items)."""

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray


def ranked_batches(
    trained: Trained, users: np.ndarray, k: int, exclude_seen: bool = True, show_progress: bool = True
) -> Iterator[RankedBatch]:
    """Rank every item for ``users`` (internal ids), :data:`SCORES_PER_BATCH` scores at a time."""
    dataset, model = trained.dataset, trained.model.eval()
    seen = seen_items(trained) if exclude_seen else None
    per_batch = max(1, SCORES_PER_BATCH // dataset.item_num)
    bar = tqdm(
        total=len(users), unit="users", ncols=100, file=sys.stderr, disable=not show_progress,
        desc=set_color("Recommend", "pink"),
    )  # fmt: skip
    with torch.no_grad(), bar:
        for start in range(0, len(users), per_batch):
            batch = users[start : start + per_batch]
            scores = all_scores(model, dataset, torch.as_tensor(batch)).float().clone()
            scores[:, 0] = -np.inf  # [PAD]
            if seen is not None:
                rows, columns = seen[batch].nonzero()
                scores[torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(columns, dtype=torch.long)] = -np.inf
            values, items = top_k(scores, k)
            yield RankedBatch(batch, items.numpy(), values.numpy())
            bar.update(len(batch))


# --- tables -----------------------------------------------------------------------------
class Columns:
    """Turns ranked batches into named columns (the output's rows, in order)."""

    def __init__(self, trained: Trained) -> None:
        dataset, config = trained.dataset, trained.config
        self.user_field, self.item_field = dataset.uid_field, dataset.iid_field
        self.user_tokens = dataset.field2id_token[self.user_field]
        self.item_tokens = dataset.field2id_token[self.item_field]
        names = read_item_names(
            config["data_path"], config["dataset"], self.item_field, config["field_separator"],
            config["encoding"] or "utf-8",
        )  # fmt: skip
        self.titles = None  # item id -> title, where the dataset has titles
        if names:
            self.titles = np.array([names.get(str(token), "") for token in self.item_tokens], dtype=object)

    @property
    def names(self) -> List[str]:
        return [self.user_field, "rank", self.item_field, "score"] + (["title"] if self.titles is not None else [])

    def of(self, batch: RankedBatch) -> Dict[str, np.ndarray]:
        present = np.isfinite(batch.scores)  # (B, k)
        rows, slots = present.nonzero()
        items = batch.items[rows, slots]
        columns = {
            self.user_field: self.user_tokens[batch.users[rows]].astype(str),
            "rank": (slots + 1).astype(np.int64),
            self.item_field: self.item_tokens[items].astype(str),
            "score": batch.scores[rows, slots].astype(np.float32),
        }
        if self.titles is not None:
            columns["title"] = self.titles[items].astype(str)
        return columns


class _CsvWriter:
    def __init__(self, path: Path, names: List[str]) -> None:
        self.handle = open(path, "w", encoding="utf-8", newline="")
        self.writer = csv.writer(self.handle)
        self.writer.writerow(names)

    def write(self, columns: Dict[str, np.ndarray]) -> None:
        # float32 scores as their shortest round-trip text ("0.6628872")
        texts = [values.astype(str) if values.dtype.kind == "f" else values for values in columns.values()]
        self.writer.writerows(zip(*[values.tolist() for values in texts]))

    def close(self) -> None:
        self.handle.close()


class _ParquetWriter:
    def __init__(self, path: Path, names: List[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {"rank": pa.int64(), "score": pa.float32()}
        self.schema = pa.schema([(name, types.get(name, pa.string())) for name in names])
        self.writer = pq.ParquetWriter(str(path), self.schema)

    def write(self, columns: Dict[str, np.ndarray]) -> None:
        import pyarrow as pa

        self.writer.write_table(pa.table(columns, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


def check_output(output: str) -> Path:
    path = Path(output)
    if path.suffix.lower() not in FORMATS:
        raise UserInputError(f"--output '{output}': name a .csv or .parquet file for the recommendations")
    return path


def check_k(k: int, dataset, asked: str = "--top {k}") -> None:
    """Refuse (one line naming ``asked``, the option or argument) a k outside 1..items."""
    items = dataset.item_num - 1  # without [PAD]
    if k < 1 or k > items:
        raise UserInputError(
            f"{asked.format(k=k)}: choose 1 to {items}, the number of items of dataset {dataset.dataset_name}"
        )


def check_rankable(trained: Trained) -> None:
    if trained.config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        raise UserInputError(
            f"'{trained.model_file}' holds {trained.model_name}, a sequential model: recommendations rank "
            f"general and knowledge-aware models (a sequential one ranks from each user's item sequence)"
        )


def write_recommendations(
    trained: Trained,
    users: np.ndarray,
    k: int,
    output: Path,
    exclude_seen: bool = True,
    force: bool = False,
    show_progress: bool = True,
) -> int:
    """Write the top ``k`` of ``users`` (internal ids) to ``output`` (.csv or .parquet),
    whole or not at all; returns the number of rows written."""
    check_rankable(trained)
    check_k(k, trained.dataset)
    columns = Columns(trained)
    writer_class = _ParquetWriter if output.suffix.lower() == ".parquet" else _CsvWriter
    rows = 0
    with written_whole(output, force) as temporary:
        writer = writer_class(temporary, columns.names)
        try:
            for batch in ranked_batches(trained, users, k, exclude_seen, show_progress):
                table = columns.of(batch)
                writer.write(table)
                rows += len(table["rank"])
        finally:
            writer.close()
    return rows


def recommend_to_file(
    model_file: str,
    users: str = "all",
    k: int = 10,
    exclude_seen: bool = True,
    output: str = "recommendations.csv",
    force: bool = False,
    dataset: Optional[str] = None,
    trusted: bool = False,
) -> str:
    """``--recommend``: load ``model_file``, write the top ``k`` of ``users`` (a
    ``--users`` value) to ``output``; returns the line the command prints
    (``trusted``: see :func:`recbole_kgin.inference.trained.load_trained`)."""
    path = check_output(output)
    refuse_to_overwrite(path, force, folder=False)
    trained = load_trained(model_file, dataset, trusted)
    ids = user_ids(*users_from_spec(users, trained.dataset.uid_field), trained.dataset)
    rows = write_recommendations(trained, ids, k, path, exclude_seen, force)
    seen = "training and validation items excluded" if exclude_seen else "seen items included"
    return (
        f"{trained.model_name} on {trained.config['dataset']}: top {k} of {len(ids)} users "
        f"({seen}), {rows} rows written to {path}"
    )
