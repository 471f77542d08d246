"""What the budget ledger raises: one refusal (a cap would be crossed) and its own errors."""

from __future__ import annotations

from app.dollars import dollars
from app.errors import BudgetExceeded, SwitchyardError


class LedgerError(SwitchyardError):
    """The ledger cannot do what was asked: unknown or closed reservation, bad amount."""


class LedgerUnreadable(LedgerError):
    """The ledger file cannot be opened: not a database, or a newer schema."""

    exit_code = 2


class LedgerSpoolDamaged(LedgerError):
    """A record of the ledger's spool that no Switchyard wrote (its check holds, its
    content is no ledger record): the ledger is refused, every record after it unread."""


class UnknownReservation(LedgerError):
    pass


class ReservationClosed(LedgerError):
    def __init__(self, reservation_id: str, status: str) -> None:
        self.reservation_id = reservation_id
        self.status = status
        extra = (
            " (its TTL passed; it was charged at its full amount)" if status == "expired" else ""
        )
        super().__init__(f"reservation {reservation_id} is already {status}{extra}")


class CapExceeded(BudgetExceeded):
    """A reservation would cross ``cap`` ("session", "day" or "provider:<name>")."""

    def __init__(
        self,
        *,
        cap: str,
        limit_usd: float,
        spent_usd: float,
        reserved_usd: float,
        requested_usd: float,
        session: str,
        provider: str,
        model: str,
    ) -> None:
        self.cap = cap
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.requested_usd = requested_usd
        super().__init__(
            f"budget exceeded: the {cap} cap of {dollars(limit_usd)} would be crossed "
            f"(spent {dollars(spent_usd)}, reserved {dollars(reserved_usd)}, "
            f"requested {dollars(requested_usd)} for {provider}/{model}, session {session})"
        )
