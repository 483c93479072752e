"""HAProxy PROXY protocol v1 and v2: the header a connector puts before the stream.

A TCP connector (HAProxy, a load balancer) in front of a listener hides the peer's
address; with the PROXY protocol it sends that address first, in one header, before any
byte of the proxied stream. This module is the pure, incremental parser of that header
(https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt, "the spec" below): feed it
the bytes received so far, it says "need more", or gives the addresses and how many bytes
to strip, or refuses. No I/O here; `server/s2s/proxy_listener.py` reads the socket.

Never enable it on a listener reachable without the connector: whoever sends the header
chooses the address that logs, limits and policy then see (spec §1, "security").
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = [
    "MAX_V1_LENGTH",
    "MAX_V2_PAYLOAD",
    "V2_SIGNATURE",
    "ProxyProtocolError",
    "ProxyResult",
    "needed_bytes",
    "parse_proxy_header",
]

# Spec §2.1: "the maximum line lengths the receiver must support including the CRLF
# are 107 bytes" (the TCP6 line with the longest addresses and ports).
MAX_V1_LENGTH = 107
V1_PREFIX = b"PROXY "
# Spec §2.2: the v2 header starts with this 12-byte signature, chosen to be invalid as
# the start of any text protocol (and of a TLS record).
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER_LENGTH = 16
# The v2 length field allows 65,535 bytes of addresses and TLVs; real connectors send a
# few dozen (HAProxy's largest TLV set is well under 1 KiB). Refuse more than this so a
# hostile sender cannot make us buffer 64 KiB before the stream even starts.
MAX_V2_PAYLOAD = 4096

# Spec §2.2: the lengths of the address block per address family.
_ADDRESS_LENGTH = {0x1: 12, 0x2: 36, 0x3: 216}
_CMD_LOCAL = 0x0
_CMD_PROXY = 0x1
_FAMILY_UNSPEC = 0x0
_FAMILY_INET = 0x1
_FAMILY_INET6 = 0x2
_FAMILY_UNIX = 0x3
_TRANSPORT_UNSPEC = 0x0
_TRANSPORT_STREAM = 0x1
_TRANSPORT_DGRAM = 0x2
_TLV_HEADER = 3


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY header; close the connection (spec §2: no reply)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProxyResult:
    """A complete header.

    `source`/`destination` are (address, port) of the original connection as the connector
    saw it, or None when the header carries none (v1 UNKNOWN, v2 LOCAL health checks, v2
    UNSPEC/UNIX families): then use the real connection's addresses (spec §2.1, §2.2).
    `consumed` is the header's length: the bytes after it start the proxied stream.
    """

    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    consumed: int
    version: int
    # v2 LOCAL: the connector's own connection (a health check), not a proxied one.
    local: bool = False


def parse_proxy_header(buf: bytes) -> ProxyResult | None:
    """Parse the PROXY header at the start of `buf`.

    Returns None when `buf` is a valid but incomplete beginning (read `needed_bytes(buf)`
    more bytes and call again), or the result; raises ProxyProtocolError for anything
    that cannot become a valid header.
    """
    if not buf:
        return None
    if buf[0] == V1_PREFIX[0]:
        return _parse_v1(buf)
    if buf[0] == V2_SIGNATURE[0]:
        return _parse_v2(buf)
    raise ProxyProtocolError("no PROXY protocol header (neither v1 nor v2 signature)")


def needed_bytes(buf: bytes) -> int:
    """How many more bytes at least before `parse_proxy_header(buf)` can decide.

    Reading exactly this many never reads past the header, so the bytes that follow it
    stay in the caller's buffer (which matters before a direct TLS handshake). Only
    meaningful while parse_proxy_header(buf) returns None.
    """
    if not buf:
        # "PROXY UNKNOWN\r\n" is the shortest header of either version.
        return len(b"PROXY UNKNOWN\r\n")
    if buf[0] == V1_PREFIX[0]:
        # A v1 line ends at CRLF, which can come at any byte: one at a time.
        return max(1, len(b"PROXY UNKNOWN\r\n") - len(buf))
    if len(buf) < V2_HEADER_LENGTH:
        return V2_HEADER_LENGTH - len(buf)
    length = int.from_bytes(buf[14:16], "big")
    return max(1, V2_HEADER_LENGTH + length - len(buf))


def _parse_v1(buf: bytes) -> ProxyResult | None:
    head = buf[: len(V1_PREFIX)]
    if head != V1_PREFIX[: len(head)]:
        raise ProxyProtocolError("bad PROXY v1 signature")
    window = buf[:MAX_V1_LENGTH]
    end = window.find(b"\r\n")
    if end < 0:
        # A bare LF, or a byte a v1 line never holds, is a refusal now rather than after
        # 107 bytes: the spec's lines are printable US-ASCII.
        if b"\n" in window or any((b < 0x20 and b != 0x0D) or b > 0x7E for b in window):
            raise ProxyProtocolError("PROXY v1 line holds a control or non-ASCII byte")
        if b"\r" in window[:-1]:
            raise ProxyProtocolError("PROXY v1 line has CR without LF")
        if len(buf) >= MAX_V1_LENGTH:
            raise ProxyProtocolError("PROXY v1 line has no CRLF within 107 bytes")
        return None
    line = window[:end]
    consumed = end + 2
    if any(b < 0x20 or b > 0x7E for b in line):
        raise ProxyProtocolError("PROXY v1 line holds a control or non-ASCII byte")
    text = line.decode("ascii")
    fields = text.split(" ")
    proto = fields[1] if len(fields) > 1 else ""
    if proto == "UNKNOWN":
        # Spec §2.1: with UNKNOWN "the receiver must ignore anything presented before
        # the CRLF" and use the real connection's addresses.
        return ProxyResult(None, None, consumed, 1)
    if proto not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"PROXY v1 unknown protocol {proto[:10]!r}")
    if len(fields) != 6:
        raise ProxyProtocolError("PROXY v1 line must have exactly 6 space-separated fields")
    version = 4 if proto == "TCP4" else 6
    src = _v1_address(fields[2], version)
    dst = _v1_address(fields[3], version)
    sport = _v1_port(fields[4])
    dport = _v1_port(fields[5])
    return ProxyResult((src, sport), (dst, dport), consumed, 1)


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1 bad address {text[:45]!r}") from None
    if address.version != version:
        raise ProxyProtocolError(f"PROXY v1 address {text!r} is not IPv{version}")
    if version == 6 and ("%" in text):
        raise ProxyProtocolError("PROXY v1 address has a scope id")
    return str(address)


def _v1_port(text: str) -> int:
    # Spec §2.1: a decimal integer 0..65535; "leading zeroes are not permitted".
    if not text.isdigit() or not text.isascii() or len(text) > 5:
        raise ProxyProtocolError(f"PROXY v1 bad port {text[:10]!r}")
    if len(text) > 1 and text[0] == "0":
        raise ProxyProtocolError(f"PROXY v1 port with a leading zero {text!r}")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"PROXY v1 port out of range {text!r}")
    return port


def _parse_v2(buf: bytes) -> ProxyResult | None:
    head = buf[: len(V2_SIGNATURE)]
    if head != V2_SIGNATURE[: len(head)]:
        raise ProxyProtocolError("bad PROXY v2 signature")
    if len(buf) >= 13:
        _check_v2_command(buf[12])
    if len(buf) >= 14:
        _check_v2_family(buf[13])
    if len(buf) < V2_HEADER_LENGTH:
        return None
    ver_cmd, fam, length = struct.unpack_from("!BBH", buf, 12)
    if length > MAX_V2_PAYLOAD:
        raise ProxyProtocolError(f"PROXY v2 header too long ({length} > {MAX_V2_PAYLOAD} bytes)")
    total = V2_HEADER_LENGTH + length
    if len(buf) < total:
        return None
    payload = buf[V2_HEADER_LENGTH:total]
    command = ver_cmd & 0x0F
    if command == _CMD_LOCAL:
        # Spec §2.2: LOCAL is the connector's own connection (health check): "the
        # receiver must accept this connection as valid and must use the real connection
        # endpoints and discard the protocol block including the family".
        return ProxyResult(None, None, total, 2, local=True)
    family = fam >> 4
    address_length = _ADDRESS_LENGTH.get(family, 0)
    if len(payload) < address_length:
        raise ProxyProtocolError(
            f"PROXY v2 length {length} is shorter than its addresses ({address_length})"
        )
    # The TLVs are skipped but must fit exactly: a malformed list means a confused sender.
    _check_tlvs(payload[address_length:])
    if family == _FAMILY_INET:
        src4, dst4, sport, dport = struct.unpack_from("!4s4sHH", payload)
        return ProxyResult(
            (str(ipaddress.IPv4Address(src4)), sport),
            (str(ipaddress.IPv4Address(dst4)), dport),
            total,
            2,
        )
    if family == _FAMILY_INET6:
        src6, dst6, sport, dport = struct.unpack_from("!16s16sHH", payload)
        return ProxyResult(
            (str(ipaddress.IPv6Address(src6)), sport),
            (str(ipaddress.IPv6Address(dst6)), dport),
            total,
            2,
        )
    # UNSPEC ("the receiver ... must use the real connection endpoints") and UNIX
    # sockets: no IP address to report.
    return ProxyResult(None, None, total, 2)


def _check_v2_command(ver_cmd: int) -> None:
    if ver_cmd >> 4 != 0x2:
        raise ProxyProtocolError(f"PROXY v2 bad version {ver_cmd >> 4}")
    if ver_cmd & 0x0F not in (_CMD_LOCAL, _CMD_PROXY):
        raise ProxyProtocolError(f"PROXY v2 bad command {ver_cmd & 0x0F}")


def _check_v2_family(fam: int) -> None:
    family, transport = fam >> 4, fam & 0x0F
    if family not in (_FAMILY_UNSPEC, _FAMILY_INET, _FAMILY_INET6, _FAMILY_UNIX):
        raise ProxyProtocolError(f"PROXY v2 bad address family {family}")
    if transport not in (_TRANSPORT_UNSPEC, _TRANSPORT_STREAM, _TRANSPORT_DGRAM):
        raise ProxyProtocolError(f"PROXY v2 bad transport {transport}")


def _check_tlvs(data: bytes) -> None:
    offset = 0
    while offset < len(data):
        if len(data) - offset < _TLV_HEADER:
            raise ProxyProtocolError("PROXY v2 truncated TLV header")
        (value_length,) = struct.unpack_from("!H", data, offset + 1)
        offset += _TLV_HEADER + value_length
        if offset > len(data):
            raise ProxyProtocolError("PROXY v2 TLV runs past the header")
