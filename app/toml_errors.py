"""A TOML file's syntax error as one line that names its place: ``FILE:LINE:COL: toml
syntax: …``, as a compiler says it (tomllib ends its message with "(at line 2, column
17)"). The policy said it so; the config file, a theme and a repository's
``.switchyard/config.toml`` said it tomllib's way, each its own."""

from __future__ import annotations

import re
from pathlib import Path

_TOML_POS = re.compile(
    r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)\s*$", re.DOTALL
)
_TOML_EOF = "(at end of document)"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """Escape line breaks and other control characters: one problem, one line."""
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text)


def toml_error(file: Path | str, text: str, message: str) -> str:
    """``FILE:LINE:COL: toml syntax: ...`` from tomllib's ``message`` about ``text``."""
    m = _TOML_POS.match(message)
    if m:
        said = one_line(m["msg"])
        if said == "Cannot overwrite a value":
            # tomllib names no key: the line's own does (a key given twice, most often)
            lines = text.split("\n")
            number = int(m["line"])
            key = lines[number - 1].partition("=")[0].strip() if number <= len(lines) else ""
            if key:
                said += f": {one_line(key)!r} is set twice"
        return f"{file}:{m['line']}:{m['col']}: toml syntax: {said}"
    if message.endswith(_TOML_EOF):
        lines = text.split("\n")
        where = f"{len(lines)}:{len(lines[-1]) + 1}"
        reason = message[: -len(_TOML_EOF)].rstrip()
        return f"{file}:{where}: toml syntax: {one_line(reason)} (at end of file)"
    return f"{file}: toml syntax: {one_line(message)}"


def file_toml_error(file: Path, message: str) -> str:
    """:func:`toml_error` for a file read elsewhere (its text read again, for the place)."""
    try:
        text = file.read_text(encoding="utf-8", errors="replace").removeprefix("\ufeff")
    except OSError:
        text = ""
    return toml_error(file, text, message)
