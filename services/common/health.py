"""Liveness, readiness and Prometheus metrics on one port, served from a daemon thread.

Kubernetes probes ``/healthz`` (restart the pod when the loop is stuck) and ``/readyz`` (route work only when
partitions are assigned and polled); Prometheus scrapes ``/metrics``. One small server for all three keeps a
pod to one port. It runs on a daemon thread so it can never keep a stopping service alive, and it writes no
access log to stderr: probes and scrapes hit it every few seconds, and stderr is not our log stream.

The probe callables run on the server's request threads, so they must be cheap and thread-safe, e.g. compare
the time of the last poll with a deadline. A probe that raises counts as failed; it never breaks the server.
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from services.common.logging import get_logger

__all__ = ["HealthServer", "Heartbeat", "Probe"]

Probe = Callable[[], bool]
"""A health check: True when healthy. Called on every request of its endpoint."""

_log = get_logger(__name__)

_TEXT = "text/plain; charset=utf-8"
# How often serve_forever looks at the shutdown flag: bounds how long stop() waits.
_POLL_INTERVAL_S = 0.2
_STOP_TIMEOUT_S = 5.0
# Requests served at once. Probes and scrapes need one or two; a flood of connections (or clients that never
# finish a request, each held for the handler's timeout) must not become a thread each.
MAX_CONCURRENT_REQUESTS = 8


class Heartbeat:
    """When a service last made progress, for a liveness probe that measures progress, not cycle ends.

    A service beats at every step it begins or ends (a cycle, a table, a warehouse job); liveness fails only
    when no step has begun or ended for longer than the slowest single step may take. A long BigQuery job
    or a GCS retry deadline is one step: a pod in the middle of it is alive.
    """

    def __init__(self) -> None:
        self._at = time.monotonic()

    def beat(self) -> None:
        self._at = time.monotonic()  # one float store: safe to read from the probe's thread

    def age_s(self) -> float:
        """Seconds since the last beat."""
        return time.monotonic() - self._at

    def alive_within(self, seconds: float) -> Probe:
        """A probe that passes while the last beat is younger than ``seconds``."""
        return lambda: self.age_s() < seconds


class _ProbeHTTPServer(ThreadingHTTPServer):
    """An HTTP server that carries what the handler needs: the registry and the two probes."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, live: Probe, ready: Probe) -> None:
        self.registry = registry
        self.live = live
        self.ready = ready
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_REQUESTS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per request while a slot is free; beyond that the connection is closed unanswered."""
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_bind(self) -> None:
        """Bind without ``HTTPServer.server_bind``'s reverse DNS lookup, which can stall in a cluster."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log through structlog; the default prints a traceback to stderr."""
        _log.warning("health_server_request_failed", client=str(client_address), exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Routes GET requests; HTTP/1.0, so every connection closes after its response."""

    server: _ProbeHTTPServer
    server_version = "cdcflow"
    sys_version = ""
    timeout = 10  # a client that never finishes its request cannot hold a thread forever

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._probe("live", self.server.live)
        elif path == "/readyz":
            self._probe("ready", self.server.ready)
        elif path == "/metrics":
            self._metrics()
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n")

    def _probe(self, name: str, check: Probe) -> None:
        if _passes(name, check):
            self._reply(HTTPStatus.OK, b"ok")
        else:
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, f"not {name}".encode())

    def _metrics(self) -> None:
        """Serve the registry in the format the scraper asks for (Prometheus text, or OpenMetrics)."""
        encode, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encode(self.server.registry)
        except Exception:
            _log.warning("metrics_collection_failed", exc_info=True)
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, b"metrics collection failed\n")
            return
        self._reply(HTTPStatus.OK, body, content_type)

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str = _TEXT) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Access and protocol-error lines go to structlog at debug level instead of stderr."""
        _log.debug("health_server_request", client=self.address_string(), line=format % args)


def _passes(name: str, check: Probe) -> bool:
    """Run a probe; an exception means "not healthy" and is logged, never raised into the server."""
    try:
        return bool(check())
    except Exception as exc:
        _log.warning("health_probe_raised", probe=name, error=repr(exc))
        return False


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on one port.

    ``port=0`` asks the OS for a free port; :attr:`port` tells which one after :meth:`start`. Bind to
    ``127.0.0.1`` in tests and ``0.0.0.0`` in a pod, where the kubelet and Prometheus come from outside.
    """

    def __init__(self, host: str, port: int, registry: CollectorRegistry, live: Probe, ready: Probe) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._live = live
        self._ready = ready
        self._server: _ProbeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port while running (the OS's choice when 0 was asked for), else the configured one."""
        if self._server is None:
            return self._port
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Bind and serve in the background; raises ``OSError`` when the port is taken."""
        if self._server is not None:
            raise RuntimeError("the health server is already running")
        server = _ProbeHTTPServer((self._host, self._port), self._registry, self._live, self._ready)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": _POLL_INTERVAL_S}, name="cdcflow-health", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        _log.info("health_server_started", host=self._host, port=self.port)

    def stop(self) -> None:
        """Stop serving and release the port. Safe to call twice or before :meth:`start`."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        thread.join(_STOP_TIMEOUT_S)
        _log.info("health_server_stopped", host=self._host)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
