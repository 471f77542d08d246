"""The post-validation subset: what a llama.cpp grammar cannot enforce is caught here."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from app.backends.jsonschema_check import SchemaViolation, errors, validate


class Step(BaseModel):
    title: str = Field(min_length=3, max_length=20)
    kind: Literal["read", "edit", "test"]


class Plan(BaseModel):
    answer: str
    confidence: float = Field(ge=0, le=1)
    steps: list[Step] = Field(min_length=1, max_length=3)
    note: str | None = None
    retries: int = Field(default=0, gt=-1, lt=5)


PLAN = Plan.model_json_schema()
GOOD = {
    "answer": "Paris",
    "confidence": 0.9,
    "steps": [{"title": "read it", "kind": "read"}],
    "note": None,
}


def problems(value: object, schema: dict[str, object] = PLAN) -> list[str]:
    return [str(v) for v in errors(value, schema)]


def test_a_valid_pydantic_instance_passes() -> None:
    assert problems(GOOD) == []
    assert problems({**GOOD, "note": "ok", "retries": 4}) == []
    validate(GOOD, PLAN)


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"confidence": 1.5}, "$.confidence: 1.5 is greater than the maximum 1"),
        ({"confidence": -0.1}, "$.confidence: -0.1 is less than the minimum 0"),
        ({"confidence": "high"}, "$.confidence: expected number, got string"),
        ({"confidence": True}, "$.confidence: expected number, got boolean"),
        ({"steps": []}, "$.steps: 0 items, fewer than minItems 1"),
        ({"retries": 5}, "$.retries: 5 must be less than 5"),
        ({"retries": -1}, "$.retries: -1 must be greater than -1"),
        ({"retries": 1.5}, "$.retries: expected integer, got number"),
        ({"note": 3}, "$.note: matches none of the 2 anyOf shapes"),
    ],
)
def test_bounds_types_and_counts(patch: dict[str, object], expected: str) -> None:
    assert problems({**GOOD, **patch}) == [expected]


def test_refs_into_defs_are_followed_with_item_paths() -> None:
    bad = {**GOOD, "steps": [{"title": "ok!", "kind": "read"}, {"title": "no", "kind": "run"}]}
    assert problems(bad) == [
        "$.steps[1].title: string of length 2 is shorter than minLength 3",
        '$.steps[1].kind: "run" is not one of "read", "edit", "test"',
    ]


def test_required_and_additional_properties() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b c": {"type": "integer"}},
        "required": ["a", "b c"],
        "additionalProperties": False,
    }
    assert problems({"zz": 1}, schema) == [
        "$.a: required property is missing",
        '$["b c"]: required property is missing',
        "$.zz: property is not allowed",
    ]
    dict_schema = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
    assert problems({"x": 1, "y": -2}, dict_schema) == ["$.y: -2 is less than the minimum 0"]


def test_optional_reports_the_branch_that_fits_the_type() -> None:
    schema = {"anyOf": [{"type": "string", "maxLength": 2}, {"type": "null"}]}
    assert problems(None, schema) == []
    assert problems("abc", schema) == ["$: string of length 3 is longer than maxLength 2"]


def test_oneof_allof_const_pattern_unique_multiple() -> None:
    assert problems(3, {"oneOf": [{"type": "integer"}, {"type": "number"}]}) == [
        "$: matches 2 of the oneOf shapes, not exactly 1"
    ]
    assert problems(3, {"allOf": [{"minimum": 5}, {"maximum": 1}]}) == [
        "$: 3 is less than the minimum 5",
        "$: 3 is greater than the maximum 1",
    ]
    assert problems("b", {"const": "a"}) == ['$: must be "a"']
    assert problems("abc1", {"pattern": "^[a-z]+$"}) == ["$: \"abc1\" does not match '^[a-z]+$'"]
    assert problems("xx-abc-yy", {"pattern": "abc"}) == []  # unanchored, as JSON Schema says
    assert problems([1, 2, 1.0], {"uniqueItems": True}) == ["$[2]: duplicates item 0"]
    assert problems(0.3, {"multipleOf": 0.1}) == []
    assert problems(7, {"multipleOf": 5}) == ["$: 7 is not a multiple of 5"]


def test_json_equality_keeps_booleans_apart_from_numbers() -> None:
    assert problems(1, {"enum": [True]}) == ["$: 1 is not one of true"]
    assert problems(1.0, {"enum": [1]}) == []
    assert problems(2.0, {"type": "integer"}) == []


def test_prefix_items_and_tuple_paths() -> None:
    schema = {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "integer"}],
        "items": {"type": "boolean"},
    }
    assert problems(["a", 1, True, False], schema) == []
    assert problems([1, "x", "y"], schema) == [
        "$[0]: expected string, got integer",
        "$[1]: expected integer, got string",
        "$[2]: expected boolean, got string",
    ]


def test_bad_refs_and_cycles_are_reported_not_crashed() -> None:
    assert problems(1, {"$ref": "#/$defs/missing"}) == ["$: unresolvable $ref '#/$defs/missing'"]
    assert problems(1, {"$ref": "https://example.com/schema"})[0].startswith("$: unresolvable")
    loop = {"$defs": {"A": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"}
    assert problems(1, loop) == ["$: schema nests too deeply (a $ref cycle?)"]


def test_recursive_schema_descends_with_the_instance() -> None:
    class Node(BaseModel):
        name: str = Field(max_length=3)
        children: list[Node] = []

    schema = Node.model_json_schema()
    tree = {"name": "a", "children": [{"name": "b", "children": [{"name": "long"}]}]}
    assert problems(tree, schema) == [
        "$.children[0].children[0].name: string of length 4 is longer than maxLength 3"
    ]


def test_validate_raises_with_every_violation() -> None:
    with pytest.raises(SchemaViolation) as info:
        validate({"confidence": 2}, PLAN)
    assert str(info.value) == "$.answer: required property is missing"
    assert len(info.value.violations) == 3  # answer, steps missing; confidence too high
