"""Prometheus metrics, and the HTTP endpoints ``/metrics``, ``/healthz`` and ``/readyz`` (one port)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from relay import logs

log = logging.getLogger("relay.metrics")


class Metrics:
    """The bridge's metrics, in their own registry (several bridges can live in one test process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.events_read = Counter("relay_events_read", "Events returned by ZITADEL's Event API", registry=r)
        self.written = Counter("relay_events_written", "Entries written, per stream", ["stream"], registry=r)
        self.duplicates = Counter("relay_duplicates_skipped", "Events already in Redis (dedup key existed)", registry=r)
        self.dead_lettered = Counter(
            "relay_dead_lettered", "Events sent to the dead-letter stream, per reason", ["reason"], registry=r
        )
        self.look_back_repairs = Counter(
            "relay_look_back_repairs",
            "Events only the look-back re-scan found (the clock skew was too small)",
            registry=r,
        )
        self.poll_duration = Histogram(
            "relay_poll_duration_seconds",
            "One poll: read and write until caught up",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.freshness = Gauge(
            "relay_freshness_seconds", "Now minus the creation date of the newest event written", registry=r
        )
        self.leader = Gauge("relay_leader", "1 while this bridge holds the lease and writes", registry=r)
        self.errors = Counter("relay_errors", "Failed polls, per kind", ["kind"], registry=r)
        self.stalled = Gauge(
            "relay_dense_window_stalled", "1 while a window too dense to page through blocks the cursor", registry=r
        )
        self.write_refused = Counter(
            "relay_write_refused",
            "Writes Redis refused (oom, readonly, noreplicas, misconf): retried, the cursor held",
            ["reason"],
            registry=r,
        )
        self.write_stalled = Gauge(
            "relay_write_stalled", "1 from a write Redis refused until a poll writes again", registry=r
        )
        self.trimmed = Counter(
            "relay_trimmed_entries",
            "Entries the periodic trim dropped, per stream and reason (age: maxStreamAge, length: the cap)",
            ["stream", "reason"],
            registry=r,
        )


class Health:
    """What the probes answer: alive while the main loop turns; ready while Redis answered recently."""

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self.loop_beat = time.monotonic()
        self.redis_ok_at: float | None = None

    def beat(self) -> None:
        self.loop_beat = time.monotonic()

    def redis_ok(self) -> None:
        self.redis_ok_at = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.loop_beat < self.stale_after

    def ready(self) -> bool:
        return self.redis_ok_at is not None and time.monotonic() - self.redis_ok_at < self.stale_after


def serve(metrics: Metrics, health: Health, port: int, host: str) -> ThreadingHTTPServer:
    routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
        "/metrics": lambda: (200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST),
        "/healthz": lambda: (200, b"ok\n", "text/plain") if health.alive() else (503, b"stuck\n", "text/plain"),
        "/readyz": lambda: (200, b"ok\n", "text/plain") if health.ready() else (503, b"no redis\n", "text/plain"),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            status, body, content_type = route() if route else (404, b"not found\n", "text/plain")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = _Server((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="relay-http", daemon=True).start()
    return server


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Instead of socketserver's traceback on stderr (the logs are JSON lines): a client that left before its
        answer (a probe's timeout, a scrape cancelled) is nothing to report; anything else is one log line."""
        exc = sys.exc_info()[1]
        if exc is None or isinstance(exc, ConnectionError):
            return
        log.warning("metrics request failed", extra=logs.fields(error=logs.error_text(exc)))
