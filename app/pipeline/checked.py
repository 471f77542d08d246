"""A pipeline step's escalation decision that sent nothing to the cloud, as an audit line.

Some decisions are no routed request's: a step reads a role's output against its
triggers (the Architect's final plan, the second opinion's occasion) and none fires, or
a ``cloud_only`` request is kept local at its first decision (local_only, every cloud
step over budget), which the router leaves to its caller (``RouteStaysLocal``). Each is
one line of kind :data:`~app.router.recorded.CHECK` with the inputs decide() read, so
``policy simulate`` replays it under another policy as the request it would have been.
A check records that no escalation happened, and why; an escalation that happens is the
router's own ``escalation`` line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.router.recorded import CHECK

if TYPE_CHECKING:
    from app.audit.types import AuditLine
    from app.router.service import Router
    from app.router.types import Decision

#: what a check with no trigger says was not needed
NO_ESCALATION = "no escalation needed"


async def record_check(
    router: Router,
    role: str,
    d: Decision,
    inputs: dict[str, Any],
    *,
    run: str | None,
    subject: str,
    needed: str = NO_ESCALATION,
    req: int | None = None,
    values: dict[str, Any] | None = None,
) -> AuditLine:
    """Write the check for decision ``d`` on ``subject`` ("the final plan (confidence
    0.95, …)"). No trigger fired: "``subject`` fires no trigger: ``needed``". One fired
    and the decision kept it local (``d``'s notes say why): "… fires X; it stays local:
    why". ``req``: the request the decision's skip lines opened (``RouteStaysLocal.req``),
    read with it as one. ``values``: more for the reader, beside the inputs."""
    local = d.action == "local"
    if d.reasons:
        fired = "; ".join(r.text for r in d.reasons)
        why = "; ".join(d.notes) or "no cloud step can serve"
        then = "it stays local" if local else "nothing serves it"
        detail = f"{subject} fires {fired}; {then}: {why}"
    else:
        detail = f"{subject} fires no trigger: {needed}"
    kept: dict[str, Any] = {**(values or {}), "inputs": inputs}
    if req is not None:
        kept["req"] = req
    return await router.audit.append(
        CHECK,
        session=router.session,
        run=run,
        role=role,
        to=f"{d.target}@{d.runtime}" if local else None,
        # (a refusal's code first, as the router's refusal line has it)
        reason_codes=d.reason_codes if local else [d.refusal_code or "REFUSED", *d.reason_codes],
        values=kept,
        detail=detail,
    )
