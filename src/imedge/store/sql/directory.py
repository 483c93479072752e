"""FEDERATION.md §Words (peer server, directory): peer servers, entries and reports in SQL.

A peer server is one row of `peer_servers` (its LDAP source flattened, its mapping as a
JSON object, its bind password sealed by `SecretBox`) plus its domains in
`peer_server_domains`. `apply_plan` writes a whole sync in one transaction: either the
new directory and its report are both there, or neither is.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from imedge.policy import EdgeAddress
from imedge.store.ports import (
    AlreadyExists,
    AttributeMapping,
    Conflict,
    DirectoryEntry,
    IssueKind,
    LdapSource,
    NotFound,
    PeerServer,
    StoreError,
    SyncIssue,
    SyncPlan,
    SyncReport,
    SyncStatus,
)
from imedge.store.sql import schema as t
from imedge.store.sql.audit import record_change
from imedge.store.sql.database import Database
from imedge.store.sql.federation import _unique_violations_as_already_exists, name_key
from imedge.store.sql.secrets import SecretBox

log = logging.getLogger(__name__)

SECRET_CONTEXT = "peer_servers.bind_password"  # noqa: S105 -- AES-GCM associated data
KEEP_REPORTS = 100  # per peer server; older reports are pruned when a new one is kept
MAX_SEARCH_LIMIT = 1000

_ENTRY_FIELDS = ("dn", "display_name", "email", "phone", "department", "title")


# --- peer servers -------------------------------------------------------------------------


def peer_detail(peer: PeerServer) -> dict[str, Any]:
    """The peer server as JSON-able values for the change log: never the password."""
    ldap = asdict(peer.ldap)
    del ldap["bind_password"]
    return {
        "id": peer.id,
        "name": peer.name,
        "domains": list(peer.domains),
        "edge_address": None if peer.edge_address is None else str(peer.edge_address),
        "ldap": {**ldap, "bind_password_set": bool(peer.ldap.bind_password)},
        "mapping": asdict(peer.mapping),
        "schedule_minutes": peer.schedule_minutes,
        "enabled": peer.enabled,
    }


class SqlDirectoryStore:
    def __init__(self, db: Database, box: SecretBox | None = None) -> None:
        self._db = db
        self._box = box

    # --- secrets ----------------------------------------------------------------------

    def _seal(self, peer: PeerServer) -> bytes | None:
        if not peer.ldap.bind_password:
            return None
        if self._box is None:
            raise StoreError(
                "no encryption key: the bind password of a peer server cannot be stored "
                "(the store was opened without secret_key)"
            )
        return self._box.seal(peer.ldap.bind_password, SECRET_CONTEXT)

    def _open(self, name: str, sealed: bytes | None) -> str:
        if sealed is None:
            return ""
        if self._box is None:
            raise StoreError(
                f"no encryption key: cannot read the bind password of peer server {name!r}"
            )
        what = f"the bind password of peer server {name!r}"
        return self._box.open(bytes(sealed), SECRET_CONTEXT, what)

    # --- rows -------------------------------------------------------------------------

    def _values(self, peer: PeerServer) -> dict[str, Any]:
        ldap = peer.ldap
        return {
            "name": peer.name,
            "name_key": name_key(peer.name),
            "edge_address": None if peer.edge_address is None else str(peer.edge_address),
            "ldap_url": ldap.url,
            "start_tls": ldap.start_tls,
            "bind_dn": ldap.bind_dn,
            "bind_password": self._seal(peer),
            "base_dn": ldap.base_dn,
            "ldap_filter": ldap.filter,
            "page_size": ldap.page_size,
            "timeout": ldap.timeout,
            "ca_file": ldap.ca_file,
            "mapping": json.dumps(asdict(peer.mapping), ensure_ascii=False),
            "schedule_minutes": peer.schedule_minutes,
            "enabled": peer.enabled,
        }

    def _peer(self, row: Row[Any], domains: Sequence[str]) -> PeerServer:
        ldap = LdapSource(
            url=row.ldap_url,
            base_dn=row.base_dn,
            start_tls=bool(row.start_tls),
            bind_dn=row.bind_dn,
            bind_password=self._open(row.name, row.bind_password),
            filter=row.ldap_filter,
            page_size=int(row.page_size),
            timeout=float(row.timeout),
            ca_file=row.ca_file,
        )
        return PeerServer(
            id=int(row.id),
            name=row.name,
            domains=tuple(domains),
            edge_address=None if row.edge_address is None else EdgeAddress.parse(row.edge_address),
            ldap=ldap,
            mapping=AttributeMapping(**json.loads(row.mapping)),
            schedule_minutes=None if row.schedule_minutes is None else int(row.schedule_minutes),
            enabled=bool(row.enabled),
        )

    async def _read(self, conn: AsyncConnection, peer_id: int | None = None) -> list[PeerServer]:
        p, d = t.peer_servers.c, t.peer_server_domains.c
        rows_query = select(t.peer_servers).order_by(p.id)
        domains_query = select(d.peer_server_id, d.domain).order_by(d.peer_server_id, d.position)
        if peer_id is not None:
            rows_query = rows_query.where(p.id == peer_id)
            domains_query = domains_query.where(d.peer_server_id == peer_id)
        rows = (await conn.execute(rows_query)).all()
        if not rows:
            return []
        domains: dict[int, list[str]] = {}
        for owner, domain in (await conn.execute(domains_query)).all():
            domains.setdefault(int(owner), []).append(domain)
        return [self._peer(row, domains.get(int(row.id), ())) for row in rows]

    async def _check_free(self, conn: AsyncConnection, peer: PeerServer) -> None:
        """`AlreadyExists` naming the clash (the unique constraints back this up)."""
        p, d = t.peer_servers.c, t.peer_server_domains.c
        same_name = select(p.name).where(p.name_key == name_key(peer.name))
        if peer.id is not None:
            same_name = same_name.where(p.id != peer.id)
        taken = await conn.scalar(same_name)
        if taken is not None:
            raise AlreadyExists(f"a peer server named {taken!r} already exists")
        if not peer.domains:
            return
        same_domain = (
            select(d.domain, p.name)
            .join(t.peer_servers, p.id == d.peer_server_id)
            .where(d.domain.in_(peer.domains))
            .order_by(d.domain)
        )
        if peer.id is not None:
            same_domain = same_domain.where(d.peer_server_id != peer.id)
        clash = (await conn.execute(same_domain.limit(1))).one_or_none()
        if clash is not None:
            raise AlreadyExists(f"{clash.domain} is already a domain of peer server {clash.name!r}")

    async def _insert_domains(
        self, conn: AsyncConnection, peer_id: int, domains: Sequence[str]
    ) -> None:
        if domains:
            await conn.execute(
                insert(t.peer_server_domains),
                [
                    {"peer_server_id": peer_id, "position": position, "domain": domain}
                    for position, domain in enumerate(domains)
                ],
            )

    # --- peer server CRUD -------------------------------------------------------------

    async def add_peer_server(self, peer: PeerServer, actor: str) -> PeerServer:
        values = self._values(peer)
        async with self._db.write() as conn:
            await self._check_free(conn, replace(peer, id=None))
            with _unique_violations_as_already_exists(f"peer server {peer.name!r}"):
                new_id = await conn.scalar(
                    insert(t.peer_servers).values(**values).returning(t.peer_servers.c.id)
                )
                assert new_id is not None
                await self._insert_domains(conn, int(new_id), peer.domains)
            saved = replace(peer, id=int(new_id))
            await record_change(conn, actor, "peer_server.add", saved.name, peer_detail(saved))
        return saved

    async def update_peer_server(self, peer: PeerServer, actor: str) -> PeerServer:
        if peer.id is None:
            raise NotFound(f"peer server {peer.name!r} has no id: it was never stored")
        values = self._values(peer)
        p = t.peer_servers.c
        async with self._db.write() as conn:
            if await conn.scalar(select(p.id).where(p.id == peer.id)) is None:
                raise NotFound(f"no peer server with id {peer.id}")
            await self._check_free(conn, peer)
            with _unique_violations_as_already_exists(f"peer server {peer.name!r}"):
                await conn.execute(update(t.peer_servers).where(p.id == peer.id).values(**values))
                await conn.execute(
                    delete(t.peer_server_domains).where(
                        t.peer_server_domains.c.peer_server_id == peer.id
                    )
                )
                await self._insert_domains(conn, peer.id, peer.domains)
            await record_change(conn, actor, "peer_server.edit", peer.name, peer_detail(peer))
        return peer

    async def get_peer_server(self, peer_server_id: int) -> PeerServer | None:
        async with self._db.read() as conn, conn.begin():
            found = await self._read(conn, peer_server_id)
        return found[0] if found else None

    async def list_peer_servers(self) -> builtins.list[PeerServer]:
        async with self._db.read() as conn, conn.begin():
            return await self._read(conn)

    async def remove_peer_server(self, peer_server_id: int, actor: str) -> None:
        p = t.peer_servers.c
        async with self._db.write() as conn:
            row = (
                await conn.execute(select(p.id, p.name).where(p.id == peer_server_id))
            ).one_or_none()
            if row is None:
                raise NotFound(f"no peer server with id {peer_server_id}")
            # Explicit deletes: the foreign keys cascade too, but SQLite only when its
            # foreign_keys pragma is on, which a hand-opened connection may lack.
            for table in (t.directory_entries, t.sync_reports, t.peer_server_domains):
                await conn.execute(delete(table).where(table.c.peer_server_id == peer_server_id))
            await conn.execute(delete(t.peer_servers).where(p.id == peer_server_id))
            await record_change(conn, actor, "peer_server.remove", row.name, {"id": peer_server_id})

    # --- entries ----------------------------------------------------------------------

    async def entries(self, peer_server_id: int) -> builtins.list[DirectoryEntry]:
        e = t.directory_entries.c
        query = (
            select(*_ENTRY_COLUMNS).where(e.peer_server_id == peer_server_id).order_by(e.im_address)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_entry(row) for row in rows]

    async def get_entry(self, im_address: str) -> DirectoryEntry | None:
        e = t.directory_entries.c
        query = (
            select(*_ENTRY_COLUMNS)
            .where(e.im_address == im_address)
            .order_by(e.peer_server_id)
            .limit(1)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else _entry(row)

    async def search(
        self, text: str, *, peer_server_id: int | None = None, limit: int = 50
    ) -> builtins.list[DirectoryEntry]:
        e = t.directory_entries.c
        limit = max(1, min(limit, MAX_SEARCH_LIMIT))
        query = select(*_ENTRY_COLUMNS).order_by(e.search_key, e.im_address).limit(limit)
        needle = " ".join(text.split()).casefold()  # a newline would span two fields
        if needle:
            query = query.where(e.search_key.contains(needle, autoescape=True))
        if peer_server_id is not None:
            query = query.where(e.peer_server_id == peer_server_id)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_entry(row) for row in rows]

    async def count_entries(self, peer_server_id: int) -> int:
        async with self._db.read() as conn:
            return await _count(conn, peer_server_id)

    # --- sync -------------------------------------------------------------------------

    async def apply_plan(self, peer_server_id: int, plan: SyncPlan, report: SyncReport) -> None:
        e = t.directory_entries.c
        async with self._db.write() as conn:
            exists = await conn.scalar(
                select(t.peer_servers.c.id).where(t.peer_servers.c.id == peer_server_id)
            )
            if exists is None:
                raise NotFound(f"no peer server with id {peer_server_id}")
            # A plan counts every current entry once (removed, changed or unchanged): a
            # different count means another writer got here since the plan was made.
            found = await _count(conn, peer_server_id)
            expected = len(plan.removed) + len(plan.changed) + plan.unchanged
            if found != expected:
                raise Conflict(
                    f"the directory of peer server {peer_server_id} has {found} entries, the "
                    f"sync plan was made for {expected}: sync again"
                )
            key = (e.peer_server_id == bindparam("k_peer")) & (e.im_address == bindparam("k_im"))
            if plan.removed:
                await conn.execute(
                    delete(t.directory_entries).where(key),
                    [{"k_peer": peer_server_id, "k_im": old.im_address} for old in plan.removed],
                )
            if plan.changed:
                await conn.execute(
                    update(t.directory_entries).where(key),
                    [
                        {"k_peer": peer_server_id, "k_im": old.im_address, **_row(new, False)}
                        for old, new in plan.changed
                    ],
                )
            if plan.added:
                await conn.execute(
                    insert(t.directory_entries),
                    [{"peer_server_id": peer_server_id, **_row(new, True)} for new in plan.added],
                )
            await _insert_report(conn, replace(report, peer_server_id=peer_server_id))
        log.info(
            "directory of peer server %s: %s added, %s changed, %s removed, %s unchanged",
            peer_server_id,
            len(plan.added),
            len(plan.changed),
            len(plan.removed),
            plan.unchanged,
        )

    async def record_report(self, report: SyncReport) -> None:
        async with self._db.write() as conn:
            await _insert_report(conn, report)

    async def reports(self, peer_server_id: int, limit: int = 20) -> builtins.list[SyncReport]:
        r = t.sync_reports.c
        query = (
            select(t.sync_reports)
            .where(r.peer_server_id == peer_server_id)
            .order_by(r.id.desc())
            .limit(max(1, limit))
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_report(row) for row in rows]


# --- entries and reports as rows ------------------------------------------------------------

_ENTRY_COLUMNS = (
    t.directory_entries.c.peer_server_id,
    t.directory_entries.c.im_address,
    *(t.directory_entries.c[name] for name in _ENTRY_FIELDS),
)


def search_key(entry: DirectoryEntry) -> str:
    """What `search` matches, casefolded; sorted on, so the name comes first."""
    parts = (
        entry.display_name or entry.im_address,
        entry.im_address,
        entry.email,
        entry.department,
    )
    return "\n".join(" ".join(part.split()).casefold() for part in parts if part)


def _row(entry: DirectoryEntry, with_address: bool) -> dict[str, Any]:
    row: dict[str, Any] = {name: getattr(entry, name) for name in _ENTRY_FIELDS}
    row["search_key"] = search_key(entry)
    if with_address:
        row["im_address"] = entry.im_address
    return row


def _entry(row: Row[Any]) -> DirectoryEntry:
    return DirectoryEntry(
        peer_server_id=int(row.peer_server_id),
        im_address=row.im_address,
        dn=row.dn,
        display_name=row.display_name,
        email=row.email,
        phone=row.phone,
        department=row.department,
        title=row.title,
    )


async def _count(conn: AsyncConnection, peer_server_id: int) -> int:
    e = t.directory_entries.c
    query = (
        select(func.count())
        .select_from(t.directory_entries)
        .where(e.peer_server_id == peer_server_id)
    )
    return int(await conn.scalar(query) or 0)


async def _insert_report(conn: AsyncConnection, report: SyncReport) -> None:
    r = t.sync_reports.c
    issues = [
        {"kind": issue.kind.value, "dn": issue.dn, "detail": issue.detail}
        for issue in report.issues
    ]
    await conn.execute(
        insert(t.sync_reports).values(
            peer_server_id=report.peer_server_id,
            started=report.started,
            finished=report.finished,
            status=report.status.value,
            added=report.added,
            changed=report.changed,
            removed=report.removed,
            unchanged=report.unchanged,
            issue_count=max(report.issue_count, len(report.issues)),
            issues=json.dumps(issues, ensure_ascii=False),
            error=report.error,
        )
    )
    # Keep the newest KEEP_REPORTS of this peer server.
    cutoff = await conn.scalar(
        select(r.id)
        .where(r.peer_server_id == report.peer_server_id)
        .order_by(r.id.desc())
        .offset(KEEP_REPORTS)
        .limit(1)
    )
    if cutoff is not None:
        await conn.execute(
            delete(t.sync_reports).where(
                (r.peer_server_id == report.peer_server_id) & (r.id <= cutoff)
            )
        )


def _report(row: Row[Any]) -> SyncReport:
    return SyncReport(
        id=int(row.id),
        peer_server_id=int(row.peer_server_id),
        started=float(row.started),
        finished=float(row.finished),
        status=SyncStatus(row.status),
        added=int(row.added),
        changed=int(row.changed),
        removed=int(row.removed),
        unchanged=int(row.unchanged),
        issues=tuple(
            SyncIssue(IssueKind(i["kind"]), i["dn"], i["detail"]) for i in json.loads(row.issues)
        ),
        issue_count=int(row.issue_count),
        error=row.error,
    )
