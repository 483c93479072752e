from __future__ import annotations

import builtins
import time
from collections.abc import Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from imedge.domain.jid import Jid
from imedge.store.ports import Account, AlreadyExists, NotFound, ScramCredential
from imedge.store.sql import schema as t
from imedge.store.sql.database import Database, upsert

# Tables whose rows belong to a user, by the column naming the user.
_OWNED = (
    (t.roster_items, t.roster_items.c.user_jid),
    (t.roster_versions, t.roster_versions.c.user_jid),
    (t.subscription_requests, t.subscription_requests.c.user_jid),
    (t.offline_messages, t.offline_messages.c.user_jid),
    (t.blocklist, t.blocklist.c.user_jid),
    (t.user_federation_settings, t.user_federation_settings.c.user_jid),
    (t.credentials, t.credentials.c.jid),
)


def _account(jid: str, created_at: float, disabled: bool) -> Account:
    return Account(jid=Jid.parse(jid), created_at=created_at, disabled=bool(disabled))


class SqlAccountStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, jid: Jid, credentials: Sequence[ScramCredential]) -> None:
        key = str(jid.bare)
        async with self._db.write() as conn:
            values = {
                "jid": key,
                "domain": jid.domain,
                "created_at": time.time(),
                "disabled": False,
            }
            result = await conn.execute(upsert(conn, t.accounts, values, ["jid"], update={}))
            if result.rowcount == 0:
                raise AlreadyExists(f"account {key} already exists")
            await _insert_credentials(conn, key, credentials)

    async def set_credentials(self, jid: Jid, credentials: Sequence[ScramCredential]) -> None:
        key = str(jid.bare)
        async with self._db.write() as conn:
            found = await conn.scalar(select(t.accounts.c.jid).where(t.accounts.c.jid == key))
            if found is None:
                raise NotFound(f"no account {key}")
            await conn.execute(delete(t.credentials).where(t.credentials.c.jid == key))
            await _insert_credentials(conn, key, credentials)

    async def get_credential(self, jid: Jid, mechanism: str) -> ScramCredential | None:
        c = t.credentials.c
        query = select(c.mechanism, c.salt, c.iterations, c.stored_key, c.server_key).where(
            c.jid == str(jid.bare), c.mechanism == mechanism
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            return None
        return ScramCredential(
            mechanism=row.mechanism,
            salt=bytes(row.salt),
            iterations=row.iterations,
            stored_key=bytes(row.stored_key),
            server_key=bytes(row.server_key),
        )

    async def get(self, jid: Jid) -> Account | None:
        c = t.accounts.c
        query = select(c.jid, c.created_at, c.disabled).where(c.jid == str(jid.bare))
        async with self._db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else _account(*row)

    async def delete(self, jid: Jid) -> None:
        key = str(jid.bare)
        async with self._db.write() as conn:
            for table, user_column in _OWNED:
                await conn.execute(delete(table).where(user_column == key))
            await conn.execute(delete(t.accounts).where(t.accounts.c.jid == key))

    async def list(self, domain: str | None = None) -> builtins.list[Account]:
        c = t.accounts.c
        query = select(c.jid, c.created_at, c.disabled).order_by(c.jid)
        if domain is not None:
            query = query.where(c.domain == domain)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_account(*row) for row in rows]


async def _insert_credentials(
    conn: AsyncConnection, key: str, credentials: Sequence[ScramCredential]
) -> None:
    if not credentials:
        return
    await conn.execute(
        insert(t.credentials),
        [
            {
                "jid": key,
                "mechanism": cred.mechanism,
                "salt": cred.salt,
                "iterations": cred.iterations,
                "stored_key": cred.stored_key,
                "server_key": cred.server_key,
            }
            for cred in credentials
        ],
    )
