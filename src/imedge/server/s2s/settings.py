"""What server-to-server streams need to know, built by the composition root from the config."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    # Asked once a peer domain has authenticated on an inbound stream: a refusal text
    # closes the stream with <policy-violation/> (the federation gate hooks in here).
    accept_peer: Callable[[S2SStreamInfo, str], str | None] | None = None
