"""A small JSON-schema validator for the subset pydantic emits (GR-012 post-validation).

A llama.cpp grammar makes a model write JSON of the right *shape*, but a grammar cannot
count or compare: ``minimum``/``maximum``, ``minLength``, ``uniqueItems`` and friends are
checked here, after decoding. The ``jsonschema`` package is not a dependency of ours (it
may sit in the venv as someone else's dependency; we do not lean on that).

Supported: ``type`` (one or a list), ``enum``, ``const``, ``properties``, ``required``,
``additionalProperties``, ``minProperties``/``maxProperties``, ``items``,
``prefixItems``, ``minItems``/``maxItems``, ``uniqueItems``, ``minimum``/``maximum``,
``exclusiveMinimum``/``exclusiveMaximum`` (numbers, draft 6+), ``multipleOf``,
``minLength``/``maxLength``, ``pattern``, local ``$ref`` (``#``, ``#/$defs/..``,
``#/definitions/..``), ``anyOf``, ``oneOf``, ``allOf``. Annotations (title, description,
default, format, examples) are ignored, as a validator should.

Paths read like ``$.steps[0].title``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.counted import counted

__all__ = ["SchemaViolation", "Violation", "errors", "validate"]

# A schema that refers to itself without descending into the instance would loop.
_MAX_DEPTH = 256
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Violation:
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class SchemaViolation(ValueError):
    """The instance does not satisfy the schema; ``violations`` lists every problem."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        super().__init__(str(violations[0]) if violations else "schema violation")


def validate(instance: Any, schema: Mapping[str, Any]) -> None:
    """Raise :class:`SchemaViolation` (first problem in its message) if ``instance`` fails."""
    found = errors(instance, schema)
    if found:
        raise SchemaViolation(found)


def errors(instance: Any, schema: Mapping[str, Any]) -> list[Violation]:
    """Every violation, in document order; empty when the instance is valid."""
    out: list[Violation] = []
    _Checker(schema).check(instance, schema, "$", out, 0)
    return out


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, name: str) -> bool:
    # bool is an int in Python but never a number in JSON
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    return False


def _type_error(v: Violation, path: str) -> bool:
    return v.path == path and v.problem.startswith("expected ")


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if _IDENT.match(key) else f"{path}[{json.dumps(key)}]"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(type(a) is type(b) and a == b)


class _Checker:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, ref: str) -> Mapping[str, Any] | None:
        if ref == "#":
            return self.root
        if not ref.startswith("#/"):
            return None  # remote refs are not followed: a model's schema is self-contained
        node: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node if isinstance(node, Mapping) else None

    def check(
        self,
        value: Any,
        schema: Mapping[str, Any] | bool,
        path: str,
        out: list[Violation],
        depth: int,
    ) -> None:
        if schema is True:
            return
        if schema is False:
            out.append(Violation(path, "no value is allowed here"))
            return
        if depth > _MAX_DEPTH:
            out.append(Violation(path, "schema nests too deeply (a $ref cycle?)"))
            return
        if not isinstance(schema, Mapping):
            return  # a malformed subschema constrains nothing; the grammar step would fail first

        ref = schema.get("$ref")
        if isinstance(ref, str):
            target = self.resolve(ref)
            if target is None:
                out.append(Violation(path, f"unresolvable $ref {ref!r}"))
            else:
                self.check(value, target, path, out, depth + 1)

        self._combinators(value, schema, path, out, depth)

        types = schema.get("type")
        if types is not None:
            names = [types] if isinstance(types, str) else list(types)
            if not any(_is_type(value, t) for t in names):
                want = " or ".join(names)
                out.append(Violation(path, f"expected {want}, got {_type_name(value)}"))
                return  # the keywords below would only repeat the type error

        if "const" in schema and not _same(value, schema["const"]):
            out.append(Violation(path, f"must be {_short(schema['const'])}"))
        if "enum" in schema and not any(_same(value, v) for v in schema["enum"]):
            allowed = ", ".join(_short(v) for v in schema["enum"])
            out.append(Violation(path, f"{_short(value)} is not one of {allowed}"))

        if _is_type(value, "number"):
            self._number(value, schema, path, out)
        elif isinstance(value, str):
            self._string(value, schema, path, out)
        elif isinstance(value, list):
            self._array(value, schema, path, out, depth)
        elif isinstance(value, dict):
            self._object(value, schema, path, out, depth)

    def _combinators(
        self, value: Any, schema: Mapping[str, Any], path: str, out: list[Violation], depth: int
    ) -> None:
        for sub in schema.get("allOf", []):
            self.check(value, sub, path, out, depth + 1)
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if not isinstance(branches, list) or not branches:
                continue
            results: list[list[Violation]] = []
            for sub in branches:
                found: list[Violation] = []
                self.check(value, sub, path, found, depth + 1)
                results.append(found)
            matched = sum(1 for r in results if not r)
            if key == "oneOf" and matched > 1:
                out.append(Violation(path, f"matches {matched} of the oneOf shapes, not exactly 1"))
            elif matched == 0:
                # Optional[X] is anyOf [X, null]: the branch whose type fits explains best
                typed = [r for r in results if not any(_type_error(v, path) for v in r)]
                if len(typed) == 1:
                    out.extend(typed[0])
                else:
                    out.append(Violation(path, f"matches none of the {len(branches)} {key} shapes"))

    def _number(
        self, value: float, schema: Mapping[str, Any], path: str, out: list[Violation]
    ) -> None:
        if not math.isfinite(value):
            out.append(Violation(path, f"{value} is not a finite number"))
            return
        lo, hi = schema.get("minimum"), schema.get("maximum")
        xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if isinstance(lo, int | float) and value < lo:
            out.append(Violation(path, f"{value} is less than the minimum {lo}"))
        if isinstance(hi, int | float) and value > hi:
            out.append(Violation(path, f"{value} is greater than the maximum {hi}"))
        # draft 4 used booleans here; pydantic emits numbers (draft 2020-12)
        if isinstance(xlo, int | float) and not isinstance(xlo, bool) and value <= xlo:
            out.append(Violation(path, f"{value} must be greater than {xlo}"))
        if isinstance(xhi, int | float) and not isinstance(xhi, bool) and value >= xhi:
            out.append(Violation(path, f"{value} must be less than {xhi}"))
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and step > 0:
            q = value / step
            if not math.isclose(q, round(q), rel_tol=1e-9, abs_tol=1e-9):
                out.append(Violation(path, f"{value} is not a multiple of {step}"))

    def _string(
        self, value: str, schema: Mapping[str, Any], path: str, out: list[Violation]
    ) -> None:
        n = len(value)  # code points, as JSON Schema counts
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if isinstance(lo, int) and n < lo:
            out.append(Violation(path, f"string of length {n} is shorter than minLength {lo}"))
        if isinstance(hi, int) and n > hi:
            out.append(Violation(path, f"string of length {n} is longer than maxLength {hi}"))
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            try:
                ok = re.search(pattern, value) is not None  # JSON Schema patterns are unanchored
            except re.error:
                out.append(Violation(path, f"schema pattern {pattern!r} is not a valid regex"))
            else:
                if not ok:
                    out.append(Violation(path, f"{_short(value)} does not match {pattern!r}"))

    def _array(
        self, value: list[Any], schema: Mapping[str, Any], path: str, out: list[Violation], d: int
    ) -> None:
        n = len(value)
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        if isinstance(lo, int) and n < lo:
            out.append(Violation(path, f"{counted(n, 'item')}, fewer than minItems {lo}"))
        if isinstance(hi, int) and n > hi:
            out.append(Violation(path, f"{counted(n, 'item')}, more than maxItems {hi}"))
        prefix = schema.get("prefixItems")
        start = 0
        if isinstance(prefix, list):
            for i, (item, sub) in enumerate(zip(value, prefix, strict=False)):
                self.check(item, sub, f"{path}[{i}]", out, d + 1)
            start = len(prefix)
        items = schema.get("items")
        if isinstance(items, Mapping | bool):
            for i in range(start, n):
                self.check(value[i], items, f"{path}[{i}]", out, d + 1)
        if schema.get("uniqueItems") is True:
            for i in range(n):
                for j in range(i):
                    if _same(value[i], value[j]):
                        out.append(Violation(f"{path}[{i}]", f"duplicates item {j}"))
                        break

    def _object(
        self,
        value: dict[str, Any],
        schema: Mapping[str, Any],
        path: str,
        out: list[Violation],
        d: int,
    ) -> None:
        for key in schema.get("required", []):
            if key not in value:
                out.append(Violation(_child(path, key), "required property is missing"))
        n = len(value)
        lo, hi = schema.get("minProperties"), schema.get("maxProperties")
        if isinstance(lo, int) and n < lo:
            out.append(Violation(path, f"{n} properties, fewer than minProperties {lo}"))
        if isinstance(hi, int) and n > hi:
            out.append(Violation(path, f"{n} properties, more than maxProperties {hi}"))
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if isinstance(props, Mapping) and key in props:
                self.check(item, props[key], _child(path, key), out, d + 1)
            elif extra is False:
                out.append(Violation(_child(path, key), "property is not allowed"))
            elif isinstance(extra, Mapping):
                self.check(item, extra, _child(path, key), out, d + 1)
