"""Chunks along code structure: Python by ``ast``, everything else in line windows.

Python files give one chunk per function, method and class header (the class line, its
docstring and attributes up to the first method); comments above a def belong to it.
What is left at module level (imports,
constants, ``if __name__`` blocks) and inside classes between methods goes into line
windows. A unit longer than three windows is itself cut into windows that keep its
symbol. A file that does not parse is chunked in plain windows.

Line numbers are 1-based and inclusive. ``\\r\\n`` and ``\\r`` count as one line break,
as they do for ``ast``; a form feed does not.

A chunk's id hashes its path, kind, symbol and text (and an ordinal among identical
twins in the same file), never its line numbers: an edit elsewhere, even in the same
file, moves a function without changing its id.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

#: Bumped whenever the chunks a file gives change: it is part of every cache key.
CHUNKER_VERSION = "3"
#: The most characters a piece holds when its lines allow (~1,500 tokens): pieces were
#: cut by lines alone, and forty soft-wrapped Markdown lines made one chunk of 7,700 of
#: the 8,000-token budget, dropped as "none fits" though it was the best match.
MAX_PIECE_CHARS = 6000

PYTHON_SUFFIXES = frozenset({".py", ".pyi"})
DOC_SUFFIXES = frozenset({".md", ".rst", ".txt"})
CODE_UNIT_KINDS = frozenset({"function", "method", "class"})
#: A unit longer than this many windows is cut into windows.
MAX_UNIT_WINDOWS = 3

ID_LEN = 12


@dataclass(frozen=True, slots=True)
class Piece:
    """A chunk before it knows its path: what the per-content cache stores."""

    start: int
    end: int
    kind: str  # function | method | class | block | module | window
    symbol: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str
    path: str
    start: int
    end: int
    kind: str
    symbol: str | None
    text: str

    @property
    def is_code_unit(self) -> bool:
        return self.kind in CODE_UNIT_KINDS

    @property
    def is_doc(self) -> bool:
        return is_doc_path(self.path)


def is_doc_path(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in DOC_SUFFIXES


def chunk_mode(path: str) -> str:
    """``python`` or ``lines``: which chunker a path gets (part of the cache key)."""
    return "python" if PurePosixPath(path).suffix.lower() in PYTHON_SUFFIXES else "lines"


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def make_pieces(mode: str, text: str, chunk_lines: int, overlap: int) -> list[Piece]:
    """The pieces of one file's text (newlines already normalized)."""
    lines = split_lines(text)
    if mode == "python":
        try:
            return _bounded(_PythonChunker(lines, chunk_lines, overlap).run(text))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass  # not parseable as this Python: plain windows below
    return _bounded(_windows(lines, 1, len(lines), chunk_lines, overlap, "window", None))


def _bounded(pieces: list[Piece]) -> list[Piece]:
    """Each piece longer than :data:`MAX_PIECE_CHARS` cut at its lines into consecutive
    parts that fit (a single longer line stays whole: a citation names lines)."""
    if all(len(p.text) <= MAX_PIECE_CHARS for p in pieces):
        return pieces
    out: list[Piece] = []
    for p in pieces:
        if len(p.text) <= MAX_PIECE_CHARS:
            out.append(p)
            continue
        body = p.text.split("\n")
        first, size = 0, 0
        for i, line in enumerate(body):
            if i > first and size + len(line) + 1 > MAX_PIECE_CHARS:
                out.append(_part(p, body, first, i))
                first, size = i, 0
            size += len(line) + 1
        out.append(_part(p, body, first, len(body)))
    return [p for p in out if p.text.strip()]


def _part(p: Piece, body: list[str], lo: int, hi: int) -> Piece:
    return Piece(p.start + lo, p.start + hi - 1, p.kind, p.symbol, "\n".join(body[lo:hi]))


def text_digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def assign_ids(path: str, keys: Iterable[tuple[str, str | None, str]]) -> list[str]:
    """Ids for a file's chunks given as (kind, symbol, text digest), in file order."""
    seen: dict[tuple[str, str, str], int] = {}
    out = []
    for kind, symbol, digest in keys:
        key = (kind, symbol or "", digest)
        ordinal = seen.get(key, 0)
        seen[key] = ordinal + 1
        raw = "\0".join((path, kind, symbol or "", digest, str(ordinal)))
        out.append(hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()[:ID_LEN])
    return out


def attach(path: str, pieces: list[Piece]) -> list[Chunk]:
    """Chunks with ids, in file order."""
    ids = assign_ids(path, ((p.kind, p.symbol, text_digest(p.text)) for p in pieces))
    return [
        Chunk(cid, path, p.start, p.end, p.kind, p.symbol, p.text)
        for cid, p in zip(ids, pieces, strict=True)
    ]


def chunk_text(path: str, text: str, chunk_lines: int, overlap: int) -> list[Chunk]:
    """Convenience: pieces + ids for one file."""
    pieces = make_pieces(chunk_mode(path), normalize_newlines(text), chunk_lines, overlap)
    return attach(path, pieces)


def _windows(
    lines: list[str],
    first: int,
    last: int,
    size: int,
    overlap: int,
    kind: str,
    symbol: str | None,
) -> list[Piece]:
    """Windows of ``size`` lines stepping ``size - overlap`` over lines first..last.

    Blank lines at either end of the span are trimmed first; all-blank windows are
    dropped.
    """
    while first <= last and not lines[first - 1].strip():
        first += 1
    while last >= first and not lines[last - 1].strip():
        last -= 1
    out: list[Piece] = []
    if first > last:
        return out
    step = max(1, size - overlap)
    start = first
    while True:
        end = min(last, start + size - 1)
        body = lines[start - 1 : end]
        if any(line.strip() for line in body):
            out.append(Piece(start, end, kind, symbol, "\n".join(body)))
        if end >= last:
            return out
        start += step


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_COMPOUND = (ast.If, ast.Try, ast.With, ast.AsyncWith, ast.For, ast.While)


class _PythonChunker:
    def __init__(self, lines: list[str], chunk_lines: int, overlap: int) -> None:
        self.lines = lines
        self.size = chunk_lines
        self.overlap = overlap
        self.pieces: list[Piece] = []

    def run(self, text: str) -> list[Piece]:
        tree = ast.parse(text)
        self._region(tree.body, 1, len(self.lines), "", None)
        self.pieces.sort(key=lambda p: (p.start, p.end))
        return self.pieces

    # A region is a module or class body: its defs become units, the rest windows.
    def _region(
        self,
        body: list[ast.stmt],
        first: int,
        last: int,
        prefix: str,
        cls: str | None,
    ) -> None:
        defs = sorted(_defs_in(body), key=lambda n: n.lineno)
        cursor = first
        header_done = cls is None
        for node in defs:
            if node.lineno < cursor:  # overlapping (e.g. ``class A: def f(): ...``)
                continue
            start = self._start_of(node, cursor)
            end = node.end_lineno or node.lineno
            gap_kind = "module" if cls is None else ("class" if not header_done else "block")
            self._gap(cursor, start - 1, gap_kind, cls)
            header_done = True
            name = prefix + node.name
            if isinstance(node, ast.ClassDef):
                self._class(node, start, end, name)
            else:
                kind = "function" if cls is None else "method"
                self._unit(start, end, kind, name)
            cursor = end + 1
        gap_kind = "module" if cls is None else ("class" if not header_done else "block")
        self._gap(cursor, last, gap_kind, cls)

    def _class(self, node: ast.ClassDef, start: int, end: int, name: str) -> None:
        if not _defs_in(node.body):
            self._unit(start, end, "class", name)
            return
        self._region(node.body, start, end, name + ".", name)

    def _gap(self, first: int, last: int, kind: str, symbol: str | None) -> None:
        if first > last:
            return
        if kind == "class":
            # The class header is a unit of its own, cut like one when it is long.
            self._unit_span(first, last, "class", symbol)
            return
        self.pieces.extend(_windows(self.lines, first, last, self.size, self.overlap, kind, symbol))

    def _unit(self, start: int, end: int, kind: str, symbol: str) -> None:
        self._unit_span(start, end, kind, symbol)

    def _unit_span(self, start: int, end: int, kind: str, symbol: str | None) -> None:
        while end > start and not self.lines[end - 1].strip():
            end -= 1
        if end - start + 1 > self.size * MAX_UNIT_WINDOWS:
            self.pieces.extend(
                _windows(self.lines, start, end, self.size, self.overlap, kind, symbol)
            )
            return
        body = self.lines[start - 1 : end]
        if any(line.strip() for line in body):
            self.pieces.append(Piece(start, end, kind, symbol, "\n".join(body)))

    def _start_of(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, floor: int
    ) -> int:
        """First line of a def: its decorators, and the comments above them (blank lines
        between included), down to the first line of code above or ``floor``."""
        start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        top = start
        while top > floor and (
            not self.lines[top - 2].strip() or self.lines[top - 2].lstrip().startswith("#")
        ):
            top -= 1
        while top < start and not self.lines[top - 1].lstrip().startswith("#"):
            top += 1  # blank lines before the first comment stay outside
        return top


def _defs_in(body: list[ast.stmt]) -> list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]:
    """Defs directly in a body, or inside its if/try/with/for blocks (one level of
    nesting per block, recursively), e.g. ``if sys.platform == "win32": def ...``."""
    out: list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef] = []
    for node in body:
        if isinstance(node, _DEFS):
            out.append(node)
        elif isinstance(node, _COMPOUND):
            for field in ("body", "orelse", "finalbody"):
                out.extend(_defs_in(getattr(node, field, []) or []))
            for handler in getattr(node, "handlers", []) or []:
                out.extend(_defs_in(handler.body))
    return out
