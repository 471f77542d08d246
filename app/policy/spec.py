"""The §8 "Model & Runtime (Spec Overrides)" block of a spec: what a run takes from it.

`switchyard run --spec FILE` applies local_only, HR and the overrides; the compliance
lint (`switchyard spec lint`) checks the rest of the block against the policy.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from app.errors import UsageError

HEADING = re.compile(r"^#{1,6}\s*Model\s*&\s*Runtime\s*\(Spec Overrides\)\s*$", re.I)
_LOCAL_ONLY = re.compile(r"local_only\s*=\s*(\S+)", re.I)
_HR = re.compile(r"^\s*-?\s*HR\s*=\s*(\S+)", re.I)
_POLICY = re.compile(r"^Policy:\s*(\S+)\s*\(version:\s*([^)]+)\)", re.I)


class SpecBlock(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    start_line: int
    lines: list[str]
    policy_ref: str | None = None
    policy_version: str | None = None
    local_only: bool | None = None
    high_risk: bool | None = None
    overrides: list[str] = Field(default_factory=list)
    infrastructure_only: bool = False


def find_block(text: str, path: str) -> SpecBlock:
    """The block's lines (from its heading to the next heading of the same or higher level)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if HEADING.match(line.strip()):
            level = len(line) - len(line.lstrip("#"))
            end = len(lines)
            for j in range(i + 1, len(lines)):
                heading = re.match(r"^(#{1,6})\s", lines[j])
                if heading and len(heading[1]) <= level:  # the next section of this rank
                    end = j
                    break
            return _parse(path, i + 1, lines[i:end])
    raise UsageError(f"{path}: no '## Model & Runtime (Spec Overrides)' block")


def _bool(raw: str) -> bool | None:
    word = raw.strip().strip("`").rstrip(",;").lower()
    return {"true": True, "false": False}.get(word)


def _parse(path: str, start: int, lines: list[str]) -> SpecBlock:
    data: dict[str, object] = {"path": path, "start_line": start, "lines": lines}
    overrides: list[str] = []
    in_overrides = False
    for line in lines:
        body = line.split("#", 1)[0] if "local_only" in line else line
        if m := _POLICY.match(line.strip()):
            data["policy_ref"], data["policy_version"] = m[1], m[2].strip()
        if m := _LOCAL_ONLY.search(body):
            data["local_only"] = _bool(m[1])
        if m := _HR.match(line):
            word = m[1].strip().upper()
            data["high_risk"] = True if word == "YES" else False if word == "NO" else None
        if "infrastructure-only" in line.lower():
            data["infrastructure_only"] = True
        if line.strip().lower().startswith("overrides"):
            in_overrides = True
            continue
        if in_overrides:
            item = line.strip()
            if item.startswith("-"):
                value = item[1:].strip()
                if value and value.lower() not in ("<none | list>", "none", "<none>"):
                    overrides.append(value)
            elif item:
                in_overrides = False
    data["overrides"] = overrides
    return SpecBlock.model_validate(data)


def read_spec(path: Path) -> SpecBlock:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read spec: {exc}") from None
    return find_block(text, str(path))
