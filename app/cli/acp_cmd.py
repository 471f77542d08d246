"""``switchyard acp``: the pipeline as an Agent Client Protocol agent over stdio.

An editor (Zed, Toad, ...) starts it and speaks JSON-RPC on its stdin/stdout. The
settings and the policy are checked first, so a broken policy file is one clear line on
stderr and exit 2 before any protocol starts; from then on stdout carries protocol
messages only and diagnostics go to ``<data dir>/logs/acp.log``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from app.cli.common import add_policy_arg, add_session_args, policy_from, settings_from
from app.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "acp",
        help="serve the pipeline to an editor as an ACP agent (stdio; Zed, Toad)",
        description="Speak the Agent Client Protocol (version 1) on stdin/stdout: each "
        "session runs Switchyard's pipeline on the client's repository, escalations and "
        "the merge become permission requests, and a 'tutor' mode runs the Tutor. The "
        "editor starts this command; it is not run by hand. Logs: <data dir>/logs/acp.log.",
    )
    p.add_argument(
        "--repo",
        type=Path,
        metavar="PATH",
        help="serve only this git repository: a session whose cwd lies outside it is refused "
        "(default: the repository of each session's cwd)",
    )
    add_session_args(p, with_approve=False)
    add_policy_arg(p)
    p.set_defaults(handler=_acp)


def _acp(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    policy = policy_from(args, settings).policy
    repo = None
    if args.repo is not None:
        from app.workspace.git import NotAGitRepo, repo_root

        try:
            repo = repo_root(args.repo.resolve())
        except NotAGitRepo:
            raise UsageError(f"--repo {args.repo}: not a git repository") from None
    from app.acp.server import serve

    return serve(settings, policy, repo=repo, local_only=args.local_only)
