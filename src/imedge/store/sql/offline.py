from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import delete, func, insert, select, text

from imedge.domain.jid import Jid
from imedge.store.ports import OfflineMessage
from imedge.store.sql import schema as t
from imedge.store.sql.database import Database

# pg_advisory_xact_lock(class, key): the class keeps our per-user locks apart from others'.
_PG_OFFLINE_LOCK_CLASS = 0x0FF1


class SqlOfflineStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def push(self, user: Jid, stanza: bytes, limit: int) -> int | None:
        key = str(user.bare)
        c = t.offline_messages.c
        async with self._db.write() as conn:
            if conn.dialect.name == "postgresql":
                # Count-then-insert must not race with another push for the same user.
                # (SQLite write transactions are already serialised by BEGIN IMMEDIATE.)
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:cls, hashtext(:user))"),
                    {"cls": _PG_OFFLINE_LOCK_CLASS, "user": key},
                )
            queued = await conn.scalar(select(func.count()).where(c.user_jid == key))
            if (queued or 0) >= limit:
                return None
            new_id = await conn.scalar(
                insert(t.offline_messages)
                .values(user_jid=key, stanza=stanza, stored_at=time.time())
                .returning(c.id)
            )
        assert new_id is not None
        return int(new_id)

    async def fetch(self, user: Jid) -> list[OfflineMessage]:
        c = t.offline_messages.c
        query = select(c.id, c.stanza, c.stored_at).where(c.user_jid == str(user.bare))
        async with self._db.read() as conn:
            rows = (await conn.execute(query.order_by(c.id))).all()
        return [
            OfflineMessage(id=int(row.id), stanza=bytes(row.stanza), stored_at=row.stored_at)
            for row in rows
        ]

    async def delete(self, user: Jid, ids: Sequence[int]) -> None:
        if not ids:
            return
        c = t.offline_messages.c
        async with self._db.write() as conn:
            await conn.execute(
                delete(t.offline_messages).where(c.user_jid == str(user.bare), c.id.in_(ids))
            )

    async def count(self, user: Jid) -> int:
        c = t.offline_messages.c
        async with self._db.read() as conn:
            queued = await conn.scalar(select(func.count()).where(c.user_jid == str(user.bare)))
        return int(queued or 0)
