"""app/native_build.py on a package of its own: Cython and the C compiler for real, the
stamp, and a build that fails half-way leaving the sources to run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app import native, native_build

pytest.importorskip("Cython", reason="the native extra (make installs it)")

MODULES = ("tpkg.fast",)
PROBE = (
    "import sys; sys.path.insert(0, sys.argv[1]); import tpkg.fast as m; "
    "print(m.__file__.rsplit('.', 1)[-1], m.twice(21))"
)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    pkg = tmp_path / "tpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "fast.py").write_text("def twice(x: int) -> int:\n    return 2 * x\n")
    return pkg


def _probe(package: Path) -> str:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(package.parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    return run.stdout.strip()


def test_a_build_compiles_what_changed_and_stamps_it(package: Path) -> None:
    stamp = package / "_native.json"
    assert native_build.build(MODULES, package, stamp, jobs=1) == ["tpkg.fast"]
    assert _probe(package) == "so 42"  # the compiled form, imported as Python imports it
    assert native.plan(MODULES, package, stamp).compiled == MODULES
    recorded = json.loads(stamp.read_text())
    assert recorded["modules"]["tpkg.fast"] == native.fingerprint(package / "fast.py")
    assert recorded["directives"]["annotation_typing"] is False

    assert native_build.build(MODULES, package, stamp, jobs=1) == []  # nothing changed
    (package / "fast.py").write_text("def twice(x: int) -> int:\n    return x + x + 0\n")
    assert native.plan(MODULES, package, stamp).source == {
        "tpkg.fast": "source changed since the build"
    }
    assert native_build.build(MODULES, package, stamp, jobs=1) == ["tpkg.fast"]
    assert native.plan(MODULES, package, stamp).compiled == MODULES


def test_a_build_that_fails_leaves_the_module_to_its_source(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = package / "_native.json"
    native_build.build(MODULES, package, stamp, jobs=1)
    (package / "fast.py").write_text("def twice(x: int) -> int:\n    return 2 * x  # v2\n")

    def fails(*args: object, **kwargs: object) -> None:
        # the old compiled form is still there, as a compiler killed half-way leaves it
        assert native.plan(MODULES, package, stamp).source == {
            "tpkg.fast": "not in the last finished build"
        }
        raise SystemExit("error: command 'gcc' failed")

    monkeypatch.setattr(native_build, "compile_modules", fails)
    with pytest.raises(SystemExit):
        native_build.build(MODULES, package, stamp, jobs=1)
    assert native.compiled_of("tpkg.fast", package) is not None
    assert native.plan(MODULES, package, stamp).source == {
        "tpkg.fast": "not in the last finished build"
    }


def test_a_module_dropped_from_the_list_loses_its_compiled_form(package: Path) -> None:
    stamp = package / "_native.json"
    native_build.build(MODULES, package, stamp, jobs=1)
    assert native.compiled_of("tpkg.fast", package) is not None
    assert native_build.build((), package, stamp, jobs=1) == []
    assert native.compiled_of("tpkg.fast", package) is None
    assert json.loads(stamp.read_text())["modules"] == {}
    assert _probe(package) == "py 42"
