"""Helpers every benchmark can use: the machine, timing, results on disk, ratio lines.

- :func:`machine_info`: CPU model, cores, RAM, OS, Python and package versions;
- :func:`write_result`: ``bench/results/NAME.json`` with the machine info beside the data;
- :func:`ratio_line`: ``RATIO name: X.XX× vs ALTERNATIVE`` (the line closing notes quote);
- :func:`timed`, :func:`percentile`: wall-clock timing without a framework.

Benchmarks time things; they never assert on time (tests do not either).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PACKAGES = ("numpy", "scipy", "scikit-learn", "bm25s", "pydantic")

T = TypeVar("T")


def compile_app() -> None:
    """Bytecode for every module of ``app/``, as a user's install has it from its second
    start on (pip compiles at install; an editable install on the first import). Benches
    that time a fresh interpreter's imports call it first: a tree run with
    PYTHONDONTWRITEBYTECODE (this sandbox sets it) otherwise compiles every changed or new
    module from source at each start (~150 ms more for the workbench of a fresh clone
    here), which no user waits for and which differs from tree to tree. The other side's
    packages were compiled by pip when they were installed."""
    import compileall

    compileall.compile_dir(Path(__file__).resolve().parent.parent / "app", quiet=1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_info(packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, Any]:
    ram = _ram_bytes()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(ram / 2**30, 1) if ram else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "packages": package_versions(packages),
    }


def print_machine(info: dict[str, Any] | None = None) -> dict[str, Any]:
    info = info or machine_info()
    pkgs = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    print(
        f"machine: {info['cpu']} · {info['cores']} cores · {info['ram_gib']} GiB · "
        f"{info['os']} · Python {info['python']}"
    )
    print(f"packages: {pkgs}")
    return info


def write_result(
    name: str, data: dict[str, Any], *, packages: Iterable[str] = DEFAULT_PACKAGES
) -> Path:
    """Write ``bench/results/NAME.json`` (machine info included); return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"name": name, "machine": machine_info(packages), **data}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path


def ratio(ours: float, theirs: float, *, higher_is_better: bool = False) -> float:
    """How many times better ours is: theirs/ours for times, ours/theirs for scores."""
    num, den = (ours, theirs) if higher_is_better else (theirs, ours)
    return num / den if den else float("inf")


def ratio_line(
    name: str, ours: float, theirs: float, alternative: str, *, higher_is_better: bool = False
) -> str:
    """``RATIO name: X.XX× vs ALTERNATIVE``."""
    value = ratio(ours, theirs, higher_is_better=higher_is_better)
    return f"RATIO {name}: {value:.2f}× vs {alternative}"


def print_ratio(
    name: str, ours: float, theirs: float, alternative: str, *, higher_is_better: bool = False
) -> float:
    print(ratio_line(name, ours, theirs, alternative, higher_is_better=higher_is_better))
    return ratio(ours, theirs, higher_is_better=higher_is_better)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``(result, seconds)`` of one call."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    if q <= 0:
        return float(min(values))
    if q >= 100:
        return float(max(values))
    # the method of statistics.quantiles' "inclusive", for a q between whole percents too
    # (p99.9)
    ordered = sorted(values)
    at = (len(ordered) - 1) * q / 100
    low = int(at)
    return float(ordered[low] + (ordered[low + 1] - ordered[low]) * (at - low))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
