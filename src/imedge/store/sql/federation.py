"""FEDERATION.md §The partner table, §Global settings, §Per user: their rows in SQL.

Values are the policy layer's frozen dataclasses, stored one column per field (enums as
their values, the origin and the edge address in their text forms), so a partner read
back compares equal to the one saved. A partner's domain patterns are rows of
`partner_domains`, in the administrator's order. Every write appends a change-log entry
in its own transaction.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from imedge.domain.jid import Jid
from imedge.policy import (
    EdgeAddress,
    Filter,
    GlobalSettings,
    Origin,
    Partner,
    Requirement,
    UserSettings,
    VerifiedSubscriptions,
)
from imedge.store.ports import AlreadyExists, NotFound
from imedge.store.sql import schema as t
from imedge.store.sql.audit import record_change
from imedge.store.sql.database import Database, upsert

log = logging.getLogger(__name__)

SEEDED_KEY = "federation.defaults_seeded"  # in `meta`: the default partners were listed once
SEED_ACTOR = "system:install"
SETTINGS_ROW = 1
_UNIQUE_VIOLATION = "23505"  # PostgreSQL SQLSTATE unique_violation


def name_key(name: str) -> str:
    """What makes two partner names the same (the policy layer compares them so too)."""
    return name.strip().casefold()


# --- partners -------------------------------------------------------------------------


def _partner_values(partner: Partner) -> dict[str, Any]:
    return {
        "name": partner.name,
        "name_key": name_key(partner.name),
        "comment": partner.comment,
        "edge_address": None if partner.edge_address is None else str(partner.edge_address),
        "allowed": partner.allowed,
        "public": partner.public,
        "filter": partner.filter.value,
        "tls": partner.tls.value,
        "sasl_external": partner.sasl_external.value,
        "dialback": partner.dialback,
        "connection_limit": partner.connection_limit,
        "origin": str(partner.origin),
    }


def _partner(row: Row[Any], domains: Sequence[str]) -> Partner:
    return Partner(
        id=int(row.id),
        name=row.name,
        domains=tuple(domains),
        comment=row.comment,
        edge_address=None if row.edge_address is None else EdgeAddress.parse(row.edge_address),
        allowed=bool(row.allowed),
        public=bool(row.public),
        filter=Filter(row.filter),
        tls=Requirement(row.tls),
        sasl_external=Requirement(row.sasl_external),
        dialback=bool(row.dialback),
        connection_limit=None if row.connection_limit is None else int(row.connection_limit),
        origin=Origin.parse(row.origin),
    )


def partner_detail(partner: Partner) -> dict[str, Any]:
    """The partner as JSON-able values, as the change log records it."""
    values = _partner_values(partner)
    del values["name_key"]
    return {"id": partner.id, **values, "domains": list(partner.domains)}


async def _read_partners(conn: AsyncConnection, partner_id: int | None = None) -> list[Partner]:
    p, d = t.partners.c, t.partner_domains.c
    rows_query = select(t.partners).order_by(p.id)
    domains_query = select(d.partner_id, d.pattern).order_by(d.partner_id, d.position)
    if partner_id is not None:
        rows_query = rows_query.where(p.id == partner_id)
        domains_query = domains_query.where(d.partner_id == partner_id)
    rows = (await conn.execute(rows_query)).all()
    if not rows:
        return []
    domains: dict[int, list[str]] = {}
    for owner, pattern in (await conn.execute(domains_query)).all():
        domains.setdefault(int(owner), []).append(pattern)
    return [_partner(row, domains.get(int(row.id), ())) for row in rows]


async def _check_free(conn: AsyncConnection, partner: Partner, own_id: int | None) -> None:
    """`AlreadyExists` naming the clash if another row has this name or one of these
    patterns (the unique constraints would refuse too, but without saying which)."""
    p, d = t.partners.c, t.partner_domains.c
    same_name = select(p.name).where(p.name_key == name_key(partner.name))
    if own_id is not None:
        same_name = same_name.where(p.id != own_id)
    taken = await conn.scalar(same_name)
    if taken is not None:
        raise AlreadyExists(f"a partner named {taken!r} already exists")
    if not partner.domains:
        return
    same_domain = (
        select(d.pattern, p.name)
        .join(t.partners, p.id == d.partner_id)
        .where(d.pattern.in_(partner.domains))
        .order_by(d.pattern)
    )
    if own_id is not None:
        same_domain = same_domain.where(d.partner_id != own_id)
    clash = (await conn.execute(same_domain.limit(1))).one_or_none()
    if clash is not None:
        raise AlreadyExists(f"{clash.pattern} is already listed by partner {clash.name!r}")


@contextmanager
def _unique_violations_as_already_exists(what: str) -> Iterator[None]:
    """A concurrent writer can pass `_check_free` at the same time; the constraint decides."""
    try:
        yield
    except sa_exc.IntegrityError as exc:
        orig = getattr(exc, "orig", None)
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        text = str(orig or exc).lower()
        if code == _UNIQUE_VIOLATION or "unique constraint" in text:
            raise AlreadyExists(f"{what}: its name or one of its domains is taken") from exc
        raise


async def _insert_domains(conn: AsyncConnection, partner_id: int, domains: Sequence[str]) -> None:
    if not domains:
        return
    await conn.execute(
        insert(t.partner_domains),
        [
            {"partner_id": partner_id, "position": position, "pattern": pattern}
            for position, pattern in enumerate(domains)
        ],
    )


async def _insert_partner(conn: AsyncConnection, partner: Partner) -> Partner:
    await _check_free(conn, partner, None)
    with _unique_violations_as_already_exists(f"partner {partner.name!r}"):
        new_id = await conn.scalar(
            insert(t.partners).values(**_partner_values(partner)).returning(t.partners.c.id)
        )
        assert new_id is not None
        await _insert_domains(conn, int(new_id), partner.domains)
    return replace(partner, id=int(new_id))


# --- settings -------------------------------------------------------------------------


def settings_detail(settings: GlobalSettings) -> dict[str, Any]:
    return {
        "federation": settings.federation,
        "open_federation": settings.open_federation,
        "open_federation_max_contacts": settings.open_federation_max_contacts,
        "open_federation_stanza_rate": settings.open_federation_stanza_rate,
        "blocked_domains": list(settings.blocked_domains),
        "public_im_licences": settings.public_im_licences,
    }


def user_settings_detail(settings: UserSettings) -> dict[str, Any]:
    return {
        "federation": settings.federation,
        "public_im": settings.public_im,
        "verified_subscriptions": settings.verified_subscriptions.value,
        "block_non_allowed_im": settings.block_non_allowed_im,
        "allow_list": list(settings.allow_list),
    }


def _user_settings(row: Any) -> UserSettings:  # a Row of _USER_COLUMNS
    return UserSettings(
        federation=bool(row.federation),
        public_im=bool(row.public_im),
        verified_subscriptions=VerifiedSubscriptions(row.verified_subscriptions),
        block_non_allowed_im=bool(row.block_non_allowed_im),
        allow_list=tuple(json.loads(row.allow_list)),
    )


_USER_COLUMNS = (
    t.user_federation_settings.c.federation,
    t.user_federation_settings.c.public_im,
    t.user_federation_settings.c.verified_subscriptions,
    t.user_federation_settings.c.block_non_allowed_im,
    t.user_federation_settings.c.allow_list,
)


class SqlFederationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- partners ---------------------------------------------------------------------

    async def list_partners(self) -> builtins.list[Partner]:
        """Every row, oldest first (by id)."""
        async with self._db.read() as conn, conn.begin():
            return await _read_partners(conn)

    async def get_partner(self, partner_id: int) -> Partner | None:
        async with self._db.read() as conn, conn.begin():
            found = await _read_partners(conn, partner_id)
        return found[0] if found else None

    async def get_partner_by_name(self, name: str) -> Partner | None:
        """Names compare as the policy layer compares them: trimmed, ignoring case."""
        query = select(t.partners.c.id).where(t.partners.c.name_key == name_key(name))
        async with self._db.read() as conn, conn.begin():
            partner_id = await conn.scalar(query)
            if partner_id is None:
                return None
            found = await _read_partners(conn, int(partner_id))
        return found[0] if found else None

    async def add_partner(self, partner: Partner, actor: str) -> Partner:
        async with self._db.write() as conn:
            saved = await _insert_partner(conn, partner)
            await record_change(conn, actor, "partner.add", saved.name, partner_detail(saved))
        return saved

    async def update_partner(
        self, partner: Partner, actor: str, action: str = "partner.edit"
    ) -> Partner:
        if partner.id is None:
            raise NotFound(f"partner {partner.name!r} has no id: it was never stored")
        p = t.partners.c
        async with self._db.write() as conn:
            found = await conn.scalar(select(p.id).where(p.id == partner.id))
            if found is None:
                raise NotFound(f"no partner with id {partner.id}")
            await _check_free(conn, partner, partner.id)
            with _unique_violations_as_already_exists(f"partner {partner.name!r}"):
                await conn.execute(
                    update(t.partners).where(p.id == partner.id).values(**_partner_values(partner))
                )
                await conn.execute(
                    delete(t.partner_domains).where(t.partner_domains.c.partner_id == partner.id)
                )
                await _insert_domains(conn, partner.id, partner.domains)
            await record_change(conn, actor, action, partner.name, partner_detail(partner))
        return partner

    async def remove_partner(self, partner_id: int, actor: str) -> None:
        async with self._db.write() as conn:
            found = await _read_partners(conn, partner_id)
            if not found:
                raise NotFound(f"no partner with id {partner_id}")
            await conn.execute(
                delete(t.partner_domains).where(t.partner_domains.c.partner_id == partner_id)
            )
            await conn.execute(delete(t.partners).where(t.partners.c.id == partner_id))
            # The detail keeps the whole removed row, so the log can tell what was lost.
            await record_change(
                conn, actor, "partner.remove", found[0].name, partner_detail(found[0])
            )

    async def seed_defaults(self, partners: Sequence[Partner]) -> bool:
        async with self._db.write() as conn:
            # The flag row is inserted first: of two servers starting at once on one
            # PostgreSQL database, the second waits on it and then finds it there.
            flag = {"key": SEEDED_KEY, "value": json.dumps({"at": time.time()})}
            result = await conn.execute(upsert(conn, t.meta, flag, ["key"], update={}))
            if result.rowcount == 0:
                return False
            for partner in partners:
                try:
                    await _check_free(conn, partner, None)
                except AlreadyExists as exc:
                    # A database upgraded from before the partner table cannot hold one
                    # yet; should one exist anyway, the administrator's row wins.
                    log.warning("default partner %s not listed: %s", partner.name, exc)
                    continue
                saved = await _insert_partner(conn, partner)
                await record_change(
                    conn, SEED_ACTOR, "partner.seed", saved.name, partner_detail(saved)
                )
        return True

    # --- global settings --------------------------------------------------------------

    async def get_settings(self) -> GlobalSettings:
        s = t.federation_settings.c
        async with self._db.read() as conn:
            row = (
                await conn.execute(select(t.federation_settings).where(s.id == SETTINGS_ROW))
            ).one_or_none()
        if row is None:
            return GlobalSettings()
        return GlobalSettings(
            federation=bool(row.federation),
            open_federation=bool(row.open_federation),
            open_federation_max_contacts=int(row.open_federation_max_contacts),
            open_federation_stanza_rate=float(row.open_federation_stanza_rate),
            blocked_domains=tuple(json.loads(row.blocked_domains)),
            public_im_licences=int(row.public_im_licences),
        )

    async def save_settings(self, settings: GlobalSettings, actor: str) -> None:
        detail = settings_detail(settings)
        values = {
            **detail,
            "id": SETTINGS_ROW,
            "blocked_domains": json.dumps(detail["blocked_domains"]),
        }
        async with self._db.write() as conn:
            await conn.execute(upsert(conn, t.federation_settings, values, ["id"]))
            await record_change(conn, actor, "settings.update", "settings", detail)

    # --- users ------------------------------------------------------------------------

    async def get_user_settings(self, user: Jid) -> UserSettings:
        u = t.user_federation_settings.c
        query = select(*_USER_COLUMNS).where(u.user_jid == str(user.bare))
        async with self._db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return UserSettings() if row is None else _user_settings(row)

    async def save_user_settings(self, user: Jid, settings: UserSettings, actor: str) -> None:
        """Settings equal to the defaults delete the row: only exceptions are kept."""
        key = str(user.bare)
        detail = user_settings_detail(settings)
        table = t.user_federation_settings
        async with self._db.write() as conn:
            if settings == UserSettings():
                await conn.execute(delete(table).where(table.c.user_jid == key))
            else:
                values = {**detail, "user_jid": key, "allow_list": json.dumps(detail["allow_list"])}
                await conn.execute(upsert(conn, table, values, ["user_jid"]))
            await record_change(conn, actor, "user.federation", key, detail)

    async def list_user_settings(self) -> builtins.list[tuple[Jid, UserSettings]]:
        """Ordered by JID."""
        u = t.user_federation_settings.c
        query = select(u.user_jid, *_USER_COLUMNS).order_by(u.user_jid)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [(Jid.parse(row.user_jid), _user_settings(row)) for row in rows]

    async def count_public_im(self) -> int:
        u = t.user_federation_settings.c
        query = (
            select(func.count())
            .select_from(t.user_federation_settings)
            .where(u.public_im.is_(True))
        )
        async with self._db.read() as conn:
            return int(await conn.scalar(query) or 0)
