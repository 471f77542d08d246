"""A llama.cpp grammar for a JSON schema (GR-012's constrained decoding, in-process).

The grammar gives the reply the schema's shape and, where llama.cpp's converter would
ignore them, its numeric bounds (as a grid or an enum). What a grammar cannot enforce is
checked after decoding by the structured-output owner (:mod:`app.router.structured`).

Every grammar is checked by llama.cpp's own parser before it is used. The parser refuses
some grammars the converter makes: a repetition nested deeper than its
``MAX_REPETITION_THRESHOLD`` allows, which the converter makes of a schema's
``pattern: "^a{0,5000}$"`` or of ``maxLength: 1200``. llama-cpp-python hands the refused
(NULL) sampler on to the sampler chain, and the process dies of SIGSEGV: one request to
the gateway with such a schema took ``switchyard serve`` down. A refused grammar is
replaced by the next, looser one; the schema is still enforced after decoding.
"""

from __future__ import annotations

import json
import logging
import re
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
#: the deepest nesting of groups llama.cpp's parser takes (measured: a string of
#: ``maxLength`` 1000 nests 1000 deep and is taken; 1001 is refused)
GRAMMAR_DEPTH_MAX = 1000

_log = logging.getLogger(__name__)
#: GBNF's literals, character classes and comments: brackets in them are not groups
_NOT_GROUPS = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*')
_GROUP = re.compile(r"[()]")


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
            text = llama_grammar.json_schema_to_gbnf(json.dumps(candidate))
        except Exception:  # the converter raises AssertionError, KeyError, ValueError...
            continue
        built = llama_grammar.LlamaGrammar.from_string(json_string_chars(text), verbose=False)
        if parser_accepts(shared, built):
            grammar = built
            break
    if grammar is None:
        _log.warning("no grammar llama.cpp accepts for this schema: any JSON, validated after")
        grammar = llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF, verbose=False)
    shared.grammars[key] = grammar
    return grammar


#: llama-cpp-python's converter lets a string hold any character but ``"`` and ``\``,
#: raw newlines too, which JSON forbids: the 135M tutor wrote one, and its reply was
#: refused as invalid JSON twice. Its own JSON grammar (and llama.cpp's converter) leave
#: out the control characters; so does this.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def json_string_chars(gbnf: str) -> str:
    """The converter's grammar, its strings held to JSON's characters."""
    return gbnf.replace(_LOOSE_CHAR, _JSON_CHAR)


def parser_accepts(shared: SharedModel, grammar: Any) -> bool:
    """Would llama.cpp take ``grammar``? Too deep a nesting is refused here, before the
    native parser sees it (it prints the whole grammar to the terminal when it refuses
    one, over the workbench's screen); anything else is asked of the parser itself, with
    the model's vocabulary, as the sampler chain will ask it."""
    if gbnf_depth(grammar._grammar) > GRAMMAR_DEPTH_MAX:
        return False
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(
        shared.llama._model.vocab, grammar._grammar.encode(), grammar._root.encode()
    )
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def gbnf_depth(text: str) -> int:
    """How deep the groups of GBNF ``text`` nest (brackets inside literals, character
    classes and comments are text, not groups)."""
    depth = deepest = 0
    for bracket in _GROUP.findall(_NOT_GROUPS.sub("", text)):
        depth += 1 if bracket == "(" else -1
        deepest = max(deepest, depth)
    return deepest


def gbnf_grammar(shared: SharedModel, text: str) -> Any:
    """A llama.cpp grammar from GBNF text (the edit format's), cached per model; None when
    llama.cpp would refuse it (the reply is then unconstrained, and its parser still
    checks it)."""
    key = "gbnf:" + text
    if key not in shared.grammars:
        from llama_cpp import llama_grammar

        built: Any = llama_grammar.LlamaGrammar.from_string(text, verbose=False)
        if not parser_accepts(shared, built):
            _log.warning("llama.cpp refuses this grammar: the reply is not constrained")
            built = None
        shared.grammars[key] = built
    return shared.grammars[key]
