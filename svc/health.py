"""The health server: Kubernetes probes and the Prometheus scrape endpoint on one small port.

Routes:

* ``GET /livez``  - 200 ``ok`` while ``live()`` is true, else 503: restart the pod;
* ``GET /readyz`` - 200 or 503 with ``{"ready": bool, "checks": {"feed_connected": true, ...}}``:
  take the pod out of the Service while a dependency is down;
* ``GET /metrics`` - 200 with the bytes of ``metrics()``; 404 when no ``metrics`` is given.

The server knows nothing about what is checked or how metrics are produced: the composition
root passes three callables. ``live`` and ``ready`` run on the event loop and must be cheap
reads of state; ``metrics`` collects (it may take milliseconds and hold locks), so it runs
in a worker thread. A callable that raises gives a 500 with a fixed short body (never the
exception text, which might carry configuration) and one log record; no access log is kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Final

from aiohttp import hdrs, web

logger = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_SERVER_HEADER: Final = "svc"  # instead of aiohttp's "Python/x aiohttp/y" banner

LiveCheck = Callable[[], bool]
ReadyCheck = Callable[[], tuple[bool, dict[str, bool]]]
MetricsSource = Callable[[], bytes]


class HealthServer:
    """``/livez``, ``/readyz`` and ``/metrics`` over aiohttp; ``start()``/``stop()``.

    ``port=0`` binds a free port; ``port`` reports the bound one after ``start()``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        live: LiveCheck,
        ready: ReadyCheck,
        metrics: MetricsSource | None = None,
        metrics_content_type: str = PROMETHEUS_CONTENT_TYPE,
    ) -> None:
        self._host = host
        self._port = port
        self._live = live
        self._ready = ready
        self._metrics = metrics
        self._metrics_content_type = metrics_content_type
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The configured port before ``start()``, the bound port after it."""
        return self._port

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("health server already started")
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        if self._metrics is not None:
            app.router.add_get("/metrics", self._metrics_handler)
        app.on_response_prepare.append(_set_server_header)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        for address in runner.addresses:  # (host, port[, ...]) per listening socket
            self._port = int(address[1])
            break
        logger.info("health server listening on %s:%d", self._host, self._port)

    async def stop(self) -> None:
        """Close the listening socket and open connections; safe to call more than once."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------- routes

    async def _livez(self, request: web.Request) -> web.Response:  # noqa: ARG002 - aiohttp API
        try:
            alive = self._live()
        except Exception:
            logger.exception("health server: the %s callback failed", "live")
            return _failed("live")
        if alive:
            return web.Response(text="ok")
        return web.Response(status=503, text="not live")

    async def _readyz(self, request: web.Request) -> web.Response:  # noqa: ARG002 - aiohttp API
        try:
            ready, checks = self._ready()
            body = json.dumps(
                {"ready": bool(ready), "checks": {str(k): bool(v) for k, v in checks.items()}}
            )
        except Exception:
            logger.exception("health server: the %s callback failed", "ready")
            return _failed("ready")
        return web.Response(
            status=200 if ready else 503, text=body, content_type="application/json"
        )

    async def _metrics_handler(self, request: web.Request) -> web.Response:  # noqa: ARG002
        metrics = self._metrics
        assert metrics is not None  # the route exists only when metrics is set
        try:
            body = await asyncio.to_thread(metrics)
        except Exception:
            logger.exception("health server: the %s callback failed", "metrics")
            return _failed("metrics")
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: self._metrics_content_type})


def _failed(name: str) -> web.Response:
    """A 500 that names the check but never echoes the exception (it may carry config)."""
    return web.Response(status=500, text=f"{name} check failed")


async def _set_server_header(request: web.Request, response: web.StreamResponse) -> None:  # noqa: ARG001 - aiohttp signal API
    response.headers[hdrs.SERVER] = _SERVER_HEADER
