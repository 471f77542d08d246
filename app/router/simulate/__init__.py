"""Policy simulation (issue 19): replay the recorded decisions under another policy.

:mod:`.requests` groups the audit lines into requests, :mod:`.replay` walks one request
under one policy, :mod:`.ledger` is a policy's simulated budget ledger,
:mod:`.simulation` compares two policies over the whole log, :mod:`.report` is what it
returns, :mod:`.source` reads a verified chain out of the audit log, :mod:`.stored` is
the whole of it on the store the settings name (the CLI's and the TUI's one path).
"""
