"""Chunks along code structure, 1-based inclusive lines, ids stable under other edits."""

from __future__ import annotations

import textwrap

from app.stage0.chunker import Chunk, chunk_mode, chunk_text, is_doc_path

SOURCE = textwrap.dedent(
    '''\
    """Module doc."""
    import os

    LIMIT = 3


    # Reads a file.
    @cache
    def read_config(path):
        """Doc."""
        return open(path).read()


    class Ledger(Base):
        """A ledger."""

        rate = 2

        def reserve(self, amount):
            return amount

        label = "x"

        async def settle(self):
            pass


    if __name__ == "__main__":
        read_config("x")
    '''
)


def _by_symbol(chunks: list[Chunk]) -> dict[str | None, Chunk]:
    return {c.symbol if c.kind != "module" else f"module@{c.start}": c for c in chunks}


def test_python_units_and_remainder() -> None:
    chunks = chunk_text("pkg/mod.py", SOURCE, 60, 10)
    got = [(c.kind, c.symbol, c.start, c.end) for c in chunks]
    assert got == [
        ("module", None, 1, 4),
        ("function", "read_config", 7, 11),
        ("class", "Ledger", 14, 17),
        ("method", "Ledger.reserve", 19, 20),
        ("block", "Ledger", 22, 22),
        ("method", "Ledger.settle", 24, 25),
        ("module", None, 28, 29),
    ]


def test_chunk_text_is_exactly_its_line_range() -> None:
    lines = SOURCE.split("\n")
    for c in chunk_text("pkg/mod.py", SOURCE, 60, 10):
        assert c.text == "\n".join(lines[c.start - 1 : c.end])


def test_decorators_and_the_comment_above_belong_to_the_function() -> None:
    fn = _by_symbol(chunk_text("m.py", SOURCE, 60, 10))["read_config"]
    assert fn.text.startswith("# Reads a file.\n@cache\ndef read_config(path):")


def test_other_files_are_line_windows_with_overlap() -> None:
    text = "\n".join(f"line {i}" for i in range(1, 26)) + "\n"
    chunks = chunk_text("notes.txt", text, 10, 3)
    assert [(c.kind, c.start, c.end) for c in chunks] == [
        ("window", 1, 10),
        ("window", 8, 17),
        ("window", 15, 24),
        ("window", 22, 25),
    ]


def test_a_python_file_that_does_not_parse_falls_back_to_windows() -> None:
    chunks = chunk_text("broken.py", "def f(:\n    pass\n", 60, 10)
    assert [(c.kind, c.start, c.end) for c in chunks] == [("window", 1, 2)]


def test_a_long_function_is_cut_into_windows_that_keep_its_symbol() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(40))
    chunks = chunk_text("long.py", f"def big():\n{body}\n", 10, 2)
    assert len(chunks) > 1
    assert {(c.kind, c.symbol) for c in chunks} == {("function", "big")}
    assert chunks[0].start == 1 and chunks[-1].end == 41


def test_crlf_line_endings_count_once() -> None:
    chunks = chunk_text("w.py", "import os\r\n\r\ndef f():\r\n    return 1\r\n", 60, 10)
    assert [(c.kind, c.start, c.end) for c in chunks] == [
        ("module", 1, 1),
        ("function", 3, 4),
    ]


def test_blank_only_content_gives_no_chunks() -> None:
    assert chunk_text("empty.py", "\n\n   \n", 60, 10) == []
    assert chunk_text("empty.md", "", 60, 10) == []


def test_ids_are_stable_when_another_function_in_the_file_changes() -> None:
    before = _by_symbol(chunk_text("pkg/mod.py", SOURCE, 60, 10))
    edited = SOURCE.replace('    """Doc."""\n', '    """Doc.\n\n    More.\n    """\n')
    after = _by_symbol(chunk_text("pkg/mod.py", edited, 60, 10))
    assert after["read_config"].id != before["read_config"].id
    for symbol in ("Ledger", "Ledger.reserve", "Ledger.settle"):
        assert after[symbol].id == before[symbol].id
        assert after[symbol].start == before[symbol].start + 3  # moved, same id


def test_ids_depend_on_the_path_and_twins_get_distinct_ids() -> None:
    a = chunk_text("a.py", SOURCE, 60, 10)
    b = chunk_text("b.py", SOURCE, 60, 10)
    assert {c.id for c in a}.isdisjoint({c.id for c in b})
    twins = chunk_text("t.txt", "same\n" * 3, 1, 0)
    assert len({c.id for c in twins}) == 3


def test_modes_and_doc_paths() -> None:
    assert chunk_mode("x/y.py") == "python" and chunk_mode("x/y.pyi") == "python"
    assert chunk_mode("Makefile") == "lines"
    assert is_doc_path("README.md") and is_doc_path("docs/a.rst") and not is_doc_path("a.py")


def test_a_window_of_long_lines_is_cut_to_fit_at_its_lines() -> None:
    """Forty soft-wrapped Markdown lines made one chunk of 7,700 of the 8,000-token budget,
    dropped as "none fits" though it was the best match."""
    from app.stage0.chunker import MAX_PIECE_CHARS, make_pieces, split_lines

    lines = [f"paragraph {i} " + "word " * 120 for i in range(40)]
    text = "\n".join(lines) + "\n"
    pieces = make_pieces("text", text, 40, 5)
    assert len(pieces) > 1 and all(len(p.text) <= MAX_PIECE_CHARS for p in pieces)
    every = split_lines(text)
    for p in pieces:  # still whole lines, cited by their own numbers
        assert p.text == "\n".join(every[p.start - 1 : p.end])
    assert pieces[0].start == 1 and pieces[-1].end == 40
    one_line = "x" * (MAX_PIECE_CHARS * 2)
    assert [(p.start, p.end) for p in make_pieces("text", one_line, 40, 5)] == [(1, 1)]
