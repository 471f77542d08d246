"""The Switchyard app: wires themes, stylesheets, the palette and the main screen onto
:class:`~app.tui.core.CoreApp`. No logic lives here."""

from __future__ import annotations

import asyncio
from pathlib import Path, PurePath
from typing import ClassVar, cast

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.theme import Theme

from app.clock import Clock
from app.tui.commands import SwitchyardCommands
from app.tui.core import CoreApp
from app.tui.defaults import Connect, Runner, Tutor, open_tutor
from app.tui.gateway import GatewaySpec
from app.tui.remembered_theme import ThemeMemory, start_theme, write_theme
from app.tui.screens.main import MainScreen
from app.tui.themes import DEFAULT_THEME, load_themes, stylesheets


class SwitchyardApp(CoreApp):
    TITLE = "Switchyard"
    CSS_PATH = cast("list[str | PurePath]", stylesheets())
    COMMANDS = CoreApp.COMMANDS | {SwitchyardCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "quit", priority=True),
    ]

    def __init__(
        self,
        *,
        connect: Connect,
        runner: Runner,
        repo: Path,
        tutor: Tutor = open_tutor,
        theme: str | None = DEFAULT_THEME,
        theme_memory: ThemeMemory | None = None,
        clock: Clock | None = None,
        start_task: str | None = None,
        start_notice: str | None = None,
        themes_dir: Path | None = None,
        gateway: GatewaySpec | None = None,
    ) -> None:
        # Loaded first: App.__init__ already asks for the theme variable defaults.
        self._themes = load_themes(themes_dir)
        super().__init__(
            connect=connect,
            runner=runner,
            tutor=tutor,
            repo=repo,
            clock=clock,
            start_task=start_task,
            start_notice=start_notice,
            gateway=gateway,
        )
        for t in self._themes.values():
            self.register_theme(t)
        #: where a theme picked is kept (None: nowhere); ``theme`` None: the one kept there
        self.theme_memory = theme_memory
        name, self._theme_notice = start_theme(theme, theme_memory, self.available_themes)
        self._start_theme(name)
        #: one write of the picked theme at a time, each of the theme then in force
        self._theme_writes = asyncio.Lock()

    def on_mount(self) -> None:
        # (CoreApp.on_mount runs too: Textual calls each class's handler)
        if self._theme_notice:
            self.notify(self._theme_notice, severity="warning", timeout=10)
        if self.theme_memory is not None:
            # after _start_theme, which publishes nothing: only a pick is remembered
            self.theme_changed_signal.subscribe(self, self._theme_picked)

    def _theme_picked(self, theme: Theme) -> None:
        memory = self.theme_memory
        if memory is not None and memory.pinned_by:
            # a flag names the theme only at a start that gives it again
            when = "at a start with it" if memory.pinned_by.startswith("--") else "at each start"
            self.notify(
                f"theme {theme.name} remembered, but {memory.pinned_by} names the theme {when}"
            )
        self._remember_theme()

    @work(group="theme", exit_on_error=False)
    async def _remember_theme(self) -> None:
        """Not exclusive: a write cancelled halfway could finish after the next one. Each
        waits its turn and keeps the theme in force then, so the last pick is kept."""
        async with self._theme_writes:
            if self.theme_memory is not None:
                await asyncio.to_thread(write_theme, self.theme_memory.path, self.theme)

    def _start_theme(self, name: str) -> None:
        """``self.theme = name`` without its watcher's reparse: nothing is parsed before
        the app runs, so the stylesheet only needs the theme's variables. Setting the
        reactive queued a second parse of every stylesheet and a restyle of the app
        (10-20 ms of the first frame here). The rest is what the watcher
        (``App._watch_theme``, textual 8.2.8) sets; tests/tui/test_themes_start.py
        checks both ways agree."""
        self.set_reactive(App.theme, self._validate_theme(name))
        theme = self.current_theme
        self.update_classes(
            {
                **{c: False for c in self.classes if c.startswith("-theme-")},
                f"-theme-{theme.name}": True,
                "-dark-mode": theme.dark,
                "-light-mode": not theme.dark,
            },
            update=False,
        )
        self._refresh_truecolor_filter(self.ansi_theme)
        self.stylesheet.set_variables(self.get_css_variables())

    def get_theme_variable_defaults(self) -> dict[str, str]:
        # Our variables exist under any theme (also Textual's own), so the stylesheet parses.
        return dict(self._themes[DEFAULT_THEME].variables)

    def get_default_screen(self) -> Screen[None]:
        if self.gateway is not None:
            from app.tui.screens.gateway import GatewayScreen

            return GatewayScreen()
        return MainScreen()
