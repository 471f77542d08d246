"""What `make demo` installs: the shipped example's tests need pytest in Switchyard's own
Python (without it the demo ran them with whatever python3 was on PATH, and on a machine
whose python3 had no pytest every test loop failed whatever the model wrote)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_extra_brings_pytest_and_make_demo_installs_it() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(re.match(r"pytest\b", dep) for dep in extras["demo"])
    makefile = (ROOT / "Makefile").read_text()
    stamp = makefile.split("$(VENV)/.stamp-demo:", 1)[1].split("\n\n", 1)[0]
    installed = re.search(r'install -q -e "\.\[([^\]]*)\]"', stamp)
    assert installed is not None and "demo" in installed.group(1).split(",")
