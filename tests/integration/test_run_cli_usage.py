"""``switchyard run``'s usage errors: exit 2 before any run, bundle or model call."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli.main import main
from tests.integration.test_workspace_repo import make_repo


@pytest.mark.parametrize("task", ["", "   ", "\n\t "])
def test_a_blank_task_is_a_usage_error_and_starts_no_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str
) -> None:
    """A whitespace-only task was taken: a run was created and sealed, and with tests in
    the repo the whole pipeline would have planned an empty task."""
    repo = make_repo(tmp_path)
    assert main(["run", task, "--repo", str(repo), "--approve", "deny"]) == 2
    assert capsys.readouterr().err.splitlines() == ["switchyard: a TASK is required (or --demo)"]
    assert not (repo / ".switchyard" / "runs").exists()
