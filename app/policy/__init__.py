"""The routing policy: schema, loader, and the pure decisions built on it."""

from app.policy.loader import LoadedPolicy, load_policy
from app.policy.schema import Policy

__all__ = ["LoadedPolicy", "Policy", "load_policy"]
