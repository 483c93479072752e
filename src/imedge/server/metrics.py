"""Prometheus metrics of the server, on a registry of its own (no module-level globals)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class StreamFacts(Protocol):
    """What the s2s stream gauge reads of a live stream (`S2SStreamInfo`)."""

    @property
    def direction(self) -> object: ...
    @property
    def auth(self) -> object: ...
    @property
    def cert(self) -> object | None: ...


class LinkFacts(Protocol):
    """What the s2s link gauges read of an outbound link (`LinkStatus`)."""

    @property
    def state(self) -> str: ...
    @property
    def queued(self) -> int: ...


class S2SCollector(Collector):
    """Live server-to-server streams and links, read from the pool at scrape time: a
    gauge kept up to date by hand would drift whenever a stream ends on an unusual path."""

    def __init__(
        self,
        streams: Callable[[], Iterable[StreamFacts]],
        links: Callable[[], Iterable[LinkFacts]],
    ) -> None:
        self._streams = streams
        self._links = links

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        streams, links, queued = self._families()
        tally = Tally(
            (str(s.direction), str(s.auth), str(s.cert) if s.cert is not None else "none")
            for s in self._streams()
        )
        for labels, n in sorted(tally.items()):
            streams.add_metric(labels, n)
        states: Tally[str] = Tally()
        waiting = 0
        for link in self._links():
            states[link.state] += 1
            waiting += link.queued
        for state, n in sorted(states.items()):
            links.add_metric([state], n)
        queued.add_metric([], waiting)
        yield from (streams, links, queued)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "imedge_s2s_streams",
                "Live server-to-server streams (certificate: valid, or why it did not validate)",
                labels=["direction", "auth", "certificate"],
            ),
            GaugeMetricFamily(
                "imedge_s2s_links",
                "Outbound links per remote domain, by state",
                labels=["state"],
            ),
            GaugeMetricFamily(
                "imedge_s2s_queued", "Stanzas waiting for an outbound link to connect"
            ),
        )


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
        self.s2s_link_failures = Counter(
            "imedge_s2s_link_failures",
            "Outbound links that could not be established, by remote domain and failed step",
            ["remote", "step"],
            registry=self.registry,
        )
        self.s2s_dialback = Counter(
            "imedge_s2s_dialback_verifications",
            "Dialback keys received on inbound streams (XEP-0220), by outcome: valid, "
            "invalid, error (authoritative server not reachable), certificate (proven by "
            "the certificate, no round-trip)",
            ["result"],
            registry=self.registry,
        )
        self._s2s: S2SCollector | None = None

    def watch_s2s(
        self,
        streams: Callable[[], Iterable[StreamFacts]],
        links: Callable[[], Iterable[LinkFacts]],
    ) -> None:
        """Expose the live s2s streams and links (read at each scrape)."""
        if self._s2s is not None:
            self.registry.unregister(self._s2s)
        self._s2s = S2SCollector(streams, links)
        self.registry.register(self._s2s)
