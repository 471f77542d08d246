"""Which switch decides local_only (GR-009): a flag beats the settings beats the policy.

It lives beside the transport that enforces it (``http.py``) so the launcher and the
router's session ask the same function.
"""

from __future__ import annotations

from app.config import Settings
from app.policy.schema import Policy


def effective_local_only(policy: Policy, settings: Settings, flag: bool = False) -> bool:
    """True when any layer turns local_only on; nothing below can turn it back off."""
    if flag:
        return True
    if settings.local_only is not None:
        return settings.local_only or policy.privacy.local_only
    return policy.privacy.local_only
