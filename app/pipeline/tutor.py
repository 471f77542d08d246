"""The Tutor (§1, maieutic coach): a short coaching conversation, headless.

A :class:`TutorSession` sits over the session's router and talks to the ``tutor`` role.
Each :meth:`TutorSession.ask` is one *turn*: the learner's question goes out with the
whole conversation so far (earlier questions and the tutor's earlier turns), so the tutor
coaches on, it does not start over. The reply is a :class:`~app.pipeline.schemas.TutorTurn`
(GR-012: the schema goes to the backend for constrained decoding, one repair attempt).

The rules, and why:

* **Questions before any answer.** The schema already requires at least one question.
  On top of that the session *holds back the full answer of the first turn*: it is kept,
  but :attr:`TutorReply.answer` is ``None`` until the learner has replied once (the
  second turn shows its answer) or asks for it with :meth:`TutorSession.reveal`. When
  the cap leaves no second turn, nothing is held: the learner could never reply.
  The model is told the same thing, so it writes its first turn as questions and a hint.
* **Keep sessions short.** ``policy.roles["tutor"].max_turns`` caps the turns (no cap
  when it is unset). A question beyond the cap raises :class:`TutorTurnCapReached` and
  writes a ``tutor`` audit line (``TUTOR_TURN_CAP``); a new conversation is a new
  :class:`TutorSession`. The model is told which turn it is on, and to be complete on
  the last one.
* **Local unless the learner asks.** The tutor escalates only on the user's explicit
  request: ``ask(..., escalate=True)`` sends ``Signals(user_request=True)``; the router
  then asks for approval before anything leaves the machine. Otherwise it stays local.
* **A failed turn is not a turn.** A reply that does not fit the schema after the repair
  attempt (or no step that could serve) raises :class:`TutorReplyInvalid` and writes a
  ``TUTOR_REPLY_INVALID`` audit line; the conversation and the turn count are unchanged.

Every turn leaves one ``tutor`` audit line ("turn n of max", ``TUTOR_TURN``) after the
router's own route/escalation/call lines. The question text is never put in the audit.

Optionally the conversation is grounded in a repository: the first question is run
through Stage0 (TF-IDF + MMR, no LLM) and the few chunks it picks go into the system
prompt of every turn, so the tutor can ask about the code in front of the learner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from app.backends.base import Message
from app.counted import counted
from app.errors import SwitchyardError, UsageError
from app.pipeline.schemas import TutorTurn
from app.pipeline.structured import Answer, ask_model
from app.router.types import Signals

if TYPE_CHECKING:
    from app.policy.schema import Policy
    from app.router.service import Router
    from app.router.session import Session

ROLE = "tutor"

TUTOR_SYSTEM = (
    "You are a patient programming tutor (a maieutic coach). Ask the learner questions "
    "first that lead them to the answer; give a short hint; put a full answer last, for "
    "when they are stuck. Keep it short. Reply with JSON only."
)
FIRST_TURN = (
    "The learner sees your questions and hint first; your answer stays hidden until they "
    "have replied. Make the questions do the teaching."
)
LATER_TURN = (
    "The learner is replying to your earlier questions: build on what they said, correct "
    "what is wrong, and ask what is still open."
)
LAST_TURN = "This is the last turn of the session: make the answer complete."

#: Tokens of repository context a grounded conversation may carry (a 7B's small window).
GROUNDING_TOKENS = 1200
#: Chunks Stage0 may pick for the grounding, in all (its code lane adds none).
GROUNDING_CHUNKS = 4

#: The one model call of a turn: messages and signals in, a typed answer out.
#: :func:`app.pipeline.structured.ask_model` on the router by default; tests script it.
TutorModel = Callable[[list[Message], Signals], Awaitable[Answer[TutorTurn]]]


# ── errors ───────────────────────────────────────────────────────────────────────────────


class TutorError(SwitchyardError):
    """Base of the tutor's errors."""


class TutorTurnCapReached(TutorError):
    """The policy's ``max_turns`` for the tutor is used up (§1: keep sessions short)."""

    def __init__(self, max_turns: int) -> None:
        self.max_turns = max_turns
        super().__init__(
            f"tutor: this session has used all {max_turns} turns the policy allows "
            f"(roles.tutor.max_turns = {max_turns}: keep sessions short); "
            "start a new session to go on"
        )


class TutorReplyInvalid(TutorError):
    """The tutor gave no usable turn; the question did not use a turn."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"tutor: no usable reply ({problem}); this question did not use a turn")


# ── what a turn returns ──────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class TutorReply:
    """One turn as the learner sees it. ``turn`` is the model's whole reply, kept."""

    n: int
    max_turns: int | None
    question: str
    turn: TutorTurn
    #: False while the answer is held back (the first turn, until revealed)
    answer_shown: bool
    escalate_requested: bool = False
    escalated: bool = False
    model: str | None = None
    runtime: str | None = None
    #: why an escalation asked for stayed local (its skips' and denials' details)
    stayed_local: str = ""

    @property
    def questions(self) -> list[str]:
        return list(self.turn.questions)

    @property
    def hint(self) -> str:
        return self.turn.hint

    @property
    def answer(self) -> str | None:
        """The answer, or None while it is held back (questions first); "" when the tutor
        gave none (nothing is held back then: it read null, "held back", in --json)."""
        return self.turn.answer if self.answer_shown or not self.turn.answer else None

    @property
    def answer_withheld(self) -> bool:
        return not self.answer_shown and bool(self.turn.answer)

    @property
    def turns_left(self) -> int | None:
        return None if self.max_turns is None else max(0, self.max_turns - self.n)

    @property
    def label(self) -> str:
        """``turn 2/6`` (``turn 2`` without a cap)."""
        return f"turn {self.n}" + (f"/{self.max_turns}" if self.max_turns is not None else "")

    def to_json(self) -> dict[str, object]:
        """Stable snake_case keys; the answer is null while it is held back."""
        return {
            "turn": self.n,
            "max_turns": self.max_turns,
            "turns_left": self.turns_left,
            "question": self.question,
            "questions": self.questions,
            "hint": self.hint,
            "answer": self.answer,
            "answer_withheld": self.answer_withheld,
            "escalate_requested": self.escalate_requested,
            "escalated": self.escalated,
            "model": self.model,
            "runtime": self.runtime,
        }


@dataclass(frozen=True)
class Grounding:
    """Repository context for the conversation: the text sent, and where it came from."""

    text: str
    sources: list[str]


def repo_grounding(
    repo: Path, policy: Policy, question: str, *, budget_tokens: int = GROUNDING_TOKENS
) -> Grounding:
    """Stage0's few best chunks of ``repo`` for ``question`` (sync: run it in a thread).

    Raises :class:`app.workspace.git.NotAGitRepo` when ``repo`` is not a git work tree.
    """
    from app.stage0.engine import Stage0

    with Stage0(repo, policy) as engine:
        found = engine.query(question, k=GROUNDING_CHUNKS, code_k=0, budget_tokens=budget_tokens)
    chunks = [*found.chunks, *found.code_units]
    parts = [f"### {c.location}\n```\n{c.text.rstrip()}\n```" for c in chunks]
    return Grounding("\n\n".join(parts), [c.location for c in chunks])


# ── the session ──────────────────────────────────────────────────────────────────────────


class TutorSession:
    """One coaching conversation with the ``tutor`` role, capped by the policy.

    ``router``: the session's router (its audit log and session id are used for the
    tutor's own lines). ``max_turns``: overrides the policy's cap (tests, a spec).
    ``repo``: ground the conversation in this repository (Stage0 on the first question;
    a repository Stage0 cannot read leaves the conversation ungrounded, with a note).
    ``model``: replaces the routed call (tests and scripted screens).
    """

    def __init__(
        self,
        router: Router,
        *,
        max_turns: int | None = None,
        repo: Path | None = None,
        run: str | None = None,
        model: TutorModel | None = None,
    ) -> None:
        role = router.policy.roles.get(ROLE)
        self.router = router
        self.max_turns: int | None = (
            max_turns if max_turns is not None else (role.max_turns if role else None)
        )
        self.max_tokens = role.max_output_tokens if role else 1024
        self.repo = repo
        self.run = run
        self._model = model
        self._replies: list[TutorReply] = []
        self._lock = asyncio.Lock()
        self.grounding: Grounding | None = None
        #: why a requested grounding did not happen (e.g. "not a git repository")
        self.grounding_note: str | None = None

    @classmethod
    def for_session(cls, session: Session, *, repo: Path | None = None) -> TutorSession:
        return cls(session.router, repo=repo)

    # ── state ────────────────────────────────────────────────────────────────────────

    @property
    def replies(self) -> list[TutorReply]:
        return list(self._replies)

    @property
    def turns_used(self) -> int:
        return len(self._replies)

    @property
    def turns_left(self) -> int | None:
        """Turns still allowed; None when the policy sets no cap."""
        return None if self.max_turns is None else max(0, self.max_turns - self.turns_used)

    @property
    def capped(self) -> bool:
        """True when no turn is left: :meth:`ask` would raise."""
        return self.turns_left == 0

    @property
    def last(self) -> TutorReply | None:
        return self._replies[-1] if self._replies else None

    def reveal(self) -> str | None:
        """Show the last turn's held answer (the learner asks for it); None before any turn."""
        last = self.last
        if last is None:
            return None
        if not last.answer_shown:
            self._replies[-1] = replace(last, answer_shown=True)
        return last.turn.answer

    # ── a turn ───────────────────────────────────────────────────────────────────────

    async def ask(self, question: str, *, escalate: bool = False) -> TutorReply:
        """One turn. ``escalate``: the learner's explicit request for the cloud fallback."""
        question = question.strip()
        if not question:
            raise UsageError("tutor: the question is empty")
        async with self._lock:
            n = self.turns_used + 1
            if self.max_turns is not None and n > self.max_turns:
                await self._audit(
                    ["TUTOR_TURN_CAP"],
                    {"turns": self.turns_used, "max_turns": self.max_turns},
                    f"turn cap reached: {self.turns_used} of {self.max_turns} turns used; "
                    "question refused",
                )
                raise TutorTurnCapReached(self.max_turns)
            if n == 1 and self.repo is not None:
                await self._ground(question)
            messages = self._messages(question, n)
            signals = Signals(user_request=escalate)
            answer = await self._call(messages, signals)
            result = answer.result
            if answer.value is None:
                problem = answer.error or "the tutor gave no answer"
                await self._audit(
                    ["TUTOR_REPLY_INVALID"],
                    {"turn": n, "max_turns": self.max_turns, "error": problem[:300]},
                    f"turn {n} not counted: {problem[:200]}",
                )
                raise TutorReplyInvalid(problem)
            last_allowed = self.max_turns is not None and n >= self.max_turns
            reply = TutorReply(
                n=n,
                max_turns=self.max_turns,
                question=question,
                turn=distinct_questions(answer.value),
                answer_shown=n > 1 or last_allowed,
                escalate_requested=escalate,
                escalated=bool(result and result.escalated),
                model=result.model if result else None,
                runtime=result.runtime if result else None,
                # why it stayed local ("it stayed local" said nothing of the missing key
                # a user-audit found behind it); empty for a request the cloud served
                stayed_local=result.passed_over if escalate and result else "",
            )
            self._replies.append(reply)
            of = f" of {self.max_turns}" if self.max_turns is not None else ""
            held = (
                "answer held back"
                if reply.answer_withheld
                else "answer shown"
                if reply.turn.answer
                else "no answer given"
            )
            await self._audit(
                ["TUTOR_TURN"],
                {
                    "turn": n,
                    "max_turns": self.max_turns,
                    "turns_left": reply.turns_left,
                    "questions": len(reply.turn.questions),
                    "answer_withheld": reply.answer_withheld,
                    "escalate_requested": escalate,
                    "escalated": reply.escalated,
                    "model": reply.model,
                },
                f"turn {n}{of}: {counted(len(reply.turn.questions), 'question')}, {held}"
                + (f" ({reply.model})" if reply.model else ""),
            )
            return reply

    async def _call(self, messages: list[Message], signals: Signals) -> Answer[TutorTurn]:
        if self._model is not None:
            return await self._model(messages, signals)
        return await ask_model(
            self.router,
            ROLE,
            TutorTurn,
            messages,
            signals,
            run=self.run,
            max_tokens=self.max_tokens,
        )

    def _messages(self, question: str, n: int) -> list[Message]:
        rules = [TUTOR_SYSTEM]
        if self.max_turns is not None:
            rules.append(f"This is turn {n} of at most {self.max_turns}.")
        rules.append(FIRST_TURN if n == 1 else LATER_TURN)
        if self.max_turns is not None and n >= self.max_turns:
            rules.append(LAST_TURN)
        system = " ".join(rules)
        if self.grounding is not None and self.grounding.text:
            system += (
                "\n\nCode from the learner's repository that may matter:\n\n" + self.grounding.text
            )
        messages = [Message(role="system", content=system)]
        for past in self._replies:
            messages.append(Message(role="user", content=past.question))
            messages.append(Message(role="assistant", content=past.turn.model_dump_json()))
        messages.append(Message(role="user", content=question))
        return messages

    async def _ground(self, question: str) -> None:
        assert self.repo is not None
        try:
            self.grounding = await asyncio.to_thread(
                repo_grounding, self.repo, self.router.policy, question
            )
        except (SwitchyardError, OSError) as exc:
            self.grounding_note = f"not grounded in {self.repo}: {exc}"

    async def _audit(self, codes: list[str], values: dict[str, object], detail: str) -> None:
        await self.router.audit.append(
            "tutor",
            session=self.router.session,
            run=self.run,
            role=ROLE,
            reason_codes=codes,
            values=values,
            detail=detail,
        )


def distinct_questions(turn: TutorTurn) -> TutorTurn:
    """The turn with repeated questions dropped (small models loop); order kept."""
    seen: set[str] = set()
    kept: list[str] = []
    for q in turn.questions:
        key = " ".join(q.lower().split())
        if key and key not in seen:
            seen.add(key)
            kept.append(q)
    return turn.model_copy(update={"questions": kept or turn.questions[:1]})
