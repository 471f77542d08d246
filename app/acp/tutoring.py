"""A prompt in the tutor mode: one turn of :class:`app.pipeline.tutor.TutorSession`.

The conversation lasts as long as the ACP session, grounded in its repository, so the
policy's turn cap holds across prompts: past it, the stop reason is
``max_turn_requests``. As on the command line, ``/reveal`` shows a held-back answer and
``/escalate QUESTION`` is the learner's explicit request for the cloud fallback (which
asks a permission like any escalation).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from acp import update_agent_message_text
from acp.schema import StopReason

from app.acp.relay import RunRelay
from app.acp.sessions import AcpSession
from app.acp.turns import relaying
from app.bus import AuditAppended
from app.errors import UsageError
from app.pipeline.tutor import TutorReply, TutorReplyInvalid, TutorSession, TutorTurnCapReached

Send = Callable[[Any], Awaitable[None]]

REVEAL = "/reveal"
ESCALATE = "/escalate"


async def tutor_turn(s: AcpSession, text: str, *, send: Send) -> StopReason:
    if s.tutor is None:
        s.tutor = TutorSession.for_session(s.core, repo=s.repo)
    tutor = s.tutor
    if text == REVEAL:
        answer = tutor.reveal()
        await send(update_agent_message_text(answer or "There is no answer to reveal yet."))
        return "end_turn"
    escalate = text.startswith(ESCALATE)
    question = text[len(ESCALATE) :].strip() if escalate else text
    relay = RunRelay(send, s.repo, None, s.usage, session=s.id)
    try:
        async with relaying(s, relay, (AuditAppended,)):
            reply = await tutor.ask(question, escalate=escalate)
    except TutorTurnCapReached as exc:
        await send(update_agent_message_text(str(exc)))
        return "max_turn_requests"
    except (TutorReplyInvalid, UsageError) as exc:
        await send(update_agent_message_text(str(exc)))
        return "end_turn"
    await send(update_agent_message_text(render(reply, tutor.grounding_note)))
    return "end_turn"


def render(reply: TutorReply, note: str | None) -> str:
    lines = ["**Questions**"]
    lines += [f"{n}. {q}" for n, q in enumerate(reply.questions, start=1)]
    if reply.hint:
        lines += ["", f"**Hint:** {reply.hint}"]
    if reply.answer:
        lines += ["", f"**Answer:** {reply.answer}"]
    elif reply.answer_withheld:
        lines += ["", f"_The answer is held back until you reply ({REVEAL} shows it)._"]
    where = f" · {reply.model}" if reply.model else ""
    left = "" if reply.turns_left is None else f", {reply.turns_left} left"
    lines += ["", f"_{reply.label}{left}{where}_"]
    if note:
        lines.append(f"_{note}_")
    return "\n".join(lines)
