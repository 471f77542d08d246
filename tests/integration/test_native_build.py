"""app/native_build.py on a package of its own: Cython and the C compiler for real, the
stamp, the finder in a fresh interpreter, and builds that fail or are undercut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import native, native_build

pytest.importorskip("Cython", reason="the native extra (make installs it)")

MODULES = ("tpkg.fast",)
# A fresh interpreter with the package's finder, as app/__init__.py installs this one's
PROBE = """
import os, sys
from pathlib import Path
from app import native
root, lib = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(root))
finder, why = native.finder_for(("tpkg.fast",), root / "tpkg", lib, os.environ.get("PROBE"))
if finder is not None:
    sys.meta_path.insert(0, finder)
import tpkg.fast as m
print(m.__file__.rsplit(".", 1)[-1], m.twice(21))
"""


@pytest.fixture
def package(tmp_path: Path) -> Path:
    pkg = tmp_path / "tpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "fast.py").write_text("def twice(x: int) -> int:\n    return 2 * x\n")
    return pkg


def _probe(package: Path, lib: Path, switch: str = "") -> str:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(package.parent), str(lib)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PROBE": switch},
    )
    return run.stdout.strip()


def _build(package: Path, lib: Path, modules: tuple[str, ...] = MODULES) -> tuple[list[str], ...]:
    return native_build.build(modules, package, lib, jobs=1)


def test_a_build_compiles_what_changed_and_only_that_runs_compiled(
    package: Path, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    assert _probe(package, lib) == "py 42"  # never built
    assert _build(package, lib) == (["tpkg.fast"], [])
    assert _probe(package, lib) == "so 42"
    recorded = native.read_stamp(lib)
    assert recorded["modules"]["tpkg.fast"]["source"] == native.fingerprint(package / "fast.py")
    assert recorded["cython"] == native_build.cython_version()
    assert _build(package, lib) == ([], [])  # nothing changed
    assert _probe(package, lib, switch="off") == "py 42"

    # an edit of the same size, its mtime older than the build's files (a copy that keeps
    # times, a skewed clock): its source runs, and the next build compiles it again
    fast = package / "fast.py"
    fast.write_text("def twice(x: int) -> int:\n    return 3 * x\n")
    os.utime(fast, ns=(1, 1))
    assert _probe(package, lib) == "py 63"
    assert _build(package, lib) == (["tpkg.fast"], [])
    assert _probe(package, lib) == "so 63"

    # a compiled file cut short: its source runs; the next build puts it right
    binary = native.compiled_of("tpkg.fast", lib)
    binary.write_bytes(binary.read_bytes()[: binary.stat().st_size // 2])
    assert _probe(package, lib) == "py 63"
    assert _build(package, lib) == (["tpkg.fast"], [])
    assert _probe(package, lib) == "so 63"


def test_a_build_that_fails_leaves_the_module_to_its_source(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    _build(package, lib)
    (package / "fast.py").write_text("def twice(x: int) -> int:\n    return 2 * x  # v2\n")

    def fails(*args: object, **kwargs: object) -> Path:
        # (as a compiler killed half-way: the stamp and the old compiled file are gone)
        assert "tpkg.fast" not in native.read_stamp(lib)["modules"]
        assert not native.compiled_of("tpkg.fast", lib).exists()
        raise SystemExit("error: command 'gcc' failed")

    monkeypatch.setattr(native_build, "compile_modules", fails)
    with pytest.raises(SystemExit):
        _build(package, lib)
    assert _probe(package, lib) == "py 42"


def test_a_source_edited_while_it_compiles_is_left_to_its_source(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    compile_modules = native_build.compile_modules

    def edited_meanwhile(names: list[str], pkg: Path, work: Path, jobs: int) -> Path:
        out = compile_modules(names, pkg, work, jobs)
        (pkg / "fast.py").write_text("def twice(x: int) -> int:\n    return 4 * x\n")
        return out

    monkeypatch.setattr(native_build, "compile_modules", edited_meanwhile)
    assert _build(package, lib) == ([], ["tpkg.fast"])
    assert "tpkg.fast" not in native.read_stamp(lib)["modules"]
    assert _probe(package, lib) == "py 84"


def test_a_module_dropped_from_the_list_loses_its_compiled_form(
    package: Path, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    _build(package, lib)
    assert native.compiled_of("tpkg.fast", lib).exists()
    assert _build(package, lib, ()) == ([], [])
    assert not native.compiled_of("tpkg.fast", lib).exists()
    assert json.loads(native.stamp_of(lib).read_text())["modules"] == {}
    assert _probe(package, lib) == "py 42"
