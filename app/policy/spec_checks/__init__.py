"""The checks of ``switchyard spec lint`` (:mod:`app.policy.spec_lint`), one module per
part of the §8 block: the policy reference, privacy and High-Risk, the roles, routing and
escalation, the tiers, the overrides. Each check reads the block and the loaded policy
and adds its findings to one :class:`~app.policy.spec_checks.findings.Findings`."""
