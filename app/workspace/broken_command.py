"""Whether a test run says its command cannot run at all, rather than its tests failing.

Read on the baseline (loop 0, the run's base before any change): a command that cannot
run fails every loop whatever a model writes, and the run spent its Implementer calls,
two escalations and two second opinions on ``pytest --no-such-option`` (a user audit).
Once a model's change is in, the same exit is the change's doing (it broke the test
setup) and stays a failed loop.

Pure: the command and the run's result in, a reason (one line) or None out. Only what
surely says the command cannot run is read:

* exit 126 or 127, the shell's "cannot execute" and "not found", as every runner gives
  them: the program, or one it runs, is not there, or the sandbox could not load it (a
  memory limit too small for the loader: "libc.so.6: failed to map segment");
* bwrap refusing to start the program (``bwrap: execvp …``, exit 1), nothing else said;
* pytest's usage error (exit 4 with argparse's "usage: … error: …"): an option it does
  not know, given on the command line or in the project's addopts.

Not read as broken: pytest's exit 5 (no tests collected) and its other exit-4 cases (a
path given that is not there, a conftest that fails to import). The task may be to write
the first tests, or to mend what the conftest imports: the loops run, as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.paths import STATE_DIR_NAME
from app.workspace.pytest_summary import is_pytest, usage_error
from app.workspace.testcmd import CONFIG_FILE

if TYPE_CHECKING:
    from app.workspace.sandbox import SandboxResult

#: pytest's exit code for a usage error (its ExitCode.USAGE_ERROR)
PYTEST_USAGE = 4
#: the shell's codes, which the runners give as a shell would
CANNOT_EXECUTE, NOT_FOUND = 126, 127
_WHAT = {
    CANNOT_EXECUTE: "a program that cannot be executed",
    NOT_FOUND: "a program not found, or one the sandbox could not load",
}
#: characters of the output's last line said in the reason (the whole is in the evidence)
SAID_CHARS = 200
#: what a loader or an interpreter says when the memory limit is too small for it
_NO_MEMORY = re.compile(r"failed to map segment|cannot allocate memory|MemoryError", re.I)


def broken_command(argv: Sequence[str], result: SandboxResult) -> str | None:
    """Why ``result`` (a run of ``argv``) says the command itself cannot run, or None."""
    if result.timed_out or result.exit_code == 0:
        return None
    code, output = result.exit_code, result.output
    if code == PYTEST_USAGE and is_pytest(argv):
        refused = usage_error(output)
        return None if refused is None else f"pytest refused its command line ({refused})"
    said = [line.strip() for line in output.splitlines() if line.strip()]
    if code in (CANNOT_EXECUTE, NOT_FOUND):
        what = _WHAT[code]
        why = f"exit {code} ({what}): {_last(said)}"
    elif result.runner == "bwrap" and said and all(s.startswith("bwrap: ") for s in said):
        why = f"the sandbox could not start it (exit {code}): {_last(said)}"
    else:
        return None
    if result.memory_mb is not None and _NO_MEMORY.search(output):
        limit = f"{result.memory_mb} MB (test_memory_mb in {STATE_DIR_NAME}/{CONFIG_FILE})"
        why += f"; the memory limit is {limit}"
    return why


def _last(said: list[str]) -> str:
    if not said:
        return "it printed nothing"
    line = said[-1]
    return line if len(line) <= SAID_CHARS else line[: SAID_CHARS - 1] + "…"
