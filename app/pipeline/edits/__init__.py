"""Edits that land: the format models write code in, its parser, and a tolerant applier
that never applies an edit in the wrong place.

- :mod:`.model`: the typed edit list (the machine-read message, GR-012) and the
  applier's typed answers;
- :mod:`.parse`: reply text → :class:`~.model.EditList` (SEARCH/REPLACE blocks, whole
  small files, unified diffs, the older JSON) with its JSON trailer;
- :mod:`.apply` (with :mod:`.land`, :mod:`.locate`, :mod:`.compose`, :mod:`.text`):
  the pure applier;
- :mod:`.reply`: the reply as a parser of GR-012's one owner (the repair turn);
- :mod:`.grammar`: the format as a GBNF grammar for local constrained decoding;
- :mod:`.render`: edits written out as a model would (prompt example, tests, bench).

Only :mod:`.reply` imports from the router (the owner's ``ReplyRejected``); the
applier and the parser are pure and import no layer above the leaves.
"""
