"""The health server over real HTTP on 127.0.0.1, on a port the OS picks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from services.common.health import MAX_CONCURRENT_REQUESTS, HealthServer
from services.common.metrics import new_registry


@dataclass
class Flags:
    """What the probes answer; the tests flip them while the server runs."""

    live: bool = True
    ready: bool = True
    raise_on_live: bool = False

    def is_live(self) -> bool:
        if self.raise_on_live:
            raise RuntimeError("probe exploded")
        return self.live

    def is_ready(self) -> bool:
        return self.ready


class _FailingCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        raise RuntimeError("collector exploded")


@pytest.fixture
def flags() -> Flags:
    return Flags()


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = new_registry(with_process_metrics=False)
    Counter("cdcflow_test_requests_total", "A counter for the test.", registry=registry).inc(3)
    return registry


@pytest.fixture
def server(flags: Flags, registry: CollectorRegistry) -> Iterator[HealthServer]:
    with HealthServer("127.0.0.1", 0, registry, flags.is_live, flags.is_ready) as server:
        yield server


@pytest.fixture
def client(server: HealthServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
        yield client


def test_port_zero_binds_a_free_port(server: HealthServer) -> None:
    assert server.running
    assert server.port > 0


def test_healthy_and_ready(client: httpx.Client) -> None:
    for path in ("/healthz", "/readyz", "/healthz?verbose=1"):
        response = client.get(path)
        assert (response.status_code, response.text) == (200, "ok"), path


def test_not_live_is_503(client: httpx.Client, flags: Flags) -> None:
    flags.live = False
    assert client.get("/healthz").status_code == 503
    assert client.get("/readyz").status_code == 200
    flags.live = True
    assert client.get("/healthz").status_code == 200


def test_not_ready_is_503(client: httpx.Client, flags: Flags) -> None:
    flags.ready = False
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_a_raising_probe_is_not_live_and_the_server_keeps_serving(client: httpx.Client, flags: Flags) -> None:
    flags.raise_on_live = True
    assert client.get("/healthz").status_code == 503
    assert client.get("/readyz").status_code == 200
    flags.raise_on_live = False
    assert client.get("/healthz").status_code == 200


def test_metrics_in_prometheus_text_format(client: httpx.Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE cdcflow_test_requests_total counter" in response.text
    assert "cdcflow_test_requests_total 3.0" in response.text


def test_metrics_in_openmetrics_when_asked(client: httpx.Client) -> None:
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_a_failing_collector_is_a_500_not_a_dead_server(client: httpx.Client, registry: CollectorRegistry) -> None:
    registry.register(_FailingCollector())
    assert client.get("/metrics").status_code == 500
    assert client.get("/healthz").status_code == 200


def test_unknown_path_is_404(client: httpx.Client) -> None:
    assert client.get("/").status_code == 404
    assert client.get("/metrics/extra").status_code == 404


def test_nothing_is_written_to_stderr(client: httpx.Client, flags: Flags, capfd: pytest.CaptureFixture[str]) -> None:
    flags.raise_on_live = True
    for path in ("/healthz", "/readyz", "/metrics", "/missing"):
        client.get(path)
    assert capfd.readouterr().err == ""


def test_stop_frees_the_port(flags: Flags, registry: CollectorRegistry) -> None:
    server = HealthServer("127.0.0.1", 0, registry, flags.is_live, flags.is_ready)
    server.start()
    port = server.port
    with httpx.Client(timeout=5) as client:
        assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        server.stop()
        assert not server.running
        with pytest.raises(httpx.ConnectError):
            client.get(f"http://127.0.0.1:{port}/healthz")
        with HealthServer("127.0.0.1", port, registry, flags.is_live, flags.is_ready) as again:
            assert again.port == port
            assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    server.stop()  # a second stop is harmless


def test_start_twice_is_an_error(server: HealthServer) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        server.start()


def test_a_taken_port_fails_start(flags: Flags, registry: CollectorRegistry) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = HealthServer("127.0.0.1", taken.getsockname()[1], registry, flags.is_live, flags.is_ready)
        with pytest.raises(OSError, match="in use"):
            server.start()
        assert not server.running


def test_idle_connections_cannot_take_a_thread_each(server: HealthServer, client: httpx.Client) -> None:
    """Clients that connect and never send a request are held for the handler's timeout; past the bound the
    server closes new connections at once instead of starting a thread for each, and serves again when
    the idle ones go."""
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONCURRENT_REQUESTS + 20)]
    try:
        deadline = time.monotonic() + 5
        while threading.active_count() < before + MAX_CONCURRENT_REQUESTS and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the connections past the bound have been accepted (and closed) by now
        assert threading.active_count() <= before + MAX_CONCURRENT_REQUESTS
        refused = idle[-1]
        refused.settimeout(5)
        assert refused.recv(1) == b""  # closed unanswered
    finally:
        for connection in idle:
            connection.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if client.get("/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    assert client.get("/healthz").status_code == 200
