"""The hash-chained audit log (GR-005, GR-013)."""
