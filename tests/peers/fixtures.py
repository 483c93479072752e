"""RFC 6120 interop fixtures: real Prosody/ejabberd peers, a DNS stub and a private CA.

Registered from tests/conftest.py with `pytest_plugins = ["tests.peers.fixtures"]`.

Scopes: the CA and the DNS stub live for the session; ejabberd (1-3 s to start) for a
module, reused while a test asks for the same configuration; Prosody (~0.1 s) is fresh
per test. State that must be fresh per test comes from fresh accounts (`await
peer.new_user("carol")`), which have empty rosters and no offline messages. Every peer is
stopped at teardown, also when the test fails, and at interpreter exit as a last resort.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import IN_CI, require_binary
from tests.peers.clients import PeerClients
from tests.peers.common import S2SMode
from tests.peers.dns import DnsStub
from tests.peers.ejabberd import Ejabberd
from tests.peers.pki import PrivateCA
from tests.peers.prosody import Prosody
from tests.peers.slapd import PEOPLE_COUNT, PeopleSet, Slapd, generate_people

_LIVE: set[Prosody | Ejabberd | DnsStub] = set()


@atexit.register
def _stop_leftovers() -> None:
    """If pytest is killed between setup and teardown, still stop what we started."""
    for peer in list(_LIVE):
        with contextlib.suppress(Exception):
            peer.stop()
    _LIVE.clear()


def _kwargs_key(kwargs: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in kwargs.items()))


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        msg = f"{what} needs root (make test runs as root in CI)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


class PeerFactory:
    """Starts Prosody and ejabberd peers on demand and stops them all in `close()`.

    With `reuse`, asking again for the same configuration returns the running peer;
    asking for a different one on the same address stops the old one first.
    """

    def __init__(self, base: Path, ca: PrivateCA, dns: DnsStub, *, reuse: bool) -> None:
        self.base = base
        self.ca = ca
        self.dns = dns
        self.reuse = reuse
        self._peers: dict[tuple[Any, ...], Prosody | Ejabberd] = {}
        self._count = 0

    def _dir(self, kind: str, domain: str) -> Path:
        self._count += 1
        return self.base / f"{kind}-{domain}-{self._count}"

    def _claim(self, key: tuple[Any, ...], address: str) -> Prosody | Ejabberd | None:
        running = self._peers.get(key)
        if running is not None and self.reuse and running.running:
            return running
        for other_key, other in list(self._peers.items()):
            if other.address == address or other_key == key:
                self.stop(other)
        return None

    def prosody(
        self,
        domain: str = "a.test",
        address: str = "127.0.0.2",
        mode: S2SMode = S2SMode.CERTIFICATE,
        *,
        extra_config: Sequence[str] = (),
        **kwargs: Any,
    ) -> Prosody:
        """A running Prosody for `domain` on `address` (c2s 5222, s2s 5269)."""
        require_binary("prosody")
        require_binary("prosodyctl")
        key = ("prosody", domain, address, mode, tuple(extra_config), _kwargs_key(kwargs))
        found = self._claim(key, address)
        if isinstance(found, Prosody):
            return found
        peer = Prosody(
            self._dir("prosody", domain),
            domain=domain,
            address=address,
            ca=self.ca,
            mode=mode,
            zone=self.dns.zone,
            dns_port=self.dns.port,
            extra_config=extra_config,
            **kwargs,
        )
        peer.start()
        self._register(key, peer)
        return peer

    def ejabberd(
        self,
        domain: str = "c.test",
        address: str = "127.0.0.4",
        mode: S2SMode = S2SMode.CERTIFICATE,
        *,
        extra_config: Sequence[str] = (),
        **kwargs: Any,
    ) -> Ejabberd:
        """A running ejabberd for `domain` on `address` (c2s 5222, s2s 5269).

        Blocks 1-3 s while it starts: ask for it before logging clients in.
        """
        require_binary("ejabberdctl")
        require_binary("unshare")
        require_root("ejabberd")
        key = ("ejabberd", domain, address, mode, tuple(extra_config), _kwargs_key(kwargs))
        found = self._claim(key, address)
        if isinstance(found, Ejabberd):
            return found
        peer = Ejabberd(
            self._dir("ejabberd", domain),
            domain=domain,
            address=address,
            ca=self.ca,
            mode=mode,
            zone=self.dns.zone,
            dns_port=self.dns.port,
            extra_config=extra_config,
            **kwargs,
        )
        peer.start()
        self._register(key, peer)
        return peer

    def _register(self, key: tuple[Any, ...], peer: Prosody | Ejabberd) -> None:
        self._peers[key] = peer
        _LIVE.add(peer)

    def stop(self, peer: Prosody | Ejabberd) -> None:
        """Stop one peer now (e.g. to test a peer that is down); idempotent."""
        for k, v in list(self._peers.items()):
            if v is peer:
                del self._peers[k]
        _LIVE.discard(peer)
        peer.stop()

    def close(self) -> None:
        errors = []
        for peer in list(self._peers.values()):
            try:
                self.stop(peer)
            except Exception as e:  # stop the others, then report
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, show the end of every running peer's log in the report."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for peer in list(_LIVE):
            if isinstance(peer, Prosody | Ejabberd):
                report.sections.append((f"{peer!r} log", peer.log_tail(40)))


@pytest.fixture(scope="session")
def peer_pki(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    """The private CA every certificate-mode peer trusts (`.ca_path`, `.issue(domain)`)."""
    return PrivateCA(tmp_path_factory.mktemp("peer-pki"))


@pytest.fixture(scope="session")
def peer_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsStub]:
    """dnsmasq on 127.0.0.1:`.port` serving DEFAULT_ZONE (a/b/c.test, edge1/edge2.test)."""
    binary = require_binary("dnsmasq")
    stub = DnsStub(tmp_path_factory.mktemp("peer-dns"))
    stub.start(binary)
    _LIVE.add(stub)
    try:
        yield stub
    finally:
        _LIVE.discard(stub)
        stub.stop()


@pytest.fixture
def prosody_peers(tmp_path: Path, peer_pki: PrivateCA, peer_dns: DnsStub) -> Iterator[PeerFactory]:
    """Fresh Prosody instances for this test: `prosody_peers.prosody(domain, address, mode)`."""
    factory = PeerFactory(tmp_path / "peers", peer_pki, peer_dns, reuse=False)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def ejabberd_peers(
    tmp_path_factory: pytest.TempPathFactory, peer_pki: PrivateCA, peer_dns: DnsStub
) -> Iterator[PeerFactory]:
    """ejabberd instances shared by a test module: `ejabberd_peers.ejabberd(...)`."""
    factory = PeerFactory(tmp_path_factory.mktemp("ejabberd-peers"), peer_pki, peer_dns, reuse=True)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def prosody_a(prosody_peers: PeerFactory) -> Prosody:
    """Prosody a.test on 127.0.0.2, certificate mode, fresh data."""
    return prosody_peers.prosody("a.test", "127.0.0.2", S2SMode.CERTIFICATE)


@pytest.fixture
def ejabberd_c(ejabberd_peers: PeerFactory) -> Ejabberd:
    """ejabberd c.test on 127.0.0.4, certificate mode, shared by the module."""
    return ejabberd_peers.ejabberd("c.test", "127.0.0.4", S2SMode.CERTIFICATE)


@pytest.fixture
async def peer_clients() -> AsyncIterator[PeerClients]:
    """slixmpp logins for this test (`await peer_clients.login(peer, jid)`), closed after."""
    clients = PeerClients()
    try:
        yield clients
    finally:
        await clients.close()


@pytest.fixture(scope="module")
def slapd_server(tmp_path_factory: pytest.TempPathFactory, peer_pki: PrivateCA) -> Iterator[Slapd]:
    """OpenLDAP slapd with PEOPLE_COUNT generated people, shared by a test module.

    `.url` (StartTLS), `.ldaps_url`, `.bind_dn`/`.password` (read-only account),
    `.base_dn`, `.ca_path`, `.people` (what was loaded, with its flaws); `.add_person`,
    `.modify`, `.delete` change it while it runs: a test that does calls `.reset()`.
    """
    server = Slapd(
        tmp_path_factory.mktemp("slapd"),
        peer_pki,
        PeopleSet(tuple(generate_people(PEOPLE_COUNT))),
        binary=require_binary("slapd"),
        slapadd=require_binary("slapadd"),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
