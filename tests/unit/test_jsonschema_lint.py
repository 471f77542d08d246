"""A schema's own mistakes are named before anything is asked to fit it; a sound schema,
whatever else it carries, has none."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from app.backends.jsonschema_lint import schema_problems
from app.pipeline import schemas


@pytest.mark.parametrize(
    "model",
    [
        m
        for m in vars(schemas).values()
        if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == schemas.__name__
    ],
    ids=lambda m: m.__name__,
)
def test_every_schema_the_pipeline_sends_is_sound(model: type[BaseModel]) -> None:
    assert schema_problems(schemas.schema_of(model)) == []
    assert schema_problems(model.model_json_schema()) == []  # with its $defs and $refs


SOUND: list[Any] = [
    True,
    {},
    {"type": ["string", "null"], "format": "uri", "x-vendor": 1},  # unknown keywords: fine
    {"type": "number", "exclusiveMinimum": True, "minimum": 0},  # draft 4's boolean form
    {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},  # tuple form
    {"type": "string", "pattern": "^\\p{L}+$"},  # ECMA-262's regex, not Python's: not compiled
    {"anyOf": [{"$ref": "#/$defs/a"}, False], "$defs": {"a": {"type": "object"}}},
]


@pytest.mark.parametrize("schema", SOUND)
def test_sound_schemas_have_no_problems(schema: Any) -> None:
    assert schema_problems(schema) == []


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        (
            {"type": "object", "properties": {"a": {"type": "strin"}}},
            "schema.properties.a.type: 'strin' is not a JSON schema type",
        ),
        ({"type": ["string", "nul"]}, "schema.type: 'nul' is not a JSON schema type"),
        ({"type": []}, "schema.type: expected a type or a non-empty list of types"),
        ({"type": "string", "maxLength": -1}, "schema.maxLength: expected a whole number ≥ 0"),
        ({"type": "string", "maxLength": True}, "schema.maxLength: expected a whole number ≥ 0"),
        ({"type": "number", "minimum": "0"}, "schema.minimum: expected a number, got '0'"),
        ({"type": "number", "multipleOf": 0}, "schema.multipleOf: expected a number > 0"),
        ({"required": "a"}, "schema.required: expected a list of property names"),
        ({"enum": "a"}, "schema.enum: expected a list"),
        ({"properties": []}, "schema.properties: expected an object of schemas, got a list"),
        ({"anyOf": []}, "schema.anyOf: expected a non-empty list of schemas"),
        ({"items": "string"}, "schema.items: expected a schema (an object or true/false)"),
        (
            {"$defs": {"step": {"type": "obj"}}, "$ref": "#/$defs/step"},
            "schema.$defs.step.type: 'obj' is not a JSON schema type",
        ),
    ],
)
def test_each_mistake_is_named_with_where_it_is(schema: Any, problem: str) -> None:
    found = schema_problems(schema)
    assert found and found[0].startswith(problem), found


def test_every_mistake_is_found_not_only_the_first() -> None:
    schema = {"properties": {"a": {"type": "x"}, "b": {"minLength": -2}}, "required": [1]}
    assert len(schema_problems(schema)) == 3
