"""The ACP face: ``switchyard acp`` serves the pipeline to editors (Zed, Toad, ...) over the
Agent Client Protocol, built on the maintained SDK (PyPI ``agent-client-protocol``).

A face: it imports the pipeline, the router and the workspace; nothing imports it but the
CLI. The SDK speaks JSON-RPC; this package only maps Switchyard onto it:

* :mod:`.agent`: the ACP methods (initialize, session/new|load|list|set_mode|prompt|cancel);
* :mod:`.sessions`: one ACP session = one Switchyard session (audit, ledger, approvals);
* :mod:`.turns` and :mod:`.tutoring`: a prompt runs the pipeline, or the Tutor in tutor mode;
* :mod:`.relay`: bus events → ``session/update`` notifications;
* :mod:`.permissions`: escalations and the merge as ``session/request_permission``;
* :mod:`.stdio`: the process's stdio kept for the protocol alone.
"""
