"""The theme picked in the workbench, remembered for its next start.

It is kept in ``tui.json`` in the data dir, a file that is the workbench's memory, not a
setting: a theme that ``--theme``, ``SWITCHYARD_THEME`` or the config file's ``theme``
names still wins at start (that is the user's word, typed; the memory only stands in
for it). The file is replaced whole (:func:`app.replacing.replacing`), so a crash while
writing leaves the last choice, not half a file; and a file that cannot be read, or that
names a theme this build does not have, costs the default theme and a notice, never the
start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, NamedTuple

from app.errors import SwitchyardError
from app.tui.themes import DEFAULT_THEME

FILE_NAME = "tui.json"


class ThemeMemory(NamedTuple):
    """Where the picked theme is kept, and what names the theme at each start instead.
    (A NamedTuple: a frozen dataclass cost 0.7 ms of the first frame to build.)"""

    path: Path
    #: a flag or setting that names the theme (``--theme``, ``SWITCHYARD_THEME``, the
    #: config file and line): it wins at its start, which a pick in the app is told;
    #: None when none does
    pinned_by: str | None = None

    @classmethod
    def in_data_dir(cls, data_dir: Path, pinned_by: str | None = None) -> ThemeMemory:
        return cls(data_dir / FILE_NAME, pinned_by)


def read_theme(path: Path) -> tuple[str | None, str | None]:
    """(the theme remembered, or None; what is wrong with the file, or None)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None  # nothing picked yet
    except OSError as exc:
        return None, f"{path}: cannot read it ({exc.strerror or exc})"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, f"{path}: not the JSON the workbench writes"
    if not isinstance(data, dict):
        return None, f"{path}: not the JSON the workbench writes"
    theme = data.get("theme")
    if theme is None:
        return None, None
    if not isinstance(theme, str) or not theme:
        return None, f"{path}: its theme is not a theme's name"
    return theme, None


def start_theme(
    given: str | None, memory: ThemeMemory | None, known: Collection[str]
) -> tuple[str, str | None]:
    """The theme to start with (``given``, else the remembered one, else the default), and
    a notice when a remembered theme could not be used."""
    if given is not None:
        return given, None
    if memory is None:
        return DEFAULT_THEME, None
    name, problem = read_theme(memory.path)
    if name is not None and name not in known:
        problem = f"{memory.path}: the theme remembered, {name!r}, is not one of this build"
    if problem is not None:
        return DEFAULT_THEME, f"{problem}: {DEFAULT_THEME} instead (a theme picked replaces it)"
    return name or DEFAULT_THEME, None


def write_theme(path: Path, name: str) -> None:
    """Keep ``name`` in ``path`` (the file's other keys kept), replaced whole and synced.
    A SwitchyardError says why it could not be. One at a time: the app queues its writes
    (its ``_theme_writes`` lock), so the last pick is the one kept."""
    # (here, not above: only a pick writes, and the first frame needs none of them)
    from app.durable import fsync_dir
    from app.paths import ensure_dir
    from app.replacing import replacing

    try:
        kept: dict[str, Any] = {}
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            kept = old if isinstance(old, dict) else {}
        except (OSError, ValueError):  # (none yet, or a broken one: replaced)
            pass
        ensure_dir(path.parent)
        with replacing(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
            json.dump({**kept, "theme": name}, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())  # (the content on disk before the rename)
        fsync_dir(path.parent)
    except OSError as exc:
        raise SwitchyardError(
            f"{path}: theme {name} not remembered ({exc.strerror or exc})"
        ) from None
