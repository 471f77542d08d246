"""Escalations and the merge as ``session/request_permission``.

An escalation asks the client with the TUI modal's facts (role, trigger and values, target
model, estimated cost, budget left, the timeout) and its four keys as the four options:

=========  ====================  =====================================================
option id  kind                  decision
=========  ====================  =====================================================
``y``      ``allow_once``        allow this call
``a``      ``allow_always``      allow this model for the rest of the session
``n``      ``reject_once``       deny
``d``      ``reject_always``     deny this and every later escalation: stay local
=========  ====================  =====================================================

A cancelled outcome, an unknown option, a client error or no answer within the policy's
timeout (the broker's) denies. The broker writes the audit line with the approver
``acp:<client name>``. The escalation shows as a tool call of kind fetch (a request that
would leave the machine) whose status tells how it was decided.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from acp import start_tool_call, text_block, tool_content, update_tool_call
from acp.schema import AllowedOutcome, PermissionOption, ToolCallUpdate
from pydantic import ValidationError

from app.dollars import dollars
from app.router.approvals import ApprovalDecision, ApprovalRequest, DecisionKind

log = logging.getLogger("app.acp")

Send = Callable[[Any], Awaitable[None]]

ESCALATION_OPTIONS = [
    PermissionOption(option_id="y", name="Approve once (y)", kind="allow_once"),
    PermissionOption(option_id="a", name="Approve for this session (a)", kind="allow_always"),
    PermissionOption(option_id="n", name="Deny (n)", kind="reject_once"),
    PermissionOption(option_id="d", name="Deny all, stay local (d)", kind="reject_always"),
]
DECISIONS: dict[str, DecisionKind] = {
    "y": "allow_once",
    "a": "allow_session",
    "n": "deny",
    "d": "deny_all",
}
MERGE_OPTIONS = [
    PermissionOption(option_id="merge", name="Merge", kind="allow_once"),
    PermissionOption(option_id="keep", name="Don't merge (keep the branch)", kind="reject_once"),
]

_OPS = {"lt": "<", "le": "≤", "gt": ">", "ge": "≥", "eq": "=", "ne": "≠"}


def approver_name(client: str) -> str:
    return f"acp:{client}"


def trigger_text(reason: dict[str, Any]) -> str:
    """``IMPLEMENTER_FAILED_LOOPS: failed_loops = 2 (≥ 2)``"""
    code = reason.get("code") or reason.get("trigger") or "?"
    signal = reason.get("signal")
    if signal is None:
        return str(code)
    text = f"{code}: {signal} = {reason.get('value')}"
    if reason.get("threshold") is not None:
        op = str(reason.get("op", ""))
        text += f" ({_OPS.get(op, op)} {reason['threshold']})"
    return text


def escalation_body(req: ApprovalRequest) -> str:
    lines = [
        f"**{req.role}** wants to leave the machine: **{req.model}** ({req.provider})",
        "",
    ]
    for reason in req.reasons or [{}]:
        lines.append(f"- trigger: {trigger_text(reason) if reason else 'requested by the user'}")
        if reason.get("text"):
            lines.append(f"  {reason['text']}")
    if req.values:
        lines.append("- values: " + ", ".join(f"{k} = {v}" for k, v in req.values.items()))
    lines.append(f"- estimated cost: ~{dollars(req.est_cost_usd)}")
    lines.append(f"- budget left: {dollars(req.budget_left_usd)}")
    if req.timeout_s:
        lines.append(f"- no answer within {req.timeout_s:g}s denies")
    return "\n".join(lines)


class AcpDecider:
    """The router's :class:`~app.router.approvals.Decider` for an ACP session."""

    def __init__(
        self,
        ask: Callable[..., Awaitable[Any]],
        send: Send,
        client: str,
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        #: ``conn.request_permission`` bound to the session (tool_call=, options=)
        self._ask = ask
        self._send = send
        #: the relay's flush: the lines that led to the request go out before it
        self._flush = flush
        self.name = approver_name(client)

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        tid = f"approval:{req.request_id[:12]}"
        title = f"Escalate {req.role} to {req.model} ({req.provider})?"
        body = escalation_body(req)
        raw = {
            "role": req.role,
            "model": req.model,
            "provider": req.provider,
            "triggers": req.reasons,
            "values": req.values,
            "est_cost_usd": req.est_cost_usd,
            "budget_left_usd": req.budget_left_usd,
            "timeout_s": req.timeout_s,
        }
        await self._flush()
        await self._send(
            start_tool_call(
                tid,
                title,
                kind="fetch",
                status="pending",
                content=[tool_content(text_block(body))],
                raw_input=raw,
            )
        )
        call = ToolCallUpdate(tool_call_id=tid, title=title, kind="fetch", status="pending")
        try:
            response = await self._ask(tool_call=call, options=ESCALATION_OPTIONS)
        except asyncio.CancelledError:
            # the broker's timeout, or the run was cancelled: no answer is a denial
            await asyncio.shield(self._settle(tid, body, ok=False, note="no answer: denied"))
            raise
        except Exception as exc:
            log.warning("permission request failed: %r", exc)
            why = f"the client could not answer: {client_failure(exc)}"
            await self._settle(tid, body, ok=False, note=why)
            return self._decision("deny", why)
        outcome = response.outcome
        if isinstance(outcome, AllowedOutcome) and outcome.option_id in DECISIONS:
            kind = DECISIONS[outcome.option_id]
            why = f"option {outcome.option_id} selected"
        elif isinstance(outcome, AllowedOutcome):
            kind, why = "deny", f"unknown option {outcome.option_id!r}: denied"
        else:
            kind, why = "deny", "cancelled by the client: denied"
        allowed = kind in ("allow_once", "allow_session")
        await self._settle(tid, body, ok=allowed, note=f"{kind.replace('_', ' ')} by {self.name}")
        return self._decision(kind, why)

    def _decision(self, kind: DecisionKind, reason: str) -> ApprovalDecision:
        return ApprovalDecision(decision=kind, decided_by=self.name, reason=reason)

    async def _settle(self, tid: str, body: str, *, ok: bool, note: str) -> None:
        try:
            await self._send(
                update_tool_call(
                    tid,
                    status="completed" if ok else "failed",
                    content=[tool_content(text_block(body)), tool_content(text_block(note))],
                )
            )
        except Exception as exc:  # the connection may be gone; the decision stands
            log.info("could not report the decision: %r", exc)


def client_failure(exc: Exception) -> str:
    """What went wrong with a client's answer, in one line for the audit and the editor:
    an answer of the wrong shape named by its fields (pydantic's multi-line report, with
    its input and a link, went into the denial line as it was: an ACP audit)."""
    if isinstance(exc, ValidationError):
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'the answer'}: {e['msg'].lower()}"
            for e in exc.errors(include_url=False, include_input=False)[:3]
        )
        return f"its answer is not a permission response ({where})"
    text = str(exc).strip().splitlines()
    return (f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:200]
