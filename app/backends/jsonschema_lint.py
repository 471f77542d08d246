"""What is wrong with a JSON schema itself, before anything is asked to fit it.

A schema given by a user (``switchyard ask --schema``) or a client (the gateway's
``response_format`` / ``text.format``) drives the grammar and the check after decoding.
A misspelt type (``"strin"``) made both quietly accept anything: llama.cpp's converter
refused it, any JSON was allowed, and the check after had no type to hold the reply to.
These are the mistakes :mod:`app.backends.jsonschema_check` would otherwise read past;
keywords it does not know are left alone (a schema may carry more than it checks), and
``pattern`` is not compiled (JSON schema's regexes are ECMA-262's, not Python's).
"""

from __future__ import annotations

from typing import Any, TypeGuard

__all__ = ["schema_problem", "schema_problems"]

TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_BOUNDS = ("minimum", "maximum")
_EXCLUSIVE = ("exclusiveMinimum", "exclusiveMaximum")  # numbers, or draft 4's booleans
_ONE_SCHEMA = ("additionalProperties", "items", "not", "contains")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")


def schema_problems(schema: Any, where: str = "schema") -> list[str]:
    """Every problem found, each as ``where.path: what is wrong``; empty when none."""
    out: list[str] = []
    _walk(schema, where, out, 0)
    return out


def schema_problem(schema: Any, where: str = "schema") -> str | None:
    """The first problem, saying how many more there are; None for a sound schema."""
    problems = schema_problems(schema, where)
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def _walk(node: Any, where: str, out: list[str], depth: int) -> None:
    if isinstance(node, bool):
        return  # true / false are schemas
    if not isinstance(node, dict):
        out.append(f"{where}: expected a schema (an object or true/false), got {_kind(node)}")
        return
    if depth > 64:
        out.append(f"{where}: nested more than 64 deep")
        return
    _type(node, where, out)
    for key in _COUNTS:
        value = node.get(key)
        if key in node and not (_is_int(value) and value >= 0):
            out.append(f"{where}.{key}: expected a whole number ≥ 0, got {_shown(value)}")
    for key in _BOUNDS:
        if key in node and not _is_number(node[key]):
            out.append(f"{where}.{key}: expected a number, got {_shown(node[key])}")
    for key in _EXCLUSIVE:
        value = node.get(key)
        if key in node and not (_is_number(value) or isinstance(value, bool)):
            out.append(f"{where}.{key}: expected a number, got {_shown(value)}")
    if "multipleOf" in node and not (_is_number(node["multipleOf"]) and node["multipleOf"] > 0):
        out.append(f"{where}.multipleOf: expected a number > 0, got {_shown(node['multipleOf'])}")
    required = node.get("required")
    if "required" in node and not (
        isinstance(required, list) and all(isinstance(r, str) for r in required)
    ):
        out.append(f"{where}.required: expected a list of property names")
    if "enum" in node and not isinstance(node["enum"], list):
        out.append(f"{where}.enum: expected a list, got {_shown(node['enum'])}")
    if "pattern" in node and not isinstance(node["pattern"], str):
        out.append(f"{where}.pattern: expected a string, got {_shown(node['pattern'])}")
    for key in _ONE_SCHEMA:
        if key in node:
            child = node[key]
            if key == "items" and isinstance(child, list):  # draft 4's tuple form
                for i, item in enumerate(child):
                    _walk(item, f"{where}.items[{i}]", out, depth + 1)
            else:
                _walk(child, f"{where}.{key}", out, depth + 1)
    for key in _SCHEMA_LISTS:
        if key in node:
            children = node[key]
            if not isinstance(children, list) or not children:
                out.append(f"{where}.{key}: expected a non-empty list of schemas")
                continue
            for i, child in enumerate(children):
                _walk(child, f"{where}.{key}[{i}]", out, depth + 1)
    for key in _SCHEMA_MAPS:
        if key in node:
            children = node[key]
            if not isinstance(children, dict):
                out.append(f"{where}.{key}: expected an object of schemas, got {_kind(children)}")
                continue
            for name, child in children.items():
                _walk(child, f"{where}.{key}.{name}", out, depth + 1)


def _type(node: dict[str, Any], where: str, out: list[str]) -> None:
    if "type" not in node:
        return
    given = node["type"]
    names = given if isinstance(given, list) else [given]
    if not names:
        out.append(f"{where}.type: expected a type or a non-empty list of types")
    for name in names:
        if name not in TYPES:
            out.append(
                f"{where}.type: {_shown(name)} is not a JSON schema type ({', '.join(TYPES)})"
            )


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else _shown(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
