"""What the team store raises. Each is one clear line at the CLI (SwitchyardError)."""

from __future__ import annotations

from app.errors import SwitchyardError


class StoreError(SwitchyardError):
    """The team database cannot be used as configured."""


class StoreUrlError(StoreError):
    """``SWITCHYARD_DATABASE_URL`` (or ``database_url``) is not a PostgreSQL URL."""

    exit_code = 2


class StoreUnavailable(StoreError):
    """The database does not answer (down, unreachable, too slow)."""

    exit_code = 1


class StoreRefused(StoreError):
    """The database answers and refuses what the URL says: the user or its password, or
    a database it does not have. What Switchyard was given (exit 2), and never a reason
    to fall back to this machine's files (``database_fallback`` is for a database away):
    it read as "cannot reach" (exit 1), and fell back."""

    exit_code = 2


class StorePrivacyError(StoreError):
    """Under local_only the database is neither on loopback nor a named local host."""

    exit_code = 2


class SchemaTooNew(StoreError):
    """The database was migrated by a newer Switchyard than this one."""

    exit_code = 2

    def __init__(self, what: str, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"{what}: schema version {found} is newer than this Switchyard understands "
            f"({known}); upgrade Switchyard on this machine"
        )


class TeamSpelledOtherwise(StoreError):
    """The team named differs only in case from a team the database has, and has no chain
    of its own: "Platform" beside "platform" was a team apart, with caps of its own."""

    exit_code = 2

    def __init__(self, team: str, known: list[str], where: str) -> None:
        self.team = team
        self.known = known
        spelled = ", ".join(repr(k) for k in known)
        super().__init__(
            f"team {team!r} differs only in case from {spelled} in {where}: a team spelled"
            " otherwise is a team apart, with its own caps; set `team` as the team spells it"
        )
