"""The kinds of audit line: no pydantic here, so a screen can colour and filter by kind
without building the audit models (the TUI's first frame imports only this)."""

# Kinds of line. Keep these stable: the TUI colours by kind and filters on it.
AUDIT_KINDS = (
    "route",  # a role was routed to a model (local or cloud)
    "runtime_fallback",  # a local role moved down the runtime chain (vLLM → llama.cpp …)
    "escalation",  # a trigger fired and a cloud model was chosen
    "skip",  # a chain step was skipped (unhealthy, no key, budget, context, local_only …)
    "approval",  # a human/headless decider allowed an escalation
    "denial",  # an escalation was denied (by a decider or a timeout)
    "refusal",  # the router refused a request (e.g. CV/Camera is not an LLM role)
    "budget_stop",  # a reservation would cross a cap
    "budget",  # a reservation was settled or released
    "degradation",  # something weaker took over (sandbox, embeddings …)
    "local_only_refusal",  # the transport refused a non-loopback host (GR-009)
    "retry",  # a call was retried after an error
    "repair",  # a structured reply did not fit; the one repair attempt (GR-012)
    "call",  # a model call finished (tokens, cost, latency)
    "consensus",  # GR-001 decisions
    "verdict",  # the Judge's verdict
    "merge",  # a merge was attempted / done
    "run",  # run lifecycle
    "synthesis",  # a Tier2 synthesis was accepted, rejected (retried) or dropped (GR-008)
    "condense",  # the Librarian condensed context to fit a window (map, then reduce)
    "advice",  # an escalation-only second opinion was recorded (§2: advice, never decides)
    "tutor",  # a tutor turn, or the policy's turn cap reached
    "request",  # a gateway request: who asked, for what, and how it ended
    "check",  # an escalation decision that sent nothing to the cloud (app.pipeline.checked)
)
