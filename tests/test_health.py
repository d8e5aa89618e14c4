"""The health server over real loopback: probes, readiness flips, /metrics, failures, stop."""

from __future__ import annotations

import ast
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

import svc.health
from svc.health import PROMETHEUS_CONTENT_TYPE, HealthServer

SECRET = "hunter2-api-secret"


@dataclass
class State:
    """What the composition root would expose; the tests flip it."""

    live: bool = True
    checks: dict[str, bool] = field(
        default_factory=lambda: {"feed_connected": True, "exchange_info_loaded": True}
    )
    metrics_body: bytes = b"# HELP svc_up up\n# TYPE svc_up gauge\nsvc_up 1.0\n"
    metrics_threads: list[int] = field(default_factory=list)
    fail: str = ""

    def is_live(self) -> bool:
        if self.fail == "live":
            raise RuntimeError(SECRET)
        return self.live

    def readiness(self) -> tuple[bool, dict[str, bool]]:
        if self.fail == "ready":
            raise RuntimeError(SECRET)
        return all(self.checks.values()), dict(self.checks)

    def metrics(self) -> bytes:
        self.metrics_threads.append(threading.get_ident())
        if self.fail == "metrics":
            raise RuntimeError(SECRET)
        return self.metrics_body


@pytest.fixture
def state() -> State:
    return State()


@pytest.fixture
async def server(state: State) -> AsyncIterator[HealthServer]:
    health = HealthServer(port=0, live=state.is_live, ready=state.readiness, metrics=state.metrics)
    await health.start()
    yield health
    await health.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def url(server: HealthServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def test_port_zero_binds_a_free_port(server: HealthServer) -> None:
    assert server.port > 0
    assert server.running


async def test_livez(server: HealthServer, client: aiohttp.ClientSession, state: State) -> None:
    async with client.get(url(server, "/livez")) as response:
        assert response.status == 200
        assert await response.text() == "ok"
        assert "aiohttp" not in response.headers.get("Server", "")  # no version banner
    state.live = False
    async with client.get(url(server, "/livez")) as response:
        assert response.status == 503


async def test_readiness_flips_with_its_checks(
    server: HealthServer, client: aiohttp.ClientSession, state: State
) -> None:
    async with client.get(url(server, "/readyz")) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {
            "ready": True,
            "checks": {"feed_connected": True, "exchange_info_loaded": True},
        }
    state.checks["feed_connected"] = False
    async with client.get(url(server, "/readyz")) as response:
        assert response.status == 503
        assert await response.json() == {
            "ready": False,
            "checks": {"feed_connected": False, "exchange_info_loaded": True},
        }
    state.checks["feed_connected"] = True
    async with client.get(url(server, "/readyz")) as response:
        assert response.status == 200


async def test_metrics_are_collected_off_the_event_loop(
    server: HealthServer, client: aiohttp.ClientSession, state: State
) -> None:
    async with client.get(url(server, "/metrics")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == PROMETHEUS_CONTENT_TYPE
        assert await response.read() == state.metrics_body
    assert len(state.metrics_threads) == 1
    assert state.metrics_threads[0] != threading.get_ident()


async def test_custom_metrics_content_type(client: aiohttp.ClientSession, state: State) -> None:
    openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    async with (
        HealthServer(
            port=0,
            live=state.is_live,
            ready=state.readiness,
            metrics=state.metrics,
            metrics_content_type=openmetrics,
        ) as health,
        client.get(url(health, "/metrics")) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == openmetrics


async def test_metrics_route_is_absent_without_a_source(
    client: aiohttp.ClientSession, state: State
) -> None:
    async with HealthServer(port=0, live=state.is_live, ready=state.readiness) as health:
        async with client.get(url(health, "/metrics")) as response:
            assert response.status == 404
        async with client.get(url(health, "/livez")) as response:
            assert response.status == 200


ROUTES = {"live": "/livez", "ready": "/readyz", "metrics": "/metrics"}


@pytest.mark.parametrize("failing", ROUTES)
async def test_a_failing_callback_gives_500_without_its_message(
    server: HealthServer,
    client: aiohttp.ClientSession,
    state: State,
    caplog: pytest.LogCaptureFixture,
    failing: str,
) -> None:
    path = ROUTES[failing]
    state.fail = failing
    with caplog.at_level(logging.ERROR, logger="svc.health"):
        async with client.get(url(server, path)) as response:
            assert response.status == 500
            body = await response.text()
    assert body == f"{failing} check failed"
    assert SECRET not in body
    (record,) = [r for r in caplog.records if r.name == "svc.health"]
    assert record.args == (failing,)  # %-style arguments, formatted only if emitted
    assert record.exc_info is not None
    state.fail = ""
    async with client.get(url(server, path)) as response:
        assert response.status == 200  # the server keeps serving


async def test_no_access_log(
    server: HealthServer, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            async with client.get(url(server, "/livez")) as response:
                assert response.status == 200
    assert not [r for r in caplog.records if r.name.startswith("aiohttp.access")]


async def test_start_twice_is_refused(server: HealthServer) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        await server.start()


async def test_stop_frees_the_port(client: aiohttp.ClientSession, state: State) -> None:
    health = HealthServer(port=0, live=state.is_live, ready=state.readiness)
    await health.start()
    port = health.port
    async with client.get(url(health, "/livez")) as response:
        assert response.status == 200
    await health.stop()
    await health.stop()  # idempotent
    assert not health.running

    with pytest.raises(aiohttp.ClientConnectionError):
        async with client.get(url(health, "/livez")):
            pass

    again = HealthServer(port=port, live=state.is_live, ready=state.readiness)
    await again.start()
    try:
        assert again.port == port
        async with client.get(url(again, "/livez")) as response:
            assert response.status == 200
    finally:
        await again.stop()


def test_health_imports_no_metrics_sdk() -> None:
    # /metrics serves whatever bytes it is given; the SDK is wired in by the composition root.
    tree = ast.parse(Path(svc.health.__file__).read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {name.split(".")[0] for name in names} & {"opentelemetry", "prometheus_client"}
