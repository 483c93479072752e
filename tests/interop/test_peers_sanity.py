"""RFC 6120 §3.2, §6.4, XEP-0220: the peer fixtures work before IM Edge joins them.

Real Prosody and ejabberd federate with each other through the test CA and the DNS stub,
which proves the certificates, names and addresses the IM Edge federation tests rely on.
"""

from __future__ import annotations

import re
from pathlib import Path

import dns.asyncresolver
import dns.resolver
import pytest
from slixmpp import JID

from tests.helpers import Inbox
from tests.peers.clients import PeerClients
from tests.peers.common import S2SMode
from tests.peers.dns import DnsStub
from tests.peers.ejabberd import Ejabberd
from tests.peers.fixtures import PeerFactory
from tests.peers.pki import issue_untrusted
from tests.peers.prosody import Prosody

pytestmark = pytest.mark.interop


def stub_resolver(stub: DnsStub) -> dns.asyncresolver.Resolver:
    r = dns.asyncresolver.Resolver(configure=False)  # never the machine's resolv.conf
    r.nameservers = [stub.address]
    r.port = stub.port
    r.lifetime = 3
    return r


async def test_dns_stub_answers_a_and_srv_and_nxdomain(peer_dns: DnsStub) -> None:
    r = stub_resolver(peer_dns)
    a = await r.resolve("c.test", "A")
    assert [rr.address for rr in a] == ["127.0.0.4"]
    srv = await r.resolve("_xmpp-server._tcp.a.test", "SRV")
    assert [(str(rr.target), rr.port) for rr in srv] == [("a.test.", 5269)]
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve("nobody.test", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve("_xmpps-server._tcp.a.test", "SRV")
    assert "query[SRV] _xmpp-server._tcp.a.test" in peer_dns.query_log()


async def test_prosody_and_ejabberd_federate_with_certificates(
    prosody_a: Prosody, ejabberd_c: Ejabberd, peer_clients: PeerClients
) -> None:
    alice = await prosody_a.new_user("alice")
    carol = await ejabberd_c.new_user("carol")
    ejabberd_mark = ejabberd_c.log_mark()
    a = await peer_clients.login(prosody_a, alice)
    c = await peer_clients.login(ejabberd_c, carol)
    a_inbox, c_inbox = Inbox(a), Inbox(c)

    a.send_message(mto=JID(carol), mbody="hello from prosody", mtype="chat")
    got = await c_inbox.get(lambda m: m["body"] == "hello from prosody", timeout=15)
    assert str(got["from"].bare) == alice

    c.send_message(mto=JID(alice), mbody="hello from ejabberd", mtype="chat")
    got = await a_inbox.get(lambda m: m["body"] == "hello from ejabberd", timeout=15)
    assert str(got["from"].bare) == carol

    # RFC 6120 §6.4: each side authenticated the other with SASL EXTERNAL (certificates).
    await prosody_a.wait_log("Accepting SASL EXTERNAL identity from c.test")
    await ejabberd_c.wait_log(
        "Accepted inbound s2s EXTERNAL authentication a.test -> c.test", since=ejabberd_mark
    )


async def test_two_prosodys_federate_with_dialback(
    prosody_peers: PeerFactory, peer_clients: PeerClients
) -> None:
    pa = prosody_peers.prosody("a.test", "127.0.0.2", S2SMode.DIALBACK)
    pb = prosody_peers.prosody("b.test", "127.0.0.3", S2SMode.DIALBACK)
    alice, bob = await pa.new_user("alice"), await pb.new_user("bob")
    a = await peer_clients.login(pa, alice)
    b = await peer_clients.login(pb, bob)
    b_inbox = Inbox(b)

    a.send_message(mto=JID(bob), mbody="dialback works", mtype="chat")
    got = await b_inbox.get(lambda m: m["body"] == "dialback works", timeout=15)
    assert str(got["from"].bare) == alice

    # XEP-0220 §2.1-2.4: b.test accepted a.test's stream on a dialback key that was
    # verified with the authoritative server; no certificate was accepted (neither side
    # trusts the test CA). Prosody orders attributes at random: match loosely.
    b_log = await pb.wait_log("connection a.test->b.test is now authenticated for a.test")
    assert re.search(r"Received\[s2sin_unauthed\]: <result [^>]*jabber:server:dialback", b_log)
    assert "verified dialback key... it is valid" in pa.log_text() + b_log
    assert "Accepting SASL EXTERNAL" not in pa.log_text() + b_log


async def test_prosody_refuses_a_peer_with_an_untrusted_certificate(
    prosody_peers: PeerFactory, peer_clients: PeerClients, tmp_path: Path
) -> None:
    pa = prosody_peers.prosody("a.test", "127.0.0.2", S2SMode.CERTIFICATE)
    rogue = issue_untrusted("b.test", tmp_path / "rogue")
    pb = prosody_peers.prosody("b.test", "127.0.0.3", S2SMode.CERTIFICATE, cert=rogue)
    alice, bob = await pa.new_user("alice"), await pb.new_user("bob")
    await peer_clients.login(pa, alice)
    b = await peer_clients.login(pb, bob)  # pb.ca_path is the rogue CA: the login works
    b_errors = Inbox(b, "message_error")

    b.send_message(mto=JID(alice), mbody="must not arrive", mtype="chat")
    err = await b_errors.get(timeout=15)
    assert err["error"]["condition"] in {"remote-server-timeout", "remote-server-not-found"}
    # RFC 6120 §13.7.2: the receiving server refused the stream on the certificate.
    await pa.wait_log("Forbidding insecure connection to/from b.test because its certificate")
