from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text

from imedge.store.ports import (
    AccountStore,
    AuditStore,
    BlockingStore,
    FederationStore,
    OfflineStore,
    RosterStore,
    Store,
    SubscriptionRequestStore,
)
from imedge.store.sql.accounts import SqlAccountStore
from imedge.store.sql.audit import SqlAuditStore
from imedge.store.sql.blocking import SqlBlockingStore
from imedge.store.sql.database import Database
from imedge.store.sql.federation import SqlFederationStore
from imedge.store.sql.offline import SqlOfflineStore
from imedge.store.sql.rosters import SqlRosterStore, SqlSubscriptionRequestStore


class SqlStore:
    """All storage ports over one SQLAlchemy async engine (satisfies `ports.Store`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.accounts: AccountStore = SqlAccountStore(db)
        self.rosters: RosterStore = SqlRosterStore(db)
        self.subscription_requests: SubscriptionRequestStore = SqlSubscriptionRequestStore(db)
        self.offline: OfflineStore = SqlOfflineStore(db)
        self.blocking: BlockingStore = SqlBlockingStore(db)
        self.federation: FederationStore = SqlFederationStore(db)
        self.audit: AuditStore = SqlAuditStore(db)

    async def ping(self) -> None:
        async with self.db.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.db.engine.dispose()


if TYPE_CHECKING:

    def _conforms(store: SqlStore) -> Store:
        return store
