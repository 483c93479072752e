"""RFC 6120 §13.7: the two ways a peer authenticates servers, and what every peer offers."""

from __future__ import annotations

import itertools
from enum import StrEnum
from pathlib import Path
from typing import Protocol

PEER_PASSWORD = "peer secret 42"


class S2SMode(StrEnum):
    """How a peer authenticates other servers."""

    # RFC 6120 §6.4 SASL EXTERNAL with a certificate validated against the test CA.
    CERTIFICATE = "certificate"
    # XEP-0220 Server Dialback only: the peer does not trust the test CA.
    DIALBACK = "dialback"


class Peer(Protocol):
    """What the fixtures and `tests.peers.clients` need from a running peer server."""

    @property
    def domain(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def c2s_port(self) -> int: ...

    @property
    def s2s_port(self) -> int: ...

    @property
    def ca_path(self) -> Path:
        """The CA a client trusts to log in (the test CA)."""
        ...

    @property
    def log_path(self) -> Path: ...

    def register(self, local: str, password: str = PEER_PASSWORD) -> str: ...

    async def aregister(self, local: str, password: str = PEER_PASSWORD) -> str: ...

    def log_text(self) -> str: ...


_counter = itertools.count(1)


def unique_local(prefix: str) -> str:
    """`prefix` plus a process-wide counter: a fresh account, so a fresh roster."""
    return f"{prefix}{next(_counter)}"
