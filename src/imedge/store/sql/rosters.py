from __future__ import annotations

import json

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from imedge.domain.jid import Jid
from imedge.domain.roster import RosterItem, Subscription
from imedge.store.sql import schema as t
from imedge.store.sql.database import Database, upsert

_ITEM_COLUMNS = (
    t.roster_items.c.contact_jid,
    t.roster_items.c.name,
    t.roster_items.c.groups,
    t.roster_items.c.subscription,
    t.roster_items.c.pending_out,
    t.roster_items.c.pending_in,
    t.roster_items.c.approved,
    t.roster_items.c.listed,
)


def _item(
    *,
    contact_jid: str,
    name: str | None,
    groups: str,
    subscription: str,
    pending_out: bool,
    pending_in: bool,
    approved: bool,
    listed: bool,
) -> RosterItem:
    return RosterItem(
        jid=Jid.parse(contact_jid),
        name=name,
        groups=tuple(json.loads(groups)),
        subscription=Subscription(subscription),
        pending_out=bool(pending_out),
        pending_in=bool(pending_in),
        approved=bool(approved),
        listed=bool(listed),
    )


async def _bump_version(conn: AsyncConnection, user: str) -> int:
    """Increment the user's roster version (RFC 6121 §2.6) and return it.

    Called first in each roster transaction, so the version row's lock also orders
    concurrent writers to one roster.
    """
    v = t.roster_versions.c
    statement = upsert(
        conn,
        t.roster_versions,
        {"user_jid": user, "version": 1},
        ["user_jid"],
        update={"version": v.version + 1},
    )
    await conn.execute(statement)
    version = await conn.scalar(select(v.version).where(v.user_jid == user))
    assert version is not None
    return int(version)


async def _read_version(conn: AsyncConnection, user: str) -> int:
    v = t.roster_versions.c
    version = await conn.scalar(select(v.version).where(v.user_jid == user))
    return 0 if version is None else int(version)


class SqlRosterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_roster(self, user: Jid) -> tuple[int, list[RosterItem]]:
        key = str(user.bare)
        query = (
            select(*_ITEM_COLUMNS)
            .where(t.roster_items.c.user_jid == key)
            .order_by(t.roster_items.c.contact_jid)
        )
        # Version first: under READ COMMITTED a concurrent put may make the items newer
        # than the version, which only causes a redundant push later, never a lost one.
        async with self._db.read() as conn, conn.begin():
            version = await _read_version(conn, key)
            rows = (await conn.execute(query)).all()
        return version, [_item(**row._mapping) for row in rows]

    async def get_item(self, user: Jid, contact: Jid) -> RosterItem | None:
        c = t.roster_items.c
        query = select(*_ITEM_COLUMNS).where(
            c.user_jid == str(user.bare), c.contact_jid == str(contact.bare)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else _item(**row._mapping)

    async def put_item(self, user: Jid, item: RosterItem) -> int:
        key = str(user.bare)
        values = {
            "user_jid": key,
            "contact_jid": str(item.jid.bare),
            "name": item.name,
            "groups": json.dumps(list(item.groups)),
            "subscription": item.subscription.value,
            "pending_out": item.pending_out,
            "pending_in": item.pending_in,
            "approved": item.approved,
            "listed": item.listed,
        }
        async with self._db.write() as conn:
            version = await _bump_version(conn, key)
            await conn.execute(upsert(conn, t.roster_items, values, ["user_jid", "contact_jid"]))
        return version

    async def remove_item(self, user: Jid, contact: Jid) -> int:
        key = str(user.bare)
        c = t.roster_items.c
        async with self._db.write() as conn:
            version = await _bump_version(conn, key)
            await conn.execute(
                delete(t.roster_items).where(c.user_jid == key, c.contact_jid == str(contact.bare))
            )
        return version

    async def get_version(self, user: Jid) -> int:
        async with self._db.read() as conn:
            return await _read_version(conn, str(user.bare))

    async def count_contacts_at(self, domain: str, *, exclude: Jid | None = None) -> int:
        items = t.roster_items
        at_domain = or_(
            items.c.contact_jid.like("%@" + _escape_like(domain), escape="\\"),
            items.c.contact_jid == domain,
        )
        query = select(func.count()).select_from(items).where(items.c.listed, at_domain)
        if exclude is not None:
            query = query.where(items.c.contact_jid != str(exclude.bare))
        async with self._db.read() as conn:
            return int((await conn.execute(query)).scalar_one())


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SqlSubscriptionRequestStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put_request(self, user: Jid, contact: Jid, stanza: bytes) -> None:
        values = {"user_jid": str(user.bare), "contact_jid": str(contact.bare), "stanza": stanza}
        async with self._db.write() as conn:
            await conn.execute(
                upsert(conn, t.subscription_requests, values, ["user_jid", "contact_jid"])
            )

    async def get_requests(self, user: Jid) -> list[tuple[Jid, bytes]]:
        c = t.subscription_requests.c
        query = select(c.contact_jid, c.stanza).where(c.user_jid == str(user.bare))
        async with self._db.read() as conn:
            rows = (await conn.execute(query.order_by(c.contact_jid))).all()
        return [(Jid.parse(row.contact_jid), bytes(row.stanza)) for row in rows]

    async def delete_request(self, user: Jid, contact: Jid) -> None:
        c = t.subscription_requests.c
        async with self._db.write() as conn:
            await conn.execute(
                delete(t.subscription_requests).where(
                    c.user_jid == str(user.bare), c.contact_jid == str(contact.bare)
                )
            )
