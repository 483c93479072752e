"""Prometheus metrics of the server, on a registry of its own (no module-level globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.c2s_sessions = Gauge(
            "imedge_c2s_sessions", "Bound client sessions", registry=self.registry
        )
        self.c2s_connections = Gauge(
            "imedge_c2s_connections", "Open client connections", registry=self.registry
        )
        self.stanzas_in = Counter(
            "imedge_stanzas_in", "Stanzas received", ["kind", "transport"], registry=self.registry
        )
        self.stanzas_out = Counter(
            "imedge_stanzas_out", "Stanzas sent", ["kind", "transport"], registry=self.registry
        )
        self.stream_errors = Counter(
            "imedge_stream_errors",
            "Stream errors sent",
            ["condition", "transport"],
            registry=self.registry,
        )
        self.auth = Counter(
            "imedge_auth",
            "Authentication attempts",
            ["mechanism", "result"],
            registry=self.registry,
        )
        self.offline_stored = Counter(
            "imedge_offline_stored", "Messages stored for offline users", registry=self.registry
        )
