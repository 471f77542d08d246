"""The core never imports the UI, the CLI never imports the heavy ML stacks, and a cloud
backend loads only its own provider's SDK.

Each check runs in a fresh interpreter and looks at ``sys.modules``. The walk over
``app`` finds modules at run time, so modules added later are checked too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "llama_cpp", "sentence_transformers")

# Records, for each watched top-level package, the innermost `app.*` module whose code
# asked for it, then lets the normal import go on.
_WATCH = """
import importlib, json, pkgutil, sys

WATCHED = set(sys.argv[1].split(","))
offenders = {}

class Watch:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in WATCHED and top not in offenders:
            frame = sys._getframe(1)
            who = "?"
            while frame is not None:
                mod = frame.f_globals.get("__name__", "")
                if mod == "app" or mod.startswith("app."):
                    who = mod
                    break
                frame = frame.f_back
            offenders[top] = who
        return None

sys.meta_path.insert(0, Watch())

def loaded():
    return sorted(m for m in WATCHED if m in sys.modules)
"""

_WALK = """
SKIP = ("app.tui", "app.__main__")
failed = {}
pulled = {}  # module -> {watched package its import loaded: the app module that asked}

def visit(name, ispkg):
    before = set(loaded())
    try:
        module = importlib.import_module(name)
    except BaseException as exc:  # a module that cannot import is a failure, named
        failed[name] = f"{type(exc).__name__}: {exc}"
        return
    new = sorted(set(loaded()) - before)
    if new:
        pulled[name] = {top: offenders.get(top, "?") for top in new}
        for top in new:  # forget it, so the next module that imports it is caught too
            for key in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
                del sys.modules[key]
            offenders.pop(top, None)
    if ispkg:
        walk(module.__path__, name + ".")

def walk(path, prefix):
    # pkgutil.iter_modules, not walk_packages: walk_packages imports every package it
    # meets (app.tui included) before anyone could skip it.
    for info in sorted(pkgutil.iter_modules(path, prefix), key=lambda i: i.name):
        if info.name in SKIP or info.name.startswith("app.tui."):
            continue
        visit(info.name, info.ispkg)

import app
walk(app.__path__, "app.")
print(json.dumps({"failed": failed, "pulled": pulled, "by": offenders}))
"""

_CLI = """
import contextlib, io
import app.cli.main
app.cli.main.build_parser()
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    rc = app.cli.main.main(["policy", "check", "--quiet"])
print(json.dumps({"rc": rc, "loaded": loaded(), "by": offenders}))
"""


def _run(script: str, watched: tuple[str, ...], cwd: Path = ROOT) -> dict[str, Any]:
    code = textwrap.dedent(_WATCH) + textwrap.dedent(script)
    done = subprocess.run(
        [sys.executable, "-c", code, ",".join(watched)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def walk() -> dict[str, Any]:
    return _run(_WALK, ("textual", *HEAVY))


def test_every_core_module_imports(walk: dict[str, Any]) -> None:
    assert walk["failed"] == {}, "modules that fail to import:\n" + "\n".join(
        f"  {name}: {why}" for name, why in walk["failed"].items()
    )


def _offenders(walk: dict[str, Any], packages: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{name} loads {top} (asked for by {who})"
        for name, pulled in walk["pulled"].items()
        for top, who in pulled.items()
        if top in packages
    )


def test_nothing_outside_tui_imports_textual(walk: dict[str, Any]) -> None:
    offenders = _offenders(walk, ("textual",))
    assert offenders == [], "textual imported outside app/tui/:\n" + "\n".join(offenders)


def test_heavy_libraries_are_imported_lazily(walk: dict[str, Any]) -> None:
    """STYLE: torch, sentence_transformers and llama_cpp are imported inside functions."""
    offenders = _offenders(walk, HEAVY)
    assert offenders == [], "heavy libraries imported at import time:\n" + "\n".join(offenders)


def test_cli_does_not_load_heavy_libraries_or_textual() -> None:
    result = _run(_CLI, ("textual", *HEAVY))
    assert result["rc"] == 0
    assert result["loaded"] == [], (
        f"the CLI loaded {result['loaded']} (first asked for by: {result['by']})"
    )


@pytest.mark.parametrize(
    ("module", "sdks"),
    [
        ("app.backends.anthropic_backend", ["anthropic"]),
        ("app.backends.provider_errors", []),  # the mapping both backends share
        ("app.backends.provider_common", []),
        ("app.backends.openai_compat", ["openai"]),  # the control: the check can fail
    ],
)
def test_a_cloud_backend_loads_only_its_own_sdk(module: str, sdks: list[str]) -> None:
    script = f"import {module}\nprint(json.dumps({{'loaded': loaded(), 'by': offenders}}))\n"
    result = _run(script, ("openai", "anthropic"))
    assert result["loaded"] == sdks, (
        f"{module} loaded {result['loaded']} (first asked for by: {result['by']})"
    )


def test_the_walk_catches_offenders(tmp_path: Path) -> None:
    """The checker itself: a fake ``app`` package with one offender of each kind."""
    files = {
        "__init__.py": "",
        "__main__.py": "raise SystemExit('never imported')",
        "good.py": "import json\n",
        "bad.py": "import textual\n",
        "also_bad.py": "from textual import events\n",
        "broken.py": "import app.not_written_yet\n",
        "core/__init__.py": "",
        "core/deep.py": "import textual.app\n",
        "via.py": "import app.zz_inner\n",
        "zz_inner.py": "import textual\n",
        "tui/__init__.py": "import textual\n",
        "tui/app.py": "import textual.app\n",
    }
    for name, text in files.items():
        target = tmp_path / "app" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    result = _run(_WALK, ("textual",), cwd=tmp_path)
    assert set(result["failed"]) == {"app.broken"}
    assert _offenders(result, ("textual",)) == [
        "app.also_bad loads textual (asked for by app.also_bad)",
        "app.bad loads textual (asked for by app.bad)",
        "app.core.deep loads textual (asked for by app.core.deep)",
        "app.via loads textual (asked for by app.zz_inner)",
    ]
