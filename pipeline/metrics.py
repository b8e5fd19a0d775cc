"""Prometheus metrics of one pipeline, served at ``/metrics`` on the WebSocket port.

One registry per pipeline (not prometheus_client's global one), so that several
pipelines in one process (tests) do not mix. Counters and histograms are updated where
things happen; gauges of state (sessions, queues, workers) are read when scraped.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Seconds: a decode takes 0.1–1.5 s on tiny.en, a final arrives within about a second.
DECODE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("stt_sessions", "Client sessions (WebSocket connections) open", registry=r)
        self.queue_depth = Gauge("stt_queue_depth", "Jobs waiting for a worker", ["priority"], registry=r)
        self.in_flight = Gauge("stt_jobs_in_flight", "Jobs being decoded", registry=r)
        self.ready_workers = Gauge("stt_ready_workers", "Workers connected and alive", registry=r)
        self.jobs = Counter("stt_jobs", "Jobs answered, by kind and outcome", ["kind", "outcome"], registry=r)
        self.retries = Counter("stt_job_retries", "Jobs dispatched again after their worker died or hung", registry=r)
        self.hung = Counter("stt_hung_workers", "Workers that ran a job past its deadline", registry=r)
        self.decode_seconds = Histogram("stt_decode_seconds", "Time a worker spent on one job", ["kind"],
                                        buckets=DECODE_BUCKETS, registry=r)
        self.final_latency = Histogram(
            "stt_final_latency_seconds",
            "From the end of an utterance (its final job is made) to its final being sent",
            buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("stt_client_errors", "Error messages sent to clients, by code", ["code"], registry=r)
        self.refused = Counter("stt_refused_handshakes", "Handshakes refused, by reason", ["reason"], registry=r)
        self._refreshers: list[Callable[[], None]] = []

    def on_scrape(self, refresh: Callable[[], None]) -> None:
        """Run ``refresh`` before each scrape (to read gauges from live state)."""
        self._refreshers.append(refresh)

    def render(self) -> tuple[bytes, str]:
        for refresh in self._refreshers:
            refresh()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
