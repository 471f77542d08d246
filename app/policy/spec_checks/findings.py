"""What every check shares: the block, the loaded policy, and the findings so far."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from app.policy.loader import LoadedPolicy
from app.policy.schema import Policy
from app.policy.spec import SpecBlock, SpecEntry

Severity = Literal["error", "warning"]


class LintProblem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    line: int
    field: str
    message: str
    severity: Severity = "error"

    @field_validator("message")
    @classmethod
    def _masked(cls, message: str) -> str:
        """A finding quotes the spec's line: a key in it is not repeated."""
        from app.audit.masking import mask_text

        return mask_text(message)[0]

    def __str__(self) -> str:
        tag = "warning: " if self.severity == "warning" else ""
        return f"{self.path}:{self.line}: {tag}{self.field}: {_one_line(self.message)}"


def _one_line(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029]", " ", text)


class Findings:
    """One lint pass: what it reads, and the problems (and the spec's policy version) it
    has found so far. Problems name a line of the spec file; a missing line is reported
    on the block's heading."""

    def __init__(
        self,
        block: SpecBlock,
        loaded: LoadedPolicy,
        spec_dir: Path | None,
        *,
        session_local_only: bool = False,
    ) -> None:
        self.block = block
        self.loaded = loaded
        self.policy: Policy = loaded.policy
        #: who makes the session local_only whatever a spec says (None: nobody does)
        self.local_only_by: str | None = (
            "the policy has local_only = true"
            if self.policy.privacy.local_only
            else "this session is local_only (SWITCHYARD_LOCAL_ONLY, the config or the flag)"
            if session_local_only
            else None
        )
        self.spec_dir = spec_dir
        self.problems: list[LintProblem] = []
        self.spec_version: str | None = None
        self.heading = block.start_line

    def error(self, line: int, field: str, message: str) -> None:
        self.problems.append(
            LintProblem(path=self.block.path, line=line, field=field, message=message)
        )

    def warn(self, line: int, field: str, message: str) -> None:
        self.problems.append(
            LintProblem(
                path=self.block.path, line=line, field=field, message=message, severity="warning"
            )
        )

    def one(
        self, key: str, field: str, expected: str, *, required: bool = True
    ) -> SpecEntry | None:
        """The single entry with ``key``; missing or repeated ones are findings."""
        found = self.block.settings(key)  # the run reads found[0]: the same line
        if not found:
            if required:
                self.error(self.heading, field, f"missing line: {expected}")
            return None
        for dup in found[1:]:
            self.error(dup.line, field, f"repeated (first on line {found[0].line})")
        return found[0]
