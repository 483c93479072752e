"""What server-to-server streams need to know, built by the composition root from the config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from imedge.domain.jid import Jid
    from imedge.protocol.element import Element
    from imedge.server.s2s.info import S2SStreamInfo


@dataclass(frozen=True, slots=True)
class S2SSettings:
    hosts: frozenset[str]
    secret: bytes  # dialback secret (XEP-0185)
    require_tls: bool = True
    dialback: bool = True
    connect_timeout: float = 10.0
    negotiation_timeout: float = 30.0
    idle_timeout: float = 600.0
    max_queue: int = 1000
    max_stanzas_per_second: int = 500
    max_stanza_bytes: int = 262144
    max_depth: int = 64
    edge_addresses: Mapping[str, tuple[str, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PeerRules:
    """How a remote domain's servers and ours authenticate (its partner row's requirements)."""

    starttls: bool = True  # start TLS when the peer offers it
    tls_required: bool = True  # refuse a peer that does not offer TLS
    sasl_external: bool = True  # may be used at all
    sasl_external_required: bool = False
    dialback: bool = True


class FederationPolicy(Protocol):
    """What the s2s layer asks the federation gate (`imedge.server.s2s.gate`)."""

    def admit(self, info: S2SStreamInfo, domain: str) -> str | None:
        """A peer domain authenticated on an inbound stream: None to admit, else why not."""

    async def inbound(self, stanza: Element, from_: Jid, to: Jid, info: S2SStreamInfo) -> bool:
        """True to route the stanza on; False when the gate handled (refused) it."""

    def edge_address(self, domain: str) -> tuple[str, int] | None: ...

    def rules(self, domain: str) -> PeerRules: ...


class OpenPolicy:
    """Federation with no partner table: every authenticated peer, every stanza."""

    def __init__(self, settings: S2SSettings) -> None:
        self.settings = settings

    def admit(self, info: S2SStreamInfo, domain: str) -> str | None:
        return None

    async def inbound(self, stanza: Element, from_: Jid, to: Jid, info: S2SStreamInfo) -> bool:
        return True

    def edge_address(self, domain: str) -> tuple[str, int] | None:
        return self.settings.edge_addresses.get(domain)

    def rules(self, domain: str) -> PeerRules:
        return PeerRules(tls_required=self.settings.require_tls, dialback=self.settings.dialback)
