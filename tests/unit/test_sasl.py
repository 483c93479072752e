"""Server-side SASL (RFC 6120 §6) driven by independent client implementations."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ssl
from collections.abc import Callable
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from scramp import ScramClient
from scramp.core import CBindData
from slixmpp.util.sasl import client as slix_client
from slixmpp.util.sasl import mechanisms as _slix_mechanisms  # registers the mechanisms

from imedge.protocol.sasl import (
    Challenge,
    ChannelBinding,
    ChannelBindingType,
    Failure,
    Mechanism,
    NeedKeys,
    SaslExchange,
    SaslFailure,
    SaslStateError,
    SaslStep,
    ScramKeys,
    Success,
    make_scram_keys,
    offered_mechanisms,
    tls_server_end_point,
    verify_password,
)

assert _slix_mechanisms

DOMAIN = "example.org"
PASSWORD = "pencil ✎ Ⅸ"  # non-ASCII, so SASLprep (NFKC) matters
ITERATIONS = 4096
KEYS = {k.mechanism: k for k in make_scram_keys(PASSWORD, iterations=ITERATIONS)}
CB_DATA = b"\x01" * 32


def lookup(username: str, mechanism: str) -> ScramKeys | None:
    return KEYS[mechanism] if username in {"alice", "Alice"} else None


def answer(exchange: SaslExchange, step: SaslStep) -> SaslStep:
    """Answer NeedKeys the way the stream code does."""
    if isinstance(step, NeedKeys):
        return exchange.provide_keys(lookup(step.username, step.mechanism))
    return step


def bindings() -> list[ChannelBinding]:
    return [
        ChannelBinding(ChannelBindingType.TLS_SERVER_END_POINT, CB_DATA),
        ChannelBinding(ChannelBindingType.TLS_UNIQUE, b"\x02" * 12),
    ]


def run_scramp(
    mechanism: str,
    *,
    username: str = "alice",
    password: str = PASSWORD,
    client_cb: tuple[str, bytes] | None = None,
    server_cb: list[ChannelBinding] | None = None,
    tamper_final: Callable[[str], str] | None = None,
) -> SaslStep:
    client = ScramClient([mechanism], username, password, channel_binding=client_cb)
    exchange = SaslExchange(
        client.mechanism_name, domain=DOMAIN, tls=True, channel_bindings=server_cb or []
    )
    step = answer(exchange, exchange.step(client.get_client_first().encode()))
    if not isinstance(step, Challenge):
        return step
    client.set_server_first(step.data.decode())
    final = client.get_client_final()
    if tamper_final is not None:
        final = tamper_final(final)
    result = exchange.step(final.encode())
    assert exchange.is_done
    if isinstance(result, Success):
        assert result.additional_data is not None
        client.set_server_final(result.additional_data.decode())  # checks the server signature
    return result


# --- mechanisms offered


def test_offered_mechanisms_plain_only_over_tls() -> None:
    assert offered_mechanisms(tls=False, channel_binding=False) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert offered_mechanisms(tls=True, channel_binding=False) == [
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ]
    assert offered_mechanisms(tls=True, channel_binding=True) == [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ]


def test_plain_without_tls_is_refused_with_encryption_required() -> None:
    exchange = SaslExchange("PLAIN", domain=DOMAIN, tls=False)
    assert exchange.step(b"\x00alice\x00" + PASSWORD.encode()) == Failure(
        SaslFailure.ENCRYPTION_REQUIRED, "PLAIN needs TLS"
    )


@pytest.mark.parametrize("mechanism", ["DIGEST-MD5", "SCRAM-SHA-512", "", "scram-sha-1"])
def test_unknown_mechanism(mechanism: str) -> None:
    exchange = SaslExchange(mechanism, domain=DOMAIN, tls=True)
    result = exchange.step(b"n,,n=alice,r=abc")
    assert isinstance(result, Failure)
    assert result.condition is SaslFailure.INVALID_MECHANISM


def test_plus_without_binding_data_is_not_offered_so_invalid() -> None:
    exchange = SaslExchange("SCRAM-SHA-256-PLUS", domain=DOMAIN, tls=True)
    result = exchange.step(b"p=tls-unique,,n=alice,r=abc")
    assert isinstance(result, Failure)
    assert result.condition is SaslFailure.INVALID_MECHANISM


# --- keys


def test_keys_match_scramp() -> None:
    from scramp import ScramMechanism

    for keys in make_scram_keys(PASSWORD, iterations=4096, salt=b"salt" * 4):
        salt, stored, server, i = ScramMechanism(keys.mechanism).make_auth_info(
            PASSWORD, iteration_count=4096, salt=b"salt" * 4
        )
        assert (keys.salt, keys.stored_key, keys.server_key, keys.iterations) == (
            salt,
            stored,
            server,
            i,
        )


def test_verify_password() -> None:
    for keys in KEYS.values():
        assert verify_password(PASSWORD, keys)
        # SASLprep: U+2168 ROMAN NUMERAL NINE is NFKC-equal to "IX".
        assert verify_password("pencil ✎ IX", keys)
        assert not verify_password("pencil", keys)
        assert not verify_password("\u0007bell", keys)  # prohibited by SASLprep


def test_make_scram_keys_rejects_prohibited_password() -> None:
    with pytest.raises(ValueError, match="SASLprep"):
        make_scram_keys("bell\u0007")


def test_salts_differ_per_hash_and_call() -> None:
    a, b = make_scram_keys("x", iterations=4096)
    (c, _) = make_scram_keys("x", iterations=4096)
    assert len({a.salt, b.salt, c.salt}) == 3


# --- SCRAM with scramp's client


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scram_success(mechanism: str) -> None:
    result = run_scramp(mechanism)
    assert isinstance(result, Success)
    assert result.username == "alice"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
def test_scram_plus_tls_server_end_point(mechanism: str) -> None:
    result = run_scramp(
        mechanism, client_cb=("tls-server-end-point", CB_DATA), server_cb=bindings()
    )
    assert isinstance(result, Success)


def test_scram_plus_binding_mismatch() -> None:
    result = run_scramp(
        "SCRAM-SHA-256-PLUS",
        client_cb=("tls-server-end-point", b"\x09" * 32),
        server_cb=bindings(),
    )
    assert result == Failure(SaslFailure.NOT_AUTHORIZED, "channel binding mismatch")


def test_scram_plus_unsupported_binding_type() -> None:
    result = run_scramp(
        "SCRAM-SHA-256-PLUS",
        client_cb=("tls-unique", CB_DATA),
        server_cb=[ChannelBinding(ChannelBindingType.TLS_SERVER_END_POINT, CB_DATA)],
    )
    assert result == Failure(SaslFailure.NOT_AUTHORIZED, "unsupported channel binding type")


def test_downgrade_flag_y_when_plus_offered() -> None:
    # scramp sends gs2 flag 'y' when it has binding data but picks a non-PLUS mechanism.
    result = run_scramp(
        "SCRAM-SHA-256", client_cb=("tls-server-end-point", CB_DATA), server_cb=bindings()
    )
    assert result == Failure(SaslFailure.NOT_AUTHORIZED, "channel binding downgrade")


def test_flag_y_accepted_when_plus_not_offered() -> None:
    result = run_scramp("SCRAM-SHA-256", client_cb=("tls-server-end-point", CB_DATA))
    assert isinstance(result, Success)


def test_flag_n_accepted_when_plus_offered() -> None:
    # A client that cannot bind (slixmpp on TLS 1.3) uses 'n' and a non-PLUS mechanism.
    assert isinstance(run_scramp("SCRAM-SHA-256", server_cb=bindings()), Success)


def test_wrong_password_and_unknown_user_fail_alike() -> None:
    wrong = run_scramp("SCRAM-SHA-256", password="wrong")
    unknown = run_scramp("SCRAM-SHA-256", username="mallory")
    assert wrong == unknown == Failure(SaslFailure.NOT_AUTHORIZED, None)


def test_unknown_user_gets_stable_salt_and_usual_iterations() -> None:
    def server_first(username: str) -> dict[str, str]:
        exchange = SaslExchange("SCRAM-SHA-256", domain=DOMAIN, tls=True)
        need = exchange.step(f"n,,n={username},r=abcdef".encode())
        assert need == NeedKeys(username, "SCRAM-SHA-256")
        challenge = exchange.provide_keys(None)
        assert isinstance(challenge, Challenge)
        return dict(p.split("=", 1) for p in challenge.data.decode().split(","))

    first, second = server_first("mallory"), server_first("mallory")
    assert first["s"] == second["s"]
    assert first["r"] != second["r"]
    assert first["i"] == str(ITERATIONS)
    assert server_first("eve")["s"] != first["s"]


def test_tampered_proof() -> None:
    def flip(final: str) -> str:
        head, proof = final.rsplit(",p=", 1)
        raw = bytearray(base64.b64decode(proof))
        raw[0] ^= 1
        return f"{head},p={base64.b64encode(bytes(raw)).decode()}"

    assert run_scramp("SCRAM-SHA-256", tamper_final=flip) == Failure(SaslFailure.NOT_AUTHORIZED)


def test_bad_nonce() -> None:
    def renonce(final: str) -> str:
        c, r, rest = final.split(",", 2)
        return f"{c},{r}x,{rest}"

    assert run_scramp("SCRAM-SHA-1", tamper_final=renonce) == Failure(
        SaslFailure.NOT_AUTHORIZED, "nonce mismatch"
    )


def test_client_final_missing_proof() -> None:
    result = run_scramp("SCRAM-SHA-1", tamper_final=lambda f: f.rsplit(",p=", 1)[0])
    assert isinstance(result, Failure)
    assert result.condition is SaslFailure.MALFORMED_REQUEST


def test_empty_initial_response_gets_empty_challenge() -> None:
    client = ScramClient(["SCRAM-SHA-256"], "alice", PASSWORD)
    exchange = SaslExchange("SCRAM-SHA-256", domain=DOMAIN, tls=False)
    assert exchange.step(b"") == Challenge(b"")
    step = answer(exchange, exchange.step(client.get_client_first().encode()))
    assert isinstance(step, Challenge)
    client.set_server_first(step.data.decode())
    assert isinstance(exchange.step(client.get_client_final().encode()), Success)


# --- authzid


def scram_first_with_authzid(authzid: str) -> SaslStep:
    exchange = SaslExchange("SCRAM-SHA-256", domain=DOMAIN, tls=True)
    return exchange.step(f"n,a={authzid},n=Alice,r=abcdef".encode())


def test_authzid_of_own_bare_jid_is_accepted() -> None:
    assert scram_first_with_authzid("alice@EXAMPLE.org") == NeedKeys("Alice", "SCRAM-SHA-256")


@pytest.mark.parametrize(
    "authzid", ["bob@example.org", "alice@example.com", "alice@example.org/res", "@@", "=2C"]
)
def test_other_authzid_is_refused(authzid: str) -> None:
    result = scram_first_with_authzid(authzid)
    assert isinstance(result, Failure)
    assert result.condition is SaslFailure.INVALID_AUTHZID


# --- malformed client-first messages


@pytest.mark.parametrize(
    "message",
    [
        b"x,,n=alice,r=abc",  # bad flag
        b"n,,n=alice",  # no nonce
        b"n,,r=abc,n=alice",  # wrong order
        b"n,,n=,r=abc",  # empty username
        b"n,,n=al=ice,r=abc",  # bad escape
        b"n,,n=alice,r=a,bc",  # bad extension
        b"n,,n=alice,r=",  # empty nonce
        b"n,,m=ext,n=alice,r=abc",  # mandatory extension
        b"n,n=alice,r=abc",  # gs2 authzid field missing 'a='
        b"n,,n=al\x00ice,r=abc",  # NUL
        b"n,,n=\xff,r=abc",  # not UTF-8
        b"p=tls-unique,,n=alice,r=abc",  # binding with a non-PLUS mechanism
        b"n,,n=alice,r=abc" + b"x" * 5000,  # too long
        b"nonsense",
    ],
)
def test_malformed_client_first(message: bytes) -> None:
    exchange = SaslExchange("SCRAM-SHA-256", domain=DOMAIN, tls=True)
    result = exchange.step(message)
    assert isinstance(result, Failure)
    assert result.condition is SaslFailure.MALFORMED_REQUEST
    assert exchange.is_done
    assert exchange.step(b"n,,n=alice,r=abc") == Failure(
        SaslFailure.MALFORMED_REQUEST, "exchange already finished"
    )


def test_plus_mechanism_with_flag_n_is_malformed() -> None:
    exchange = SaslExchange(
        "SCRAM-SHA-256-PLUS", domain=DOMAIN, tls=True, channel_bindings=bindings()
    )
    result = exchange.step(b"n,,n=alice,r=abc")
    assert isinstance(result, Failure)
    assert result.condition is SaslFailure.MALFORMED_REQUEST


def test_username_escapes_are_decoded() -> None:
    exchange = SaslExchange("SCRAM-SHA-1", domain=DOMAIN, tls=True)
    assert exchange.step(b"n,,n=a=2Cb=3Dc,r=abc") == NeedKeys("a,b=c", "SCRAM-SHA-1")


def test_out_of_order_calls_are_caller_bugs() -> None:
    exchange = SaslExchange("SCRAM-SHA-1", domain=DOMAIN, tls=True)
    with pytest.raises(SaslStateError):
        exchange.provide_keys(None)
    exchange.step(b"n,,n=alice,r=abc")
    with pytest.raises(SaslStateError):
        exchange.step(b"anything")


def test_abort() -> None:
    exchange = SaslExchange("SCRAM-SHA-1", domain=DOMAIN, tls=True)
    assert exchange.abort() == Failure(SaslFailure.ABORTED)
    assert exchange.is_done


# --- fuzz: arbitrary bytes at each step never raise


def drive(mechanism: str, messages: list[bytes], known: bool) -> None:
    exchange = SaslExchange(mechanism, domain=DOMAIN, tls=True, channel_bindings=bindings())
    for message in messages:
        step = exchange.step(message)
        if isinstance(step, NeedKeys):
            step = exchange.provide_keys(KEYS[step.mechanism] if known else None)
        assert isinstance(step, Challenge | Success | Failure)
        if isinstance(step, Success | Failure):
            assert exchange.is_done
            return


_mechs = st.sampled_from([m.value for m in Mechanism])
_scramish = st.lists(
    st.sampled_from(
        [
            *("n", "y", "p=tls-unique", "p=tls-server-end-point", "p=x", "a=alice@example.org"),
            *("a=", "n=alice", "n=", "r=abc", "r=", "c=biws", "c=", "p=AAAA", "m=x", "="),
            *("", "s=1", "\x00", "n=\xe9", "a=\u0661"),
        ]
    ),
    max_size=8,
).map(lambda parts: ",".join(parts).encode())


@settings(max_examples=300, deadline=None)
@given(_mechs, st.lists(st.binary(max_size=200) | _scramish, min_size=1, max_size=4), st.booleans())
def test_arbitrary_input_never_raises(mechanism: str, messages: list[bytes], known: bool) -> None:
    drive(mechanism, messages, known)


@settings(max_examples=200, deadline=None)
@given(_scramish, st.booleans())
def test_arbitrary_client_final_never_raises(final: bytes, known: bool) -> None:
    client = ScramClient(["SCRAM-SHA-256"], "alice", PASSWORD)
    drive("SCRAM-SHA-256", [client.get_client_first().encode(), final], known)


# --- PLAIN


def run_plain(message: bytes) -> SaslStep:
    exchange = SaslExchange("PLAIN", domain=DOMAIN, tls=True)
    return answer(exchange, exchange.step(message))


def test_plain_success() -> None:
    assert run_plain(b"\x00alice\x00" + PASSWORD.encode()) == Success("alice", None)


def test_plain_with_own_authzid() -> None:
    message = b"alice@example.org\x00alice\x00" + PASSWORD.encode()
    assert run_plain(message) == Success("alice", None)


def test_plain_with_foreign_authzid() -> None:
    result = run_plain(b"bob@example.org\x00alice\x00" + PASSWORD.encode())
    assert isinstance(result, Failure)
    assert result.condition is SaslFailure.INVALID_AUTHZID


def test_plain_wrong_password_and_unknown_user_fail_alike() -> None:
    assert run_plain(b"\x00alice\x00nope") == Failure(SaslFailure.NOT_AUTHORIZED)
    assert run_plain(b"\x00mallory\x00" + PASSWORD.encode()) == Failure(SaslFailure.NOT_AUTHORIZED)


@pytest.mark.parametrize(
    "message",
    [
        b"alice\x00" + PASSWORD.encode(),  # one NUL
        b"\x00alice\x00pw\x00extra",  # three NULs
        b"\x00\x00pw",  # empty authcid
        b"\x00alice\x00",  # empty password
        b"\x00al\xffice\x00pw",  # not UTF-8
        b"\x00" + b"a" * 2000 + b"\x00pw",  # too long
    ],
)
def test_plain_malformed(message: bytes) -> None:
    result = run_plain(message)
    assert isinstance(result, Failure)
    assert result.condition is SaslFailure.MALFORMED_REQUEST


# --- slixmpp's client-side mechanisms, driven without a stream


def run_slixmpp(
    offered: list[str],
    *,
    tls_version: str = "TLSv1.2",
    client_binding: bytes | None = None,
    server_bindings: list[ChannelBinding] | None = None,
    password: str = PASSWORD,
    authzid: str = "",
) -> tuple[str, SaslStep]:
    def credentials(required: Any, optional: Any) -> dict[str, Any]:
        return {
            "username": "alice",
            "password": password,
            "authzid": authzid,
            "channel_binding": client_binding,
        }

    def security(values: Any) -> dict[str, Any]:
        return {
            "encrypted": True,
            "tls_version": tls_version,
            "binding_proposed": any(m.endswith("-PLUS") for m in offered),
            "unencrypted_scram": True,
            "encrypted_plain": True,
            "unencrypted_plain": False,
        }

    mech: Any = slix_client.choose(list(offered), credentials, security)
    exchange = SaslExchange(
        mech.name, domain=DOMAIN, tls=True, channel_bindings=server_bindings or []
    )
    step = answer(exchange, exchange.step(mech.process()))
    while isinstance(step, Challenge):
        step = exchange.step(mech.process(step.data))
    if isinstance(step, Success) and step.additional_data:
        mech.process(step.additional_data)  # raises if the server signature is wrong
    return mech.name, step


def test_slixmpp_scram_plus_tls_unique_on_tls12() -> None:
    unique = b"\x02" * 12
    name, result = run_slixmpp(
        offered_mechanisms(tls=True, channel_binding=True),
        client_binding=unique,
        server_bindings=bindings(),
    )
    assert name == "SCRAM-SHA-256-PLUS"
    assert result == Success(
        "alice", result.additional_data if isinstance(result, Success) else None
    )


def test_slixmpp_on_tls13_falls_back_to_scram_with_flag_n() -> None:
    # slixmpp has no tls-exporter on Python < 3.14 and tls-unique is forbidden on TLS 1.3,
    # so it drops -PLUS; as we offered -PLUS it sends gs2 flag 'n', which must be accepted.
    server = [ChannelBinding(ChannelBindingType.TLS_SERVER_END_POINT, CB_DATA)]
    name, result = run_slixmpp(
        offered_mechanisms(tls=True, channel_binding=True),
        tls_version="TLSv1.3",
        server_bindings=server,
    )
    assert name == "SCRAM-SHA-256"
    assert isinstance(result, Success)


def test_slixmpp_tls_unique_refused_when_we_only_have_end_point() -> None:
    server = [ChannelBinding(ChannelBindingType.TLS_SERVER_END_POINT, CB_DATA)]
    name, result = run_slixmpp(
        offered_mechanisms(tls=True, channel_binding=True),
        client_binding=b"\x02" * 12,
        server_bindings=server,
    )
    assert name == "SCRAM-SHA-256-PLUS"
    assert result == Failure(SaslFailure.NOT_AUTHORIZED, "unsupported channel binding type")


@pytest.mark.parametrize("offered", [["SCRAM-SHA-1"], ["SCRAM-SHA-256"], ["PLAIN"]])
def test_slixmpp_without_binding(offered: list[str]) -> None:
    name, result = run_slixmpp(offered)
    assert name == offered[0]
    assert isinstance(result, Success)
    name, result = run_slixmpp(offered, password="wrong")
    assert result == Failure(SaslFailure.NOT_AUTHORIZED)


@pytest.mark.parametrize("offered", [["SCRAM-SHA-1-PLUS"], ["SCRAM-SHA-256"], ["PLAIN"]])
def test_slixmpp_with_authzid(offered: list[str]) -> None:
    """The authzid is inside the gs2 header, so also inside the channel-binding check."""
    server = bindings() if offered[0].endswith("-PLUS") else []
    _, result = run_slixmpp(
        offered,
        authzid="alice@example.org",
        client_binding=b"\x02" * 12,
        server_bindings=server,
    )
    assert isinstance(result, Success), result
    _, result = run_slixmpp(
        offered,
        authzid="bob@example.org",
        client_binding=b"\x02" * 12,
        server_bindings=server,
    )
    assert isinstance(result, Failure)
    assert result.condition is SaslFailure.INVALID_AUTHZID


# --- tls-server-end-point (RFC 5929 §4.1)


def test_tls_server_end_point_matches_scramp_for_trustme_cert() -> None:
    ca = trustme.CA()
    pem = ca.issue_cert("example.org").cert_chain_pems[0].bytes().decode()
    der = ssl.PEM_cert_to_DER_cert(pem)
    assert tls_server_end_point(der) == bytes(CBindData.from_der(der))


def self_signed(key: Any, algorithm: Any) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.org")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, algorithm)
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (hashes.SHA384(), hashes.SHA384()),
        (hashes.SHA512(), hashes.SHA512()),
        (hashes.SHA256(), hashes.SHA256()),
    ],
)
def test_tls_server_end_point_uses_signature_hash(
    algorithm: hashes.HashAlgorithm, expected: hashes.HashAlgorithm
) -> None:
    der = self_signed(ec.generate_private_key(ec.SECP256R1()), algorithm)
    digest = hashes.Hash(expected)
    digest.update(der)
    assert tls_server_end_point(der) == digest.finalize()
    assert tls_server_end_point(der) == bytes(CBindData.from_der(der))


def test_tls_server_end_point_ed25519_uses_sha256() -> None:
    der = self_signed(ed25519.Ed25519PrivateKey.generate(), None)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    assert tls_server_end_point(der) == digest.finalize()


def test_tls_server_end_point_rejects_garbage() -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        tls_server_end_point(b"not a certificate")


def test_bindings_from_a_real_tls12_handshake_agree() -> None:
    """In-memory TLS 1.2: what the server computes is what scramp and slixmpp clients send."""
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ca.issue_cert("example.org").configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
    client = client_ctx.wrap_bio(bios[2], bios[3], server_hostname="example.org")
    for _ in range(10):
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        bios[0].write(bios[3].read())
        bios[2].write(bios[1].read())
    assert server.version() == client.version() == "TLSv1.2"

    # The stream code knows its own certificate's DER; here we take it from the client's view.
    peer_der = client.getpeercert(binary_form=True)
    assert peer_der is not None
    unique = server.get_channel_binding("tls-unique")
    assert unique is not None
    assert unique == client.get_channel_binding("tls-unique")
    server_side = [
        ChannelBinding(ChannelBindingType.TLS_SERVER_END_POINT, tls_server_end_point(peer_der)),
        ChannelBinding(ChannelBindingType.TLS_UNIQUE, unique),
    ]
    offered = offered_mechanisms(tls=True, channel_binding=True)
    assert isinstance(
        run_scramp(
            "SCRAM-SHA-256-PLUS",
            client_cb=("tls-server-end-point", bytes(CBindData.from_der(peer_der))),
            server_cb=server_side,
        ),
        Success,
    )
    name, result = run_slixmpp(offered, client_binding=unique, server_bindings=server_side)
    assert name == "SCRAM-SHA-256-PLUS"
    assert isinstance(result, Success)
