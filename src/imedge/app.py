"""The composition root: builds every concrete object from the config and wires them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter

from imedge import __version__
from imedge.api.auth import AdminAuth
from imedge.api.contacts import contacts_router
from imedge.api.directory import BackgroundSyncs, directory_router
from imedge.api.federation import federation_router
from imedge.api.http import EmbeddedServer, create_app, http_server
from imedge.api.s2s import s2s_router
from imedge.config import Config, Endpoint
from imedge.domain.errors import StreamErrorCondition
from imedge.domain.throttle import LoginThrottle
from imedge.features import (
    blocking,
    carbons,
    disco,
    messages,
    offline,
    ping,
    presence,
    register,
    roster,
    search,
    session,
    version,
)
from imedge.protocol.sasl import tls_server_end_point
from imedge.server.c2s.auth import Authenticator
from imedge.server.c2s.settings import C2SSettings
from imedge.server.c2s.sm import StreamManager
from imedge.server.c2s.stream import C2SContext, C2SStream
from imedge.server.context import FeatureLimits, ServerContext
from imedge.server.events import EventBus, Priority
from imedge.server.iq import IqDispatcher
from imedge.server.metrics import Metrics
from imedge.server.registry import SessionRegistry
from imedge.server.router import Router
from imedge.server.s2s.channel import Channel, TlsSettings
from imedge.server.s2s.gate import FederationGate
from imedge.server.s2s.pool import S2SPool
from imedge.server.s2s.proxy_listener import ProxyProtocolError, read_proxy_header
from imedge.server.s2s.resolver import S2SResolver
from imedge.server.s2s.settings import S2SSettings
from imedge.server.stanzas import StanzaToRemote
from imedge.server.tls import ensure_certificate, server_context
from imedge.services.accounts import AccountService
from imedge.services.directory import DirectoryService
from imedge.services.federation import FederationService, LiveHooks
from imedge.store.ports import Store
from imedge.store.sql import load_or_create_key, open_store

log = logging.getLogger(__name__)

# Feature modules, each with `install(ctx: ServerContext) -> None`.
FEATURES: tuple[ModuleType, ...] = (
    roster,
    presence,
    messages,
    offline,
    blocking,
    carbons,
    disco,
    ping,
    version,
    search,
    session,
)


def prepare_tls(config: Config) -> tuple[ssl.SSLContext, bytes, bool]:
    """Load (or, with the defaults, first generate) our certificate; return the server
    context, the tls-server-end-point binding data, and whether a certificate was made."""
    generated = False
    if config.tls.self_signed:
        generated = ensure_certificate(config.domain, config.tls.cert, config.tls.key, config.hosts)
    ctx = server_context(config.tls.cert, config.tls.key, config.tls.ca)
    cert = x509.load_pem_x509_certificate(Path(config.tls.cert).read_bytes())
    return ctx, tls_server_end_point(cert.public_bytes(Encoding.DER)), generated


@dataclass
class Server:
    """A running IM Edge: store, router, features and listeners."""

    config: Config
    store: Store
    tls: ssl.SSLContext
    cert_binding: bytes
    s2s_tls: TlsSettings
    dialback_secret: bytes
    admin_token: str
    bus: EventBus = field(default_factory=EventBus)
    metrics: Metrics = field(default_factory=Metrics)
    sessions: SessionRegistry = field(default_factory=SessionRegistry)
    iq: IqDispatcher = field(default_factory=IqDispatcher)
    listeners: list[asyncio.Server] = field(default_factory=list)
    bound: dict[str, Endpoint] = field(default_factory=dict)
    _http: EmbeddedServer | None = None
    _http_task: asyncio.Task[None] | None = None
    _streams: dict[asyncio.Task[None], C2SStream] = field(default_factory=dict)
    _per_ip: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cfg = self.config
        hosts = frozenset(cfg.local_domains)
        self.router = Router(hosts, self.bus, self.sessions, self.iq)
        self.context = ServerContext(
            bus=self.bus,
            iq=self.iq,
            router=self.router,
            sessions=self.sessions,
            store=self.store,
            metrics=self.metrics,
            domain=cfg.domain,
            hosts=hosts,
            limits=FeatureLimits(offline_max_messages=cfg.limits.offline_max_messages),
            version=__version__,
        )
        for feature in FEATURES:
            feature.install(self.context)
        limits = cfg.limits
        settings = C2SSettings(
            domain=cfg.domain,
            hosts=hosts,
            tls=self.tls,
            cert_binding=self.cert_binding,
            require_tls=cfg.c2s.require_tls,
            max_stanza_bytes=limits.max_stanza_bytes,
            max_depth=limits.max_xml_depth,
            negotiation_timeout=limits.negotiation_timeout,
            idle_timeout=limits.c2s_idle_timeout,
            keepalive_interval=limits.c2s_keepalive_interval,
            scram_iterations=cfg.accounts.scram_iterations,
            sm_resume_timeout=limits.sm_resume_timeout,
        )
        throttle = LoginThrottle(
            per_address=limits.login_failures_per_address,
            per_account=limits.login_failures_per_account,
            window=limits.login_window,
            lockout=limits.login_window,
        )
        self.c2s = C2SContext(
            settings=settings,
            auth=Authenticator(self.store.accounts, throttle),
            router=self.router,
            sessions=self.sessions,
            bus=self.bus,
            metrics=self.metrics,
        )
        self.c2s.sm = StreamManager(self.c2s, self.context)
        if cfg.accounts.registration:
            # XEP-0077, off by default: the feature creates accounts through the service.
            accounts = AccountService(self.store.accounts, hosts, cfg.accounts.scram_iterations)
            registration = register.InBandRegistration(
                register.AccountActions(accounts.create, accounts.delete, accounts.set_password)
            )
            registration.install(self.context)
            self.c2s.registration = registration
        s2s = cfg.s2s
        self.s2s_settings = S2SSettings(
            hosts=hosts,
            secret=self.dialback_secret,
            require_tls=s2s.require_tls,
            dialback=s2s.dialback,
            connect_timeout=s2s.connect_timeout,
            negotiation_timeout=s2s.negotiation_timeout,
            idle_timeout=s2s.idle_timeout,
            max_queue=s2s.max_queue,
            max_stanzas_per_second=s2s.max_stanzas_per_second,
            max_stanza_bytes=limits.max_stanza_bytes,
            max_depth=limits.max_xml_depth,
            edge_addresses={d: (e.host, e.port) for d, e in s2s.edge_addresses},
        )
        # The federation gate: the one place where FEDERATION.md's policy applies.
        self.gate = FederationGate(
            self.store,
            self.router,
            self.metrics,
            hosts=hosts,
            require_tls=s2s.require_tls,
            dialback=s2s.dialback,
        )
        self.s2s = S2SPool(
            self.s2s_settings,
            self.s2s_tls,
            S2SResolver.from_config(cfg.dns),
            self.router,
            self.metrics,
            policy=self.gate,
        )
        self.gate.open_streams = self.s2s.count_inbound
        self.bus.subscribe(StanzaToRemote, self.gate.outbound, Priority.POLICY)
        self.federation = FederationService(
            self.store,
            hosts,
            LiveHooks(
                apply=self.gate.update,
                close_domain=self.s2s.close_domain,
                close_all=self.s2s.close_all,
                forget_user=self.gate.forget_user,
                live_domains=self.s2s.live_domains,
                streams=lambda: [info.as_dict() for info in self.s2s.streams()],
                links=lambda: [asdict(link) for link in self.s2s.link_status()],
                decision_counts=lambda: dict(self.gate.counts),
            ),
        )
        # The corporate directory: peer servers' LDAP syncs and their partner rows.
        self.directory = DirectoryService(self.store, self.federation)
        self.directory_syncs = BackgroundSyncs(self.directory)  # those the API starts
        self.bus.subscribe(StanzaToRemote, self.s2s.on_stanza, Priority.NORMAL)
        self.metrics.watch_s2s(self.s2s.streams, self.s2s.link_status)

    # --- listeners ------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        await self.federation.load()
        self.directory.start()
        listen = cfg.listen
        if listen.c2s is not None:
            await self._listen("c2s", listen.c2s, self._c2s_handler(direct_tls=False), None)
        if listen.c2s_tls is not None:
            await self._listen(
                "c2s_tls", listen.c2s_tls, self._c2s_handler(direct_tls=True), self.tls
            )
        for name, where, direct in (("s2s", listen.s2s, False), ("s2s_tls", listen.s2s_tls, True)):
            if where is not None:
                await self._listen(name, where, self._s2s_handler(direct_tls=direct), None)
        if listen.http is not None:
            app = create_app(
                version=__version__,
                registry=self.metrics.registry,
                check_store=self.store.ping,
                sessions=lambda: len(self.sessions),
                routers=self._api_routers(),
            )
            # Bind the socket ourselves: a busy port is then an OSError like the XMPP
            # listeners', instead of uvicorn exiting the process.
            sock = bind_tcp(listen.http)
            self._http = http_server(app, listen.http.host, listen.http.port)
            self._http_task = asyncio.get_running_loop().create_task(
                self._http.serve(sockets=[sock])
            )
            while not self._http.started:
                if self._http_task.done():
                    self._http_task.result()
                    raise OSError(f"HTTP listener on {listen.http} did not start")
                await asyncio.sleep(0.01)
            self.bound["http"] = Endpoint(listen.http.host, sock.getsockname()[1])

    def _api_routers(self) -> list[APIRouter]:
        """The admin REST API, behind the admin token or an administrator account."""
        cfg = self.config
        guard = AdminAuth(
            self.admin_token,
            accounts=self.c2s.auth,  # the c2s login throttle counts API failures too
            admins=cfg.accounts.admins,
            domain=cfg.domain,
            iterations=cfg.accounts.scram_iterations,
        ).dependency()
        return [
            s2s_router(self.s2s, cfg.domain, guard),
            federation_router(
                self.federation,
                self.store,
                self.s2s,
                default_local=cfg.domain,
                guard=guard,
                flush_audit=self.gate.flush_audit,
            ),
            directory_router(self.directory, self.directory_syncs, guard=guard),
            contacts_router(self.context, guard=guard),
        ]

    async def _listen(
        self,
        name: str,
        where: Endpoint,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
        tls: ssl.SSLContext | None,
    ) -> None:
        server = await asyncio.start_server(
            handler,  # type: ignore[arg-type]
            where.host,
            where.port,
            ssl=tls,
            ssl_handshake_timeout=self.config.limits.negotiation_timeout if tls else None,
            limit=self.config.limits.max_stanza_bytes * 2,
            reuse_address=True,
        )
        self.listeners.append(server)
        port = server.sockets[0].getsockname()[1]
        self.bound[name] = Endpoint(where.host, port)
        log.info("%s listening on %s", name, self.bound[name])

    def _c2s_handler(
        self, *, direct_tls: bool
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]:
        max_per_ip = self.config.limits.max_c2s_connections_per_ip

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")
            ip = str(peer[0]) if peer else "?"
            if self._per_ip.get(ip, 0) >= max_per_ip:
                log.warning("refusing connection from %s: %d connections already", ip, max_per_ip)
                writer.close()
                return
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
            task = asyncio.current_task()
            assert task is not None
            stream = C2SStream(reader, writer, self.c2s, direct_tls=direct_tls)
            self._streams[task] = stream
            try:
                await stream.run()
            finally:
                del self._streams[task]
                left = self._per_ip[ip] - 1
                if left:
                    self._per_ip[ip] = left
                else:
                    del self._per_ip[ip]

        return handle

    def _s2s_handler(
        self, *, direct_tls: bool
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]:
        proxied = self.config.s2s.proxy_protocol
        timeout = self.config.s2s.negotiation_timeout

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = None
            if proxied:
                # The connector (HAProxy) tells us who is really connecting.
                try:
                    result, _ = await read_proxy_header(reader, timeout)
                except (ProxyProtocolError, TimeoutError) as exc:
                    log.warning("closing s2s connection without a valid PROXY header: %s", exc)
                    writer.close()
                    return
                if result.source is not None:
                    peer = f"{result.source[0]}:{result.source[1]}"
            await self.s2s.serve_inbound(Channel(reader, writer, peer=peer), direct_tls=direct_tls)

        return handle

    async def stop(self) -> None:
        """Close listeners, end every stream with `system-shutdown`, stop HTTP."""
        await self.directory.stop()
        await self.directory_syncs.close()
        for server in self.listeners:
            server.close()
        for stream in list(self._streams.values()):
            stream.close(StreamErrorCondition.SYSTEM_SHUTDOWN, "server shutting down")
        if self._streams:
            await asyncio.wait(list(self._streams), timeout=5)
        await self.c2s.sm.shutdown()
        await self.s2s.close()
        await self.gate.close()
        for server in self.listeners:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        if self._http is not None:
            self._http.should_exit = True
            if self._http_task is not None:
                with contextlib.suppress(Exception):
                    await self._http_task
        self.listeners.clear()


def bind_tcp(where: Endpoint) -> socket.socket:
    family = socket.AF_INET6 if ":" in where.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((where.host, where.port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise OSError(
            exc.errno, f"error while attempting to bind on address {where}: {reason}"
        ) from None
    sock.setblocking(False)
    return sock


async def build_server(config: Config) -> Server:
    tls, binding, generated = prepare_tls(config)
    if generated:
        log.warning(
            "generated a self-signed certificate for %s at %s", config.domain, config.tls.cert
        )
    s2s_tls = TlsSettings.create(config.tls.cert, config.tls.key, config.tls.ca)
    secret = load_secret(config.data_dir / "dialback.secret")
    token = load_secret(config.data_dir / "admin.token", text=True).decode()
    # The key that encrypts secrets at rest (peer servers' LDAP bind passwords).
    key = load_or_create_key(config.data_dir / "secret.key")
    store = await open_store(config.database.url, secret_key=key)
    return Server(
        config=config,
        store=store,
        tls=tls,
        cert_binding=binding,
        s2s_tls=s2s_tls,
        dialback_secret=secret,
        admin_token=token,
    )


def load_secret(path: Path, *, text: bool = False) -> bytes:
    """A secret made once and kept (the dialback secret of XEP-0185, the admin API token),
    readable by the server's user only."""
    if path.exists():
        return path.read_bytes().strip() if text else path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = secrets.token_urlsafe(32).encode() if text else secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


async def serve(config: Config, on_ready: Callable[[Server], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM."""
    server = await build_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()
        await server.store.close()
