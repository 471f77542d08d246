"""The edit format as a GBNF grammar, for grammar-constrained local decoding.

llama.cpp takes it through :attr:`app.backends.base.ChatRequest.grammar`; with it, a
local model can only write what :mod:`.parse` reads: one or more blocks (a path line,
then SEARCH/REPLACE or a whole FILE), then the JSON trailer. A line inside a block may
not start with a marker's first two characters (``<<``, ``==``, ``>>``), so no content
line can end a block early. What a grammar cannot check (that SEARCH is in the file) is
the applier's; the reply is parsed and validated after decoding all the same (GR-012).
"""

from __future__ import annotations

EDIT_GRAMMAR = r"""
root    ::= block+ trailer
block   ::= path "\n" (replace | whole) "\n"?
path    ::= seg ("/" seg){0,7}
seg     ::= [A-Za-z0-9_.\-]{1,40}
replace ::= "<<<<<<< SEARCH\n" line* "=======\n" line* ">>>>>>> REPLACE\n"
whole   ::= "<<<<<<< FILE\n" line* ">>>>>>> FILE\n"
line    ::= ([^<=>\n] [^\n]* | "<" [^<\n] [^\n]* | "=" [^=\n] [^\n]* | ">" [^>\n] [^\n]*)? "\n"
trailer ::= "{\"self_check_confidence\": " conf ", \"notes\": \"" note "\"}"
conf    ::= "0." [0-9] | "1.0"
note    ::= [^"\\\n]{0,160}
""".strip()
