"""The team store's leaf (docs/team.md): the database URL, the local_only rule for it,
connecting, and versioned migrations. It knows PostgreSQL, not what is stored: the
ledger's tables live in :mod:`app.router.ledger`, the audit log's in :mod:`app.audit`.

A leaf: it imports nothing of Switchyard but the errors and :mod:`app.hosts`.
"""

from app.store.errors import (
    SchemaTooNew,
    StoreError,
    StorePrivacyError,
    StoreRefused,
    StoreUnavailable,
    StoreUrlError,
)
from app.store.url import DatabaseUrl, parse_database_url

__all__ = [
    "DatabaseUrl",
    "SchemaTooNew",
    "StoreError",
    "StorePrivacyError",
    "StoreRefused",
    "StoreUnavailable",
    "StoreUrlError",
    "parse_database_url",
]
