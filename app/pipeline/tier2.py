"""Tier2 synthesis over a task brief, citation-grounded (GR-008).

The role ``tier2`` is asked for a :class:`~app.stage0.citations.Synthesis` of the brief's
citable sources (its chunks and its memories). The reply is checked with
:func:`~app.stage0.citations.validate_synthesis`: a claim that cites an id the brief does
not hold, or quotes a span its sources do not contain, rejects the whole synthesis. A
rejected synthesis is retried once with the exact problems; a second rejection drops it.
A request the router refuses or cannot serve drops it too. Each outcome is one audit
line of kind ``synthesis``; nothing here raises to the caller: the brief stands alone.

Routing is the policy's: cloud (alias ``notebooklm``) only when the session opted in
(signal ``tier2_opt_in``) and a human approved; otherwise the local stand-in.

Accepted syntheses are cached per session id and brief hash (the seed: "Use session
IDs") under ``REPO/.switchyard/tier2/<session>/<brief-sha>.json``; a hit makes no call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from app.audit.masking import mask_text
from app.audit.types import AuditSink
from app.backends.base import ChatRequest, Message
from app.errors import SwitchyardError
from app.pipeline.schemas import schema_of
from app.replacing import temp_beside
from app.router.service import RoutedResult, Router, RouteRefused
from app.router.structured import Answer, ReplyRejected, complete_structured, unfence
from app.router.types import Signals
from app.stage0.brief import Brief
from app.stage0.citations import Synthesis, parse_synthesis, validate_synthesis
from app.stage0.context import context_estimate
from app.tokens import clip_text, count_text

__all__ = [
    "ROLE",
    "SAFE_SESSION_ID",
    "SYNTHESIS_JSON",
    "HasRouter",
    "Tier2Result",
    "brief_sha",
    "cache_path",
    "read_cached",
    "synthesis_messages",
    "synthesize",
    "write_synthesis",
]

ROLE = "tier2"
SYNTHESIS_JSON = "synthesis.json"
#: part of the brief hash: a change of prompt or format invalidates cached syntheses
PROMPT_VERSION = 1
#: the window assumed when the router cannot say which model will serve
DEFAULT_WINDOW = 8192
#: never send more than this many tokens of sources, whatever the window
MAX_SOURCE_TOKENS = 24_000
#: room kept in the window for the retry (the rejected reply and its problems)
RETRY_RESERVE = 1400
PROBLEMS_SHOWN = 8
PROBLEM_CHARS = 200
MIN_SOURCE_CHARS = 80  # below this a source is listed by id only
CLIPPED = "\n…(clipped to fit the window)"
LEFT_OUT = "(left out to fit the window)"

# Audit reason codes (stable: the TUI and the evidence read them).
TIER2_ACCEPTED = "TIER2_ACCEPTED"
TIER2_REJECTED = "TIER2_REJECTED"
TIER2_DROPPED = "TIER2_DROPPED"
TIER2_CACHED = "TIER2_CACHED"

SYSTEM = (
    "You are the Tier2 synthesizer of a coding session. Summarize what the numbered "
    "sources below say that matters for the task, as a list of short claims. Rules: every "
    "claim cites one or more source ids, copied exactly as written after 'source' (a chunk "
    "id, or memory:N); cite only ids that are listed; a claim may carry a quote, which "
    "must be copied character for character from one of the sources it cites (leave the "
    "quote out when unsure); report as contradictions only pairs of listed sources that "
    "disagree, with a one-line note. Use only the sources, never outside knowledge. Reply "
    "with JSON only: claims (each: text, cites, quote), contradictions (each: a, b, note)."
)

#: what the one repair turn adds to the problems the citation check found
REPAIR_HINT = (
    "Cite only the source ids listed above, and copy a quote character for character from "
    "a source it cites or leave the quote out."
)

Status = Literal["accepted", "cached", "dropped"]
#: a session id that is also a safe directory name (anything else is hashed for the cache)
SAFE_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Tier2Result(BaseModel):
    """What a Tier2 request came to. ``synthesis`` is None when it was dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Status
    synthesis: Synthesis | None
    session: str
    brief_sha: str
    #: model calls made for this result (0 for a cache hit)
    attempts: int
    #: every problem found, in order (rejections first, then a routing failure)
    problems: list[str] = Field(default_factory=list)
    #: one line: why it was dropped ("" when accepted)
    reason: str = ""
    model: str | None = None
    runtime: str | None = None
    escalated: bool = False
    cached: bool = False
    #: the librarian's trigger input: an accepted synthesis reports a contradiction
    contradictions_detected: bool = False

    @property
    def accepted(self) -> bool:
        return self.synthesis is not None


# ── the brief's sources ──────────────────────────────────────────────────────────────────


def brief_sha(brief: Brief) -> str:
    """sha256 over the brief's content (task, chunks, memories), never its timestamps."""
    data = {
        "v": PROMPT_VERSION,
        "task": brief.task,
        "chunks": [[c.id, c.path, c.start, c.end, c.text] for c in brief.chunks],
        "memories": list(brief.memories),
    }
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _source_list(brief: Brief) -> list[tuple[str, str, str]]:
    """(id, header, text) for every citable source, in the brief's order."""
    out: list[tuple[str, str, str]] = []
    for c in brief.chunks:
        what = f"{c.kind} {c.symbol}" if c.symbol else c.kind
        out.append((c.id, f"source {c.id} · {c.path}:{c.start}-{c.end} ({what})", c.text))
    for i, memory in enumerate(brief.memories, start=1):
        out.append((f"memory:{i}", f"source memory:{i} · a memory of earlier work", memory))
    return out


def _render_sources(brief: Brief, budget_tokens: int) -> str:
    """The sources, each in full while the budget lasts, then clipped, then by id only.

    Every header is paid for first, so every id stays listed whatever the budget.
    """
    listed = [(f"=== {header} ===", text) for _sid, header, text in _source_list(brief)]
    if not listed:
        return "(the brief holds no citable source)"
    left = budget_tokens - sum(count_text(head) + 4 for head, _ in listed)
    parts: list[str] = []
    for head, text in listed:
        body = text
        if count_text(text) > left:
            kept = clip_text(text, left - count_text(CLIPPED)).rstrip()
            body = kept + CLIPPED if len(kept) >= MIN_SOURCE_CHARS else LEFT_OUT
        left -= count_text(body)
        parts.append(f"{head}\n{body}\n=== end ===")
    return "\n\n".join(parts)


def synthesis_messages(brief: Brief, *, source_tokens: int = MAX_SOURCE_TOKENS) -> list[Message]:
    """The first request: the task and every citable source (within ``source_tokens``)."""
    task = " ".join(brief.task.split())
    sources = _render_sources(brief, max(0, min(source_tokens, MAX_SOURCE_TOKENS)))
    return [
        Message(role="system", content=SYSTEM),
        Message(role="user", content=f"Task: {task}\n\nSources:\n\n{sources}"),
    ]


def _short_problems(problems: list[str]) -> list[str]:
    return [
        p if len(p) <= PROBLEM_CHARS else p[: PROBLEM_CHARS - 1] + "…"
        for p in problems[:PROBLEMS_SHOWN]
    ]


# ── the window ───────────────────────────────────────────────────────────────────────────


async def _plan(router: Router, opt_in: bool) -> tuple[int, int]:
    """(window, max_tokens) of the smallest model that may serve this request.

    A denied or failed escalation moves down to the local stand-in, so the prompt must
    fit the local window as well as the cloud target's.
    """
    policy = router.policy
    role = policy.roles.get(ROLE)
    max_out = role.max_output_tokens if role is not None else 2048
    windows: list[int] = []
    try:
        d = await router.decide(ROLE, Signals(tier2_opt_in=opt_in))
    except SwitchyardError:
        d = None
    if d is not None:
        if d.local is not None:
            windows.append(d.local.context_window)
        if d.action == "escalate" and d.target is not None:
            known = router.backends.context_windows()
            windows.append(known.get(d.target, policy.model(d.target).context_window))
    window = min((w for w in windows if w > 0), default=DEFAULT_WINDOW)
    # the router's own rule for local roles: the reply may take up to a quarter
    return window, max(64, min(max_out, window // 4))


# ── the cache ────────────────────────────────────────────────────────────────────────────


def _session_dir(session: str) -> str:
    if SAFE_SESSION_ID.match(session):
        return session
    return "s-" + hashlib.sha256(session.encode("utf-8")).hexdigest()[:16]


def cache_path(cache_dir: Path, session: str, sha: str) -> Path:
    """``cache_dir/<session>/<brief-sha>.json``."""
    return cache_dir / _session_dir(session) / f"{sha}.json"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    tmp.write_text(mask_text(text)[0], encoding="utf-8")  # secrets masked in every file
    os.replace(tmp, path)


def read_cached(cache_dir: Path, session: str, brief: Brief) -> dict[str, Any] | None:
    """The cached entry for this session and brief, if it is there and still valid."""
    path = cache_path(cache_dir, session, brief_sha(brief))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("brief_sha") != brief_sha(brief):
            return None
        synthesis = Synthesis.model_validate(data["synthesis"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: a miss, and the next accepted one replaces it
    if not validate_synthesis(synthesis, brief).ok:
        return None
    entry: dict[str, Any] = {**data, "synthesis": synthesis}
    return entry


def _store(cache_dir: Path, session: str, sha: str, result: Tier2Result) -> None:
    assert result.synthesis is not None
    entry = {
        "session": session,
        "brief_sha": sha,
        "model": result.model,
        "runtime": result.runtime,
        "escalated": result.escalated,
        "attempts": result.attempts,
        "synthesis": result.synthesis.model_dump(mode="json"),
    }
    text = json.dumps(entry, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    # a cache that cannot be written only costs a call next time
    with contextlib.suppress(OSError):
        _write_atomic(cache_path(cache_dir, session, sha), text)


def write_synthesis(result: Tier2Result, out_dir: Path) -> Path:
    """``out_dir/synthesis.json`` (atomically), beside the brief's own files."""
    if result.synthesis is None:
        raise ValueError("only an accepted synthesis is written")
    path = out_dir / SYNTHESIS_JSON
    data = {
        "session": result.session,
        "brief_sha": result.brief_sha,
        "model": result.model,
        "runtime": result.runtime,
        "escalated": result.escalated,
        "cached": result.cached,
        "attempts": result.attempts,
        "contradictions_detected": result.contradictions_detected,
        "synthesis": result.synthesis.model_dump(mode="json"),
    }
    _write_atomic(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return path


# ── the request ──────────────────────────────────────────────────────────────────────────


class HasRouter(Protocol):
    """A :class:`~app.router.session.Session`, or anything else that carries a router."""

    @property
    def router(self) -> Router: ...


async def synthesize(
    source: Router | HasRouter,
    brief: Brief,
    *,
    session: str | None = None,
    run: str | None = None,
    opt_in: bool = False,
    cache_dir: Path | None = None,
    audit: AuditSink | None = None,
) -> Tier2Result:
    """A citation-grounded synthesis of ``brief``, or a dropped result (never an exception).

    ``source`` is a :class:`~app.router.service.Router` or anything with a ``.router``
    (a :class:`~app.router.session.Session`). ``session`` defaults to the router's session
    id and ``audit`` to its audit sink. ``opt_in`` is the session's Tier2 opt-in: the
    cloud is asked only then, and only after the human's approval. With ``cache_dir``, an
    accepted synthesis is stored under ``cache_dir/<session>/<brief-sha>.json`` and found
    there again without a call.
    """
    router = source if isinstance(source, Router) else source.router
    sink: AuditSink = audit if audit is not None else router.audit
    sid = session if session is not None else router.session
    sha = brief_sha(brief)

    async def write(codes: list[str], detail: str, to: str | None, **values: Any) -> None:
        await sink.append(
            "synthesis",
            session=sid,
            run=run,
            role=ROLE,
            to=to,
            reason_codes=codes,
            values={"brief_sha": sha, **values},
            detail=detail,
        )

    if cache_dir is not None:
        hit = read_cached(cache_dir, sid, brief)
        if hit is not None:
            synthesis: Synthesis = hit["synthesis"]
            model = hit.get("model")
            await write(
                [TIER2_CACHED],
                f"cached synthesis for this session and brief: {len(synthesis.claims)} claims, "
                f"{len(synthesis.contradictions)} contradictions (no model call)",
                model,
                claims=len(synthesis.claims),
                contradictions=len(synthesis.contradictions),
            )
            return Tier2Result(
                status="cached",
                synthesis=synthesis,
                session=sid,
                brief_sha=sha,
                attempts=0,
                model=model if isinstance(model, str) else None,
                runtime=hit.get("runtime") if isinstance(hit.get("runtime"), str) else None,
                escalated=bool(hit.get("escalated", False)),
                cached=True,
                contradictions_detected=bool(synthesis.contradictions),
            )

    window, max_tokens = await _plan(router, opt_in)
    overhead = context_estimate([SYSTEM, brief.task]) + 64
    room = int(window * 0.9) - max_tokens - overhead - RETRY_RESERVE
    first = synthesis_messages(brief, source_tokens=max(0, room))
    request = ChatRequest(messages=first, max_tokens=max_tokens, json_schema=schema_of(Synthesis))

    def parse(text: str) -> Synthesis:
        report = validate_synthesis(unfence(text), brief)
        if not report.ok:
            # a claim citing one id twice is one problem
            raise ReplyRejected(list(dict.fromkeys(report.problems)))
        return parse_synthesis(unfence(text))

    async def rejected(result: RoutedResult, found: list[str], attempt: int) -> None:
        shown = _short_problems(found)
        await write(
            [TIER2_REJECTED],
            f"synthesis from {result.model} rejected (attempt {attempt}): "
            f"{len(found)} problems, first: {shown[0]}",
            result.model,
            attempt=attempt,
            problems=shown,
        )

    try:
        # GR-012's one owner validates (schema and citations) and makes the one repair
        answer = await complete_structured(
            router,
            ROLE,
            request,
            parse,
            Signals(tier2_opt_in=opt_in),
            run=run,
            on_rejected=rejected,
            repair_hint=REPAIR_HINT,
        )
    except SwitchyardError as exc:
        answer = Answer(None, None, str(exc), route_failed=True)
        refused = isinstance(exc, RouteRefused)
    else:
        refused = False
    last = answer.result
    problems = list(answer.problems)

    def dropped(reason: str) -> Tier2Result:
        return Tier2Result(
            status="dropped",
            synthesis=None,
            session=sid,
            brief_sha=sha,
            attempts=answer.calls,
            problems=problems,
            reason=reason,
            model=last.model if last else None,
            runtime=last.runtime if last else None,
            escalated=last.escalated if last else False,
        )

    accepted = answer.value
    if accepted is not None:
        assert last is not None
        await write(
            [TIER2_ACCEPTED],
            f"synthesis accepted from {last.model}: {len(accepted.claims)} claims, "
            f"{len(accepted.contradictions)} contradictions, attempt {answer.calls}",
            last.model,
            attempts=answer.calls,
            claims=len(accepted.claims),
            contradictions=len(accepted.contradictions),
            escalated=last.escalated,
        )
        out = Tier2Result(
            status="accepted",
            synthesis=accepted,
            session=sid,
            brief_sha=sha,
            attempts=answer.calls,
            problems=problems,
            model=last.model,
            runtime=last.runtime,
            escalated=last.escalated,
            contradictions_detected=bool(accepted.contradictions),
        )
        if cache_dir is not None:
            _store(cache_dir, sid, sha, out)
        return out
    if not answer.rejected:
        # refused (no local runtime, ...) or failed on every step: the brief stands
        code = "ROUTE_REFUSED" if refused else "ROUTE_FAILED"
        error = answer.error or "no reply"
        why = f"{ROLE} could not be served: {error}"
        problems.append(why)
        await write(
            [TIER2_DROPPED, code],
            f"synthesis dropped: {_one_line(error)}; the brief stands on its own",
            last.model if last else None,
            attempts=answer.calls,
            problems=_short_problems(problems),
        )
        return dropped(_one_line(why))
    await write(
        [TIER2_DROPPED],
        f"synthesis dropped after {answer.calls} rejected attempts; the brief stands on its own",
        last.model if last else None,
        attempts=answer.calls,
        problems=_short_problems(problems),
    )
    return dropped(
        f"rejected {'twice' if answer.calls == 2 else 'once'} by the citation check "
        f"({len(problems)} problems; last: "
        f"{_short_problems(problems[-1:])[0]})"
    )


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= PROBLEM_CHARS else line[: PROBLEM_CHARS - 1] + "…"
