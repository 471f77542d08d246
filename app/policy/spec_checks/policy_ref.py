"""The ``Policy:`` line: which policy the spec was written against, and its version."""

from __future__ import annotations

import re
from pathlib import Path

from app.policy.spec import clean_value
from app.policy.spec_checks.findings import Findings

_VERSION = re.compile(r"\(\s*version\s*:(?P<version>[^)]*)\)", re.I)
_MD_LINK = re.compile(r"^\[[^\]]*\]\((?P<target>[^)]*)\)$")


def check_policy_ref(f: Findings) -> None:
    """The reference names the seed's policy or the loaded file, at the loaded version;
    the version the spec names is kept for the report."""
    entry = f.one(
        "policy",
        "policy",
        f"Policy: {f.policy.policy.seed} (version: {f.policy.version})",
    )
    if entry is None:
        return
    m = _VERSION.search(entry.value)
    if m is None or not entry.value[: m.start()].strip():
        f.error(
            entry.line,
            "policy",
            f"expected 'PATH (version: X.Y.Z)', got {entry.value!r}",
        )
        return
    ref = clean_value(entry.value[: m.start()])
    link = _MD_LINK.match(ref)
    if link is not None:
        ref = link["target"].strip()
    version = clean_value(m["version"]).removeprefix("v")
    f.spec_version = version
    if version != f.policy.version:
        f.error(
            entry.line,
            "policy.version",
            f"the spec names policy version {version!r}; the loaded policy is "
            f"{f.policy.version} ({f.loaded.path})",
        )
    if not same_policy(f, ref):
        f.error(
            entry.line,
            "policy.path",
            f"{ref!r} is neither the seed's {f.policy.policy.seed} nor the loaded "
            f"policy file {f.loaded.path}",
        )


def same_policy(f: Findings, ref: str) -> bool:
    """``ref`` is the seed's policy path, or a path (from here or the spec's directory)
    to the loaded policy file."""
    seed = f.policy.policy.seed
    if ref.removeprefix("./") == seed.removeprefix("./"):
        return True
    if not ref or "\x00" in ref:
        return False
    target = f.loaded.path
    candidates = [Path(ref)]
    if f.spec_dir is not None and not Path(ref).is_absolute():
        candidates.append(f.spec_dir / ref)
    for cand in candidates:
        try:
            if cand.exists() and cand.samefile(target):
                return True
        except (OSError, ValueError):
            continue
    return False
