"""Routing: decisions over the policy, fallback chains, budget ledger, approvals."""
