"""A policy's fingerprint: a short hash of what it says, not of how its file is written.

Decision lines record it, so a replay knows whether the policy it is given is the one
the decisions were made under.
"""

from __future__ import annotations

import hashlib
import json

from app.policy.schema import Policy


def fingerprint(policy: Policy) -> str:
    data = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]
