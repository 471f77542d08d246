"""The CLI's one audit-line renderer: a colour for every kind, and what a line shows."""

from __future__ import annotations

import io

from rich.console import Console

from app.audit.types import AUDIT_KINDS, AuditLine
from app.cli import audit_lines


def _line(kind: str = "repair", **fields: object) -> AuditLine:
    data: dict[str, object] = {
        "seq": 42,
        "ts": "2026-01-01T12:00:00.000000Z",
        "session": "s1",
        "kind": kind,
        "role": "architect",
        "reason_codes": ["SCHEMA_MISMATCH"],
        "detail": "[bold]one repair[/] asked",
        "prev_hash": "0" * 64,
        "hash": "1" * 64,
    }
    data.update(fields)
    return AuditLine.model_validate(data)


def test_every_kind_has_a_colour_and_no_colour_is_for_a_kind_that_does_not_exist() -> None:
    assert set(audit_lines.KIND_STYLES) == set(AUDIT_KINDS)
    assert all(audit_lines.kind_style(kind) for kind in AUDIT_KINDS)
    assert audit_lines.kind_style("no_such_kind") == ""


def test_brief_shows_seq_kind_and_detail_with_the_kind_coloured() -> None:
    text = audit_lines.brief(_line(), prefix="audit ")
    assert text.plain.startswith("audit #42 ")
    assert "repair" in text.plain and text.plain.endswith(" [bold]one repair[/] asked")
    kind_at = text.plain.index("repair")
    assert any(
        span.start == kind_at and span.style == audit_lines.KIND_STYLES["repair"]
        for span in text.spans
    )


def test_brief_falls_back_to_the_reason_codes() -> None:
    assert audit_lines.brief(_line(detail="")).plain.endswith(" SCHEMA_MISMATCH")


def test_full_shows_time_role_route_codes_and_detail() -> None:
    plain = audit_lines.full(_line("route", from_="qwen14b", to="qwen32b")).plain
    assert plain.startswith("   42 2026-01-01 12:00:00 route")
    for part in ("architect", "qwen14b → qwen32b", "[SCHEMA_MISMATCH]", "[bold]one repair[/]"):
        assert part in plain


def test_print_brief_filters_by_kind_and_never_reads_details_as_markup() -> None:
    buf = io.StringIO()
    out = Console(file=buf, width=200, color_system=None, highlight=False)
    lines = [_line("call", seq=1), _line("denial", seq=2, detail="[red]no[/]")]
    audit_lines.print_brief(out, lines, kinds=("denial",))
    assert buf.getvalue().splitlines() == [
        f"  #2     {'denial':<{audit_lines.KIND_WIDTH}} [red]no[/]"
    ]


def test_a_detail_over_several_lines_is_shown_on_one() -> None:
    """A detail holding a model's or a test's words printed over three lines in `audit
    tail`, read as three entries and broke `| grep`."""
    line = _line(detail="reply rejected:\nExpecting value\r\nline 1 column 1")
    for text in (audit_lines.full(line), audit_lines.brief(line)):
        assert "\n" not in text.plain and "\r" not in text.plain
        assert "reply rejected:⏎Expecting value⏎line 1 column 1" in text.plain
    out = io.StringIO()
    Console(file=out, width=200).print(audit_lines.full(line))
    assert out.getvalue().count("\n") == 1
