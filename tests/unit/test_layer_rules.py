"""The one rule between layers (DESIGN.md): dependencies point one way, to the right and
down to the leaves. Checked statically over every ``import`` in the package, including
the lazy ones inside functions and those under ``TYPE_CHECKING``: a lazy upward import is
still a cycle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"

#: package (or leaf module) → the app packages it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # Stage0 is "no LLM": retrieval, the brief and its citation checks; the token leaf only
    "app.stage0": ("app.pipeline", "app.router", "app.backends", "app.cli", "app.tui"),
    # the policy is pure data and pure functions
    "app.policy": ("app.pipeline", "app.router", "app.backends", "app.cli", "app.tui"),
    # backends know nothing of roles, escalation or the pipeline
    "app.backends": ("app.pipeline", "app.router", "app.cli", "app.tui"),
    "app.router": ("app.pipeline", "app.cli", "app.tui", "app.gateway", "app.acp"),
    "app.pipeline": ("app.cli", "app.tui", "app.gateway", "app.acp"),
    # the ACP face (faces do not import each other)
    "app.acp": ("app.cli", "app.tui", "app.gateway"),
    # the leaves use nothing above them (but the memo leaf below every one of them)
    "app.tokens": ("app.",),
    "app.remembered": ("app.",),
    "app.sqlite": ("app.",),
    "app.counted": ("app.",),
    "app.own_thread": ("app.",),
    # the environment of every subprocess: used by the workspace and the backends alike
    "app.subprocess_env": ("app.",),
    "app.bus": ("app.pipeline", "app.router", "app.backends", "app.cli", "app.tui"),
    "app.audit": ("app.pipeline", "app.router", "app.backends", "app.cli", "app.tui"),
    # the team store's leaf: the database URL, connecting, migrations (issue 18)
    "app.store": ("app.pipeline", "app.router", "app.backends", "app.audit", "app.cli", "app.tui"),
}


#: leaves that import nothing of Switchyard themselves, which any module may use
UNDER_THE_LEAVES = ("app.remembered",)


def _under_the_leaves(target: str) -> bool:
    return any(target == m or target.startswith(m + ".") for m in UNDER_THE_LEAVES)


def _module_name(path: Path) -> str:
    rel = path.relative_to(APP.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from app import pipeline` imports the package too
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _violations() -> list[str]:
    out: list[str] = []
    for path in sorted(APP.rglob("*.py")):
        name = _module_name(path)
        rules = [
            bad for owner, bad in FORBIDDEN.items() if name == owner or name.startswith(owner + ".")
        ]
        for lineno, target in _imports(path):
            for bad in (b for group in rules for b in group):
                hit = (
                    target.startswith(bad)
                    if bad.endswith(".")
                    else (target == bad or target.startswith(bad + "."))
                )
                if hit and not _under_the_leaves(target):
                    out.append(f"{path.relative_to(APP.parent)}:{lineno}: {name} imports {target}")
    return out


def test_no_layer_imports_upward() -> None:
    assert _violations() == []


def test_only_the_cli_imports_the_acp_face() -> None:
    """``switchyard acp`` is the one way in to app.acp: no core module, no other face."""
    found = [
        f"{path.relative_to(APP.parent)}:{lineno}: {target}"
        for path in sorted(APP.rglob("*.py"))
        if not _module_name(path).startswith(("app.acp", "app.cli"))
        for lineno, target in _imports(path)
        if target == "app.acp" or target.startswith("app.acp.")
    ]
    assert found == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from app.router.service import Router\n", True),
        ("def f():\n    from app.pipeline import runner\n", True),
        ("from app import pipeline\n", True),
        ("from app.tokens import count_text\n", False),
        ("from app.stage0.brief import Brief\n", False),
    ],
)
def test_the_checker_sees_every_kind_of_import(tmp_path: Path, source: str, expected: bool) -> None:
    """The rule itself can fail: an upward import of each form is found in Stage0."""
    path = tmp_path / "probe.py"
    path.write_text(source)
    targets = [t for _, t in _imports(path)]
    bad = FORBIDDEN["app.stage0"]
    assert any(t == b or t.startswith(b + ".") for t in targets for b in bad) is expected
