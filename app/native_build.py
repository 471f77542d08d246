"""``python -m app.native_build``: compile :data:`app.native.MODULES` in place with Cython
(what ``make demo`` and ``make test`` run; a few seconds when nothing changed, about a
minute on two cores from scratch).

Only the modules whose source changed since the last build are compiled again. The stamp
(``app/_native.json``) is rewritten without them before the build and with them after
it, so a build that fails or is killed half-way leaves them running their sources, never
a compiled form of another source (:mod:`app.native`). Exit codes: 0 built (or nothing to
do), 1 the build failed (a C compiler missing, say: the sources run), 2 Cython is not
installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.native import (
    MODULES,
    PACKAGE,
    STAMP,
    STAMP_VERSION,
    compiled_of,
    fingerprint,
    is_fresh,
    read_stamp,
    source_of,
)

#: Python's semantics kept: no annotation turns a value into a C type or refuses a
#: subclass (annotation_typing off), functions stay introspectable (binding)
DIRECTIVES: dict[str, Any] = {"language_level": 3, "annotation_typing": False, "binding": True}


def write_stamp(modules: dict[str, Any], stamp: Path) -> None:
    """The stamp, replaced whole (a reader never sees half of one)."""
    data = {
        "version": STAMP_VERSION,
        "python": sys.implementation.cache_tag,
        "directives": DIRECTIVES,
        "modules": modules,
    }
    fd, tmp = tempfile.mkstemp(dir=stamp.parent, prefix=".native-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1, sort_keys=True)
    os.replace(tmp, stamp)


def due(
    modules: Sequence[str], package: Path, stamp: Path, *, force: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """The stamp entries that stand, and the modules to compile (changed, or never built)."""
    recorded = {} if force else read_stamp(stamp)
    standing: dict[str, Any] = {}
    todo: list[str] = []
    for name in modules:
        entry = recorded.get(name)
        if compiled_of(name, package) is not None and is_fresh(source_of(name, package), entry):
            standing[name] = entry
        else:
            todo.append(name)
    return standing, todo


def compile_modules(
    names: Sequence[str], package: Path, build_dir: Path, jobs: int, *, force: bool = False
) -> None:
    """Cython then the C compiler, each module's extension written beside its source."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    make_c: Any = cythonize  # (Cython's is untyped)

    root = package.parent
    extensions = [
        Extension(
            name,
            [str(source_of(name, package).relative_to(root))],
            # (Cython's own helpers it did not need: a warning each, nothing of ours)
            extra_compile_args=["-Wno-unused-function"],
        )
        for name in names
    ]
    cwd = Path.cwd()
    os.chdir(root)  # (build_ext --inplace writes each extension under the current folder)
    try:
        built = make_c(
            extensions,
            build_dir=str(build_dir / "c"),
            compiler_directives=DIRECTIVES,
            nthreads=jobs,
            quiet=True,
            force=force,
        )
        dist = Distribution({"name": "switchyard-native", "ext_modules": built})
        command: Any = dist.get_command_obj("build_ext")
        command.inplace = True
        command.build_temp = str(build_dir / "temp")
        command.parallel = jobs
        command.force = force
        dist.run_command("build_ext")
    finally:
        os.chdir(cwd)


def build(
    modules: Sequence[str] = MODULES,
    package: Path = PACKAGE,
    stamp: Path = STAMP,
    *,
    force: bool = False,
    jobs: int = 2,
) -> list[str]:
    """Compile what is due; the stamp says so only once it is built. Returns what was."""
    for name in read_stamp(stamp):
        gone = compiled_of(name, package) if name not in modules else None
        if gone is not None:  # (a module no longer compiled)
            gone.unlink()
    standing, todo = due(modules, package, stamp, force=force)
    if not todo:
        write_stamp(standing, stamp)  # (drops modules no longer listed)
        return []
    fingerprints = {name: fingerprint(source_of(name, package)) for name in todo}
    write_stamp(standing, stamp)
    compile_modules(todo, package, package.parent / "build" / "native", jobs, force=force)
    # A source edited while it compiled is not what was compiled: left to its source.
    changed = [n for n in todo if fingerprint(source_of(n, package)) != fingerprints[n]]
    write_stamp({**standing, **{n: fingerprints[n] for n in todo if n not in changed}}, stamp)
    return [n for n in todo if n not in changed]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.native_build",
        description="Compile Switchyard's hot modules in place with Cython.",
    )
    parser.add_argument("--force", action="store_true", help="compile every module again")
    args = parser.parse_args(argv)
    try:
        import Cython  # noqa: F401
    except ImportError:
        print(
            "app.native_build: Cython is not installed (pip install -e '.[native]'); "
            "the modules run as Python",
            file=sys.stderr,
        )
        return 2
    try:
        done = build(force=args.force)
    except (Exception, SystemExit) as exc:  # (setuptools raises SystemExit on a failed compile)
        print(
            f"app.native_build: the build failed ({type(exc).__name__}: {exc}); "
            "the modules run as Python",
            file=sys.stderr,
        )
        return 1
    print(f"app.native_build: {len(done)} compiled, {len(MODULES) - len(done)} up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
