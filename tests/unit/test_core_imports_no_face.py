"""The core never imports a face: opening a session loads no CLI and no TUI module.

The CLI hands the router its terminal prompt (a Decider); the router must not reach for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
import app.router.approvals, app.router.session, app.pipeline.librarian
faces = sorted(m for m in sys.modules if m.startswith(("app.cli", "app.tui")))
print(json.dumps(faces))
"""


def test_the_session_and_approvals_load_no_face() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == []
