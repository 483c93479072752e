"""What a client stream needs to know, built by the composition root from the config."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from imedge.protocol.sasl import ChannelBinding


@dataclass(frozen=True, slots=True)
class C2SSettings:
    domain: str
    hosts: frozenset[str]
    tls: ssl.SSLContext | None
    cert_binding: bytes | None  # tls-server-end-point data of our certificate
    require_tls: bool = True
    max_stanza_bytes: int = 262144
    max_depth: int = 64
    negotiation_timeout: float = 30.0
    idle_timeout: float = 600.0
    keepalive_interval: float = 60.0
    scram_iterations: int = 4096
    max_write_buffer: int = 4 * 1024 * 1024
    sm_resume_timeout: int = 300
    sm_max_unacked: int = 10000

    def bindings_for(self, sslobj: ssl.SSLObject | ssl.SSLSocket | None) -> list[ChannelBinding]:
        from imedge.protocol.sasl import ChannelBindingType

        if sslobj is None:
            return []
        out: list[ChannelBinding] = []
        if self.cert_binding is not None:
            out.append(ChannelBinding(ChannelBindingType.TLS_SERVER_END_POINT, self.cert_binding))
        if sslobj.version() in ("TLSv1.2", "TLSv1.1", "TLSv1"):
            unique = sslobj.get_channel_binding("tls-unique")
            if unique:
                out.append(ChannelBinding(ChannelBindingType.TLS_UNIQUE, unique))
        return out
