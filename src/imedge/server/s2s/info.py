"""What is known about one server-to-server stream, for policy, operators and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from imedge.policy import AuthMethod, CertStatus


class Direction(StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"


@dataclass(slots=True)
class S2SStreamInfo:
    id: str
    direction: Direction
    local: str
    remote: str | None
    peer: str
    started: float = field(default_factory=time.time)
    tls_version: str | None = None
    auth: AuthMethod = AuthMethod.NONE
    cert: CertStatus | None = None
    cert_detail: str | None = None
    authenticated: set[str] = field(default_factory=set)  # remote domains proven on this stream
    stanzas_in: int = 0
    stanzas_out: int = 0
    throttled: int = 0  # stanzas read late because the peer was over its rate
    closed: str | None = None  # why it ended

    @property
    def strong(self) -> bool:
        """FEDERATION.md §Verification: a certificate that validated, else weak (dialback)."""
        return self.cert is CertStatus.VALID

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "direction": str(self.direction),
            "local": self.local,
            "remote": self.remote,
            "peer": self.peer,
            "age_seconds": round(time.time() - self.started, 1),
            "tls_version": self.tls_version,
            "auth": str(self.auth),
            "certificate": str(self.cert) if self.cert else None,
            "certificate_detail": self.cert_detail,
            "authenticated_domains": sorted(self.authenticated),
            "stanzas_in": self.stanzas_in,
            "stanzas_out": self.stanzas_out,
            "throttled": self.throttled,
        }
