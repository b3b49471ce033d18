"""Check a dataset's atomic files before RecBole reads them.

    python run_recbole_kgin.py --check --dataset NAME [--data_path=...]

RecBole answers a malformed atomic file with a pandas traceback deep in its loader.
This reads the files first and reports, one line each, ``file:line: what is wrong;
what to do``:

errors (the run stops): a missing or empty file, a double quote (pandas would
read it as quoting), a header that is not
``name:type`` with a RecBole type, a field named twice in the header, a missing
required field (``.inter``: user and item; ``.kg``: head, relation, tail; ``.link``:
item, entity), a row with fewer columns than the header, a non-number in a float
column, an id that RecBole's reader (pandas) takes for a missing value (``nan``,
``NaN``, ``NA``, ``null``, an empty cell, ...), bytes that are not valid in the
configured encoding, a byte-order mark that the encoding keeps (it would become part
of the first field's name);

warnings (the run goes on): rows after the first with more columns than the header
(RecBole reads the first ones and drops the rest, unambiguously; RecBole's own test
data has such a row; a first row so would shift every column, an error), KG self-loops and duplicate triples, ``.link`` rows for items that never occur
in the interactions, and items without a KG link, with the
share of interactions RecBole will drop because of them (it keeps only KG-linked
items for knowledge-aware models).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from recbole_kgin.common.errors import UserInputError
from recbole_kgin.data.location import reads_kg

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
# What pandas.read_csv (RecBole's reader) takes for a missing value by default: an id
# spelled so becomes NaN, and RecBole then drops or pads it.
MISSING_VALUES = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
    "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})  # fmt: skip


@dataclass
class Report:
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class _Table:
    """The columns of one atomic file that the checks need, as strings."""

    path: Path
    header: List[str]
    columns: Dict[str, List[str]]
    rows: int
    numbers: List[int]  # the line number of each row kept in ``columns``


def _read(
    path: Path,
    required: Sequence[str],
    wanted: Sequence[str],
    separator: str,
    encoding: str,
    report: Report,
) -> Optional[_Table]:
    """Parse ``path``; record its errors in ``report``; keep the ``wanted`` columns."""
    name = path.name
    if not path.is_file():
        report.errors.append(f"{path}: file not found; create it or check --data_path and the dataset name")
        return None
    try:
        text = path.read_bytes().decode(encoding)
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        report.errors.append(
            f"{name}:{line}: bytes not valid {encoding} (at byte {error.start}); "
            f"re-save the file as {encoding} or set encoding: <its encoding> in the config"
        )
        return None
    if text.startswith("\ufeff"):
        report.errors.append(
            f"{name}:1: starts with a byte-order mark, which RecBole would read as part of the first field's "
            f"name; re-save the file without it, or set encoding: utf-8-sig in the config"
        )
        return None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # as Python's text mode
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0].strip():
        report.errors.append(f"{name}:1: empty file; it needs a header such as 'user_id:token\\titem_id:token' and rows")
        return None
    quoted = next((number for number, line in enumerate(lines, start=1) if '"' in line), None)
    if quoted is not None:
        report.errors.append(
            f"{name}:{quoted}: a double quote; RecBole's reader (pandas) takes it for the start or end of a quoted "
            f"cell, which can join cells across separators and lines: remove it"
        )
        return None
    header = lines[0].split(separator)
    fields, types = [], []
    for column, cell in enumerate(header, start=1):
        if cell.count(":") != 1 or cell.split(":")[1] not in FIELD_TYPES:
            report.errors.append(
                f"{name}:1: header column {column} {cell!r} is not name:type with type one of "
                f"{', '.join(FIELD_TYPES)}; write e.g. 'item_id:token' (separator {separator!r})"
            )
            return None
        if cell.split(":")[0] in fields:
            report.errors.append(
                f"{name}:1: header column {column} {cell!r} names field {cell.split(':')[0]!r} again "
                f"(column {fields.index(cell.split(':')[0]) + 1}); keep one column per field"
            )
            return None
        fields.append(cell.split(":")[0])
        types.append(cell.split(":")[1])
    missing = [f for f in required if f not in fields]
    if missing:
        report.errors.append(
            f"{name}:1: required field(s) {', '.join(missing)} missing from the header ({', '.join(map(repr, fields))}); "
            f"rename the columns or set the *_FIELD config keys"
        )
        return None
    if len(lines) == 1:
        report.errors.append(f"{name}:2: no rows after the header; add data or remove the file")
        return None
    keep = {fields.index(f): f for f in wanted if f in fields}
    ids = [fields.index(f) for f in required]
    floats = [i for i, t in enumerate(types) if t == "float"]
    columns: Dict[str, List[str]] = {f: [] for f in keep.values()}
    long_rows: List[int] = []
    numbers: List[int] = []
    first_row = True  # pandas takes a longer first row as a sign that its first column is an index
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        cells = line.split(separator)
        if len(cells) > len(fields) and first_row:
            report.errors.append(
                f"{name}:{number}: the first row has {len(cells)} columns where the header has {len(fields)}: "
                f"RecBole's reader (pandas) would take the first for an index and shift every column; "
                f"remove the extra field(s) (separator {separator!r})"
            )
            return None
        first_row = False
        if len(cells) > len(fields):
            long_rows.append(number)
            cells = cells[: len(fields)]
        if len(cells) < len(fields):
            report.errors.append(
                f"{name}:{number}: {len(cells)} columns where the header has {len(fields)}; "
                f"fix the row (separator {separator!r}; empty values still need their separators)"
            )
            return None
        for index in floats:
            value = cells[index]
            if value:
                try:
                    float(value)
                except ValueError:
                    report.errors.append(
                        f"{name}:{number}: {value!r} in float column '{fields[index]}' is not a number; "
                        f"fix it or declare the column :token"
                    )
                    return None
        for index in ids:
            if cells[index] in MISSING_VALUES:
                report.errors.append(
                    f"{name}:{number}: id {cells[index]!r} in column '{fields[index]}' is read as a missing value "
                    f"by RecBole (pandas); give it another name (e.g. '{fields[index]}_{cells[index] or 'empty'}')"
                )
                return None
        for index, column in keep.items():
            columns[column].append(cells[index])
        numbers.append(number)
    if long_rows:
        report.warnings.append(
            f"{name}:{long_rows[0]}: more columns than the header's {len(fields)} "
            f"({len(long_rows)} row(s)); RecBole reads the first {len(fields)} and drops the rest: "
            f"remove the extra field(s) if they belong to a column"
        )
    return _Table(path, fields, columns, len(lines) - 1, numbers)


def validate_dataset(
    folder: str,
    dataset: str,
    knowledge: bool,
    fields: Dict[str, str],
    separator: str = "\t",
    encoding: str = "utf-8",
    benchmark_filename: Optional[Sequence[str]] = None,
) -> Report:
    """Check the atomic files of ``dataset`` in ``folder``.

    ``fields`` maps the roles ``user, item, head, relation, tail, entity`` to the
    column names (RecBole's ``*_FIELD`` config keys).
    """
    report = Report()
    root = Path(folder)
    user, item = fields["user"], fields["item"]
    names = [f"{dataset}.{part}.inter" for part in benchmark_filename] if benchmark_filename else [f"{dataset}.inter"]
    inter_items: List[str] = []
    for name in names:
        table = _read(root / name, [user, item], [item], separator, encoding, report)
        if table is not None:
            inter_items += table.columns[item]
            report.counts[name] = table.rows
    if not knowledge:
        return report
    head, relation, tail = fields["head"], fields["relation"], fields["tail"]
    kg = _read(root / f"{dataset}.kg", [head, relation, tail], [head, relation, tail], separator, encoding, report)
    link = _read(root / f"{dataset}.link", [item, fields["entity"]], [item, fields["entity"]], separator, encoding, report)
    if kg is not None:
        triples = list(zip(kg.columns[head], kg.columns[relation], kg.columns[tail]))
        report.counts["triples"] = len(triples)
        loops = sum(h == t for h, _, t in triples)
        duplicates = len(triples) - len(set(triples))
        if loops:
            report.warnings.append(f"{dataset}.kg: {loops} self-loop triple(s) (head == tail); kept as they are")
        if duplicates:
            report.warnings.append(
                f"{dataset}.kg: {duplicates} duplicate triple(s); KGIN counts each once, "
                "RecBole's own models (KGAT, KGCN, CKE) every copy"
            )
    if link is not None:
        _check_one_item_per_entity(link, item, fields["entity"], report)
    if link is not None and report.ok:
        _check_links(dataset, link, item, fields["entity"], inter_items, kg, (head, tail), report)
    return report


def _check_one_item_per_entity(link: _Table, item: str, entity: str, report: Report) -> None:
    """RecBole merges each linked item with its entity: an entity linked to two items
    ends its loader with a KeyError."""
    first: Dict[str, Tuple[str, int]] = {}
    for item_id, entity_id, number in zip(link.columns[item], link.columns[entity], link.numbers):
        seen = first.setdefault(entity_id, (item_id, number))
        if seen[0] != item_id:
            report.errors.append(
                f"{link.path.name}:{number}: entity {entity_id!r} is linked to item {item_id!r} here and to item "
                f"{seen[0]!r} on line {seen[1]}; RecBole links each entity to one item: keep one of the two lines"
            )
            return


def _check_links(dataset, link, item, entity, inter_items, kg, kg_fields, report) -> None:
    linked = dict(zip(link.columns[item], link.columns[entity]))
    interacted: Set[str] = set(inter_items)
    unused = sum(1 for i in linked if i not in interacted)
    if unused:
        report.warnings.append(
            f"{dataset}.link: {unused} of {len(linked)} linked item(s) never occur in the interactions"
        )
    if kg is not None:
        entities = set(kg.columns[kg_fields[0]]) | set(kg.columns[kg_fields[1]])
        dangling = sum(1 for e in linked.values() if e not in entities)
        if dangling:
            report.warnings.append(
                f"{dataset}.link: {dangling} linked entity id(s) appear in no triple of {dataset}.kg; "
                f"their items will be dropped"
            )
        linked = {i: e for i, e in linked.items() if e in entities}
    unlinked = interacted - set(linked)
    if unlinked and inter_items:
        dropped = sum(1 for i in inter_items if i not in linked)
        report.warnings.append(
            f"{dataset}: {len(unlinked)} of {len(interacted)} interacted item(s) have no KG link; "
            f"RecBole drops their {dropped} interaction(s) ({100.0 * dropped / len(inter_items):.1f}%)"
        )


def validate_config(config) -> Report:
    """:func:`validate_dataset` with the folder, fields and format of a Config."""
    fields = {
        "user": config["USER_ID_FIELD"],
        "item": config["ITEM_ID_FIELD"],
        "head": config["HEAD_ENTITY_ID_FIELD"],
        "relation": config["RELATION_ID_FIELD"],
        "tail": config["TAIL_ENTITY_ID_FIELD"],
        "entity": config["ENTITY_ID_FIELD"],
    }
    return validate_dataset(
        config["data_path"],
        config["dataset"],
        reads_kg(config),
        fields,
        config["field_separator"],
        config["encoding"] or "utf-8",
        config["benchmark_filename"],
    )


def require_valid(config) -> Tuple[str, ...]:
    """Raise :class:`UserInputError` with the first error; return the warnings."""
    report = validate_config(config)
    if report.errors:
        raise UserInputError(report.errors[0])
    return tuple(report.warnings)
