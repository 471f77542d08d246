"""``docs/json.md`` read as data: each command's ``--json`` fields, so that a test can hold
what a command prints to what the reference says (an undocumented field fails).

A field is named by its path, two levels deep at most: ``key``, ``key.sub`` (a key of an
object), ``key[].sub`` (a key of the objects in an array). Two patterns:

- ``key.<name>``: an object keyed by data (a provider, a model, a role): any key;
- ``key.*``: an open object (an audit line's ``values``): anything below it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "json.md"

_SECTION = re.compile(r"^### `switchyard (?P<command>[a-z0-9 ]+?)(?: \[[^`]*\])? --json`", re.M)
_ROW = re.compile(r"^\| `(?P<path>[^`]+)` \| (?P<type>[^|]+) \| (?P<meaning>[^|]+) \|$", re.M)


def paths(data: Mapping[str, Any]) -> set[str]:
    """Every field path of ``data``, two levels deep (the reference's own depth)."""
    out: set[str] = set()
    for key, value in data.items():
        out.add(key)
        if isinstance(value, Mapping):
            out.update(f"{key}.{sub}" for sub in value)
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, Mapping):
                    out.update(f"{key}[].{sub}" for sub in item)
    return out


@cache
def reference() -> dict[str, dict[str, str]]:
    """Each command (``"budget"``, ``"route explain"``) → its documented paths → their type."""
    return parse(REFERENCE.read_text(encoding="utf-8"))


def parse(text: str) -> dict[str, dict[str, str]]:
    """:func:`reference` of a text in docs/json.md's form."""
    found: dict[str, dict[str, str]] = {}
    heads = list(_SECTION.finditer(text))
    for n, head in enumerate(heads):
        end = heads[n + 1].start() if n + 1 < len(heads) else len(text)
        body = text[head.end() : end]
        rows = {m["path"]: m["type"].strip() for m in _ROW.finditer(body)}
        # a row the pattern cannot read (a "|" in its meaning) would drop out unseen
        written = sum(1 for line in body.splitlines() if line.startswith("| `"))
        if written != len(rows):
            raise ValueError(f"{REFERENCE}: {head['command']}: {written - len(rows)} row(s) unread")
        if head["command"] in found:
            raise ValueError(f"{REFERENCE}: {head['command']!r} documented twice")
        found[head["command"]] = rows
    return found


def _covers(pattern: str, path: str) -> bool:
    if pattern.endswith(".*"):
        return path.startswith(pattern[:-1])
    want, got = pattern.split("."), path.split(".")
    return len(want) == len(got) and all(
        w == g or (w.startswith("<") and w.endswith(">")) for w, g in zip(want, got, strict=True)
    )


def undocumented(command: str, outputs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The paths ``command``'s outputs hold that its section does not name."""
    documented = reference()[command]
    seen: set[str] = set()
    for data in outputs:
        seen |= paths(data)
    return sorted(p for p in seen if not any(_covers(d, p) for d in documented))


def problems(printed: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """One line per command whose outputs hold fields docs/json.md does not document."""
    by_command: dict[str, list[Mapping[str, Any]]] = {}
    for command, data in printed:
        by_command.setdefault(command, []).append(data)
    out = []
    for command, outputs in by_command.items():
        if command not in reference():
            out.append(f"docs/json.md has no section for `switchyard {command}`")
            continue
        missing = undocumented(command, outputs)
        if missing:
            out.append(f"`switchyard {command} --json` prints fields docs/json.md lacks: {missing}")
    return out


def assert_documented(command: str, *outputs: Mapping[str, Any]) -> None:
    """Fail naming each field of ``outputs`` that docs/json.md does not document."""
    found = problems((command, data) for data in outputs)
    assert not found, "; ".join(found)
