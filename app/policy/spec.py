"""The §8 "Model & Runtime (Spec Overrides)" block of a spec: what a run takes from it.

`switchyard run --spec FILE` applies local_only, HR and the overrides; the compliance
lint (`switchyard spec lint`, :mod:`app.policy.spec_lint`) checks the rest of the block
against the policy. Every line of the block is kept as an :class:`SpecEntry` (its
section, key, raw value and line number in the file), and both read the block only
through these entries and the readers below (:func:`read_bool`, :func:`read_yes_no`):
a second reader once let the lint pass ``local_only = true`` where the run applied a
later ``local_only = false`` on a prose line, and ``HR = YES!`` be YES to the lint and
unset for the run.

Two forms exist (seed §8): the full one (roles YES/NO, routing mode, thresholds, tiers,
privacy, High-Risk, overrides) and the infrastructure-only one ("Roles exercised: none").
The parser never raises on odd text: it only records what it recognises.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.errors import UsageError

HEADING = re.compile(r"^#{1,6}\s*Model\s*&\s*Runtime\s*\(Spec Overrides\)\s*$", re.I)
_LOCAL_ONLY = re.compile(r"local_only\s*=\s*(\S+)", re.I)
# applied to stripped lines only: "^\s*-?\s*" would backtrack quadratically on long blank runs
_HR = re.compile(r"^-?\s*HR\s*=\s*(\S+)", re.I)
_POLICY = re.compile(r"^Policy:\s*(\S+)\s*\(version:\s*([^)]+)\)", re.I)
_POLICY_LINE = re.compile(r"^\s*Policy\s*:\s*(.*)$", re.I)
_ITEM = re.compile(r"^\s*[-*+]\s+(.*)$")
# keys are bounded and stripped afterwards (no "\s*" next to a class holding spaces)
_KEY_VALUE = re.compile(r"^([^:=]{1,80}):(.*)$")
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_ -]{0,40})=(.*)$")
_SECTION = re.compile(r"^([A-Za-z][^:]{0,80}):\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_ROLES_NONE = re.compile(r"^\s*Roles exercised\s*:", re.I)
#: the infrastructure-only form's own words, "This spec is **infrastructure-only**" (the
#: word anywhere, "this change is not infrastructure-only" too, read as the form: an audit)
_INFRA_ONLY = re.compile(r"\bspec\s+is\s+[*_`]*infrastructure-only", re.I)
_WORD = re.compile(r"^\s*[*`_]*(?P<word>[A-Za-z]+(?:/[A-Za-z]+)?)")
#: sections whose lines are not the block's own settings (a role named "HR" is a role)
_LISTS = ("roles", "tiers", "overrides")

Form = Literal["full", "infrastructure_only"]
#: sections of the full form, by the first words of their header line
SECTIONS = (
    ("roles exercised", "roles"),
    ("primary tiers", "tiers"),
    ("tiers", "tiers"),
    ("privacy", "privacy"),
    ("high-risk", "high_risk"),
    ("high risk", "high_risk"),
    ("overrides", "overrides"),
)


class SpecError(UsageError):
    """A spec file the program cannot work with: missing, unreadable, or without a block."""


class SpecEntry(BaseModel):
    """One recognised line of the block."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: "" at the top level, else roles | tiers | privacy | high_risk | overrides | other
    section: str
    #: normalised key: "policy", "routing mode", "architect/planner", "fast_local",
    #: "local_only", "hr", ... ("" for a bare list item, e.g. an override)
    key: str
    #: the key as written
    name: str
    #: the raw value after ``:`` or ``=`` (for local_only: without its ``#`` comment)
    value: str
    #: line number in the file (1-based)
    line: int


class SpecBlock(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    start_line: int
    lines: list[str]
    policy_ref: str | None = None
    policy_version: str | None = None
    infrastructure_only: bool = False
    #: every recognised line, in order (what the compliance lint reads)
    entries: list[SpecEntry] = Field(default_factory=list)
    #: a second "Model & Runtime (Spec Overrides)" heading in the same file, if any
    duplicate_heading_line: int | None = None

    @property
    def form(self) -> Form:
        return "infrastructure_only" if self.infrastructure_only else "full"

    def find(self, key: str, section: str | None = None) -> list[SpecEntry]:
        """Entries with this normalised key (in this section, when given)."""
        return [
            e for e in self.entries if e.key == key and (section is None or e.section == section)
        ]

    def section(self, name: str) -> list[SpecEntry]:
        return [e for e in self.entries if e.section == name]

    def settings(self, key: str) -> list[SpecEntry]:
        """The block's own lines with this key (not a role, tier or override item): the
        first is the one read; the lint reports the others as repeated."""
        return [e for e in self.find(key) if e.section not in _LISTS]

    def _first(self, key: str) -> SpecEntry | None:
        found = self.settings(key)
        return found[0] if found else None

    @property
    def local_only(self) -> bool | None:
        """``local_only = true|false`` (None: missing or not a boolean)."""
        entry = self._first("local_only")
        return read_bool(entry.value) if entry is not None else None

    @property
    def high_risk(self) -> bool | None:
        """``HR = YES|NO`` (None: missing, ``YES/NO`` (the classifier decides) or unread)."""
        entry = self._first("hr")
        return read_yes_no(entry.value) if entry is not None else None

    @property
    def overrides(self) -> list[str]:
        """The Overrides list's items, the template's placeholders and "none" left out."""
        return [e.value for e in self.section("overrides") if not is_none(e.value)]

    @property
    def tier2(self) -> bool | None:
        """``Stage0 Tier2 (NotebookLM): YES`` opts the run in to Tier2 (None: not said)."""
        for entry in self.find("stage0 tier2 (notebooklm)", "roles"):
            return read_yes_no(entry.value)
        return None

    @property
    def full_sweep(self) -> bool | None:
        """``Librarian full sweep: YES`` asks the Librarian to sweep the whole repository
        for the run's brief (its §3 ``full_sweep`` trigger; None: not said)."""
        entry = self._first("librarian full sweep")
        return read_yes_no(entry.value) if entry is not None else None


def normalise_key(text: str) -> str:
    """Lower case, markdown emphasis and backticks gone, inner spaces single."""
    t = text.replace("*", "").replace("`", "").strip().lower()
    return re.sub(r"\s+", " ", t)


def clean_value(text: str) -> str:
    """A value without markdown emphasis, backticks and surrounding space."""
    return text.replace("**", "").replace("`", "").strip()


def find_block(text: str, path: str) -> SpecBlock:
    """The block's lines (from its heading to the next heading of the same or higher level).

    A block in a code fence is an example (the policy itself shows the template in one)
    when the spec has one outside a fence: that one is read, and the example was (its
    ``- budget: session $1`` applied, the real block only warned about: a CLI audit). A
    spec whose only block is fenced is the template pasted with its fence, read as before.
    """
    lines = text.splitlines()
    fenced = _fenced(lines)
    heads = [i for i, line in enumerate(lines) if HEADING.match(line.strip())]
    if not heads:
        raise SpecError(f"{path}: no '## Model & Runtime (Spec Overrides)' block")
    outside = [i for i in heads if not fenced[i]]
    candidates = outside or heads
    i = candidates[0]
    level = len(lines[i]) - len(lines[i].lstrip("#"))
    end = len(lines)
    for j in range(i + 1, len(lines)):
        if outside and fenced[j]:
            continue  # (a heading in an example inside the block does not end it)
        heading = re.match(r"^(#{1,6})\s", lines[j])
        if heading and len(heading[1]) <= level:  # the next section of this rank
            end = j
            break
    duplicate = next((k + 1 for k in candidates if k >= end), None)
    block = lines[i:end]
    if outside:  # an example fenced inside the block is not read either (blank: lines kept)
        block = ["" if fenced[k] else line for k, line in enumerate(block, start=i)]
    return _parse(path, i + 1, block, duplicate)


_OPENING = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _fenced(lines: list[str]) -> list[bool]:
    """Whether each line is in a code fence (the fence's own lines included), as CommonMark
    reads fences: one is closed by a line of the same character, at least as long, and
    nothing after it (a ``` line inside a ~~~ fence is its text)."""
    out: list[bool] = []
    opened: str | None = None
    for line in lines:
        m = _OPENING.match(line)
        if opened is None:
            if m:
                opened = m[1]
            out.append(opened is not None)
        else:
            out.append(True)
            if (
                m
                and m[1][0] == opened[0]
                and len(m[1]) >= len(opened)
                and not line[m.end() :].strip()
            ):
                opened = None
    return out


def first_word(text: str) -> str:
    """The value's first word (or ``YES/NO``), upper-cased, past any markdown emphasis."""
    m = _WORD.match(text)
    return m["word"].upper() if m else ""


def read_bool(raw: str) -> bool | None:
    """``true`` / ``false`` (past emphasis and a trailing comma or full stop), else None."""
    word = clean_value(raw).rstrip(",;.").lower()
    return {"true": True, "false": False}.get(word)


def read_yes_no(raw: str) -> bool | None:
    """YES / NO by the value's first word (``YES (if YES → cloud Judge required)``), else
    None (``YES/NO`` among them)."""
    word = first_word(clean_value(raw))
    return True if word == "YES" else False if word == "NO" else None


def is_none(value: str) -> bool:
    """``none``, ``<none | list>`` (the template left as it is), ``n/a``."""
    v = clean_value(value).lower().replace(" ", "")
    return v in ("none", "<none|list>", "<none>", "n/a", "")


def _section_of(header: str) -> str:
    h = normalise_key(header)
    for prefix, name in SECTIONS:
        if h.startswith(prefix):
            return name
    return "other"


def _entries(start: int, lines: list[str]) -> list[SpecEntry]:
    out: list[SpecEntry] = []
    section = ""

    def add(sec: str, name: str, value: str, n: int) -> None:
        out.append(
            SpecEntry(section=sec, key=normalise_key(name), name=name.strip(), value=value, line=n)
        )

    for i, raw in enumerate(lines[1:], start=1):
        n = start + i
        if _FENCE.match(raw):  # (a fence's own line; what is fenced, find_block blanks)
            continue
        line = raw.strip()
        if not line:
            continue  # a blank line does not end a list
        item = _ITEM.match(raw)
        if item is not None:
            body = item[1].strip()
            if "local_only" in body.lower():
                m = _LOCAL_ONLY.search(body.split("#", 1)[0])
                add("privacy", "local_only", m[1] if m else "", n)
                continue
            if m := _HR.match(body):
                add("high_risk", "HR", body.split("=", 1)[1].strip(), n)
                continue
            if section == "overrides":
                add(section, "", body, n)
                continue
            if m := _KEY_VALUE.match(body):
                add(section or "other", m[1], m[2].strip(), n)
            else:
                add(section or "other", "", body, n)
            continue
        section = ""
        if m := _POLICY_LINE.match(line):
            add("", "Policy", m[1].strip(), n)
            continue
        if "local_only" in line.lower():
            m = _LOCAL_ONLY.search(line.split("#", 1)[0])
            add("", "local_only", m[1] if m else "", n)
            continue
        if _HR.match(line):
            add("", "HR", line.split("=", 1)[1].strip(), n)
            continue
        if m := _SECTION.match(line):
            section = _section_of(m[1])
            add("", m[1], "", n)
            continue
        if m := _KEY_VALUE.match(line):
            add("", m[1], m[2].strip(), n)
            continue
        if m := _ASSIGN.match(line):
            add("", m[1], m[2].strip(), n)
            continue
        add("", "", line, n)  # prose (e.g. "This spec is **infrastructure-only** ...")
    return out


def _parse(path: str, start: int, lines: list[str], duplicate: int | None = None) -> SpecBlock:
    data: dict[str, object] = {"path": path, "start_line": start, "lines": lines}
    for line in lines:
        if m := _POLICY.match(line.strip()):
            data["policy_ref"], data["policy_version"] = m[1].strip("`"), m[2].strip()
        lowered = line.lower()
        if _INFRA_ONLY.search(line) or (
            _ROLES_NONE.match(line) and "none" in lowered.split(":", 1)[1]
        ):
            data["infrastructure_only"] = True
    data["entries"] = _entries(start, lines)
    data["duplicate_heading_line"] = duplicate
    return SpecBlock.model_validate(data)


#: the largest spec read (a spec is a document; 200 MB took 0.8 GB to lint)
MAX_SPEC_BYTES = 1 << 20


class TooLarge(ValueError):
    """A file larger than a spec (its text says by how much)."""


def spec_text(path: Path) -> str:
    """A spec file's text, as every reader takes it: UTF-8, at most MAX_SPEC_BYTES.
    Raises OSError, UnicodeDecodeError or :class:`TooLarge` (:func:`read_problem` words
    each)."""
    with path.open("rb") as f:
        data = f.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise TooLarge(f"larger than a spec ({MAX_SPEC_BYTES:,} bytes at most)")
    return data.decode("utf-8")


def read_spec(path: Path) -> SpecBlock:
    try:
        text = spec_text(path)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not a spec file") from None
    except TooLarge as exc:
        raise SpecError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read spec: {read_problem(exc)}") from None
    return find_block(text, str(path))


def read_problem(exc: Exception) -> str:
    """Why a spec could not be read, in a line's words."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
