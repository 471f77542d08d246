"""Every ``--json`` result a test makes the CLI print in process (``app.cli.main.main``)
is held to docs/json.md: a field the reference does not name fails the test that printed
it (tests/json_reference.py). A CLI run as a subprocess is not watched.

The two functions every command prints its JSON with (``app.cli.common.print_json`` and
``print_json_line``) are replaced, for the whole session, by ones that also note what was
printed and for which command (read from the ``argv`` of ``app.cli.main.main`` up the
stack; a handler called without ``main`` is not watched). The replacement is made before
any test module is imported, so every command module binds it when it imports them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from types import FrameType
from typing import Any

import pytest

from tests.json_reference import problems, reference

#: (command, what it printed) since the current test began
_PRINTED: list[tuple[str, Mapping[str, Any]]] = []


def _command(frame: FrameType | None) -> str | None:
    """The documented command ``main``'s argv names (``["budget", "--json"]`` → budget)."""
    from app.cli import main as cli_main

    while frame is not None:
        if frame.f_code is cli_main.main.__code__:
            argv = [str(a) for a in frame.f_locals.get("argv") or ()]
            known = reference()
            for words in (2, 1):
                name = " ".join(argv[:words])
                if name in known:
                    return name
            return None
        frame = frame.f_back
    return None


def _watching(printer: Callable[[Any], None]) -> Callable[[Any], None]:
    def watched(data: Any) -> None:
        command = _command(sys._getframe(1))
        if command is not None and isinstance(data, Mapping):
            _PRINTED.append((command, data))
        printer(data)

    watched.__doc__ = printer.__doc__
    return watched


def pytest_configure(config: pytest.Config) -> None:
    from app.cli import common

    for name in ("print_json", "print_json_line"):
        setattr(common, name, _watching(getattr(common, name)))


def _unwatched() -> list[str]:
    """Command modules that bound a printer before the watch replaced it (one imported
    before pytest_configure): their output would go unchecked."""
    from app.cli import common

    return [
        f"{name}.{attr}"
        for name, module in list(sys.modules.items())
        if name.startswith("app.cli.") and module is not None
        for attr in ("print_json", "print_json_line")
        if getattr(module, attr, getattr(common, attr)) is not getattr(common, attr)
    ]


@pytest.fixture(autouse=True)
def _json_documented() -> Iterator[None]:
    assert not _unwatched(), f"not watched: {_unwatched()}"
    _PRINTED.clear()
    yield
    printed, _PRINTED[:] = list(_PRINTED), []
    found = problems(printed)
    assert not found, "; ".join(found)
