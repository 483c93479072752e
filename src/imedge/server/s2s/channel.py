"""RFC 6120 §5 (STARTTLS) and XEP-0368 (direct TLS): the byte channel of an s2s stream.

A `Channel` carries the bytes of one server-to-server stream over asyncio streams and can
switch to TLS in the middle (STARTTLS) or start in TLS (direct TLS). TLS runs in pyOpenSSL
over memory BIOs, not in the stdlib `ssl`, because s2s needs what `ssl` cannot do: request
the peer's certificate and, when it does not validate, still complete the handshake and
*record* why. The peer may then authenticate with dialback (weak trust, FEDERATION.md
§Inbound 2) unless policy requires a valid certificate; the decision is not taken here.

The verify callback therefore always accepts and writes every verification error it sees
into a per-connection `_VerifyRecord`; `TlsInfo.chain_verified` is True only when none was
seen. Name checks (RFC 6125) are in `certs.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import idna
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto

from imedge.protocol.sasl import tls_server_end_point
from imedge.server.tls import ALPN_SERVER, CIPHERS, TlsConfigError, check_key_pair

__all__ = [
    "Channel",
    "ChannelError",
    "TlsHandshakeError",
    "TlsInfo",
    "TlsSettings",
    "TlsVersion",
    "fingerprint",
    "verify_error_text",
]

log = logging.getLogger(__name__)

READ_CHUNK: Final = 65536
HANDSHAKE_TIMEOUT: Final = 30.0
CLOSE_TIMEOUT: Final = 5.0
# RFC 9266 §2: the tls-exporter channel binding (TLS 1.3).
EXPORTER_LABEL: Final = b"EXPORTER-Channel-Binding"
EXPORTER_LENGTH: Final = 32
# The session id context: OpenSSL fails a resumption attempt on a server that asks for
# client certificates unless one is set. Resumption itself is off (see TlsSettings.create).
_SESSION_ID_CONTEXT: Final = b"imedge-s2s"

_V = SSL.X509VerificationCodes
# COMPAT: server certificates often lack the clientAuth extended key usage (Let's Encrypt
# dropped it in 2025), yet the initiating server presents its server certificate. Like
# Prosody (`lsec_ignore_purpose`), the purpose is not held against the peer.
_IGNORED_ERRORS: Final = frozenset({_V.ERR_INVALID_PURPOSE})
# The texts of X509_verify_cert_error_string() for the codes a peer commonly causes; the
# function itself is only reachable through pyOpenSSL's private bindings.
_VERIFY_ERRORS: Final[dict[int, str]] = {
    _V.ERR_UNABLE_TO_GET_ISSUER_CERT: "unable to get issuer certificate",
    _V.ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE: "unable to decrypt certificate's signature",
    _V.ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY: "unable to decode issuer public key",
    _V.ERR_CERT_SIGNATURE_FAILURE: "certificate signature failure",
    _V.ERR_CERT_NOT_YET_VALID: "certificate is not yet valid",
    _V.ERR_CERT_HAS_EXPIRED: "certificate has expired",
    _V.ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD: "format error in certificate's notBefore field",
    _V.ERR_ERROR_IN_CERT_NOT_AFTER_FIELD: "format error in certificate's notAfter field",
    _V.ERR_DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed certificate",
    _V.ERR_SELF_SIGNED_CERT_IN_CHAIN: "self-signed certificate in certificate chain",
    _V.ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "unable to get local issuer certificate",
    _V.ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: "unable to verify the first certificate",
    _V.ERR_CERT_CHAIN_TOO_LONG: "certificate chain too long",
    _V.ERR_CERT_REVOKED: "certificate revoked",
    _V.ERR_INVALID_CA: "invalid CA certificate",
    _V.ERR_PATH_LENGTH_EXCEEDED: "path length constraint exceeded",
    _V.ERR_INVALID_PURPOSE: "unsupported certificate purpose",
    _V.ERR_CERT_UNTRUSTED: "certificate not trusted",
    _V.ERR_CERT_REJECTED: "certificate rejected",
    _V.ERR_KEYUSAGE_NO_CERTSIGN: "key usage does not include certificate signing",
    _V.ERR_UNHANDLED_CRITICAL_EXTENSION: "unhandled critical extension",
    _V.ERR_INVALID_NON_CA: "invalid non-CA certificate (has CA markings)",
    _V.ERR_PERMITTED_VIOLATION: "permitted subtree violation",
    _V.ERR_EXCLUDED_VIOLATION: "excluded subtree violation",
}


def verify_error_text(code: int) -> str:
    """OpenSSL's words for an X.509 verification error code."""
    return _VERIFY_ERRORS.get(code, f"certificate verification error {code}")


class ChannelError(ConnectionError):
    """The channel cannot carry the stream any more; the message says why.

    `timed_out` is True when the peer did not answer in time (as opposed to refusing or
    failing): callers report that as temporary (RFC 6120 §8.3.3.14 remote-server-timeout).
    """

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class TlsHandshakeError(ChannelError):
    """The TLS handshake failed or timed out; the message names the peer and the reason."""


class TlsVersion(StrEnum):
    TLS1_2 = "TLSv1.2"
    TLS1_3 = "TLSv1.3"


_PROTO_VERSIONS: Final = {
    TlsVersion.TLS1_2: SSL.TLS1_2_VERSION,
    TlsVersion.TLS1_3: SSL.TLS1_3_VERSION,
}


@dataclass(slots=True)
class _VerifyRecord:
    """What the verify callback saw on one connection (its app data)."""

    called: bool = False
    errors: list[tuple[int, int]] = field(default_factory=list)  # (errnum, depth)


def _record_verification(
    conn: SSL.Connection, _cert: crypto.X509, errnum: int, depth: int, ok: int
) -> bool:
    """Accept every certificate, but remember each error: policy decides later."""
    record = conn.get_app_data()
    if isinstance(record, _VerifyRecord):
        record.called = True
        if not ok and errnum not in _IGNORED_ERRORS:
            record.errors.append((errnum, depth))
    return True


# Any: the "no overlap" sentinel's class is private to pyOpenSSL.
def _select_alpn(_conn: SSL.Connection, offered: list[bytes]) -> Any:
    # XEP-0368 §3: offered by direct-TLS initiators; not required of anyone.
    alpn = ALPN_SERVER.encode()
    return alpn if alpn in offered else SSL.NO_OVERLAPPING_PROTOCOLS


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Our side of s2s TLS: certificate, trust store, versions; one Context for both roles."""

    context: SSL.Context
    # Our leaf certificate, for tls-server-end-point when we are the server (RFC 5929 §4).
    certificate_der: bytes | None

    @classmethod
    def create(
        cls,
        cert: Path | None,
        key: Path | None,
        ca: Path | None = None,
        *,
        system_ca: bool = True,
        minimum: TlsVersion = TlsVersion.TLS1_2,
        maximum: TlsVersion | None = None,
    ) -> TlsSettings:
        """Build the context; TlsConfigError names the file and the reason when it fails.

        `cert` (a PEM chain, leaf first) and `key` are both given or both None (a client
        with no certificate). Peers are verified against `ca` and, with `system_ca`, the
        system's default trust store.
        """
        if (cert is None) != (key is None):
            raise TlsConfigError("a TLS certificate needs both a certificate and a key")
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(_PROTO_VERSIONS[minimum])
        if maximum is not None:
            ctx.set_max_proto_version(_PROTO_VERSIONS[maximum])
        ctx.set_cipher_list(CIPHERS.encode())
        # No resumption: a resumed session skips the verify callback, and every stream
        # must carry a fresh verification record. No compression (CRIME), no renegotiation.
        ctx.set_options(
            SSL.OP_NO_COMPRESSION
            | SSL.OP_NO_RENEGOTIATION
            | SSL.OP_CIPHER_SERVER_PREFERENCE
            | SSL.OP_NO_TICKET
        )
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        ctx.set_session_id(_SESSION_ID_CONTEXT)
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        # VERIFY_PEER on both roles: as server it requests a client certificate (without
        # FAIL_IF_NO_PEER_CERT, so a peer without one still connects, for dialback).
        ctx.set_verify(SSL.VERIFY_PEER, _record_verification)
        ctx.set_alpn_select_callback(_select_alpn)
        leaf_der: bytes | None = None
        if cert is not None and key is not None:
            leaf = check_key_pair(cert, key)
            leaf_der = leaf.public_bytes(Encoding.DER)
            try:
                ctx.use_certificate_chain_file(str(cert))
                ctx.use_privatekey_file(str(key))
                ctx.check_privatekey()
            except SSL.Error as exc:
                raise TlsConfigError(f"TLS certificate {cert} / key {key}: {exc}") from None
        if ca is not None:
            try:
                ctx.load_verify_locations(str(ca))
            except SSL.Error as exc:
                raise TlsConfigError(f"TLS trust store {ca}: {exc}") from None
        if system_ca:
            ctx.set_default_verify_paths()
        return cls(context=ctx, certificate_der=leaf_der)


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """The outcome of a handshake: what was negotiated and how the peer's chain fared."""

    server_side: bool
    version: str  # "TLSv1.3"
    cipher: str
    alpn: str | None
    server_name: str | None  # SNI: sent (client side) or received (server side)
    peer_chain_der: tuple[bytes, ...]  # leaf first; () when the peer sent none
    chain_verified: bool  # a certificate was presented and verified with no error
    verify_error: str | None  # the first error, in OpenSSL's words
    verify_errors: tuple[tuple[int, int], ...]  # every (X509_V_ERR_*, depth) seen, in order
    tls_exporter: bytes | None  # RFC 9266, TLS 1.3 only
    tls_unique: bytes | None  # RFC 5929 §3, TLS 1.2 only (RFC 9266 §3 forbids it on 1.3)
    tls_server_end_point: bytes | None  # RFC 5929 §4

    @property
    def verify_codes(self) -> tuple[int, ...]:
        """The X509_V_ERR_* codes seen, in order."""
        return tuple(code for code, _depth in self.verify_errors)

    @property
    def peer_certificate(self) -> bytes | None:
        """The peer's leaf certificate (DER), if it presented one."""
        return self.peer_chain_der[0] if self.peer_chain_der else None


def _sni_name(server_name: str | None) -> bytes | None:
    """The SNI host name (A-labels); none for an IP literal (RFC 6066 §3)."""
    if not server_name:
        return None
    try:
        ipaddress.ip_address(server_name.strip("[]"))
    except ValueError:
        pass
    else:
        return None
    try:
        return idna.encode(server_name.rstrip("."), uts46=True)
    except idna.IDNAError:
        return server_name.encode("ascii", "replace")


def _openssl_reason(exc: SSL.Error) -> str:
    """The reason strings of an OpenSSL error stack, e.g. "wrong version number"."""
    reasons = [
        str(entry[2])
        for entry in (exc.args[0] if exc.args and isinstance(exc.args[0], list) else [])
        if isinstance(entry, tuple) and len(entry) == 3
    ]
    return "; ".join(r for r in reasons if r) or str(exc) or type(exc).__name__


def _describe_peer(writer: asyncio.StreamWriter) -> str:
    name = writer.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(name or "?")


class Channel:
    """The bytes of one s2s stream, in plain or TLS, over an asyncio reader/writer pair."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        peer: str | None = None,
    ) -> None:
        """Wrap an accepted (or connected) pair; `peer` overrides the address shown,
        e.g. the real client address from a PROXY protocol header."""
        self._reader = reader
        self._writer = writer
        self._peer = peer or _describe_peer(writer)
        self._tls: SSL.Connection | None = None
        self._info: TlsInfo | None = None
        self._handshaking = False
        self._out = bytearray()  # plaintext written but not yet flushed
        self._flush_handle: asyncio.Handle | None = None
        self._plain = bytearray()  # decrypted but not yet returned by read()
        self._eof = False  # the socket reached EOF
        self._closed = False
        self._error: ChannelError | None = None

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        timeout: float,  # noqa: ASYNC109 -- one deadline for the connect, given by the caller
    ) -> Channel:
        """Open a TCP connection; OSError/TimeoutError become ChannelError (with
        `timed_out` set for the latter)."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            raise ChannelError(
                f"connecting to {host}:{port} timed out after {timeout:g}s", timed_out=True
            ) from None
        except OSError as exc:
            # asyncio's strerror is "Connect call failed (...)"; the errno's words
            # ("Connection refused") are what an operator can act on.
            reason = os.strerror(exc.errno).lower() if exc.errno else (exc.strerror or str(exc))
            raise ChannelError(f"cannot connect to {host}:{port}: {reason}") from None
        return cls(reader, writer)

    @property
    def peer(self) -> str:
        """The remote address as "ip:port" ("[v6]:port")."""
        return self._peer

    @property
    def tls(self) -> TlsInfo | None:
        """The handshake's outcome once TLS is on, else None."""
        return self._info

    @property
    def is_closing(self) -> bool:
        """True once close() was called or the transport is closing."""
        return self._closed or self._writer.is_closing()

    # --- reading -------------------------------------------------------------------------

    async def read(self, n: int = READ_CHUNK) -> bytes:
        """Up to `n` bytes of the stream (decrypted), b"" once the peer has closed it."""
        if self._handshaking:
            raise ChannelError(f"read from {self._peer} during the TLS handshake")
        if self._tls is None:
            return await self._reader.read(n)
        while not self._plain:
            if self._decrypt_available() or self._plain:
                break
            if self._eof:
                return b""
            data = await self._reader.read(READ_CHUNK)
            if data:
                self._tls.bio_write(data)
            else:
                self._eof = True
                self._tls.bio_shutdown()
        return self._take_plain(n)

    def _take_plain(self, n: int) -> bytes:
        if len(self._plain) <= n:  # the common case: one copy, no shifting
            chunk = bytes(self._plain)
            self._plain.clear()
            return chunk
        chunk = bytes(self._plain[:n])
        del self._plain[:n]
        return chunk

    def _decrypt_available(self) -> bool:
        """Decrypt every complete record in the BIO into _plain; True on end of stream."""
        assert self._tls is not None
        tls = self._tls
        try:
            while True:
                self._plain += tls.recv(READ_CHUNK)
        except SSL.WantReadError:
            return False
        except SSL.ZeroReturnError:
            log.debug("%s: TLS close_notify received", self._peer)
            self._eof = True
            return True
        except SSL.Error as exc:
            if self._eof:
                # EOF without close_notify: XMPP's </stream:stream> is the real end marker.
                log.debug("%s: TLS stream ended without close_notify", self._peer)
                return True
            raise ChannelError(f"TLS error from {self._peer}: {_openssl_reason(exc)}") from None
        finally:
            # A read can produce records to send (alerts, TLS 1.3 key updates).
            self._pump_tls_out()

    # --- writing -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue `data`; writes in one loop iteration go out together (fewer TLS records)."""
        if self._error is not None:
            raise self._error
        if self._closed or not data:
            return
        self._out += data
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    async def drain(self) -> None:
        """Flush queued data and wait until the transport's buffer is low again."""
        self._flush()
        if self._error is not None:
            raise self._error
        await self._writer.drain()

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()  # when called by drain(), before the loop did
            self._flush_handle = None
        if not self._out or self._handshaking or self._closed:
            return
        data, self._out = bytes(self._out), bytearray()
        if self._tls is None:
            self._writer.write(data)
            return
        try:
            self._tls.sendall(data)
        except SSL.Error as exc:
            self._error = ChannelError(f"TLS error towards {self._peer}: {_openssl_reason(exc)}")
            log.warning("%s", self._error)
            self._writer.close()
            return
        self._pump_tls_out()

    def _pump_tls_out(self) -> None:
        """Move every encrypted byte waiting in the BIO to the transport."""
        assert self._tls is not None
        chunks: list[bytes] = []
        try:
            while True:
                chunks.append(self._tls.bio_read(4 * READ_CHUNK))
        except SSL.WantReadError:
            pass
        if chunks and not self._writer.is_closing():
            self._writer.write(b"".join(chunks))

    # --- TLS -----------------------------------------------------------------------------

    async def start_tls(
        self,
        settings: TlsSettings,
        /,
        *,
        server_side: bool,
        server_name: str | None = None,
        timeout: float = HANDSHAKE_TIMEOUT,  # noqa: ASYNC109 -- one deadline, whole handshake
    ) -> TlsInfo:
        """Run the TLS handshake now (after <proceed/>, or at once for direct TLS).

        A certificate that does not validate does not fail the handshake: the result says
        why in `TlsInfo.verify_error`. On the client side `server_name` is sent as SNI.
        Raises TlsHandshakeError (the connection is then unusable) on failure or timeout.
        """
        if self._tls is not None:
            raise ChannelError(f"TLS is already on for {self._peer}")
        # Anything queued before (e.g. <proceed/>) goes out in the clear first.
        self._flush()
        await self._writer.drain()
        conn = SSL.Connection(settings.context, None)
        conn.set_app_data(_VerifyRecord())
        sni = None if server_side else _sni_name(server_name)
        if server_side:
            conn.set_accept_state()
        else:
            conn.set_connect_state()
            if sni is not None:
                conn.set_tlsext_host_name(sni)
            conn.set_alpn_protos([ALPN_SERVER.encode()])
        self._tls = conn
        self._handshaking = True
        try:
            async with asyncio.timeout(timeout):
                await self._handshake(conn)
        except TimeoutError:
            self._abort()
            raise TlsHandshakeError(
                f"TLS handshake with {self._peer} timed out after {timeout:g}s", timed_out=True
            ) from None
        except TlsHandshakeError:
            self._abort()
            raise
        self._handshaking = False
        received = conn.get_servername()
        self._info = self._describe(
            conn, settings, server_side, sni if not server_side else received
        )
        log.debug(
            "%s: %s %s, peer certificate %s",
            self._peer,
            self._info.version,
            self._info.cipher,
            "verified" if self._info.chain_verified else (self._info.verify_error or "absent"),
        )
        self._flush()
        return self._info

    async def _handshake(self, conn: SSL.Connection) -> None:
        while True:
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                self._pump_tls_out()
                await self._writer.drain()
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    raise TlsHandshakeError(
                        f"{self._peer} closed the connection during the TLS handshake"
                    ) from None
                conn.bio_write(data)
            except SSL.Error as exc:
                self._pump_tls_out()  # our alert tells the peer why
                raise TlsHandshakeError(
                    f"TLS handshake with {self._peer} failed: {_openssl_reason(exc)}"
                ) from None
            else:
                self._pump_tls_out()
                await self._writer.drain()
                return

    def _describe(
        self,
        conn: SSL.Connection,
        settings: TlsSettings,
        server_side: bool,
        server_name: bytes | None,
    ) -> TlsInfo:
        record = conn.get_app_data()
        assert isinstance(record, _VerifyRecord)
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        chain_der = tuple(cert.public_bytes(Encoding.DER) for cert in chain)
        leaf = conn.get_peer_certificate(as_cryptography=True)
        if leaf is not None:
            # SSL_get_peer_cert_chain(3): on the server side the client's leaf is not part
            # of the chain; put it first on both sides.
            leaf_der = leaf.public_bytes(Encoding.DER)
            if not chain_der or chain_der[0] != leaf_der:
                chain_der = (leaf_der, *chain_der)
        codes = tuple(code for code, _depth in record.errors)
        # A certificate the callback never saw was never verified (defensive: resumption
        # is off, so this should not happen).
        verified = bool(chain_der) and record.called and not codes
        error: str | None = None
        if codes:
            error = verify_error_text(codes[0])
        elif chain_der and not record.called:
            error = "certificate not verified"
        version = conn.get_protocol_version_name()
        exporter: bytes | None = None
        unique: bytes | None = None
        if version == TlsVersion.TLS1_3:
            exporter = conn.export_keying_material(EXPORTER_LABEL, EXPORTER_LENGTH)
        else:
            # RFC 5929 §3.1: the first Finished of the (always full) handshake: the client's.
            unique = conn.get_finished() if not server_side else conn.get_peer_finished()
        server_cert = settings.certificate_der if server_side else (chain_der or (None,))[0]
        alpn = conn.get_alpn_proto_negotiated()
        return TlsInfo(
            server_side=server_side,
            version=version,
            cipher=conn.get_cipher_name() or "",
            alpn=alpn.decode("ascii", "replace") if alpn else None,
            server_name=server_name.decode("ascii", "replace") if server_name else None,
            peer_chain_der=chain_der,
            chain_verified=verified,
            verify_error=error,
            verify_errors=tuple(record.errors),
            tls_exporter=exporter,
            tls_unique=unique,
            tls_server_end_point=tls_server_end_point(server_cert) if server_cert else None,
        )

    # --- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Flush what is queued, send TLS close_notify, and close the socket."""
        if self._closed:
            return
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if not self._handshaking:
            self._flush()
        self._closed = True
        if self._tls is not None and not self._handshaking and self._error is None:
            with contextlib.suppress(SSL.Error):
                self._tls.shutdown()
            self._pump_tls_out()
        self._writer.close()

    async def aclose(self, timeout: float = CLOSE_TIMEOUT) -> None:  # noqa: ASYNC109
        """close(), then wait (bounded) until the socket is closed; abort if it hangs."""
        self.close()
        try:
            async with asyncio.timeout(timeout):
                await self._writer.wait_closed()
        except TimeoutError:
            self._writer.transport.abort()
        except (ConnectionError, OSError):
            pass

    def _abort(self) -> None:
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        # Let the alert out, then close.
        self._writer.close()


def fingerprint(cert_der: bytes) -> str:
    """SHA-256 fingerprint of a certificate, as operators compare them (AB:CD:...)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(cert_der).digest())
