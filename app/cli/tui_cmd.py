"""``switchyard tui`` and ``switchyard demo``: the full-screen workbench.

Textual and the app are imported inside the handlers, so the rest of the CLI never
loads them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.common import add_policy_arg, add_session_args, settings_from
from app.errors import UsageError
from app.heap import hold_startup_collections, release_startup_collections

if TYPE_CHECKING:
    from app.tui.remembered_theme import ThemeMemory


def register(sub: Any) -> None:
    p = sub.add_parser(
        "tui",
        help="open the full-screen workbench on a repository",
        description="Watch the plan, the diff, the tests, every escalation and the money "
        "spent, live; approve or refuse what leaves the machine; review evidence and merge.",
    )
    p.add_argument("task", nargs="?", help="start this task at once")
    _common(p)
    p.add_argument("--repo", type=Path, metavar="PATH", help="the repository (default: here)")
    add_session_args(p, with_approve=False)
    add_policy_arg(p)
    p.set_defaults(handler=_tui)

    d = sub.add_parser(
        "demo",
        help="the workbench on the shipped example repo, with the embedded model",
        description="Copy the shipped example (a parser with an off-by-one bug) to a scratch "
        "git repository and run the demo task on it in the workbench.",
    )
    _common(d)
    add_session_args(d, with_approve=False)
    d.set_defaults(handler=_demo)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--theme",
        metavar="NAME",
        help="switchyard-dark, switchyard-light, switchyard-high-contrast or one of "
        "Textual's (nord, gruvbox, ...) (default: $SWITCHYARD_THEME, the config's theme, or "
        "the one last picked in the app)",
    )


def _tui(args: argparse.Namespace) -> int:
    from app.workspace.git import NotAGitRepo, repo_root

    where = (args.repo or Path.cwd()).resolve()
    if not where.is_dir():
        raise UsageError(f"--repo {where}: no such directory")
    notice: str | None = None
    try:
        repo = repo_root(where)
    except NotAGitRepo:
        repo = where  # the workbench still opens (the tutor, the policy, the budget)
        notice = (
            f"{where} is not a git repository: a task stops before any model call "
            "(`git init` and a first commit make it one)"
        )
    else:
        from app.errors import ConfigError
        from app.workspace.git import current_branch, rev_parse
        from app.workspace.testcmd import load_repo_config

        notices: list[str] = []
        if rev_parse(repo, "HEAD") is None and current_branch(repo) is not None:
            # an unborn branch: said only once a task had started (a user-audit); any
            # other HEAD git cannot read is the run's to report as it is (run_cmd's rule)
            notices.append(
                f"{repo} has no commit yet: a task stops before any model call "
                "(a first commit gives a run a branch to start from)"
            )
        try:
            load_repo_config(repo)
        except ConfigError as exc:  # (said on the first screen, as a run would stop on it)
            notices.append(f"{exc}: a task stops on it until it is mended")
        notice = "\n".join(notices) or None
    return run_tui(
        args,
        repo=repo,
        task=args.task,
        local_only=args.local_only,
        policy=getattr(args, "policy", None),
        notice=notice,
    )


def _demo(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    from app.pipeline.demo import DEMO_TASK, prepare_demo_repo

    notice: str | None = None
    try:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        repo = prepare_demo_repo(settings.data_dir / "demo" / stamp)
    except FileNotFoundError:
        repo = Path.cwd().resolve()
        notice = "the example repo is not shipped in this build: the demo runs in " + str(repo)
        print(f"switchyard: {notice}", file=sys.stderr)
    return run_tui(args, repo=repo, task=DEMO_TASK, local_only=args.local_only, notice=notice)


def require_terminal() -> None:
    """The workbench draws on a terminal and reads its keys: without one (a pipe, a file,
    a CI job) it wrote escape sequences into the file and ran until it was killed."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "the workbench needs a terminal (stdin and stdout); without one, "
            "`switchyard run TASK` runs the pipeline headless"
        )


def run_tui(
    args: argparse.Namespace,
    *,
    repo: Path,
    task: str | None = None,
    local_only: bool = False,
    policy: Path | None = None,
    notice: str | None = None,
) -> int:
    # Importing Textual and drawing the first frame: the collector mostly waits until the
    # session is on screen (app/heap.py, CoreApp.end_startup); put back however it ends.
    hold_startup_collections()
    try:
        settings = settings_from(args)
        from app.tui.app import SwitchyardApp
        from app.tui.defaults import connect_default, pipeline_runner

        theme, memory = _theme(args, settings)
        _log_to_file(settings.data_dir / "logs" / "tui.log")
        require_terminal()
        app = SwitchyardApp(
            connect=connect_default(local_only=local_only, policy=policy),
            runner=pipeline_runner(repo),
            repo=repo,
            theme=theme,
            theme_memory=memory,
            start_task=task,
            start_notice=notice,
        )
        code = app.run() or 0
        return crashed(app) or code or (app.session_exit_code or 0)
    finally:
        release_startup_collections()


def crashed(app: Any) -> int:
    """The app's exit code when it ended on an error (0 when not), the error in the log:
    Textual prints its traceback and sets its return code, and the command exited 0 with
    nothing in tui.log (a TUI audit)."""
    code = int(app.return_code or 0)
    if code:
        error = getattr(app, "_exception", None)
        logging.getLogger("app.tui").error(
            "the workbench ended on an error (exit %d)", code, exc_info=error
        )
    return code


def run_gateway_workbench(args: argparse.Namespace, settings: Any, policy: Any, config: Any) -> int:
    """``switchyard serve --tui``: the gateway as a worker of the workbench; its requests
    in the requests view, its escalations in the approval modal."""
    hold_startup_collections()  # as in run_tui
    try:
        # (the address was checked by serve before anything opened: serve_cmd.check_listen)
        _log_to_file(settings.data_dir / "logs" / "tui.log")
        app = gateway_app(args, settings, policy, config)
        require_terminal()
        code = app.run() or 0
        return crashed(app) or code
    finally:
        release_startup_collections()


def gateway_app(args: argparse.Namespace, settings: Any, policy: Any, config: Any) -> Any:
    """The workbench that ``serve --tui`` runs (a SwitchyardApp), not started yet.

    ``--approve allow|deny`` answers escalations without a keypress; otherwise (ask, the
    default) the modal does, as in ``switchyard tui``.
    """
    from app.tui.app import SwitchyardApp
    from app.tui.defaults import connect_with, pipeline_runner
    from app.tui.gateway import GatewaySpec

    theme, memory = _theme(args, settings)
    repo = Path.cwd().resolve()
    return SwitchyardApp(
        connect=connect_with(settings, policy, approve=args.approve, local_only=args.local_only),
        runner=pipeline_runner(repo),
        repo=repo,
        theme=theme,
        theme_memory=memory,
        gateway=GatewaySpec(host=args.host, port=args.port, config=config),
    )


def _theme(args: argparse.Namespace, settings: Any) -> tuple[str | None, ThemeMemory]:
    """The theme ``--theme`` or a setting names (an unknown one is a usage error), else
    None: the one last picked in the workbench; and where a pick is kept (a ThemeMemory,
    app/tui/remembered_theme.py). Only a flag or a setting given by the user pins the
    theme: its default does not. The flag counts as the setting does: a pick under
    ``--theme`` was written without a word and lost at the next start with the flag."""
    from app.config import setting_source
    from app.tui.remembered_theme import ThemeMemory
    from app.tui.themes import check_theme_name

    flag = getattr(args, "theme", None)
    pinned_by = "--theme" if flag else setting_source(settings, "theme")
    given = flag or (settings.theme if pinned_by else None)
    theme = check_theme_name(given) if given else None
    return theme, ThemeMemory.in_data_dir(settings.data_dir, pinned_by)


def _log_to_file(path: Path) -> None:
    """Diagnostics go to a file: never into the panes, never over the screen."""
    from app.audit.redact import RedactingFormatter
    from app.paths import ensure_dir

    ensure_dir(path.parent)  # a data dir that cannot be a folder: one line, not a traceback
    handler = logging.FileHandler(path, encoding="utf-8")
    # secrets are masked in every file written, the diagnostic log included (GR-009)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # modules log under their import names (app.*); keep "switchyard" for our own lines
    for name in ("app", "switchyard"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
