"""FEDERATION.md §Words (peer server, directory): the directory admin API under `/api/v1`.

Peer servers (their LDAP source and attribute mapping), connection tests, syncs started in
the background with their progress and kept reports, and the corporate directory search.
A thin face over `DirectoryService`, behind the same guard and with the same error shapes
as the federation API: the service's refusals become 422 with `{"detail": [{"field",
"message"}]}`, an unknown peer server 404, a sync already running 409. The LDAP bind
password is write-only: no answer ever carries it, only `ldap.has_password`.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Response, status
from pydantic import AfterValidator

from imedge.api.federation import MessageOut, ProblemsOut
from imedge.api.models import (
    MAX_TEXT,
    DirectoryPersonOut,
    LdapTestOut,
    PeerServerIn,
    PeerServerOut,
    PeerServerPatch,
    SyncIn,
    SyncProgressOut,
    SyncReportOut,
    SyncStartedOut,
    clean_text,
)
from imedge.directory.ldap import LdapError
from imedge.directory.model import SyncReport
from imedge.services.directory import (
    DirectoryError,
    DirectoryService,
    NoSuchPeerServer,
    SearchResult,
    SyncRunning,
)

log = logging.getLogger(__name__)

# 422 Unprocessable Content (RFC 9110 §15.5.21), spelt as a number: Starlette renamed its constant.
UNPROCESSABLE = 422

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": MessageOut, "description": "No peer server with that id"}
}
REFUSED: dict[int | str, dict[str, Any]] = {
    422: {"model": ProblemsOut, "description": "Refused: each problem names its field"}
}
RUNNING: dict[int | str, dict[str, Any]] = {
    409: {"model": MessageOut, "description": "A sync of this peer server is running"}
}

PeerId = Annotated[int, Path(description="The peer server's id", ge=1, le=2**62, examples=[1])]


@contextlib.contextmanager
def service_errors() -> Iterator[None]:
    """The service's refusals as HTTP answers."""
    try:
        yield
    except DirectoryError as exc:
        raise HTTPException(
            UNPROCESSABLE,
            detail=[{"field": p.field, "message": p.message} for p in exc.problems],
        ) from None
    except NoSuchPeerServer as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except SyncRunning as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None


class BackgroundSyncs:
    """The syncs started through the API: one task per peer server at most, their last
    outcome (a dry run's report is not kept by the store, so it is kept here), and their
    end when the server stops (`close`), so that no task outlives it."""

    def __init__(self, service: DirectoryService) -> None:
        self._service = service
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._last: dict[int, tuple[SyncReport, bool]] = {}

    def is_running(self, peer_id: int) -> bool:
        task = self._tasks.get(peer_id)
        return self._service.is_syncing(peer_id) or (task is not None and not task.done())

    def start(self, peer_id: int, *, dry_run: bool, actor: str) -> None:
        """Start a sync now; `SyncRunning` if one is (no await here: the check and the
        start are atomic on the event loop)."""
        if self.is_running(peer_id):
            raise SyncRunning(f"a sync of peer server {peer_id} is already running")
        self._tasks[peer_id] = asyncio.get_running_loop().create_task(
            self._run(peer_id, dry_run, actor), name=f"directory-sync-{peer_id}"
        )

    async def _run(self, peer_id: int, dry_run: bool, actor: str) -> None:
        try:
            report = await self._service.sync(peer_id, dry_run=dry_run, actor=actor)
        except (SyncRunning, NoSuchPeerServer) as exc:
            # The scheduler got there first, or the peer server was removed meanwhile.
            log.info("sync of peer server %s not run: %s", peer_id, exc)
        except Exception:
            # The service reports LDAP and store failures itself; anything else is a bug,
            # logged here since nobody awaits this task.
            log.exception("sync of peer server %s failed", peer_id)
        else:
            self._last[peer_id] = (report, dry_run)
        finally:
            self._tasks.pop(peer_id, None)

    def last(self, peer_id: int) -> tuple[SyncReport, bool] | None:
        return self._last.get(peer_id)

    def forget(self, peer_id: int) -> None:
        self._last.pop(peer_id, None)

    async def close(self) -> None:
        """Cancel the running syncs (nothing is applied: the service's transaction) and
        wait for them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def directory_router(
    service: DirectoryService,
    syncs: BackgroundSyncs,
    *,
    guard: Callable[..., Awaitable[str]],
) -> APIRouter:
    """The routes of the directory admin API, all behind `guard` (which returns the actor
    recorded with each change)."""
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(guard)])
    Actor = Annotated[str, Depends(guard)]

    # --- peer servers -----------------------------------------------------------------

    @router.get(
        "/peer-servers",
        tags=["peer servers"],
        summary="List the peer servers",
        description="Every peer server with its domains, LDAP source (without the bind "
        "password: `has_password` says whether one is stored) and attribute mapping.",
    )
    async def list_peer_servers() -> list[PeerServerOut]:
        return [PeerServerOut.of(p) for p in await service.peer_servers()]

    @router.post(
        "/peer-servers",
        status_code=status.HTTP_201_CREATED,
        tags=["peer servers"],
        summary="Add a peer server",
        description="A peer IM server: its XMPP domains, its edge address, and the LDAP "
        "source whose people fill the corporate directory. The bind password is kept "
        "encrypted and never returned. Its domains become an allowed partner after its "
        "first successful sync.",
        responses=REFUSED,
    )
    async def add_peer_server(body: PeerServerIn, actor: Actor) -> PeerServerOut:
        with service_errors():
            saved = await service.add_peer_server(body.to_peer_server(), actor)
        return PeerServerOut.of(saved)

    @router.get(
        "/peer-servers/{peer_id}",
        tags=["peer servers"],
        summary="One peer server",
        description="Its XMPP domains, edge address, LDAP source (never the bind password: "
        "only whether one is set), attribute mapping and sync schedule.",
        responses=NOT_FOUND,
    )
    async def get_peer_server(peer_id: PeerId) -> PeerServerOut:
        with service_errors():
            return PeerServerOut.of(await service.get(peer_id))

    @router.patch(
        "/peer-servers/{peer_id}",
        tags=["peer servers"],
        summary="Change a peer server",
        description="Changes the fields given, nested ones included, and keeps the others; "
        "`ldap.bind_password` left out keeps the stored password (an empty one clears it). "
        "Its partner row, if its first sync made one, follows its domains and edge address.",
        responses={**NOT_FOUND, **REFUSED},
    )
    async def patch_peer_server(
        peer_id: PeerId, body: PeerServerPatch, actor: Actor
    ) -> PeerServerOut:
        with service_errors():
            current = await service.get(peer_id)
            saved = await service.update_peer_server(body.apply(current), actor)
        return PeerServerOut.of(saved)

    @router.delete(
        "/peer-servers/{peer_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["peer servers"],
        summary="Remove a peer server",
        description="Removes the peer server, its directory entries and reports, and the "
        "partner row its first sync added (partners added otherwise stay). Refused while "
        "it is being synced.",
        responses={**NOT_FOUND, **RUNNING},
    )
    async def remove_peer_server(peer_id: PeerId, actor: Actor) -> Response:
        with service_errors():
            if syncs.is_running(peer_id):
                await service.get(peer_id)  # 404 first, for a peer server that is gone
                raise SyncRunning(f"a sync of peer server {peer_id} is running; try again")
            await service.remove_peer_server(peer_id, actor)
        syncs.forget(peer_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/peer-servers/{peer_id}/test-ldap",
        tags=["peer servers"],
        summary="Test the LDAP source",
        description="Binds, checks the base DN and counts what the filter finds, without "
        "syncing. `ok` false says what went wrong (unreachable, TLS, credentials, filter).",
        responses=NOT_FOUND,
    )
    async def test_ldap(peer_id: PeerId) -> LdapTestOut:
        with service_errors():
            peer = await service.get(peer_id)
        try:
            summary = await service.test_connection(peer.ldap)
        except LdapError as exc:
            return LdapTestOut(ok=False, summary=exc.message)
        return LdapTestOut(ok=True, summary=summary)

    # --- syncs ------------------------------------------------------------------------

    @router.post(
        "/peer-servers/{peer_id}/sync",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["peer servers"],
        summary="Start a sync",
        description="Starts a sync of the peer server in the background: fetch its people "
        "(paged), plan the changes, apply them in one transaction. Follow it with GET on "
        "the same path. A dry run computes the plan and reports its counts, changing "
        "nothing.",
        responses={**NOT_FOUND, **RUNNING},
    )
    async def start_sync(
        peer_id: PeerId,
        actor: Actor,
        body: Annotated[SyncIn | None, Body()] = None,
    ) -> SyncStartedOut:
        with service_errors():
            await service.get(peer_id)
            syncs.start(peer_id, dry_run=body is not None and body.dry_run, actor=actor)
        return SyncStartedOut()

    @router.get(
        "/peer-servers/{peer_id}/sync",
        tags=["peer servers"],
        summary="A sync's progress",
        description="Whether a sync is running, how many entries it has fetched, and the "
        "report of the last one that finished (a dry run's included, marked `dry_run`).",
        responses=NOT_FOUND,
    )
    async def sync_progress(peer_id: PeerId) -> SyncProgressOut:
        with service_errors():
            kept = await service.reports(peer_id, 1)
        progress = service.progress(peer_id)
        last = syncs.last(peer_id)
        # The newest of the API's own last sync and the store's (the scheduler's, say).
        if kept and (last is None or kept[0].finished > last[0].finished):
            last = (kept[0], False)
        return SyncProgressOut(
            running=syncs.is_running(peer_id),
            fetched=progress.fetched,
            started=progress.started,
            last_report=SyncReportOut.of(last[0], dry_run=last[1]) if last else None,
        )

    @router.get(
        "/peer-servers/{peer_id}/reports",
        tags=["peer servers"],
        summary="Past syncs",
        description="The kept sync reports, newest first: when, the counts, the entries "
        "left out and why, and why a sync failed. Dry runs are not kept.",
        responses=NOT_FOUND,
    )
    async def reports(
        peer_id: PeerId,
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many")] = 20,
    ) -> list[SyncReportOut]:
        with service_errors():
            return [SyncReportOut.of(r) for r in await service.reports(peer_id, limit)]

    # --- the corporate directory -----------------------------------------------------

    @router.get(
        "/directory/search",
        tags=["directory"],
        summary="Search the corporate directory",
        description="Local users and peer servers' people whose address, name or details "
        "contain the text (ignoring case), local users first; `reachable` says whether "
        "federation with the person's domain is possible now.",
    )
    async def search(
        q: Annotated[
            str,
            Query(max_length=MAX_TEXT, description="Text to look for; empty: everyone"),
            AfterValidator(clean_text),
        ] = "",
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many")] = 50,
    ) -> list[DirectoryPersonOut]:
        names = {p.id: p.name for p in await service.peer_servers()}
        return [person(r, names) for r in await service.search(q, limit)]

    def person(result: SearchResult, names: dict[int | None, str]) -> DirectoryPersonOut:
        return DirectoryPersonOut(
            jid=result.im_address,
            name=result.display_name,
            email=result.email,
            phone=result.phone,
            department=result.department,
            title=result.title,
            local=result.local,
            peer_server=names.get(result.peer_server_id) if not result.local else None,
            peer_server_id=result.peer_server_id,
            reachable=result.reachable,
        )

    return router
