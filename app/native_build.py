"""``python -m app.native_build``: compile :data:`app.native.MODULES` with Cython into
``build/native/<interpreter>/`` (what ``make demo``, ``make test`` and ``make bench`` run
first; a twentieth of a second when nothing changed, about a minute on two cores from
scratch).

Only the modules whose source or compiled file is not what the stamp records are compiled
again, from their sources as they are (no timestamp of an earlier build's files is
trusted), one build at a time (a lock). Each stands in the stamp only once its compiled
file is in place: the stamp is rewritten without them first, so a build that fails or is
killed half-way leaves them to their sources. Exit codes: 0 built (or nothing to do), 1
the build failed (a C compiler missing, say: the sources run), 2 Cython is not installed
or this is no checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from app.native import (
    DIRECTIVES,
    LIB,
    MODULES,
    PACKAGE,
    STAMP_VERSION,
    SUFFIX,
    compiled_of,
    fingerprint,
    read_stamp,
    source_of,
    stamp_of,
    why_not,
)

#: the C compiler's flags beyond Python's own: no warning for the helpers Cython wrote and
#: did not use, no debug information (a third of the size), stripped when linked
COMPILE_ARGS = ["-Wno-unused-function", "-g0"]
LINK_ARGS = ["-s"]


def cython_version() -> str:
    from importlib.metadata import version

    return version("cython")


def write_stamp(modules: dict[str, Any], lib: Path) -> None:
    """The stamp, replaced whole (a reader never sees half of one)."""
    data = {
        "version": STAMP_VERSION,
        "python": sys.implementation.cache_tag,
        "directives": DIRECTIVES,
        "cython": cython_version(),
        "flags": [*COMPILE_ARGS, *LINK_ARGS],
        "modules": modules,
    }
    fd, tmp = tempfile.mkstemp(dir=lib, prefix=".stamp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1, sort_keys=True)
        os.chmod(tmp, 0o644)  # (readable by whoever runs the checkout)
        os.replace(tmp, stamp_of(lib))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def due(
    modules: Sequence[str], package: Path, lib: Path, *, force: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """The stamp entries that stand (their sources' times refreshed), and the modules to
    compile. Every one is due when the stamp was made by another Cython or other flags."""
    stamp = read_stamp(lib)
    same = stamp.get("cython") == cython_version() and stamp.get("flags") == [
        *COMPILE_ARGS,
        *LINK_ARGS,
    ]
    recorded = stamp.get("modules", {}) if same and not force else {}
    standing: dict[str, Any] = {}
    todo: list[str] = []
    for name in modules:
        if why_not(name, recorded, package, lib) is None:
            entry = recorded[name]
            # (a checkout that rewrote a source unchanged: hashed once here, not at every
            # import)
            standing[name] = {**entry, "source": fingerprint(source_of(name, package))}
        else:
            todo.append(name)
    return standing, todo


@contextlib.contextmanager
def locked(lib: Path) -> Iterator[None]:
    """One build at a time in ``lib`` (two ``make`` runs at once take turns)."""
    lib.mkdir(parents=True, exist_ok=True)
    with open(lib / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def compile_modules(names: Sequence[str], package: Path, work: Path, jobs: int) -> Path:
    """Cython then the C compiler, every module from its source as it is now, into
    ``work``; returns the folder the compiled files are under (``<it>/app/x/y<suffix>``)."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    make_c: Any = cythonize  # (Cython's is untyped)
    root = package.parent
    extensions = [
        Extension(
            name,
            [str(source_of(name, package).relative_to(root))],
            extra_compile_args=COMPILE_ARGS,
            extra_link_args=LINK_ARGS,
        )
        for name in names
    ]
    cwd = Path.cwd()
    os.chdir(root)  # (the extensions' sources are named from the checkout's root)
    try:
        built = make_c(
            extensions,
            build_dir=str(work / "c"),
            compiler_directives=DIRECTIVES,
            nthreads=jobs,
            quiet=True,
            force=True,
        )
        dist = Distribution({"name": "switchyard-native", "ext_modules": built})
        command: Any = dist.get_command_obj("build_ext")
        command.build_lib = str(work / "lib")
        command.build_temp = str(work / "temp")
        command.parallel = jobs
        command.force = True
        dist.run_command("build_ext")
    finally:
        os.chdir(cwd)
    return work / "lib"


def build(
    modules: Sequence[str] = MODULES,
    package: Path = PACKAGE,
    lib: Path = LIB,
    *,
    force: bool = False,
    jobs: int = 2,
) -> tuple[list[str], list[str]]:
    """Compile what is due; the stamp says so only once it is in place. Returns the
    modules compiled and those edited while they compiled (left to their sources)."""
    with locked(lib):
        for leftover in lib.glob(".build-*"):  # (a build killed half-way)
            shutil.rmtree(leftover, ignore_errors=True)
        standing, todo = due(modules, package, lib, force=force)
        for stale in lib.rglob(f"*{SUFFIX}"):  # (modules no longer compiled, or due)
            name = ".".join(stale.relative_to(lib).with_suffix("").with_suffix("").parts)
            if name not in standing:
                stale.unlink()
        write_stamp(standing, lib)
        if not todo:
            return [], []
        sources = {name: fingerprint(source_of(name, package)) for name in todo}
        with tempfile.TemporaryDirectory(dir=lib, prefix=".build-") as work:
            out = compile_modules(todo, package, Path(work), jobs)
            for name in todo:
                target = compiled_of(name, lib)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(compiled_of(name, out), target)
        # A source edited while it compiled is not what was compiled: left to its source.
        edited = [n for n in todo if fingerprint(source_of(n, package)) != sources[n]]
        done = [n for n in todo if n not in edited]
        entries = {
            n: {"source": sources[n], "binary": fingerprint(compiled_of(n, lib))} for n in done
        }
        write_stamp({**standing, **entries}, lib)
        return done, edited


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.native_build",
        description="Compile Switchyard's hot modules with Cython (app/native.py).",
    )
    parser.add_argument("--force", action="store_true", help="compile every module again")
    args = parser.parse_args(argv)
    if not (PACKAGE.parent / "pyproject.toml").is_file():
        print(
            f"app.native_build: {PACKAGE} is not in a checkout (an installed wheel runs "
            "its sources)",
            file=sys.stderr,
        )
        return 2
    try:
        cython_version()
    except ImportError:  # (PackageNotFoundError is one)
        print(
            "app.native_build: Cython is not installed (pip install -e '.[native]'); "
            "the modules run as Python",
            file=sys.stderr,
        )
        return 2
    try:
        done, edited = build(force=args.force)
    except (Exception, SystemExit) as exc:  # (setuptools raises SystemExit on a failed compile)
        print(
            f"app.native_build: the build failed ({type(exc).__name__}: {exc}); "
            "the modules it did not finish run as Python",
            file=sys.stderr,
        )
        return 1
    left = f", {len(edited)} edited while compiling (run as Python)" if edited else ""
    print(
        f"app.native_build: {len(done)} compiled, "
        f"{len(MODULES) - len(done) - len(edited)} up to date{left}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
