"""The edit format as a GBNF grammar, for grammar-constrained local decoding.

llama.cpp takes it through :attr:`app.backends.base.ChatRequest.grammar`; with it, a
local model can only write what :mod:`.parse` reads: one or more blocks (a path line,
then SEARCH/REPLACE or a whole FILE), then the JSON trailer. A line inside a block may
not start with a marker's first two characters (``<<``, ``==``, ``>>``), so no content
line can end a block early. Paths, lines, blocks and the lines in a block are bounded, so
a small model cannot fill its whole reply with one of them and never reach the trailer.

:func:`edit_grammar` narrows it to the files the Implementer was shown: the path is one
of theirs, and every SEARCH line is one of their lines, so what a model copies is
copied exactly (the applier still decides where, and refuses what is ambiguous). Whole
FILE blocks are left out there: the small models this grammar is for fill them with
noise. Either way the reply is parsed and validated after decoding (GR-012).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_LINE = r"""
line    ::= (lead [^\n]{0,200})? "\n"
lead    ::= [^<=>\n] | "<" [^<\n] | "=" [^=\n] | ">" [^>\n]
trailer ::= "{\"self_check_confidence\": " conf ", \"notes\": \"" note "\"}"
conf    ::= "0." [0-9] | "1.0"
note    ::= [^"\\\n]{0,160}
"""

EDIT_GRAMMAR = (
    r"""
root    ::= block{1,8} trailer
block   ::= path "\n" (replace | whole) "\n"?
path    ::= seg ("/" seg){0,7}
seg     ::= [A-Za-z0-9_.\-]{1,40}
replace ::= "<<<<<<< SEARCH\n" line{0,60} "=======\n" line{0,80} ">>>>>>> REPLACE\n"
whole   ::= "<<<<<<< FILE\n" line{0,150} ">>>>>>> FILE\n"
""".strip()
    + _LINE
)

_MARKERISH = re.compile(r"^\s*(<<|==|>>)")
#: distinct lines of the shown files offered to SEARCH at most (the grammar's size)
MAX_LINES = 400
#: a narrowed SEARCH copies a few lines ("the lines to change, a line or two around");
#: its REPLACE and the blocks are bounded too, so that a small model reaches the trailer
#: (three blocks at most fit in the room of the repair turn)
SEARCH_LINES = 12
REPLACE_LINES = 30


def edit_grammar(files: Mapping[str, str]) -> str:
    """The grammar for a reply about ``files`` (path → the text the model was shown)."""
    if not files:
        return EDIT_GRAMMAR
    rules: list[str] = []
    blocks: list[str] = []
    seen = 0
    for n, (path, text) in enumerate(sorted(files.items())):
        lines = []
        for line in dict.fromkeys(text.replace("\r", "").split("\n")):
            if not _MARKERISH.match(line) and seen < MAX_LINES:
                lines.append(_literal(line + "\n"))
                seen += 1
        if not lines:
            continue
        rules.append(f"copy{n} ::= " + " | ".join(lines))
        blocks.append(
            f'{_literal(path + chr(10))} "<<<<<<< SEARCH\\n" copy{n}{{1,{SEARCH_LINES}}} '
            f'"=======\\n" line{{0,{REPLACE_LINES}}} ">>>>>>> REPLACE\\n" "\\n"?'
        )
    if not blocks:
        return EDIT_GRAMMAR
    head = "root    ::= block{1,3} trailer\nblock   ::= " + " | ".join(blocks)
    return head + "\n" + "\n".join(rules) + _LINE


def _literal(text: str) -> str:
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
