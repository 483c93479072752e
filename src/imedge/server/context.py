"""What feature modules get when they are installed: the server's shared parts."""

from __future__ import annotations

from dataclasses import dataclass

from imedge.server.events import EventBus
from imedge.server.iq import IqDispatcher
from imedge.server.metrics import Metrics
from imedge.server.registry import SessionRegistry
from imedge.server.router import Router
from imedge.store.ports import Store


@dataclass(frozen=True, slots=True)
class FeatureLimits:
    offline_max_messages: int = 500


@dataclass(frozen=True, slots=True)
class ServerContext:
    bus: EventBus
    iq: IqDispatcher
    router: Router
    sessions: SessionRegistry
    store: Store
    metrics: Metrics
    domain: str
    hosts: frozenset[str]
    limits: FeatureLimits
    version: str
