"""Evidence bundles: every run's artefacts under .switchyard/runs/<run-id>/ (GR-007)."""
