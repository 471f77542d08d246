"""The single-owner pipeline: Stage0 → Architect → Implementer → Judge (§2)."""
