"""Every way Switchyard reaches a model. Knows nothing of roles or escalation."""
