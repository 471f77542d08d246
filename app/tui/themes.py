"""Themes are data: ``themes/*.toml`` become Textual ``Theme`` objects, ``themes/*.tcss``
the layout. Our own variables (a colour per audit kind, budget levels …) ride in each
theme's ``variables``, so panes read colours from the theme, never from code."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from textual.theme import Theme

from app.audit.kinds import AUDIT_KINDS
from app.errors import SwitchyardError
from app.resources import data_dir
from app.toml_errors import file_toml_error

DEFAULT_THEME = "switchyard-dark"

#: Every theme must define these, so a stylesheet or pane never meets a missing colour.
REQUIRED_VARIABLES: tuple[str, ...] = (
    *(f"audit-{kind.replace('_', '-')}" for kind in AUDIT_KINDS),
    "budget-ok",
    "budget-warn",
    "budget-over",
    "budget-reserved",
    "budget-track",
    "step-done",
    "step-active",
    "step-pending",
    "step-failed",
    "test-pass",
    "test-fail",
    "diff-add-bg",
    "diff-del-bg",
    "diff-hunk",
    "diff-file",
    "pane-border",
    "dim-text",
    "syntax-theme",
)

_BASE_FIELDS = (
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)


class ThemeError(SwitchyardError):
    """A theme file cannot be used; the message names the file and the field."""

    exit_code = 2


def themes_dir() -> Path:
    return data_dir("themes")


def load_theme(path: Path) -> Theme:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeError(f"{path}: cannot read theme: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ThemeError(file_toml_error(path, str(exc))) from None
    base = data.get("theme")
    if not isinstance(base, dict) or not isinstance(base.get("name"), str):
        raise ThemeError(f"{path}: needs a [theme] table with a name")
    if "primary" not in base:
        raise ThemeError(f"{path}: [theme].primary is required")
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ThemeError(f"{path}: [variables] must be a table")
    missing = [v for v in REQUIRED_VARIABLES if v not in variables]
    if missing:
        raise ThemeError(f"{path}: [variables] is missing {', '.join(missing)}")
    kwargs: dict[str, Any] = {k: str(base[k]) for k in _BASE_FIELDS if k in base}
    return Theme(
        name=base["name"],
        dark=bool(base.get("dark", True)),
        luminosity_spread=float(base.get("luminosity_spread", 0.15)),
        variables={str(k): str(v) for k, v in variables.items()},
        **kwargs,
    )


def load_themes(folder: Path | None = None) -> dict[str, Theme]:
    folder = folder or themes_dir()
    themes = [load_theme(p) for p in sorted(folder.glob("*.toml"))]
    return {t.name: t for t in themes}


def stylesheets(folder: Path | None = None) -> list[Path]:
    """The layout files, in name order (``main.tcss`` before screen-specific ones)."""
    return sorted((folder or themes_dir()).glob("*.tcss"))


def check_theme_name(name: str, folder: Path | None = None) -> str:
    """``name`` when the app can start with it: one of ours, or one of Textual's own
    that the palette's Theme picker offers (a pick of ``nord`` was remembered and used
    at the next start, and ``--theme nord`` was refused)."""
    from textual.theme import BUILTIN_THEMES

    known = load_themes(folder)
    if name not in known and name not in BUILTIN_THEMES:
        raise ThemeError(
            f"unknown theme {name!r} (known: {', '.join(sorted(known))}, or one of "
            f"Textual's: {', '.join(sorted(BUILTIN_THEMES))})"
        )
    return name


def audit_colour(variables: dict[str, str], kind: str) -> str:
    return variables.get(f"audit-{kind.replace('_', '-')}", variables.get("foreground", ""))
