"""What the llama.cpp grammar is given: bounds it cannot enforce become enums, and
repetition bounds large enough to crash it (SIGSEGV seen at maxLength 40000) are dropped."""

from __future__ import annotations

from app.backends.llamacpp_grammar import GRAMMAR_REPEAT_MAX, bounded_as_enum
from app.pipeline.schemas import ImplementerOutput, Plan, schema_of


def test_confidence_becomes_a_grid_of_choices() -> None:
    out = bounded_as_enum({"type": "number", "minimum": 0, "maximum": 1})
    assert out["enum"][0] == 0 and out["enum"][-1] == 1 and len(out["enum"]) == 21
    assert "type" not in out and "maximum" not in out


def test_small_integer_ranges_become_enums_and_large_ones_stay() -> None:
    assert bounded_as_enum({"type": "integer", "minimum": 1, "maximum": 3}) == {"enum": [1, 2, 3]}
    wide = {"type": "integer", "minimum": 0, "maximum": 10_000}
    assert bounded_as_enum(wide) == wide


def test_huge_repetition_bounds_are_left_to_post_validation() -> None:
    schema = schema_of(ImplementerOutput)
    assert schema["properties"]["diff"]["maxLength"] > GRAMMAR_REPEAT_MAX
    narrowed = bounded_as_enum(schema)
    assert "maxLength" not in narrowed["properties"]["diff"]
    assert narrowed["properties"]["notes"]["maxLength"] == 500  # small bounds stay


def test_nested_schemas_are_walked() -> None:
    narrowed = bounded_as_enum(schema_of(Plan))
    assert "enum" in narrowed["properties"]["confidence"]
    assert narrowed["properties"]["steps"]["items"]["properties"]["title"]["maxLength"] == 160
