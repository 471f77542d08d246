"""A repository can ship its own ``.switchyard``: a planted manifest that is a link to
/dev/zero ate all memory in ``evidence verify``, and a FIFO hung ``evidence show``. Each
is now a file that cannot be read, said in one line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from app.cli.main import main

RUN = "20250101-000000-aaaaaa"


@pytest.mark.parametrize("kind", ["link-to-dev-zero", "fifo", "folder"])
def test_a_planted_manifest_is_no_manifest(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    bundle = repo / ".switchyard" / "runs" / RUN
    bundle.mkdir(parents=True)
    manifest = bundle / "manifest.json"
    if kind == "link-to-dev-zero":
        manifest.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(manifest)
    else:
        manifest.mkdir()
    assert main(["evidence", "verify", RUN, "--repo", str(repo)]) == 1
    said = capsys.readouterr()
    assert "manifest.json cannot be read" in said.out + said.err
    assert main(["evidence", "show", RUN, "--repo", str(repo)]) == 0
    said = capsys.readouterr()
    assert "manifest.json cannot be read" in said.out + said.err
