"""The guard that runs a hot module's source unless its compiled form is that source's
(app/native.py), on packages made in a temporary folder, and on this tree as it is."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import app
from app import native
from app.native import SourceFirst, fingerprint, plan

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _stamp(path: Path, modules: dict[str, object], *, tag: str | None = None) -> None:
    path.write_text(
        json.dumps(
            {
                "version": native.STAMP_VERSION,
                "python": tag or sys.implementation.cache_tag,
                "modules": modules,
            }
        )
    )


@pytest.fixture
def package(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "hot.py").write_text("VALUE = 1\n")
    (pkg / "sub" / "warm.py").write_text("VALUE = 2\n")
    return pkg


MODULES = ("pkg.hot", "pkg.sub.warm")


def test_a_module_runs_compiled_only_when_the_stamp_holds_its_source(package: Path) -> None:
    stamp = package / "_native.json"
    assert plan(MODULES, package, stamp).source == dict.fromkeys(MODULES, "not built")
    for name in MODULES:  # (what the build leaves beside each source)
        native.source_of(name, package).with_suffix(SUFFIX).write_bytes(b"\x7fELF")
    assert plan(MODULES, package, stamp).source == dict.fromkeys(
        MODULES, "not in the last finished build"
    )
    hot, warm = (native.source_of(name, package) for name in MODULES)
    _stamp(stamp, {"pkg.hot": fingerprint(hot), "pkg.sub.warm": fingerprint(warm)})
    assert plan(MODULES, package, stamp) == native.Plan(MODULES, {})

    # the same text, touched (a checkout): hashed, still the build's
    os.utime(hot, ns=(1, 1))
    assert plan(MODULES, package, stamp).compiled == MODULES
    # an edit of the same size, and one that grows the file
    hot.write_text("VALUE = 3\n")
    warm.write_text("VALUE = 22\n")
    assert plan(MODULES, package, stamp) == native.Plan(
        (),
        dict.fromkeys(MODULES, "source changed since the build"),
    )
    # a switch that runs every source, whatever the stamp says
    assert plan(MODULES, package, stamp, env="0").source == dict.fromkeys(
        MODULES, "SWITCHYARD_NATIVE=0"
    )


def test_a_stamp_of_another_interpreter_or_unreadable_vouches_for_nothing(package: Path) -> None:
    stamp = package / "_native.json"
    hot = native.source_of("pkg.hot", package)
    hot.with_suffix(SUFFIX).write_bytes(b"\x7fELF")
    _stamp(stamp, {"pkg.hot": fingerprint(hot)}, tag="cpython-399")
    assert plan(("pkg.hot",), package, stamp).compiled == ()
    for text in ("{", "[]", '{"version": 99}', '{"version": 1, "python": 3}'):
        stamp.write_text(text)
        assert plan(("pkg.hot",), package, stamp).compiled == ()
    _stamp(stamp, {"pkg.hot": "not an entry"})
    assert plan(("pkg.hot",), package, stamp).compiled == ()


def test_a_module_the_list_no_longer_names_is_still_guarded(package: Path) -> None:
    stamp = package / "_native.json"
    warm = native.source_of("pkg.sub.warm", package)
    warm.with_suffix(SUFFIX).write_bytes(b"\x7fELF")
    _stamp(stamp, {"pkg.sub.warm": fingerprint(warm)})
    warm.write_text("VALUE = 5\n")
    assert plan(("pkg.hot",), package, stamp).source["pkg.sub.warm"] == (
        "source changed since the build"
    )


@pytest.fixture
def importable(package: Path) -> Iterator[Path]:
    sys.path.insert(0, str(package.parent))
    try:
        yield package
    finally:
        sys.path.remove(str(package.parent))
        for name in [n for n in sys.modules if n == "pkg" or n.startswith("pkg.")]:
            del sys.modules[name]
        importlib.invalidate_caches()


def test_the_finder_imports_the_source_where_a_compiled_form_lies_beside_it(
    importable: Path,
) -> None:
    # a compiled form that is no such thing: imported, it fails; guarded, the source runs
    (importable / "__init__.py").write_text("")
    native.source_of("pkg.hot", importable).with_suffix(SUFFIX).write_bytes(b"not a library")
    importlib.invalidate_caches()
    with pytest.raises(ImportError):
        importlib.import_module("pkg.hot")
    finder = SourceFirst({"pkg.hot": native.source_of("pkg.hot", importable)})
    sys.meta_path.insert(0, finder)
    try:
        module = importlib.import_module("pkg.hot")
    finally:
        sys.meta_path.remove(finder)
    assert module.VALUE == 1 and module.__file__ == str(importable / "hot.py")
    assert finder.find_spec("pkg.sub.warm") is None  # (others: the usual finders)


def test_this_tree_runs_each_hot_module_as_its_plan_says() -> None:
    installed = native.installed
    assert installed is not None and installed is app._native.installed
    assert set(installed.compiled) | set(installed.source) >= set(native.MODULES)
    for name in native.MODULES:
        module = importlib.import_module(name)
        assert module.__file__ is not None
        if name in installed.compiled:
            assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), name
        else:
            assert module.__file__.endswith(".py"), (name, installed.source[name])
