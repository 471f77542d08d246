"""A llama.cpp grammar for a JSON schema (GR-012's constrained decoding, in-process).

The grammar gives the reply the schema's shape and, where llama.cpp's converter would
ignore them, its numeric bounds (as a grid or an enum). What a grammar cannot enforce is
checked after decoding by the structured-output owner (:mod:`app.router.structured`).
"""

from __future__ import annotations

import json
from typing import Any

from app.backends.llamacpp_model import SharedModel


def strip_patterns(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: strip_patterns(v) for k, v in schema.items() if k != "pattern"}
    if isinstance(schema, list):
        return [strip_patterns(v) for v in schema]
    return schema


#: a bounded number becomes a choice from this many steps in the grammar
NUMBER_GRID_STEPS = 20
#: an integer range up to this wide becomes an enum of its values
INTEGER_ENUM_MAX = 256
#: the longest repetition bound handed to the grammar (see bounded_as_enum)
GRAMMAR_REPEAT_MAX = 1000


def bounded_as_enum(schema: Any) -> Any:
    """Let the grammar enforce what llama.cpp's converter ignores: minimum/maximum.

    A number with both bounds becomes a choice from a grid (e.g. 0, 0.05, ... 1 for a
    confidence); a small integer range becomes an enum. Post-validation still checks the
    caller's real schema, so this only narrows what the model may emit.
    """
    if isinstance(schema, list):
        return [bounded_as_enum(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded_as_enum(v) for k, v in schema.items()}
    # A long bound becomes a rule repeated that many times in the grammar: llama.cpp
    # crashed (SIGSEGV) on maxLength 40000. Bounds that large are left to post-validation.
    for key in ("maxLength", "maxItems"):
        if isinstance(out.get(key), int) and out[key] > GRAMMAR_REPEAT_MAX:
            del out[key]
    lo, hi, kind = out.get("minimum"), out.get("maximum"), out.get("type")
    if not (isinstance(lo, int | float) and isinstance(hi, int | float) and lo <= hi):
        return out
    if kind == "integer" and hi - lo <= INTEGER_ENUM_MAX:
        rest = {k: v for k, v in out.items() if k not in ("type", "minimum", "maximum")}
        return {**rest, "enum": list(range(int(lo), int(hi) + 1))}
    if kind == "number":
        step = (hi - lo) / NUMBER_GRID_STEPS
        grid = sorted({round(lo + i * step, 4) for i in range(NUMBER_GRID_STEPS + 1)})
        rest = {k: v for k, v in out.items() if k not in ("type", "minimum", "maximum")}
        return {**rest, "enum": grid}
    return out


def grammar_for(shared: SharedModel, schema: dict[str, Any]) -> Any:
    """A llama.cpp grammar for ``schema``, cached per model and schema.

    llama-cpp-python's converter rejects some regexes (it wants ``^...$``); then the
    grammar is built without ``pattern`` and the pattern is left to post-validation,
    and as a last resort any JSON is allowed and validation does all the work.
    """
    key = json.dumps(schema, sort_keys=True)
    cached = shared.grammars.get(key)
    if cached is not None:
        return cached
    from llama_cpp import llama_grammar

    grammar: Any = None
    narrowed = bounded_as_enum(schema)
    for candidate in (narrowed, strip_patterns(narrowed), schema, strip_patterns(schema)):
        try:
            grammar = llama_grammar.LlamaGrammar.from_json_schema(
                json.dumps(candidate), verbose=False
            )
            break
        except Exception:  # the converter raises AssertionError, KeyError, ValueError...
            continue
    if grammar is None:
        grammar = llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF, verbose=False)
    shared.grammars[key] = grammar
    return grammar


def gbnf_grammar(shared: SharedModel, text: str) -> Any:
    """A llama.cpp grammar from GBNF text (the edit format's), cached per model."""
    key = "gbnf:" + text
    cached = shared.grammars.get(key)
    if cached is None:
        from llama_cpp import llama_grammar

        cached = llama_grammar.LlamaGrammar.from_string(text, verbose=False)
        shared.grammars[key] = cached
    return cached
