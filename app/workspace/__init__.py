"""Per-run git worktrees, the sandboxed test runner and the merge (GR-006, GR-010)."""
