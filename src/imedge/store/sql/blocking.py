from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select

from imedge.domain.jid import Jid
from imedge.store.sql import schema as t
from imedge.store.sql.database import Database, upsert


class SqlBlockingStore:
    """Block-list entries are kept as given: XEP-0191 allows full JIDs and bare domains."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_blocklist(self, user: Jid) -> list[Jid]:
        c = t.blocklist.c
        query = select(c.blocked_jid).where(c.user_jid == str(user.bare)).order_by(c.blocked_jid)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).scalars().all()
        return [Jid.parse(row) for row in rows]

    async def block(self, user: Jid, jids: Sequence[Jid]) -> None:
        key = str(user.bare)
        async with self._db.write() as conn:
            for jid in dict.fromkeys(jids):
                values = {"user_jid": key, "blocked_jid": str(jid)}
                await conn.execute(upsert(conn, t.blocklist, values, values.keys(), update={}))

    async def unblock(self, user: Jid, jids: Sequence[Jid]) -> None:
        if not jids:
            return
        c = t.blocklist.c
        async with self._db.write() as conn:
            await conn.execute(
                delete(t.blocklist).where(
                    c.user_jid == str(user.bare), c.blocked_jid.in_([str(j) for j in jids])
                )
            )

    async def unblock_all(self, user: Jid) -> None:
        async with self._db.write() as conn:
            await conn.execute(delete(t.blocklist).where(t.blocklist.c.user_jid == str(user.bare)))
