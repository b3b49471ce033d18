"""The shell commands that README.md and docs/*.md show, found where a reader sees them.

A command is a line of a fenced ``bash``/``sh``/``shell``/``console`` block (lines
ending in ``\\`` joined, ``# comments`` dropped), or an inline code span that starts like
a command (``python ...``, ``recbole-kgin ...``, ``taskset ...``, ``VAR=value ...``).
Each command is split at ``&&``, ``||``, ``;``, ``|`` and ``&`` into the programs it
runs; :func:`invocations` keeps those of recbole-kgin: the CLI
(``run_recbole_kgin.py``, ``recbole-kgin``, ``python -m recbole_kgin``) and the
benchmark modules (``python -m recbole_kgin.<module>``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
OPERATORS = ("&&", "||", ";", "|", "&")
CLI = "cli"
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w-]*)")
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
COMMAND_START = re.compile(r"^(python3?|recbole-kgin|taskset|[A-Z_]+=\S+)\s")


@dataclass(frozen=True)
class Invocation:
    """One run of a recbole-kgin program as a document shows it."""

    where: str  # file:line
    program: str  # CLI, or the module of a benchmark (recbole_kgin.bench.speed, ...)
    argv: Tuple[str, ...]
    text: str  # the whole command it is part of

    @property
    def name(self) -> str:
        return f"{self.where} {' '.join(self.argv)}"[:120]


def shell_commands(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, command) for every command of a Markdown text."""
    lines = text.splitlines()
    fence: Optional[str] = None
    language = ""
    pending = ""
    pending_line = 0
    for number, line in enumerate(lines, start=1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, language = match.group(2), match.group(3).lower()
            continue
        if fence is not None:
            if line.strip().startswith(fence[:3]) and line.strip().strip(fence[0]) == "":
                fence = None
                continue
            if language not in SHELL_LANGUAGES:
                continue
            stripped = line.strip()
            if stripped.startswith("$ "):
                stripped = stripped[2:]
            if not pending:
                pending_line = number
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            command = (pending + stripped).strip()
            pending = ""
            if command and not command.startswith("#"):
                yield pending_line, command
            continue
        for span in INLINE.findall(line):
            if COMMAND_START.match(span.strip() + " "):
                yield number, span.strip()


def split_programs(command: str) -> List[List[str]]:
    """The argument lists of the programs a command runs (comments dropped)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    programs: List[List[str]] = [[]]
    for token in lexer:
        if token in OPERATORS:
            programs.append([])
        else:
            programs[-1].append(token)
    return [tokens for tokens in programs if tokens]


def recbole_kgin_call(tokens: Sequence[str]) -> Optional[Tuple[str, List[str]]]:
    """(program, argv) where ``tokens`` run recbole-kgin (after env assignments,
    ``taskset -c N``, ``kubectl exec ... --`` and the like); None otherwise."""
    for index, token in enumerate(tokens):
        if token.endswith("run_recbole_kgin.py") or token == "recbole-kgin":
            return CLI, list(tokens[index + 1 :])
        if token in ("python", "python3") and tokens[index + 1 : index + 2] == ["-m"] and index + 2 < len(tokens):
            module = tokens[index + 2]
            if module == "recbole_kgin":
                return CLI, list(tokens[index + 3 :])
            if module.startswith("recbole_kgin."):
                return module, list(tokens[index + 3 :])
    return None


def invocations(files: Sequence[Path], root: Path) -> List[Invocation]:
    """Every run of a recbole-kgin program that ``files`` show, in order."""
    found: List[Invocation] = []
    for file in files:
        for number, command in shell_commands(file.read_text(encoding="utf-8")):
            for tokens in split_programs(command):
                call = recbole_kgin_call(tokens)
                if call is not None:
                    where = f"{file.relative_to(root)}:{number}"
                    found.append(Invocation(where, call[0], tuple(call[1]), command))
    return found
