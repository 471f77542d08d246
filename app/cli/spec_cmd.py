"""``switchyard spec lint FILE...``: §8 compliance of specs' "Model & Runtime" blocks.

Exit 0 when every file is compliant, 1 when one is not, 2 when a file cannot be read or
holds no block (the others are still linted) or the policy cannot be loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.cli.common import add_json_arg, add_policy_arg, policy_from, print_json, settings_from
from app.counted import counted


def register(sub: Any) -> None:
    p = sub.add_parser("spec", help="check specs against the policy (§8 compliance)")
    ssub = p.add_subparsers(dest="spec_command", metavar="ACTION", required=True)
    lint = ssub.add_parser(
        "lint",
        help="check each spec's 'Model & Runtime (Spec Overrides)' block",
        description="Check the §8 block of each FILE against the loaded policy: policy "
        "reference and version, role lines (YES/NO), routing mode, thresholds, tiers, "
        "local_only, HR and the cloud Judge, overrides. One finding per line as "
        "FILE:LINE: field: message. Exit 0 compliant, 1 not compliant, 2 usage error.",
    )
    lint.add_argument("files", nargs="+", type=Path, metavar="FILE", help="spec files (markdown)")
    lint.add_argument(
        "--strict", action="store_true", help="treat warnings as findings (exit 1 on any)"
    )
    add_policy_arg(lint)
    add_json_arg(lint)
    lint.set_defaults(handler=_lint)


def _lint(args: argparse.Namespace) -> int:
    from app.backends.local_only import effective_local_only
    from app.policy.spec import SpecError
    from app.policy.spec_lint import LintReport, lint_file

    settings = settings_from(args)
    loaded = policy_from(args, settings)
    # a run here is local_only when SWITCHYARD_LOCAL_ONLY or the config says so: the
    # lint judges the spec by that, as the run will (it read the policy file's alone)
    session_local_only = effective_local_only(loaded.policy, settings)
    reports: list[LintReport] = []
    usage: list[str] = []
    for path in args.files:
        try:
            reports.append(lint_file(path, loaded, session_local_only=session_local_only))
        except SpecError as exc:
            usage.append(str(exc))

    def ok(r: LintReport) -> bool:
        return r.compliant and not (args.strict and r.warnings)

    if args.json:
        print_json(
            {
                "compliant": not usage and all(ok(r) for r in reports),
                "policy": str(loaded.path),
                "policy_version": loaded.policy.version,
                "files": [r.as_json() for r in reports],
                "usage_errors": usage,
            }
        )
    else:
        for report in reports:
            for problem in report.problems:
                print(problem)
            verdict = "compliant" if ok(report) else "NOT compliant"
            counts = (
                f"{counted(len(report.errors), 'error')}, "
                f"{counted(len(report.warnings), 'warning')}"
            )
            form = report.form.replace("_", "-")
            print(
                f"{report.path}: {verdict} ({form} form, policy {loaded.policy.version}; {counts})"
            )
    for line in usage:
        print(f"switchyard: {line}", file=sys.stderr)
    if usage:
        return 2
    return 0 if all(ok(r) for r in reports) else 1
