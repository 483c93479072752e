"""RFC 6120 c2s logins into peer servers (or any server) with slixmpp, closed per test.

slixmpp checks the server certificate against the JID's domain (RFC 6125), so the peer's
certificate must name its domain and `ca_path` must be the CA that issued it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import slixmpp

from tests.peers.common import PEER_PASSWORD, Peer


async def login(
    jid: str,
    password: str,
    *,
    address: str,
    port: int = 5222,
    ca_path: Path,
    plugins: tuple[str, ...] = ("xep_0030", "xep_0199"),
    start: bool = True,
    timeout: float = 10.0,
    setup: Callable[[slixmpp.ClientXMPP], None] | None = None,
) -> slixmpp.ClientXMPP:
    """A connected, authenticated client; with `start`, it has sent initial presence and
    fetched its roster (RFC 6121 §2.2, §4.2). Connects to `address:port` (no DNS)."""
    c = slixmpp.ClientXMPP(jid, password)
    c.ca_certs = Path(ca_path)
    # RFC 6120 §5: STARTTLS on 5222 (slixmpp would otherwise try direct TLS first).
    c.enable_direct_tls = False
    c.enable_starttls = True
    for p in plugins:
        c.register_plugin(p)
    if setup:
        setup(c)
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_start(_: Any) -> None:
        if not started.done():
            started.set_result(None)

    def on_fail(ev: Any) -> None:
        if not started.done():
            started.set_exception(AssertionError(f"login of {jid} at {address} failed: {ev}"))

    c.add_event_handler("session_start", on_start)
    c.add_event_handler("failed_all_auth", on_fail)
    c.add_event_handler("connection_failed", on_fail)
    c.connect(address, port)
    try:
        async with asyncio.timeout(timeout):
            await started
    except BaseException:
        c.abort()
        raise
    if start:
        c.send_presence()
        await c.get_roster()
    return c


class PeerClients:
    """Clients logged in during one test; `close()` (the fixture) aborts them all."""

    def __init__(self) -> None:
        self.clients: list[slixmpp.ClientXMPP] = []

    async def login(
        self, peer: Peer, jid: str, password: str = PEER_PASSWORD, **kwargs: Any
    ) -> slixmpp.ClientXMPP:
        """Log `jid` into `peer` (its address and c2s port, trusting its CA)."""
        c = await login(
            jid,
            password,
            address=peer.address,
            port=peer.c2s_port,
            ca_path=peer.ca_path,
            **kwargs,
        )
        self.clients.append(c)
        return c

    async def login_at(
        self,
        jid: str,
        password: str,
        *,
        address: str,
        port: int,
        ca_path: Path,
        **kwargs: Any,
    ) -> slixmpp.ClientXMPP:
        """Log into any server (e.g. an IM Edge instance) and track the client."""
        c = await login(jid, password, address=address, port=port, ca_path=ca_path, **kwargs)
        self.clients.append(c)
        return c

    def track(self, client: slixmpp.ClientXMPP) -> slixmpp.ClientXMPP:
        self.clients.append(client)
        return client

    async def close(self) -> None:
        # Log out properly first. COMPAT: prosody 0.12.3 can crash in its own shutdown when
        # SIGTERM arrives while it is still tearing down a client that was just cut off.
        for c in self.clients:
            if c.is_connected():
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(3):
                        await c.disconnect()
        for c in self.clients:
            with contextlib.suppress(Exception):
                c.abort()
        self.clients.clear()
        # Let the transports' close callbacks run inside this loop (warnings are errors).
        await asyncio.sleep(0)
