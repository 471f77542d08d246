"""A policy whose per-role lookups are computed once: what a replay hands decide().

decide() asks the policy for a role's triggers and escalation chain on every call; each
answer is a scan of the policy, a fifth of decide()'s time. A policy is immutable, so a
replay of a hundred thousand decisions asks the same questions of the same object: here
they are answered from a table filled on first use. Same answers, same types (fresh
lists, as the policy's own methods return).
"""

from __future__ import annotations

from pydantic import PrivateAttr

from app.policy.schema import Policy, Trigger


class IndexedPolicy(Policy):
    _triggers: dict[str, list[Trigger]] = PrivateAttr(default_factory=dict)
    _chains: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    @classmethod
    def of(cls, policy: Policy) -> IndexedPolicy:
        if isinstance(policy, IndexedPolicy):
            return policy
        return cls.model_construct(**{name: getattr(policy, name) for name in Policy.model_fields})

    def triggers_for(self, role: str) -> list[Trigger]:
        found = self._triggers.get(role)
        if found is None:
            found = self._triggers[role] = super().triggers_for(role)
        return list(found)

    def chain(self, role: str) -> list[str]:
        found = self._chains.get(role)
        if found is None:
            found = self._chains[role] = super().chain(role)
        return list(found)
