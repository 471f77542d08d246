"""The finder that imports a hot module's compiled form only when it is its source's
(app/native.py), on packages made in a temporary folder, and on this checkout as it is."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from app import native
from app.native import compiled_of, finder_for, fingerprint, source_of, why_not

MODULES = ("pkg.hot", "pkg.sub.warm")


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A package ``pkg`` (importable) and a build folder for it."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "hot.py").write_text("VALUE = 1\n")
    (pkg / "sub" / "warm.py").write_text("VALUE = 2\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield pkg, tmp_path / "lib"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "pkg" or n.startswith("pkg.")]:
            del sys.modules[name]
        importlib.invalidate_caches()


def _built(pkg: Path, lib: Path, content: bytes = b"\x7fELF not a library") -> dict[str, object]:
    """A compiled file for each module (what a build leaves), and their stamp entries."""
    entries: dict[str, object] = {}
    for name in MODULES:
        binary = compiled_of(name, lib)
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_bytes(content)
        entries[name] = {
            "source": fingerprint(source_of(name, pkg)),
            "binary": fingerprint(binary),
        }
    return entries


def _stamp(lib: Path, modules: dict[str, object], /, **over: object) -> None:
    lib.mkdir(parents=True, exist_ok=True)
    data = {
        "version": native.STAMP_VERSION,
        "python": sys.implementation.cache_tag,
        "directives": native.DIRECTIVES,
        "modules": modules,
        **over,
    }
    native.stamp_of(lib).write_text(json.dumps(data))


def test_a_module_may_run_compiled_only_while_both_its_files_are_the_builds(
    tree: tuple[Path, Path],
) -> None:
    pkg, lib = tree
    hot = source_of("pkg.hot", pkg)

    def whys() -> dict[str, str | None]:
        recorded = native.read_stamp(lib).get("modules", {})
        return {name: why_not(name, recorded, pkg, lib) for name in MODULES}

    assert whys() == dict.fromkeys(MODULES, "not built")
    entries = _built(pkg, lib)
    assert whys() == dict.fromkeys(MODULES, "not in the last finished build")
    _stamp(lib, entries)
    assert whys() == dict.fromkeys(MODULES)
    os.utime(hot, ns=(1, 1))  # the same text, touched (a checkout): hashed, still the build's
    assert whys()["pkg.hot"] is None
    hot.write_text("VALUE = 3\n")  # an edit of the same size, its mtime set back too
    os.utime(hot, ns=(1, 1))
    assert whys()["pkg.hot"] == "source changed since the build"
    # a compiled file cut short (a copy killed half-way), or of the same size, rewritten
    binary = compiled_of("pkg.sub.warm", lib)
    binary.write_bytes(binary.read_bytes()[:5])
    assert whys()["pkg.sub.warm"] == "compiled file changed since the build"
    binary.write_bytes(b"\x7fELF not a librarz")
    os.utime(binary, ns=(1, 1))
    assert whys()["pkg.sub.warm"] == "compiled file changed since the build"


@pytest.mark.parametrize(
    "over",
    [
        {"python": "cpython-399"},
        {"version": 1},
        {"directives": {**native.DIRECTIVES, "annotation_typing": True}},
        {"modules": []},
    ],
)
def test_a_stamp_of_another_build_vouches_for_nothing(
    tree: tuple[Path, Path], over: dict[str, object]
) -> None:
    pkg, lib = tree
    _stamp(lib, _built(pkg, lib), **over)
    assert native.read_stamp(lib) == {}
    assert finder_for(MODULES, pkg, lib, None) == (None, "no finished build")
    for text in ("{", "[]"):
        native.stamp_of(lib).write_text(text)
        assert native.read_stamp(lib) == {}


def test_the_switch_and_a_missing_build_run_every_source(tree: tuple[Path, Path]) -> None:
    pkg, lib = tree
    assert finder_for(MODULES, pkg, lib, None) == (None, "not built")
    _stamp(lib, _built(pkg, lib))
    for value in ("0", "false", "No", " off "):
        assert finder_for(MODULES, pkg, lib, value) == (None, f"SWITCHYARD_NATIVE={value}")
    found, why = finder_for(MODULES, pkg, lib, "1")
    assert found is not None and why is None and found.modules == frozenset(MODULES)


def test_the_finder_imports_a_compiled_form_only_while_it_is_the_sources(
    tree: tuple[Path, Path],
) -> None:
    pkg, lib = tree
    _stamp(lib, _built(pkg, lib))
    # no finder: the compiled files lie where no import looks
    assert importlib.import_module("pkg.hot").VALUE == 1
    del sys.modules["pkg.hot"]
    finder, _ = finder_for(MODULES, pkg, lib, None)
    assert finder is not None
    sys.meta_path.insert(0, finder)
    try:
        # fresh: the compiled form is imported (here, a file that is no library)
        with pytest.raises(ImportError):
            importlib.import_module("pkg.hot")
        assert finder.served == ["pkg.hot"]
        (pkg / "sub" / "warm.py").write_text("VALUE = 20\n")  # edited: its source runs
        assert importlib.import_module("pkg.sub.warm").VALUE == 20
        assert finder.declined == {"pkg.sub.warm": "source changed since the build"}
        assert finder.find_spec("pkg.other") is None  # (not ours: the usual finders)
        source_of("pkg.hot", pkg).unlink()  # a module removed runs no compiled form
        assert finder.find_spec("pkg.hot") is None
    finally:
        sys.meta_path.remove(finder)


def test_this_checkout_runs_each_hot_module_as_its_report_says() -> None:
    report = native.report()
    assert set(report.compiled) | set(report.source) == set(native.MODULES)
    for name in native.MODULES:
        module = importlib.import_module(name)
        assert module.__file__ is not None
        if name in native.report().compiled:
            assert Path(module.__file__) == compiled_of(name), name
            recorded = native.read_stamp()["modules"][name]["source"]["sha256"]
            assert recorded == hashlib.sha256(source_of(name).read_bytes()).hexdigest()
        else:
            assert module.__file__ == str(source_of(name)), (name, report.source[name])


def test_no_compiled_module_defines_a_pydantic_model() -> None:
    # pydantic tells a method from a field by its type: a compiled method is not a Python
    # function, so a model defined in a compiled module breaks when given one
    for name in native.MODULES:
        module = importlib.import_module(name)
        models = [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == name
        ]
        assert models == [], name
