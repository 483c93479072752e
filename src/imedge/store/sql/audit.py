"""FEDERATION.md §Every decision is explainable: the audit log and the change log, in SQL.

The audit log keeps recent federation decisions (bounded by `prune`); the change log keeps
every administrative change, written by `record_change` in the transaction of the change
itself, so that no change is saved without its entry nor logged without being saved.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, insert, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from imedge.domain.jid import Jid, JidMalformed
from imedge.store.ports import AuditEntry, ChangeEntry
from imedge.store.sql import schema as t
from imedge.store.sql.database import Database

# Byte budgets of indexed columns: a PostgreSQL B-tree entry holds about 2.7 kB, and
# whatever a remote server puts on the wire must not make an audit write fail.
_INDEXED_BYTES = {
    "direction": 16,
    "domain": t.DOMAIN,
    "partner": t.PARTNER_NAME,
    "kind": 32,
    "verdict": 32,
    "reason": 64,
}


def clip(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", "ignore")


def bare_form(address: str) -> str:
    """The bare JID the `user` filter matches: `s@D/res` → `s@D`; a domain stays itself.

    Entries carry addresses as seen on the wire; one that does not parse is cut at the
    first '/', which is where a resource starts (RFC 7622 §3.1)."""
    try:
        bare = str(Jid.parse(address).bare)
    except JidMalformed:
        bare = address.partition("/")[0]
    return clip(bare, t.BARE_JID)


def _audit_values(entry: AuditEntry) -> dict[str, Any]:
    values: dict[str, Any] = {
        "at": entry.at,
        "direction": entry.direction,
        "domain": entry.domain,
        "partner": entry.partner,
        "sender": entry.sender,
        "recipient": entry.recipient,
        "sender_bare": bare_form(entry.sender),
        "recipient_bare": bare_form(entry.recipient),
        "kind": entry.kind,
        "verdict": entry.verdict,
        "reason": entry.reason,
        "text": entry.text,
    }
    for column, limit in _INDEXED_BYTES.items():
        if values[column] is not None:
            values[column] = clip(values[column], limit)
    return values


def _audit_entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        at=float(row.at),
        direction=row.direction,
        domain=row.domain,
        partner=row.partner,
        sender=row.sender,
        recipient=row.recipient,
        kind=row.kind,
        verdict=row.verdict,
        reason=row.reason,
        text=row.text,
        id=int(row.id),
    )


async def record_change(
    conn: AsyncConnection, actor: str, action: str, target: str, detail: Mapping[str, Any]
) -> None:
    """Append to the change log inside the caller's transaction."""
    await conn.execute(
        insert(t.change_log).values(
            at=time.time(),
            actor=actor,
            action=action,
            target=target,
            detail=json.dumps(detail, ensure_ascii=False),
        )
    )


class SqlAuditStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        async with self._db.write() as conn:
            await conn.execute(insert(t.audit_log), [_audit_values(e) for e in entries])

    async def query(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        domain: str | None = None,
        partner: str | None = None,
        user: str | None = None,
        reason: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first; `since` and `until` are inclusive."""
        if limit <= 0:
            return []
        c = t.audit_log.c
        where: list[ColumnElement[bool]] = []
        if since is not None:
            where.append(c.at >= since)
        if until is not None:
            where.append(c.at <= until)
        if domain is not None:
            where.append(c.domain == clip(domain, t.DOMAIN))
        if partner is not None:
            where.append(c.partner == clip(partner, t.PARTNER_NAME))
        if user is not None:
            bare = bare_form(user)
            where.append(or_(c.sender_bare == bare, c.recipient_bare == bare))
        if reason is not None:
            where.append(c.reason == clip(reason, 64))
        query = select(t.audit_log).where(*where).order_by(c.at.desc(), c.id.desc()).limit(limit)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_audit_entry(row) for row in rows]

    async def prune(self, keep: int) -> int:
        if keep < 0:
            raise ValueError("keep is a number of entries, at least 0")
        c = t.audit_log.c
        # The newest entry that goes: everything at or before it (in (at, id) order) goes
        # too. One index range scan, instead of a NOT IN over the `keep` entries that stay.
        first_gone = select(c.at, c.id).order_by(c.at.desc(), c.id.desc()).offset(keep).limit(1)
        async with self._db.write() as conn:
            cutoff = (await conn.execute(first_gone)).one_or_none()
            if cutoff is None:
                return 0
            result = await conn.execute(
                delete(t.audit_log).where(
                    or_(c.at < cutoff.at, and_(c.at == cutoff.at, c.id <= cutoff.id))
                )
            )
        return int(result.rowcount)

    async def changes(self, *, since: float | None = None, limit: int = 100) -> list[ChangeEntry]:
        """Newest first; `since` is inclusive."""
        if limit <= 0:
            return []
        c = t.change_log.c
        query = select(t.change_log).order_by(c.at.desc(), c.id.desc()).limit(limit)
        if since is not None:
            query = query.where(c.at >= since)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            ChangeEntry(
                at=float(row.at),
                actor=row.actor,
                action=row.action,
                target=row.target,
                detail=row.detail,
                id=int(row.id),
            )
            for row in rows
        ]
