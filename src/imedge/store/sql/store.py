from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text

from imedge.store.ports import (
    AccountStore,
    AuditStore,
    BlockingStore,
    DirectoryStore,
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
from imedge.store.sql.directory import SqlDirectoryStore
from imedge.store.sql.federation import SqlFederationStore
from imedge.store.sql.offline import SqlOfflineStore
from imedge.store.sql.rosters import SqlRosterStore, SqlSubscriptionRequestStore
from imedge.store.sql.secrets import SecretBox


class SqlStore:
    """All storage ports over one SQLAlchemy async engine (satisfies `ports.Store`).

    `secret_key` (32 bytes, see `secrets.load_or_create_key`) encrypts secrets at rest, such
    as peer servers' bind passwords; without it they can be neither stored nor read.
    """

    def __init__(self, db: Database, *, secret_key: bytes | None = None) -> None:
        self.db = db
        self.accounts: AccountStore = SqlAccountStore(db)
        self.rosters: RosterStore = SqlRosterStore(db)
        self.subscription_requests: SubscriptionRequestStore = SqlSubscriptionRequestStore(db)
        self.offline: OfflineStore = SqlOfflineStore(db)
        self.blocking: BlockingStore = SqlBlockingStore(db)
        self.federation: FederationStore = SqlFederationStore(db)
        self.audit: AuditStore = SqlAuditStore(db)
        box = None if secret_key is None else SecretBox(secret_key)
        self.directory: DirectoryStore = SqlDirectoryStore(db, box)

    async def ping(self) -> None:
        async with self.db.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.db.engine.dispose()


if TYPE_CHECKING:

    def _conforms(store: SqlStore) -> Store:
        return store
