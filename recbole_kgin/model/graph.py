"""Sparse operators behind KGIN's two aggregations, built for per-batch dropout.

Both aggregations are products of a sparse matrix whose structure is fixed and of
which each mini-batch keeps a random subset of entries (node dropout).
:class:`CSRPattern` holds a structure in CSR order with its transpose and the
permutation between them; :meth:`CSRPattern.select` cuts a batch's subset in linear
time (no sort). Products run as weighted ``embedding_bag`` sums (one bag per row),
about 3x faster on CPU than torch's sparse CSR product, forward through the pattern
and backward through its transpose.

Only what the loss can reach is computed: the last hop outputs the items only, and
the user side only the batch's users (users never exchange messages).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from recbole_kgin.model.fused import FusedHop, relational_mean
from recbole_kgin.model.sorting import sorted_unique, stable_order

Prepared = Tuple["CSRPattern", torch.Tensor]  # a batch's pattern and its values


class KGBatch(NamedTuple):
    """A batch's KG operators on the torch path: hops into all entities, the last hop into items."""

    inner: Prepared
    last: Prepared


RUN_LOOP_MIN_ROWS = 1024  # mean rows per relation run above which runs are looped over


def _row_pointers(rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    pointers = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=n_rows), dim=0, out=pointers[1:])
    return pointers


def _exclusive_prefix(counts: torch.Tensor) -> torch.Tensor:
    """[0, c_0, c_0 + c_1, ...] for an inclusive running count ``counts``."""
    return torch.cat([counts.new_zeros(1), counts])


class CSRPattern:
    """A sparsity pattern in CSR order (``crow``, ``col``) and its transpose
    (``crow_t``, ``col_t``), with ``perm_t`` mapping transposed entries to CSR ones.

    Args:
        rows, cols: int64 tensors of length nnz, sorted by row.
        shape: (n_rows, n_cols).
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, shape: Tuple[int, int]) -> None:
        self.shape = shape
        self.row, self.col = rows, cols
        self.perm_t = stable_order(cols)  # rows ascend: by column, then row
        self.crow = _row_pointers(rows, shape[0])
        self.crow_t = _row_pointers(cols.index_select(0, self.perm_t), shape[1])
        self.col_t = rows.index_select(0, self.perm_t)

    @classmethod
    def _from_arrays(cls, shape, crow, col, crow_t, col_t, perm_t) -> "CSRPattern":
        pattern = cls.__new__(cls)
        pattern.shape, pattern.row = shape, None  # a batch's pattern is never selected from
        pattern.crow, pattern.col = crow, col
        pattern.crow_t, pattern.col_t, pattern.perm_t = crow_t, col_t, perm_t
        return pattern

    @property
    def nnz(self) -> int:
        return int(self.col.numel())

    def to(self, device: torch.device) -> "CSRPattern":
        for name in ("row", "col", "crow", "perm_t", "crow_t", "col_t"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def select(
        self, keep: torch.Tensor, row_map: Optional[torch.Tensor] = None, n_rows: Optional[int] = None
    ) -> Tuple["CSRPattern", torch.Tensor]:
        """The sub-pattern of the entries where ``keep`` (bool, nnz) is True.

        ``row_map`` (n_rows_old,) renumbers rows (-1 for rows with no kept entry)
        into ``n_rows`` new rows, keeping their order. Returns the new pattern and
        the positions of its entries in this one (to gather values). Linear in nnz:
        row pointers come from running counts, not from sorting or counting rows.
        """
        running = torch.cumsum(keep, dim=0)
        kept = keep.nonzero().squeeze(1)
        keep_t = keep.index_select(0, self.perm_t)
        running_t = torch.cumsum(keep_t, dim=0)
        kept_t = keep_t.nonzero().squeeze(1)
        perm_t = running.index_select(0, self.perm_t.index_select(0, kept_t)) - 1
        col = self.col.index_select(0, kept)
        col_t = self.col_t.index_select(0, kept_t)
        crow_t = _exclusive_prefix(running_t).index_select(0, self.crow_t)
        if row_map is None:
            crow, shape = _exclusive_prefix(running).index_select(0, self.crow), self.shape
        else:
            rows = row_map.index_select(0, self.row.index_select(0, kept))
            crow, shape = _row_pointers(rows, n_rows), (n_rows, self.shape[1])
            col_t = row_map.index_select(0, col_t)
        return CSRPattern._from_arrays(shape, crow, col, crow_t, col_t, perm_t), kept

    def product(self, values: Optional[torch.Tensor], dense: torch.Tensor) -> torch.Tensor:
        """``A @ dense`` (no autograd): (n_cols, d) -> (n_rows, d); ``values`` None = ones.

        ``dense`` is detached so torch takes its forward-only embedding-bag kernel
        (~4x faster than the one that records what its own backward would need).
        """
        return F.embedding_bag(
            self.col, dense.detach(), self.crow[:-1], mode="sum", per_sample_weights=values
        )

    def product_transposed(self, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """``A^T @ dense`` (no autograd): (n_rows, d) -> (n_cols, d)."""
        return F.embedding_bag(
            self.col_t,
            dense.detach(),
            self.crow_t[:-1],
            mode="sum",
            per_sample_weights=values.index_select(0, self.perm_t),
        )

    def matmul(self, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """``A @ dense``, differentiable in ``dense``."""
        return _SparseMatmul.apply(values.to(dense.dtype), dense, self)


class _SparseMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, dense, pattern):
        ctx.pattern = pattern
        ctx.save_for_backward(values)
        return pattern.product(values, dense)

    @staticmethod
    def backward(ctx, grad_out):
        (values,) = ctx.saved_tensors
        return None, ctx.pattern.product_transposed(values, grad_out.contiguous()), None


class _KGHop:
    """The KG operator of one hop onto entities ``0..n_outputs-1`` (all entities, or
    the items, which come first), from all ``n_inputs`` entities.

    Edges are grouped by (relation, head); groups are sorted by relation.

    - ``gather``: pattern (groups, entities); entry = one edge, column = its tail.
    - ``edges``: for each ``gather`` entry, the edge's position in the graph's order.
    - ``group_head``: each group's head as an output row; ``head_sum`` the static
      (output rows, groups) pattern of ones that adds groups into their head.
    - ``segments``: ``(relation, start, end)`` group runs of one relation.
    """

    def __init__(self, heads, relations, tails, edges, n_outputs: int, n_inputs: int) -> None:
        groups, group_of_edge = np.unique(
            np.stack([relations, heads], axis=1).reshape(-1, 2), axis=0, return_inverse=True
        )
        group_of_edge = group_of_edge.reshape(-1)
        order = np.lexsort((tails, group_of_edge))
        self.edges = torch.from_numpy(edges[order])
        self.gather = CSRPattern(
            torch.from_numpy(group_of_edge[order]), torch.from_numpy(tails[order]), (len(groups), n_inputs)
        )
        self.group_head = torch.from_numpy(groups[:, 1].copy())
        by_head = np.argsort(groups[:, 1], kind="stable")
        self.head_sum = CSRPattern(
            torch.from_numpy(groups[by_head, 1]), torch.from_numpy(by_head), (n_outputs, len(groups))
        )
        bounds = np.cumsum(np.bincount(groups[:, 0])).tolist() if len(groups) else []
        self.segments = [
            (relation, start, end)
            for relation, (start, end) in enumerate(zip([0] + bounds[:-1], bounds))
            if end > start
        ]
        self.group_relation = torch.from_numpy(groups[:, 0].copy())
        # Many short relation runs (a small KG with many relations): one vectorised
        # product beats a Python loop of small ones; long runs: the loop moves less memory.
        self.by_run = len(groups) >= RUN_LOOP_MIN_ROWS * max(1, len(self.segments))

    def to(self, device: torch.device) -> "_KGHop":
        for name in ("edges", "group_head", "group_relation"):
            setattr(self, name, getattr(self, name).to(device))
        self.gather.to(device)
        self.head_sum.to(device)
        return self


class _RelationalMean(torch.autograd.Function):
    """One KG hop: ``Y[h] = sum_r R[r] * sum_{(h, r, t)} w_e X[t]``.

    Forward: weighted sums of tails per (relation, head) group (one embedding bag),
    times the relation vector (one relation run at a time when runs are long, so each
    ``R`` row stays in cache; else one vectorised product), added into heads (a second
    bag). Backward mirrors it, reusing the group
    sums. No (edges, d) or (pairs, d) tensor of gathered rows is built.
    """

    @staticmethod
    def forward(ctx, entity, relation, values, gather, hop):
        group_sums = gather.product(values, entity)
        if hop.by_run:
            messages = torch.empty_like(group_sums)
            for rel, start, end in hop.segments:
                torch.mul(group_sums[start:end], relation[rel], out=messages[start:end])
        else:
            messages = group_sums * relation.index_select(0, hop.group_relation)
        ctx.gather, ctx.hop = gather, hop
        ctx.save_for_backward(relation, values, group_sums)
        return hop.head_sum.product(None, messages)

    @staticmethod
    def backward(ctx, grad_out):
        relation, values, group_sums = ctx.saved_tensors
        gather, hop = ctx.gather, ctx.hop
        grad_groups = grad_out.index_select(0, hop.group_head)
        if hop.by_run:
            grad_relation = torch.zeros_like(relation)
            for rel, start, end in hop.segments:
                grad_relation[rel] = (grad_groups[start:end] * group_sums[start:end]).sum(dim=0)
                grad_groups[start:end].mul_(relation[rel])
        else:
            grad_relation = torch.zeros_like(relation).index_add_(
                0, hop.group_relation, grad_groups * group_sums
            )
            grad_groups.mul_(relation.index_select(0, hop.group_relation))
        grad_entity = gather.product_transposed(values, grad_groups)
        return grad_entity, grad_relation, None, None, None


def unique_triples(heads: np.ndarray, relations: np.ndarray, tails: np.ndarray, n_entities: int) -> np.ndarray:
    """The distinct ``(head, relation, tail)`` rows, sorted by head, then relation, then
    tail: ``np.unique(rows, axis=0)``, computed on one int64 key per triple,
    ``(h * R + r) * E + t`` (E entities, R relations), which sorts in the same order
    and is 20-40x faster on millions of triples. Shape ``(n_distinct, 3)``, int64."""
    heads, relations, tails = (np.asarray(column, dtype=np.int64) for column in (heads, relations, tails))
    n_relations = int(relations.max()) + 1 if len(relations) else 1
    smallest = min((int(column.min()) for column in (heads, relations, tails) if len(column)), default=0)
    if smallest < 0 or n_entities * n_relations * n_entities >= 2**62:
        return np.unique(np.stack([heads, relations, tails], axis=1), axis=0).reshape(-1, 3)
    keys = sorted_unique((heads * n_relations + relations) * n_entities + tails)
    triples = np.empty((len(keys), 3), dtype=np.int64)
    np.floor_divide(keys, n_relations * n_entities, out=triples[:, 0])
    np.remainder(keys // n_entities, n_relations, out=triples[:, 1])
    np.remainder(keys, n_entities, out=triples[:, 2])
    return triples


class KnowledgeGraph:
    """The KG as the operator of KGIN's relation-aware mean (paper Eq. 11, code):

        e_h^(l+1) = 1/|N_h| * sum_{(h, r, t) in N_h} e_t^(l) * e_r

    Args:
        heads, relations, tails: int arrays of triples, relations in [0, n_relations);
            duplicate triples are removed (as the authors do).
        n_entities: entity rows; entities ``0..n_items-1`` are the items.
        n_items: number of items.
        fused: run hops through the fused CPU kernel (:mod:`recbole_kgin.model.fused`)
            instead of the torch path below.

    Two operators: the inner one maps all entities to all entities (every hop but the
    last), the last one all entities to the items only (nothing reads the other
    entities' last output). The torch path holds each (``inner``, ``last``) and a batch
    selects its kept edges once for each; the fused path holds the edges once
    (``edges``) and a batch compacts them once for both.
    """

    def __init__(
        self,
        heads: np.ndarray,
        relations: np.ndarray,
        tails: np.ndarray,
        n_entities: int,
        n_items: int,
        fused: bool = False,
    ) -> None:
        triples = unique_triples(heads, relations, tails, n_entities)
        self.heads = torch.from_numpy(triples[:, 0].copy())
        self.relations = torch.from_numpy(triples[:, 1].copy())
        self.tails = torch.from_numpy(triples[:, 2].copy())
        self.n_entities, self.n_items = n_entities, n_items
        self.fused = fused
        if fused:
            self.edges = FusedHop(*triples.T, n_entities, n_items)
        else:
            into_items = np.nonzero(triples[:, 0] < n_items)[0]
            self.inner = _KGHop(*triples.T, np.arange(len(triples)), n_entities, n_entities)
            self.last = _KGHop(*triples[into_items].T, into_items, n_items, n_entities)

    @property
    def n_edges(self) -> int:
        return int(self.heads.numel())

    def to(self, device: torch.device) -> "KnowledgeGraph":
        for name in ("heads", "relations", "tails"):
            setattr(self, name, getattr(self, name).to(device))
        for hop in (self.edges,) if self.fused else (self.inner, self.last):
            hop.to(device)
        return self

    def prepare(self, keep: Optional[torch.Tensor]):
        """A batch's operators for its kept edges. ``keep``: bool per edge (graph
        order), None = all edges. Weights are 1/|kept N_h|.

        Torch path: the inner and last operators' patterns and weights. Fused path:
        the kept edges both ways, with the heads' weights (:meth:`FusedHop.select`)."""
        if self.fused:
            return self.edges.select(keep)
        kept = torch.ones_like(self.heads, dtype=torch.float32) if keep is None else keep.float()
        degree = torch.zeros(self.n_entities, device=kept.device).index_add_(0, self.heads, kept)
        edge_values = 1.0 / degree.clamp(min=1.0).index_select(0, self.heads)
        prepared = []
        for hop in (self.inner, self.last):
            pattern, edges = hop.gather, hop.edges
            if keep is not None:
                pattern, positions = pattern.select(keep.index_select(0, edges))
                edges = edges.index_select(0, positions)
            prepared.append((pattern, edge_values.index_select(0, edges)))
        return KGBatch(*prepared)

    def aggregate(
        self, prepared, last: bool, entity: torch.Tensor, relation: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One hop: all entities (N, d) -> all entities (N, d), or items (n_items, d)
        when ``last``; with the items' rows of the input, ``entity[:n_items]``, which
        the user side of the hop reads (the fused path folds their gradient into its
        backward instead of a zero-filled (N, d) one)."""
        if self.fused:
            return relational_mean(entity, relation, prepared, self.n_items if last else self.n_entities, self.n_items)
        hop = self.last if last else self.inner
        pattern, values = prepared.last if last else prepared.inner
        out = _RelationalMean.apply(entity, relation, values.to(entity.dtype), pattern, hop)
        return out, entity[: self.n_items]


class InteractionGraph:
    """The user-item matrix as the operator of the mean over a user's items (code):

        m_u = 1/|N_u| * sum_{i in N_u} e_i

    Args:
        users, items: int arrays of the training interactions (duplicates collapse).
        n_users, n_items: matrix shape.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> None:
        keys = sorted_unique(np.asarray(users, dtype=np.int64) * n_items + np.asarray(items, dtype=np.int64))
        pairs = np.stack([keys // n_items, keys % n_items], axis=1)  # by user, then item
        self.pattern = CSRPattern(
            torch.from_numpy(pairs[:, 0].copy()), torch.from_numpy(pairs[:, 1].copy()), (n_users, n_items)
        )
        degree = np.bincount(pairs[:, 0], minlength=n_users).astype(np.float32)
        self.full_values = torch.from_numpy(1.0 / degree[pairs[:, 0]])
        self.n_users = n_users

    @property
    def n_edges(self) -> int:
        return self.pattern.nnz

    def to(self, device: torch.device) -> "InteractionGraph":
        self.full_values = self.full_values.to(device)
        self.pattern.to(device)
        return self

    def prepare(self, keep: Optional[torch.Tensor], users: Optional[torch.Tensor]) -> Prepared:
        """A batch's pattern and values.

        ``keep``: bool per interaction (CSR order), None in evaluation. Dropped
        interactions leave the mean; the rest keep their weight 1/|N_u|. Inverted
        dropout would rescale them by 1/(1 - rate), as the authors' ``_sparse_dropout``
        does (by 1/(1 - rate) after keeping a share ``rate``), but a per-row factor
        cancels in the L2 normalisation every hop's user output goes through, so it
        is not applied. ``users``: sorted unique ids of the rows wanted (None = all).
        """
        if users is None and keep is None:
            return self.pattern, self.full_values
        selected = torch.ones_like(self.full_values, dtype=torch.bool) if keep is None else keep
        row_map, n_rows = None, None
        if users is not None:
            row_map = torch.full((self.n_users,), -1, dtype=torch.int64, device=selected.device)
            row_map[users] = torch.arange(len(users), device=selected.device)
            selected = selected & (row_map.index_select(0, self.pattern.row) >= 0)
            n_rows = len(users)
        pattern, positions = self.pattern.select(selected, row_map, n_rows)
        return pattern, self.full_values.index_select(0, positions)

    @staticmethod
    def aggregate(prepared: Prepared, item: torch.Tensor) -> torch.Tensor:
        """(n_items, d) item rows -> (rows of the prepared pattern, d) means."""
        pattern, values = prepared
        return pattern.matmul(values, item)
