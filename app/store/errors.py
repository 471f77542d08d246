"""What the team store raises. Each is one clear line at the CLI (SwitchyardError)."""

from __future__ import annotations

from app.errors import SwitchyardError


class StoreError(SwitchyardError):
    """The team database cannot be used as configured."""


class StoreUrlError(StoreError):
    """``SWITCHYARD_DATABASE_URL`` (or ``database_url``) is not a PostgreSQL URL."""

    exit_code = 2


class StoreUnavailable(StoreError):
    """The database does not answer, or refuses us (down, wrong password, no database)."""

    exit_code = 1


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
