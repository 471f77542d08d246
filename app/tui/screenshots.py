"""Make ``screenshots/*.svg`` (and ``*.png``) from the real app: ``python -m app.tui.screenshots``.

Each screen in each theme is driven with ``run_test`` over the scripted session that the
TUI tests use (``tests/tui/scripted.py``: a real session, a scripted pipeline), then saved
with ``save_screenshot``; ``rsvg-convert`` turns every SVG into a PNG. ``gateway`` is
``switchyard serve --tui`` with live traffic: real HTTP requests through the real gateway
to the loopback fakes of the tests (``tests/tui/gateway_world.py``), an escalation waiting
on the modal. Run it from a checkout (all of that is test support, not in the wheel).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.subprocess_env import without_secrets

SIZE = (160, 48)
#: ``serve --tui`` with live traffic (not a scripted scene: see shoot_gateway)
GATEWAY = "gateway"
THEMES = {
    "dark": "switchyard-dark",
    "light": "switchyard-light",
    "high-contrast": "switchyard-high-contrast",
}


async def shoot(scene_name: str, theme: str, out: Path) -> Path:
    from app.clock import ManualClock
    from app.tui.app import SwitchyardApp
    from tests.tui import scenes, scripted

    scene, runs, bundles = scenes.SCENES[scene_name]
    with tempfile.TemporaryDirectory(prefix="switchyard-shot-") as tmp:
        root = Path(tmp)
        os.environ["SWITCHYARD_DATA_DIR"] = str(root / "data")
        os.environ["XDG_CONFIG_HOME"] = str(root / "config")
        clock = ManualClock()
        repo = scripted.make_repo(root / "repo")
        if bundles:
            data = root / "data"
            scripted.make_run(
                repo, "20260101-110000-bad001", green=False, clock=clock, data_dir=data
            )
            scripted.make_run(
                repo, "20260101-113000-good01", green=True, clock=clock, data_dir=data
            )
        app = SwitchyardApp(
            connect=scripted.scripted_connect(root / "data", clock),
            runner=scripted.ScriptedRun(clock),
            tutor=scripted.scripted_tutor,
            repo=repo,
            theme=theme,
            clock=clock,
            start_task=scripted.TASK if runs else None,
        )
        async with app.run_test(size=SIZE) as pilot:
            await scenes.still(scene)(pilot)
            name = f"{scene_name}-{theme.removeprefix('switchyard-')}.svg"
            return Path(app.save_screenshot(name, str(out)))


async def shoot_gateway(theme: str, out: Path) -> Path:
    from tests.tui import gateway_world as world
    from tests.tui.helpers import freeze, settle

    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="switchyard-shot-") as tmp:
        root = Path(tmp)
        try:
            with world.gateway_world(root / "fakes") as fakes:
                os.environ.update(fakes.env(root / "data"))
                os.environ["XDG_CONFIG_HOME"] = str(root / "config")
                port = world.free_port(4000)
                app = world.serve_tui_app("--port", str(port), theme=theme)
                async with app.run_test(size=SIZE) as pilot:
                    held, client = await world.live_traffic(pilot)
                    freeze(pilot)
                    await settle(pilot)
                    name = f"gateway-{theme.removeprefix('switchyard-')}.svg"
                    svg = Path(app.save_screenshot(name, str(out)))
                await asyncio.gather(held, return_exceptions=True)
                await client.aclose()
                return svg
        finally:
            os.environ.clear()
            os.environ.update(saved)


def keep_spaces(svg: Path) -> Path:
    """librsvg drops leading/trailing spaces of a text run unless told to keep them."""
    text = svg.read_text(encoding="utf-8")
    if 'xml:space="preserve"' not in text:
        svg.write_text(text.replace("<svg ", '<svg xml:space="preserve" ', 1), encoding="utf-8")
    return svg


def to_png(svg: Path) -> Path | None:
    tool = shutil.which("rsvg-convert")
    if tool is None:
        return None
    png = svg.with_suffix(".png")
    subprocess.run([tool, "-o", str(png), str(svg)], check=True, env=without_secrets(os.environ))
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.tui.screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--screen", action="append", help="only these screens (repeatable)")
    parser.add_argument("--theme", action="append", choices=sorted(THEMES))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path.cwd()))
    try:
        from tests.tui import scenes
    except ModuleNotFoundError:
        print("screenshots: run this from a Switchyard checkout (needs tests/tui)", file=sys.stderr)
        return 2
    os.environ["TZ"] = "UTC"  # the panes show local time; pictures must not depend on it
    time.tzset()
    args.out.mkdir(parents=True, exist_ok=True)
    missing_png = False
    for scene_name in args.screen or [*scenes.SCENES, GATEWAY]:
        for short in args.theme or list(THEMES):
            theme = THEMES[short]
            if scene_name == GATEWAY:
                shot = shoot_gateway(theme, args.out)
            else:
                shot = shoot(scene_name, theme, args.out)
            svg = keep_spaces(asyncio.run(shot))
            png = to_png(svg)
            missing_png = missing_png or png is None
            print(f"{svg}" + (f"  {png}" if png else ""))
    if missing_png:
        print("screenshots: rsvg-convert not found; PNGs not made (apt install librsvg2-bin)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
