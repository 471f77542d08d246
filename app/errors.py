"""One exception family. The CLI turns each into one clear line and an exit code."""

from __future__ import annotations


class SwitchyardError(Exception):
    """Base of every error the product raises on purpose."""

    #: exit code the CLI uses: 2 = cannot work with what it was given, 1 = domain failure
    exit_code: int = 1


class UsageError(SwitchyardError):
    exit_code = 2


class Terminated(SwitchyardError):
    """A SIGTERM stopped a command that calls models: what was in flight was settled and
    its line written first (:func:`app.cli.common.run_stoppable`)."""

    exit_code = 143  # as a process the signal ended

    def __init__(self) -> None:
        super().__init__("stopped (SIGTERM)")


class NoWorkingFolder(UsageError):
    """The current folder was deleted (``cd x; rmdir ../x``): no relative path resolves."""

    def __init__(self) -> None:
        super().__init__("the current folder no longer exists; cd to one that does")


def cwd_exists() -> bool:
    """Whether the process's current folder is still there."""
    import os

    try:
        os.getcwd()
    except FileNotFoundError:
        return False
    return True


class PolicyError(SwitchyardError):
    """A policy file that cannot be loaded. Carries every problem found, one per line."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        from app.audit.masking import mask_text

        # masked: a problem quotes the file, and a key pasted where a variable's name
        # belongs (``api_key_env = "sk-…"``) went to every command's stderr, --json too
        self.problems = [mask_text(p)[0] for p in problems]
        super().__init__("\n".join(self.problems))


class ConfigError(SwitchyardError):
    exit_code = 2


class StoreError(SwitchyardError):
    """A local store's file failed a statement: a full disk, a read-only file, a lock held
    past the busy timeout. The message names the store and its file."""


class BudgetExceeded(SwitchyardError):
    """A reservation would cross a cap (GR-011)."""


class BackendUnavailable(SwitchyardError):
    """A backend cannot serve: unreachable, no key, refused by local_only."""


class LocalOnlyViolation(BackendUnavailable):
    """A non-loopback connection was attempted while local_only is on (GR-009)."""


class AuditUnreadable(SwitchyardError):
    """The audit log's file is not a database (or of a newer schema): exit 2, as the
    ledger's (a full disk or a lock is the machine's trouble: exit 1, both)."""

    exit_code = 2


class AuditTamperError(SwitchyardError):
    """The audit chain does not verify."""


class ApprovalDenied(SwitchyardError):
    """The human (or the headless policy, or a timeout) refused an escalation."""
