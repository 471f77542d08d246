"""Wire one working session: audit chain, budget ledger, approvals, backends, router.

The CLI, the pipeline and the TUI all start here, so the core runs the same headless
as under the TUI.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.audit.base import AuditBase
from app.backends.local_only import effective_local_only
from app.backends.registry import BackendRegistry
from app.backends.runtimes import url_overrides
from app.bus import Bus
from app.clock import Clock, SystemClock
from app.config import ApproveMode, Settings, approve_setting
from app.paths import ensure_dir
from app.policy.schema import Policy
from app.router.approvals import ApprovalBroker, Decider, decider_for
from app.router.ledger.api import Ledger
from app.router.service import Router
from app.router.stores import Stores, open_stores
from app.store.postgres import checked_host
from app.store.url import DatabaseUrl


def new_session_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Session:
    id: str
    policy: Policy
    settings: Settings
    audit: AuditBase
    ledger: Ledger
    approvals: ApprovalBroker
    backends: BackendRegistry
    router: Router
    bus: Bus | None
    #: GR-009 for this session; a spec may turn it on mid-session, never off
    local_only: bool
    #: the team database the ledger and the audit log are in (None: SQLite files)
    store_url: DatabaseUrl | None = None

    def require_local_only(self) -> None:
        if self.store_url is not None and not self.local_only:
            # the team database is an egress path too: refused unless it is local
            checked_host(self.store_url, local_only=True, named=self.policy.named_local_hosts())
        self.local_only = True


@asynccontextmanager
async def open_session(
    settings: Settings,
    policy: Policy,
    *,
    approve: ApproveMode | None = None,
    decider: Decider | None = None,
    bus: Bus | None = None,
    session_id: str | None = None,
    local_only: bool = False,
    clock: Clock | None = None,
) -> AsyncIterator[Session]:
    clock = clock or SystemClock()
    sid = session_id or new_session_id()
    ensure_dir(settings.data_dir)
    starts_local_only = effective_local_only(policy, settings, local_only)
    async with (
        open_stores(
            settings,
            policy.budget,
            session=sid,
            policy_version=policy.version,
            local_only=starts_local_only,
            named=policy.named_local_hosts(),
            clock=clock,
            bus=bus,
        ) as stores,
        _wired(
            settings, policy, stores, sid, approve, decider, bus, starts_local_only, clock
        ) as session,
    ):
        yield session


@asynccontextmanager
async def _wired(
    settings: Settings,
    policy: Policy,
    stores: Stores,
    sid: str,
    approve: ApproveMode | None,
    decider: Decider | None,
    bus: Bus | None,
    local_only: bool,
    clock: Clock,
) -> AsyncIterator[Session]:
    audit, ledger = stores.audit, stores.ledger
    holder: dict[str, Session] = {}

    def is_local_only() -> bool:
        return holder["s"].local_only if "s" in holder else False

    backends = BackendRegistry(
        policy,
        local_only=is_local_only,
        audit=audit,
        session=sid,
        n_threads=settings.n_threads,
        runtime_urls=url_overrides(settings, policy),
        clock=clock,
    )
    mode, said = approve_setting(settings, approve)
    broker = ApprovalBroker(
        decider or decider_for(mode, bus, said=said),
        audit=audit,
        bus=bus,
        timeout_s=min(settings.approval_timeout_s, policy.approvals.timeout_s),
        clock=clock,
    )
    router = Router(
        policy,
        session=sid,
        audit=audit,
        ledger=ledger,
        approvals=broker,
        backends=backends,
        clock=clock,
        bus=bus,
        local_only=is_local_only,
    )
    session = Session(
        id=sid,
        policy=policy,
        settings=settings,
        audit=audit,
        ledger=ledger,
        approvals=broker,
        backends=backends,
        router=router,
        bus=bus,
        local_only=local_only,
        store_url=stores.url,
    )
    holder["s"] = session
    try:
        yield session
    finally:
        await backends.aclose()
