"""RFC 6120 client streams: negotiation, SASL mechanisms, and hostile input over real sockets."""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path

import pytest
import scramp

from imedge.protocol.sasl import tls_server_end_point
from tests.helpers import DOMAIN, PASSWORD, RawClient, RunningServer, running_server


async def tls_client(server: RunningServer) -> RawClient:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open_stream()
    await raw.starttls(server.pki.ca_path)
    return raw


async def test_features_require_starttls_before_sasl(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    features = await raw.open_stream()
    assert b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>" in features
    assert b"mechanisms" not in features
    await raw.send(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>"
    )
    answer = await raw.read_until(b"</failure>")
    assert b"<encryption-required/>" in answer
    raw.close()


async def test_after_starttls_plain_and_scram_are_offered(server: RunningServer) -> None:
    raw = await tls_client(server)
    features = await raw.open_stream()
    for mech in (b"SCRAM-SHA-256", b"SCRAM-SHA-1", b"PLAIN", b"SCRAM-SHA-256-PLUS"):
        assert b"<mechanism>" + mech + b"</mechanism>" in features
    raw.close()


async def test_stanza_before_authentication_is_refused(server: RunningServer) -> None:
    raw = await tls_client(server)
    await raw.open_stream()
    await raw.send("<message to='alice@localhost'><body>hi</body></message>")
    out = await raw.read_to_eof()
    assert b"<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out


async def test_unknown_host_gets_host_unknown(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.send(RawClient.HEADER.format(to="elsewhere.example"))
    out = await raw.read_to_eof()
    assert b"<stream:stream" in out
    assert b"<host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out


@pytest.mark.parametrize(
    ("payload", "condition"),
    [
        (b"<message><body>unclosed</message>", b"not-well-formed"),
        (b"<message>&undefined;</message>", b"not-well-formed"),
        (b"<!-- a comment -->", b"restricted-xml"),
        (b"<?pi instruction?>", b"restricted-xml"),
        (b"<message><x xmlns:p='u'><q:y/></x></message>", b"not-well-formed"),
    ],
)
async def test_bad_xml_gets_its_stream_error(
    server: RunningServer, payload: bytes, condition: bytes
) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open_stream()
    await raw.send(payload)
    out = await raw.read_to_eof()
    assert b"<" + condition + b" xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    assert out.endswith(b"</stream:stream>")


async def test_dtd_and_entity_bomb_are_restricted(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    bomb = (
        b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
        b"<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>"
    )
    await raw.send(bomb)
    out = await raw.read_to_eof()
    assert b"<restricted-xml xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out


async def test_oversized_stanza_is_a_policy_violation_and_others_carry_on(
    server: RunningServer,
) -> None:
    alice = await server.add_user("alice")
    client = await server.client(alice)
    raw = await RawClient.connect(server.c2s_port)
    await raw.open_stream()
    await raw.send(b"<message><body>" + b"x" * (300 * 1024) + b"</body></message>")
    out = await raw.read_to_eof()
    assert b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    assert b"larger than 262144 bytes" in out
    # The logged-in user's session is unaffected.
    assert await client.plugin["xep_0199"].ping(jid=DOMAIN, timeout=5) is not None


async def test_deep_nesting_is_refused(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open_stream()
    await raw.send(b"<message>" + b"<a>" * 200)
    out = await raw.read_to_eof()
    assert b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    assert b"nested too deeply" in out


async def test_oversized_stanza_limit_is_configurable(tmp_path: Path) -> None:
    async with running_server(tmp_path, **{"limits.max_stanza_bytes": 1024}) as srv:
        raw = await RawClient.connect(srv.c2s_port)
        await raw.open_stream()
        await raw.send(b"<message><body>" + b"y" * 2000 + b"</body></message>")
        out = await raw.read_to_eof()
        assert b"larger than 1024 bytes" in out


async def test_negotiation_timeout_closes_idle_connection(tmp_path: Path) -> None:
    async with running_server(tmp_path, **{"limits.negotiation_timeout": 1}) as srv:
        raw = await RawClient.connect(srv.c2s_port)
        await raw.open_stream()
        out = await raw.read_to_eof(timeout=5)
        assert b"<connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
async def test_login_with_each_mechanism(server: RunningServer, mech: str) -> None:
    alice = await server.add_user("alice")
    client = await server.client(alice, mech=mech)
    assert str(client.boundjid.bare) == alice
    assert client.boundjid.resource


async def test_login_over_direct_tls(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    client = await server.client(alice, direct_tls=True)
    assert str(client.boundjid.bare) == alice


async def _scram_exchange(
    raw: RawClient, mech: str, user: str, password: str, binding: tuple[str, bytes] | None
) -> bytes:
    client = scramp.ScramClient([mech], user, password, channel_binding=binding)
    first = client.get_client_first()
    await raw.send(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>"
        f"{base64.b64encode(first.encode()).decode()}</auth>"
    )
    chal = await raw.read_until(b"</challenge>")
    server_first = base64.b64decode(chal.split(b">", 1)[1].split(b"<", 1)[0]).decode()
    client.set_server_first(server_first)
    final = client.get_client_final()
    token = base64.b64encode(final.encode()).decode()
    await raw.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{token}</response>")
    out = await raw.read_until(b"</success>")
    body = out.split(b">", 1)[1].split(b"<", 1)[0]
    client.set_server_final(base64.b64decode(body).decode())  # verifies the server signature
    return out


async def test_scram_plus_with_tls_server_end_point(server: RunningServer) -> None:
    await server.add_user("alice")
    raw = await tls_client(server)
    await raw.open_stream()
    sslobj = raw.writer.get_extra_info("ssl_object")
    binding = ("tls-server-end-point", tls_server_end_point(sslobj.getpeercert(binary_form=True)))
    out = await _scram_exchange(raw, "SCRAM-SHA-256-PLUS", "alice", PASSWORD, binding)
    assert b"<success" in out
    features = await raw.open_stream()
    assert b"urn:ietf:params:xml:ns:xmpp-bind" in features
    raw.close()


async def test_wrong_password_is_refused_and_then_throttled(tmp_path: Path) -> None:
    async with running_server(tmp_path, **{"limits.login_failures_per_account": 2}) as srv:
        await srv.add_user("alice")
        raw = await tls_client(srv)
        await raw.open_stream()
        for _ in range(2):
            bad = base64.b64encode(b"\0alice\0wrong").decode()
            await raw.send(
                f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{bad}</auth>"
            )
            assert b"<not-authorized/>" in await raw.read_until(b"</failure>")
        # Now even the right password is refused for a while.
        good = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
        await raw.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{good}</auth>"
        )
        answer = await raw.read_until(b"</failure>")
        assert b"<temporary-auth-failure/>" in answer
        assert b"too many failed logins" in answer


async def test_unknown_user_fails_like_a_wrong_password(server: RunningServer) -> None:
    await server.add_user("alice")
    answers = []
    for user in ("alice", "nobody"):
        raw = await tls_client(server)
        await raw.open_stream()
        bad = base64.b64encode(f"\0{user}\0wrong".encode()).decode()
        await raw.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{bad}</auth>"
        )
        answers.append(await raw.read_until(b"</failure>"))
        raw.close()
    assert answers[0] == answers[1]


async def test_spoofed_from_is_invalid_from(server: RunningServer) -> None:
    await server.add_user("alice")
    raw = await tls_client(server)
    await raw.open_stream()
    await raw.login_plain("alice", PASSWORD)
    await raw.bind()
    await raw.send(
        "<message from='bob@localhost/x' to='alice@localhost'><body>spoof</body></message>"
    )
    out = await raw.read_to_eof()
    assert b"<invalid-from xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out


async def test_malformed_to_address_gets_jid_malformed(server: RunningServer) -> None:
    await server.add_user("alice")
    raw = await tls_client(server)
    await raw.open_stream()
    await raw.login_plain("alice", PASSWORD)
    await raw.bind()
    await raw.send("<message id='m1' to='a@b@c'><body>x</body></message>")
    out = await raw.read_until(b"</message>")
    assert b"type='error'" in out
    assert b"<jid-malformed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>" in out


async def test_iq_without_id_gets_bad_request(server: RunningServer) -> None:
    await server.add_user("alice")
    raw = await tls_client(server)
    await raw.open_stream()
    await raw.login_plain("alice", PASSWORD)
    await raw.bind()
    await raw.send("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
    out = await raw.read_until(b"</iq>")
    assert b"<bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>" in out


async def test_clean_close(server: RunningServer) -> None:
    await server.add_user("alice")
    raw = await tls_client(server)
    await raw.open_stream()
    await raw.login_plain("alice", PASSWORD)
    await raw.bind()
    await raw.send("</stream:stream>")
    out = await raw.read_to_eof()
    assert out.endswith(b"</stream:stream>")
    assert len(server.server.sessions) == 0


async def test_resource_conflict_replaces_older_session(server: RunningServer) -> None:
    await server.add_user("alice")
    first = await tls_client(server)
    await first.open_stream()
    await first.login_plain("alice", PASSWORD)
    await first.bind("same")
    second = await tls_client(server)
    await second.open_stream()
    await second.login_plain("alice", PASSWORD)
    await second.bind("same")
    out = await first.read_to_eof()
    assert b"<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    assert len(server.server.sessions) == 1


async def test_tls_handshake_garbage_does_not_hurt_others(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    client = await server.client(alice)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.c2s_tls_port)
    writer.write(b"\x16\x03\x01\x00\x05hello-not-tls")
    await writer.drain()
    # The server drops the connection: EOF or a reset, never an answer that hangs.
    try:
        async with asyncio.timeout(5):
            data = await reader.read(100)
    except (ConnectionError, ssl.SSLError):
        data = b""
    assert data == b"" or not data.startswith(b"<")
    writer.close()
    assert await client.plugin["xep_0199"].ping(jid=DOMAIN, timeout=5) is not None


async def test_legacy_session_establishment_is_answered(server: RunningServer) -> None:
    # RFC 3921 §3: old clients still send it; it is optional now (RFC 6121 Appendix E).
    await server.add_user("alice")
    raw = await tls_client(server)
    await raw.open_stream()
    await raw.login_plain("alice", PASSWORD)
    await raw.bind()
    await raw.send(
        "<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
    )
    answer = await raw.read_until(b"id='sess1'") + await raw.read_until(b">")
    assert b"<iq type='result' id='sess1'" in answer
