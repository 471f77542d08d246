"""The router's hot modules compiled in place by Cython, and the guard that runs a module's
source whenever its compiled form may not be that source (a leaf: the standard library).

Why (issue 20): a routed request is ~160 µs of Python glue (decide, two audit lines, the
reservation and the settlement), each part 1-7 µs, none left whose removal would halve it.
Compiled, the same code skips the interpreter's dispatch: the same tests pass and the
request costs ~10 µs less. ``make`` builds them (``python -m app.native_build``); a
checkout that never built them, an install from a wheel, or ``SWITCHYARD_NATIVE=0``
runs the sources, as before.

The guard (:func:`install`, run when ``app`` is imported, before any of these modules):
a module runs compiled only when the build's stamp (``app/_native.json``, written after a
build, removed before one) records the SHA-256 of the source now on disk. An edited
source runs as the source until the next build, alone: a Cython module calls the others
through Python, as any caller does, so a mix of compiled and source modules is sound.
Cython keeps Python's semantics (``annotation_typing`` off: an annotation never turns a
value into a C type nor refuses a subclass).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

#: the package's root (``app/``), and the stamp a build writes there
PACKAGE = Path(__file__).resolve().parent
STAMP = PACKAGE / "_native.json"
#: ``0`` runs every source (a comparison, a debugging session)
ENV = "SWITCHYARD_NATIVE"
#: the stamp's format
STAMP_VERSION = 1

#: the modules a routed request spends its time in (py-spy over the router bench),
#: without those that define pydantic models (Cython keeps no annotation pydantic reads
#: for a field of its own) or import Textual
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
    "app.router.approvals",
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


def source_of(name: str, package: Path = PACKAGE) -> Path:
    """The source file of module ``name`` (``app.x.y`` → ``<package>/x/y.py``)."""
    return package.joinpath(*name.split(".")[1:]).with_suffix(".py")


def compiled_of(name: str, package: Path = PACKAGE) -> Path | None:
    """The compiled form of ``name`` this interpreter would import, if there is one."""
    source = source_of(name, package)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(path: Path) -> dict[str, str | int]:
    """What the stamp records of a source: its hash, and its size and mtime (a source
    whose size and mtime are as recorded is not hashed again)."""
    st = path.stat()
    return {"sha256": digest(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_stamp(stamp: Path = STAMP) -> dict[str, dict[str, str | int]]:
    """The modules the last finished build compiled, by name (none when there is no
    stamp, or one this Switchyard cannot read: their sources run)."""
    try:
        data = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != STAMP_VERSION:
        return {}
    if data.get("python") != sys.implementation.cache_tag:
        return {}
    modules = data.get("modules")
    return modules if isinstance(modules, dict) else {}


def is_fresh(source: Path, recorded: object) -> bool:
    """Whether ``source`` is what the build compiled (``recorded``: its stamp entry)."""
    if not isinstance(recorded, dict):
        return False
    try:
        st = source.stat()
        if st.st_size != recorded.get("size"):
            return False
        if st.st_mtime_ns == recorded.get("mtime_ns"):
            return True
        return digest(source) == recorded.get("sha256")  # (touched, maybe unchanged)
    except OSError:
        return False


@dataclass(frozen=True)
class Plan:
    """Which modules run compiled, and why each other one runs its source."""

    compiled: tuple[str, ...]
    #: module name → why it runs its source ("not built", "source changed", ...)
    source: dict[str, str]


def plan(
    modules: Sequence[str] = MODULES,
    package: Path = PACKAGE,
    stamp: Path = STAMP,
    env: str | None = None,
) -> Plan:
    """What :func:`install` does for ``modules`` (``env``: the value of ``ENV``)."""
    if env == "0":
        return Plan((), {name: f"{ENV}=0" for name in modules})
    recorded = read_stamp(stamp)
    compiled: list[str] = []
    source: dict[str, str] = {}
    # (a module the last build compiled and this list no longer names is guarded too)
    for name in dict.fromkeys([*modules, *recorded]):
        if compiled_of(name, package) is None:
            source[name] = "not built"
        elif name not in recorded:
            source[name] = "not in the last finished build"
        elif not is_fresh(source_of(name, package), recorded[name]):
            source[name] = "source changed since the build"
        else:
            compiled.append(name)
    return Plan(tuple(compiled), source)


class SourceFirst:
    """A finder, first on ``sys.meta_path``: the modules it names are imported from their
    sources, though a compiled form lies beside them."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


#: the plan this process imported by (None until :func:`install` ran)
installed: Plan | None = None


def install() -> Plan:
    """Make every module that may not be its source's compiled form import its source."""
    global installed
    if installed is not None:
        return installed
    installed = plan(env=os.environ.get(ENV))
    # (only where a compiled form would shadow the source: the import finds the rest)
    shadowed = {
        name: source_of(name)
        for name in installed.source
        if compiled_of(name) is not None and name not in sys.modules
    }
    if shadowed:
        sys.meta_path.insert(0, SourceFirst(shadowed))
    return installed
