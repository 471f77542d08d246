"""The router's hot modules compiled by Cython, and the finder that imports a module's
compiled form only when it is its source's (a leaf: the standard library).

Why (issue 20): a routed request is ~160 µs of Python glue (decide, two audit lines, the
reservation and the settlement), each part 1-7 µs, none left whose removal would halve it.
Compiled, the same code skips the interpreter's dispatch: the same tests pass and the
request costs ~10 µs less. ``make`` builds them (``python -m app.native_build``) into
``build/native/<interpreter>/``, where no import looks: a checkout that never built
them, an install from a wheel, an older commit checked out over a build, or
``SWITCHYARD_NATIVE=0`` runs the sources.

The finder (:func:`install`, run when ``app`` is imported, before any of these modules)
opts a module in, at the moment it is imported: when the build's stamp records the
SHA-256 of the source now on disk and of the compiled file now beside the stamp. An
edited source runs as the source until the next build, alone: a Cython module calls the
others through Python, as any caller does, so a mix of compiled and source modules is
sound. Cython keeps Python's semantics (:data:`DIRECTIVES`: no annotation turns a value
into a C type or refuses a subclass).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

#: the package's folder (``app/``)
PACKAGE = Path(__file__).resolve().parent
#: where this interpreter's compiled modules and their stamp live
LIB = PACKAGE.parent / "build" / "native" / sys.implementation.cache_tag
#: ``0`` (or false, no, off) runs every source (a comparison, a profile, a debugger)
ENV = "SWITCHYARD_NATIVE"
OFF = frozenset(("0", "false", "no", "off"))
#: the stamp's format
STAMP_VERSION = 2
#: Python's semantics kept: no annotation turns a value into a C type or refuses a
#: subclass (annotation_typing off); functions stay introspectable (binding)
DIRECTIVES: dict[str, Any] = {"language_level": 3, "annotation_typing": False, "binding": True}

#: the modules a routed request spends its time in (py-spy over the router bench),
#: without any that defines a pydantic model (pydantic tells a method from a field by its
#: type, and a compiled method is not a Python function) or imports Textual
MODULES: tuple[str, ...] = (
    "app.audit.base",
    "app.audit.log",
    "app.audit.masking",
    "app.audit.prepared",
    "app.audit.quick_redact",
    "app.audit.redact",
    "app.audit.store",
    "app.backends.registry",
    "app.clock",
    "app.compact_json",
    "app.remembered",
    "app.router.calling",
    "app.router.cloud_step",
    "app.router.cost",
    "app.router.decide",
    "app.router.ledger.budget_ledger",
    "app.router.ledger.caps",
    "app.router.ledger.ids",
    "app.router.ledger.money",
    "app.router.ledger.publisher",
    "app.router.ledger.spooled",
    "app.router.ledger.transactions",
    "app.router.retry",
    "app.router.routed",
    "app.router.service",
    "app.spool",
    "app.sqlite",
    "app.tokens",
)

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def source_of(name: str, package: Path = PACKAGE) -> Path:
    """The source file of module ``name`` (``app.x.y`` → ``<package>/x/y.py``)."""
    return package.joinpath(*name.split(".")[1:]).with_suffix(".py")


def compiled_of(name: str, lib: Path = LIB) -> Path:
    """Where the build puts the compiled form of ``name`` (``<lib>/app/x/y<suffix>``)."""
    return lib.joinpath(*name.split(".")).with_suffix(SUFFIX)


def stamp_of(lib: Path = LIB) -> Path:
    return lib / "stamp.json"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(path: Path) -> dict[str, str | int]:
    """What the stamp records of a file: its hash, and its size and mtime (a file whose
    size and mtime are as recorded is not hashed again)."""
    st = path.stat()
    return {"sha256": digest(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_fresh(path: Path, recorded: object) -> bool:
    """Whether ``path`` is the file its stamp entry ``recorded`` describes."""
    if not isinstance(recorded, dict):
        return False
    try:
        st = path.stat()
        if st.st_size != recorded.get("size"):
            return False
        if st.st_mtime_ns == recorded.get("mtime_ns"):
            return True
        return digest(path) == recorded.get("sha256")  # (touched, maybe unchanged)
    except OSError:
        return False


def read_stamp(lib: Path = LIB) -> dict[str, Any]:
    """The last finished build's stamp, whole ({} when there is none, or one this
    Switchyard cannot read: every source runs)."""
    try:
        data = json.loads(stamp_of(lib).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != STAMP_VERSION:
        return {}
    if data.get("python") != sys.implementation.cache_tag or data.get("directives") != DIRECTIVES:
        return {}
    return data if isinstance(data.get("modules"), dict) else {}


def why_not(name: str, recorded: dict[str, Any], package: Path, lib: Path) -> str | None:
    """Why ``name`` may not run compiled now (None: it may)."""
    entry = recorded.get(name)
    if not compiled_of(name, lib).exists():
        return "not built"
    if not isinstance(entry, dict):
        return "not in the last finished build"
    if not is_fresh(source_of(name, package), entry.get("source")):
        return "source changed since the build"
    if not is_fresh(compiled_of(name, lib), entry.get("binary")):
        return "compiled file changed since the build"
    return None


def switched_off(value: str | None) -> bool:
    return value is not None and value.strip().lower() in OFF


@dataclass
class Compiled:
    """A finder, first on ``sys.meta_path``: each of ``modules`` is imported from its
    compiled form when :func:`why_not` has nothing against it at that moment; every other
    import (and that one, when it has) goes to the usual finders, which find no compiled
    form (none lies beside a source)."""

    modules: frozenset[str]
    package: Path
    lib: Path
    recorded: dict[str, Any]
    #: what was imported compiled, and why each other module of ``modules`` imported
    #: so far ran its source
    served: list[str] = field(default_factory=list)
    declined: dict[str, str] = field(default_factory=dict)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        if not source_of(fullname, self.package).exists():
            return None  # (a module removed: no compiled form of it runs either)
        why = why_not(fullname, self.recorded, self.package, self.lib)
        if why is not None:
            self.declined[fullname] = why
            return None
        compiled = str(compiled_of(fullname, self.lib))
        loader = importlib.machinery.ExtensionFileLoader(fullname, compiled)
        spec = importlib.util.spec_from_file_location(fullname, compiled, loader=loader)
        self.served.append(fullname)
        return spec


@dataclass(frozen=True)
class Report:
    """What :func:`report` tells: the modules that run compiled in this process, and why
    each other one of :data:`MODULES` runs its source (or would, once imported)."""

    compiled: tuple[str, ...]
    source: dict[str, str]


#: this process's finder (None: every source runs, or :func:`install` did not run)
finder: Compiled | None = None
#: why every source runs in this process, when it does
off_because: str | None = None
installed = False


def finder_for(
    modules: Sequence[str], package: Path, lib: Path, env: str | None
) -> tuple[Compiled | None, str | None]:
    """The finder for ``modules`` built into ``lib`` (``env``: ``ENV``'s value), or None and
    why every source is to run."""
    if switched_off(env):
        return None, f"{ENV}={env}"
    recorded = read_stamp(lib).get("modules", {})
    if not recorded:
        return None, "not built" if not lib.exists() else "no finished build"
    return Compiled(frozenset(modules), package, lib, recorded), None


def install() -> Compiled | None:
    """Put this checkout's finder first on ``sys.meta_path`` (once). None when every
    source is to run (:data:`off_because` says why)."""
    global finder, off_because, installed
    if not installed:
        installed = True
        finder, off_because = finder_for(MODULES, PACKAGE, LIB, os.environ.get(ENV))
        if finder is not None:
            sys.meta_path.insert(0, finder)
    return finder


def report() -> Report:
    """Which of :data:`MODULES` run compiled in this process, and why the others do not."""
    if finder is None:
        return Report((), dict.fromkeys(MODULES, off_because or "the finder is not installed"))
    source = {}
    for name in MODULES:
        if name in finder.served:
            continue
        why = finder.declined.get(name) or why_not(
            name, finder.recorded, finder.package, finder.lib
        )
        source[name] = why or "not imported yet"
    return Report(tuple(n for n in MODULES if n in finder.served), source)
