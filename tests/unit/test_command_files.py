"""The files a test command runs, followed through what it reaches: `make test` reached
./check.sh through the Makefile, and a change that made it `exit 0` merged on a local
Judge's word."""

from __future__ import annotations

import os
from pathlib import Path

from app.pipeline.command_files import command_files


def _write(root: Path, rel: str, text: str, *, executable: bool = False) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if executable:
        os.chmod(path, 0o755)


def test_make_reaches_the_script_its_makefile_runs(tmp_path: Path) -> None:
    _write(tmp_path, "Makefile", "test:\n\t./check.sh\n\nlint:\n\truff check src/app.py\n")
    _write(tmp_path, "check.sh", '#!/bin/sh\nsh tools/run_all.sh "$@"\n', executable=True)
    _write(tmp_path, "tools/run_all.sh", "python3 -m pytest tests\n")
    _write(tmp_path, "src/app.py", "print('hi')\n")
    # src/app.py is named too (a .py word): too much is a cloud Judge's look, too little
    # a verdict the change wrote
    assert command_files(["make", "test"], tmp_path) == [
        "Makefile",
        "check.sh",
        "src/app.py",
        "tools/run_all.sh",
    ]


def test_a_shell_string_and_package_scripts_are_followed(tmp_path: Path) -> None:
    _write(tmp_path, "package.json", '{"scripts": {"test": "node scripts/test.mjs"}}\n')
    _write(tmp_path, "scripts/test.mjs", "import './helpers/run.js'\n")
    _write(tmp_path, "scripts/helpers/run.js", "process.exit(0)\n")
    _write(tmp_path, "ci/check", "exit 0\n", executable=True)
    assert command_files(["sh", "-c", "npm test && ci/check"], tmp_path) == [
        "ci/check",
        "package.json",
        "scripts/helpers/run.js",
        "scripts/test.mjs",
    ]


def test_data_files_and_files_outside_the_repository_are_not_followed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _write(repo, "check.sh", "cat data/expected.txt ../outside.sh /etc/passwd\n")
    _write(repo, "data/expected.txt", "42\n")
    _write(tmp_path, "outside.sh", "exit 0\n")
    assert command_files(["bash", "check.sh"], repo) == ["check.sh"]


def test_a_cycle_and_a_binary_end_the_search(tmp_path: Path) -> None:
    _write(tmp_path, "a.sh", "./b.sh\n")
    _write(tmp_path, "b.sh", "./a.sh\n")
    (tmp_path / "tool.bin").write_bytes(b"\x7fELF\0\0./a.sh")
    assert command_files(["./a.sh", "tool.bin"], tmp_path) == ["a.sh", "b.sh", "tool.bin"]


def test_a_script_that_runs_a_task_runner_and_shell_flags_are_followed(tmp_path: Path) -> None:
    """./run_tests.sh → `make test` → ci/real_check, and `bash -lc "make test"`, were not."""
    _write(tmp_path, "run_tests.sh", "#!/bin/sh\nmake test\n", executable=True)
    _write(tmp_path, "Makefile", "test:\n\t$(CURDIR)/ci/real_check\n")
    _write(tmp_path, "ci/real_check", "exit 0\n", executable=True)
    expected = ["Makefile", "ci/real_check"]
    assert command_files(["./run_tests.sh"], tmp_path) == [*expected, "run_tests.sh"]
    assert command_files(["bash", "-lc", "make test"], tmp_path) == expected
    assert command_files(["sh", "-euc", "make test"], tmp_path) == expected


def test_more_files_than_the_search_follows_is_said_not_hidden(tmp_path: Path) -> None:
    """Seventy sources named before `./check.sh` filled the search: the script was missed."""
    names = " ".join(f"src/m{i}.py" for i in range(70))
    _write(tmp_path, "Makefile", f"SRC = {names}\ntest:\n\t./check.sh\n")
    for i in range(70):
        _write(tmp_path, f"src/m{i}.py", "x = 1\n")
    _write(tmp_path, "check.sh", "exit 0\n", executable=True)
    assert command_files(["make", "test"], tmp_path) is None
