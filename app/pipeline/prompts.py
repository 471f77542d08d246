"""Prompts for the roles. Short on purpose: the embedded model has a small window."""

from __future__ import annotations

import json

from app.backends.base import Message
from app.pipeline.edits.render import EXAMPLE
from app.pipeline.schemas import Plan

ARCHITECT = (
    "You are the Architect of a coding session. Plan the change; do not write code. "
    "Reply with JSON only: goal, steps (each: title, files, rationale), risks, "
    "acceptance_tests, confidence (0 to 1: how sure you are that the plan fixes the task), "
    "open_questions."
)
INTERROGATE = (
    "Question your draft plan like a Socratic coach: ask up to three questions that could "
    "prove it wrong, and answer each in one sentence."
)
IMPLEMENTER = (
    "You are the Implementer. Follow the plan strictly. Write each change as a "
    "SEARCH/REPLACE block: the file's path on its own line, then <<<<<<< SEARCH, the lines "
    "to change copied exactly from the file with a line or two around them (no line "
    "numbers), =======, the new lines, >>>>>>> REPLACE. To create a file, leave SEARCH "
    "empty; a small file may instead be written whole between <<<<<<< FILE and "
    ">>>>>>> FILE. After the blocks, write one JSON line: self_check_confidence (0 to 1: "
    "how sure you are that the change works) and notes. A unified diff is accepted too. "
    "Example:\n\n" + EXAMPLE
)
JUDGE = (
    "You are the Judge. Review the diff against the task and the test results. Every "
    "finding must cite evidence: `path:line` of a changed file, `test:NAME` of a test, or "
    "`audit:SEQ` of an audit line. Reply with JSON only: verdict (approve, reject or "
    "needs_work), summary, findings (severity, message, cite)."
)
CRITIC = (
    "You are a critic. Do not rewrite anything. List risks, contradictions, missing "
    "requirements and guardrail conflicts in the plan and the diff. Reply with JSON only."
)
REFLECTOR = (
    "You are the ACE reflector. From this failed attempt, extract at most three reusable "
    "patterns (what helped or what hurt), each with a confidence from 0 to 1. JSON only."
)


def clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 20] + "\n…(clipped)…\n"


def kept_to(within: str) -> str:
    """The line that tells a role which folder the change is kept to ("" for none)."""
    if not within:
        return ""
    return (
        f"\n\nOnly files under {within}/ may change (the folder the user works in); "
        "a change to any other file is refused whole."
    )


def architect_draft(task: str, brief: str, within: str = "") -> list[Message]:
    return [
        Message(role="system", content=ARCHITECT),
        Message(
            role="user",
            content=f"Task: {task}{kept_to(within)}\n\nContext (task brief):\n{brief}",
        ),
    ]


def architect_interrogate(task: str, draft: Plan) -> list[Message]:
    return [
        Message(role="system", content=INTERROGATE),
        Message(
            role="user",
            content=f"Task: {task}\n\nDraft plan:\n{draft.model_dump_json(indent=1)}",
        ),
    ]


def architect_final(
    task: str, brief: str, draft: Plan, questions: str, within: str = ""
) -> list[Message]:
    return [
        Message(role="system", content=ARCHITECT),
        Message(
            role="user",
            content=f"Task: {task}{kept_to(within)}\n\nContext:\n{brief}\n\nYour draft plan:\n"
            f"{draft.model_dump_json(indent=1)}\n\nYour self-interrogation:\n{questions}\n\n"
            "Write the final plan.",
        ),
    ]


def implementer(
    task: str, plan: Plan, files: dict[str, str], feedback: str, within: str = ""
) -> list[Message]:
    shown = "\n\n".join(
        f"--- {path}\n" + "\n".join(f"{i + 1:4} {line}" for i, line in enumerate(text.splitlines()))
        for path, text in files.items()
    )
    steps = "\n".join(
        f"{i + 1}. {s.title} ({', '.join(s.files)})" for i, s in enumerate(plan.steps)
    )
    body = (
        f"Task: {task}{kept_to(within)}\n\nPlan:\n{steps}\n\n"
        f"Files (line numbers are not part of them):\n{shown}"
    )
    if feedback:
        body += f"\n\nThe previous attempt failed:\n{feedback}\nFix that."
    return [Message(role="system", content=IMPLEMENTER), Message(role="user", content=body)]


def judge(task: str, diff: str, tests: str, high_risk: list[str], rules: str) -> list[Message]:
    hr = "\n".join(f"- {r}" for r in high_risk) or "- none"
    body = f"Task: {task}\n\nDiff:\n{diff}\n\nTest results:\n{tests}\n\nHigh-Risk reasons:\n{hr}"
    if rules:
        body += f"\n\nProject constitution (cite the rule you apply):\n{rules}"
    return [Message(role="system", content=JUDGE), Message(role="user", content=body)]


def critic(task: str, plan: Plan | None, diff: str) -> list[Message]:
    plan_text = plan.model_dump_json(indent=1) if plan else "(no plan)"
    return [
        Message(role="system", content=CRITIC),
        Message(role="user", content=f"Task: {task}\n\nPlan:\n{plan_text}\n\nDiff:\n{diff}"),
    ]


def reflector(task: str, failures: list[str]) -> list[Message]:
    return [
        Message(role="system", content=REFLECTOR),
        Message(role="user", content=f"Task: {task}\n\nWhat failed:\n" + json.dumps(failures)),
    ]
