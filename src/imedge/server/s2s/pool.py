"""Outbound server links, one per (local domain, remote domain), and the inbound streams.

Each link keeps a bounded queue of stanzas while it connects, delivers them once the
stream is authenticated, and bounces them with `remote-server-not-found` or
`remote-server-timeout` when the remote domain cannot be reached (RFC 6120 §8.3.3.13/14):
no stanza is dropped in silence. After a failure the link waits (exponential back-off)
before trying again, and bounces at once meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

from imedge.domain.errors import StanzaError, StanzaErrorCondition
from imedge.domain.jid import Jid
from imedge.protocol.element import Element
from imedge.server.metrics import Metrics
from imedge.server.router import Router
from imedge.server.s2s.channel import Channel, ChannelError, TlsSettings
from imedge.server.s2s.inbound import InboundStream
from imedge.server.s2s.info import S2SStreamInfo
from imedge.server.s2s.outbound import OutboundStream, S2SFailure
from imedge.server.s2s.resolver import ResolutionError, S2SResolver, Target
from imedge.server.s2s.settings import FederationPolicy, OpenPolicy, S2SSettings
from imedge.server.stanzas import StanzaToRemote

log = logging.getLogger(__name__)

BACKOFF_FIRST = 2.0
BACKOFF_MAX = 300.0


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """What an operator sees about one remote domain."""

    local: str
    remote: str
    state: str
    queued: int
    last_success: float | None
    last_failure: float | None
    last_error: str | None
    retry_in: float | None


class OutboundLink:
    def __init__(self, pool: S2SPool, local: str, remote: str) -> None:
        self.pool = pool
        self.local = local
        self.remote = remote
        self.queue: deque[tuple[Element, Jid, Jid]] = deque()
        self.stream: OutboundStream | None = None
        self.task: asyncio.Task[None] | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.last_error: S2SFailure | None = None
        self.last_success: float | None = None
        self.last_failure: float | None = None

    def submit(self, stanza: Element, from_: Jid, to: Jid) -> StanzaError | None:
        """Send or queue; return the error to bounce with when neither is possible."""
        stream = self.stream
        if stream is not None and stream.send(stanza):
            return None
        loop = asyncio.get_running_loop()
        if self.task is None and self.last_error is not None and loop.time() < self.retry_at:
            return _bounce_error(self.remote, self.last_error)
        if len(self.queue) >= self.pool.settings.max_queue:
            return StanzaError(
                StanzaErrorCondition.RESOURCE_CONSTRAINT,
                f"too many stanzas waiting for {self.remote}",
            )
        self.queue.append((stanza, from_, to))
        if self.task is None:
            self.task = self.pool.spawn(self._run(), f"s2s-out {self.local}->{self.remote}")
        return None

    async def _run(self) -> None:
        try:
            await self._connect_and_serve()
        except Exception as exc:
            # A bug must not strand the queue: its stanzas go back to their senders.
            log.exception("outbound link %s -> %s failed", self.local, self.remote)
            await self.bounce_all(S2SFailure("internal", f"internal error: {exc}", temporary=True))
        finally:
            self.task = None

    async def _connect_and_serve(self) -> None:
        while self.queue:
            try:
                stream = await self.pool.connect(self.local, self.remote, authenticate=True)
            except S2SFailure as failure:
                self._failed(failure)
                await self.bounce_all(failure)
                return
            self.failures = 0
            self.last_error = None
            self.last_success = time.time()
            self.stream = stream
            self.pool.outbound.add(stream)
            while self.queue:
                stanza, _, _ = self.queue.popleft()
                stream.send(stanza)
            try:
                await stream.serve()
            finally:
                self.stream = None
                self.pool.outbound.discard(stream)
                self.pool.finished(stream.info)

    def _failed(self, failure: S2SFailure) -> None:
        self.failures += 1
        self.last_error = failure
        self.last_failure = time.time()
        self.pool.metrics.s2s_link_failures.labels(self.remote, failure.step).inc()
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failures - 1))
        self.retry_at = asyncio.get_running_loop().time() + delay
        log.warning(
            "cannot reach %s (%s); %d stanza(s) bounced; retrying after %.0f s",
            self.remote,
            failure,
            len(self.queue),
            delay,
        )

    async def bounce_all(self, failure: S2SFailure) -> None:
        err = _bounce_error(self.remote, failure)
        while self.queue:
            stanza, from_, to = self.queue.popleft()
            await self.pool.router.bounce(stanza, from_, to, err)

    def status(self) -> LinkStatus:
        if self.stream is not None:
            state = "connected"
        elif self.task is not None:
            state = "connecting"
        elif self.last_error is not None:
            state = "failed"
        else:
            state = "idle"
        retry = None
        if self.last_error is not None and self.task is None:
            retry = max(0.0, self.retry_at - asyncio.get_running_loop().time())
        return LinkStatus(
            self.local,
            self.remote,
            state,
            len(self.queue),
            self.last_success,
            self.last_failure,
            str(self.last_error) if self.last_error else None,
            retry,
        )


def _bounce_error(remote: str, failure: S2SFailure) -> StanzaError:
    condition = (
        StanzaErrorCondition.REMOTE_SERVER_TIMEOUT
        if failure.temporary
        else StanzaErrorCondition.REMOTE_SERVER_NOT_FOUND
    )
    return StanzaError(condition, f"cannot reach {remote}: {failure.reason}")


class S2SPool:
    """All server links of this server; the handler of `StanzaToRemote`."""

    def __init__(
        self,
        settings: S2SSettings,
        tls: TlsSettings,
        resolver: S2SResolver,
        router: Router,
        metrics: Metrics,
        *,
        policy: FederationPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.policy: FederationPolicy = policy or OpenPolicy(settings)
        self.tls = tls
        self.resolver = resolver
        self.router = router
        self.metrics = metrics
        self.links: dict[tuple[str, str], OutboundLink] = {}
        self.outbound: set[OutboundStream] = set()
        self.inbound: set[InboundStream] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.recently_closed: deque[S2SStreamInfo] = deque(maxlen=100)

    def spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("s2s task %s failed", task.get_name(), exc_info=task.exception())

    def finished(self, info: S2SStreamInfo) -> None:
        self.recently_closed.append(info)

    # --- outbound ---------------------------------------------------------------------
    async def on_stanza(self, ev: StanzaToRemote) -> bool:
        local = (
            ev.from_.domain
            if ev.from_.domain in self.settings.hosts
            else sorted(self.settings.hosts)[0]
        )
        key = (local, ev.to.domain)
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = OutboundLink(self, local, ev.to.domain)
        err = link.submit(ev.stanza, ev.from_, ev.to)
        if err is not None:
            await self.router.bounce(ev.stanza, ev.from_, ev.to, err)
        return True

    def edge_address(self, remote: str) -> tuple[str, int] | None:
        """The partner's edge address, else the one in `[s2s.edge_addresses]`."""
        return self.policy.edge_address(remote) or self.settings.edge_addresses.get(remote)

    async def targets(self, remote: str) -> list[Target]:
        override = self.edge_address(remote)
        try:
            targets = await self.resolver.resolve(remote, override=override)
        except ResolutionError as exc:
            raise S2SFailure("dns", exc.reason, temporary=exc.temporary) from None
        if not targets:
            raise S2SFailure("dns", f"{remote} publishes no XMPP server (SRV target '.')")
        return targets

    async def connect(self, local: str, remote: str, *, authenticate: bool) -> OutboundStream:
        """Try each target of `remote` in turn until one negotiates."""
        targets = await self.targets(remote)
        failures: list[S2SFailure] = []
        for target in targets:
            host = target.address or target.host
            try:
                channel = await Channel.connect(
                    host, target.port, timeout=self.settings.connect_timeout
                )
            except ChannelError as exc:
                # No answer in time is temporary (remote-server-timeout, RFC 6120
                # §8.3.3.14); a refusal means nothing listens there (-not-found).
                failures.append(S2SFailure("connect", str(exc), temporary=exc.timed_out))
                continue
            stream = OutboundStream(
                channel, self.settings, self.tls, local, remote, metrics=self.metrics
            )
            try:
                if target.direct_tls:
                    await channel.start_tls(
                        self.tls,
                        server_side=False,
                        server_name=remote,
                        timeout=self.settings.negotiation_timeout,
                    )
                async with asyncio.timeout(self.settings.negotiation_timeout):
                    await stream.negotiate(
                        authenticate=authenticate, rules=self.policy.rules(remote)
                    )
            except S2SFailure as failure:
                stream.close()
                failures.append(failure)
                continue
            except TimeoutError:
                stream.close()
                failures.append(
                    S2SFailure("negotiation", f"{host}:{target.port} timed out", temporary=True)
                )
                continue
            except Exception as exc:
                stream.close()
                timed_out = isinstance(exc, ChannelError) and exc.timed_out
                failures.append(
                    S2SFailure("tls", f"{host}:{target.port}: {exc}", temporary=timed_out)
                )
                continue
            log.info(
                "outbound stream %s -> %s via %s:%d: %s, %s, certificate %s",
                local,
                remote,
                host,
                target.port,
                stream.info.tls_version or "no TLS",
                stream.info.auth,
                stream.info.cert,
            )
            return stream
        temporary = all(f.temporary for f in failures)
        last = failures[-1]
        raise S2SFailure(last.step, last.reason, temporary=temporary)

    async def verify_dialback(self, local: str, remote: str, stream_id: str, key: str) -> bool:
        """Ask `remote`'s authoritative server about a key it gave us (XEP-0220 §2.3)."""
        stream = await self.connect(local, remote, authenticate=False)
        try:
            return await stream.verify(stream_id, key)
        finally:
            stream.close()

    # --- inbound ----------------------------------------------------------------------
    async def serve_inbound(self, channel: Channel, *, direct_tls: bool) -> None:
        tls_info = None
        if direct_tls:
            try:
                tls_info = await channel.start_tls(
                    self.tls, server_side=True, timeout=self.settings.negotiation_timeout
                )
            except Exception as exc:
                log.info("direct TLS handshake from %s failed: %s", channel.peer, exc)
                channel.close()
                return
        stream = InboundStream(
            channel,
            self.settings,
            self.tls,
            self.router,
            verifier=self.verify_dialback,
            metrics=self.metrics,
            policy=self.policy,
            tls_info=tls_info,
        )
        self.inbound.add(stream)
        try:
            await stream.run()
        finally:
            self.inbound.discard(stream)
            self.finished(stream.info)

    # --- operations -------------------------------------------------------------------
    def streams(self) -> list[S2SStreamInfo]:
        return [s.info for s in self.inbound] + [s.info for s in self.outbound]

    def link_status(self) -> list[LinkStatus]:
        return [link.status() for link in self.links.values()]

    def live_domains(self) -> list[str]:
        """Remote domains with a live stream, either way."""
        out: set[str] = set()
        for inbound in self.inbound:
            out |= inbound.info.authenticated
        out |= {o.remote for o in self.outbound}
        return sorted(out)

    def count_inbound(self, domain: str) -> int:
        return sum(1 for s in self.inbound if domain in s.info.authenticated)

    def close_all(self, reason: str) -> int:
        """Federation switched off: close every stream, both ways."""
        n = 0
        for domain in self.live_domains():
            n += self.close_domain(domain, reason)
        return n

    def close_domain(self, remote: str, reason: str) -> int:
        """Close every live stream with `remote` (blocking a partner); return how many."""
        from imedge.domain.errors import StreamErrorCondition

        n = 0
        for stream in list(self.inbound):
            if remote in stream.info.authenticated or stream.info.remote == remote:
                stream.close(StreamErrorCondition.POLICY_VIOLATION, reason)
                n += 1
        for out in list(self.outbound):
            if out.remote == remote:
                out.close(StreamErrorCondition.POLICY_VIOLATION, reason)
                n += 1
        return n

    async def close(self) -> None:
        """System shutdown: close every stream, stop every task."""
        from imedge.domain.errors import StreamErrorCondition

        # Stanzas still waiting for a link go back to their senders, not into the void.
        shutdown = S2SFailure("shutdown", "this server is shutting down", temporary=True)
        for link in list(self.links.values()):
            await link.bounce_all(shutdown)
        for inbound in list(self.inbound):
            inbound.close(StreamErrorCondition.SYSTEM_SHUTDOWN, "server shutting down")
        for out in list(self.outbound):
            out.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
