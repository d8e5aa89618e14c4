"""Test helpers: python-binance pointed at a simulated exchange on loopback.

python-binance has no base-URL option, so the client's URL attributes are overridden the way
a user would for any Binance-compatible endpoint: ``API_URL`` for REST, ``STREAM_URL`` of the
socket manager for market streams, and a ``WebsocketAPI`` at ``/ws-api/v3`` for the
user-data stream (python-binance >= 1.0.30 subscribes to it over the WebSocket API).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import BinanceAPIException
from binance.ws.websocket_api import WebsocketAPI

from svc.app import Service
from svc.errors import ExchangeError, exchange_error
from svc.model import Candle, Event, NewOrder
from svc.sim.server import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimExchange
from svc.tracing import Traced

RESTING_LIMIT_ORDER = {
    "symbol": "BTCUSDT",
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "0.001",
    "price": "30000",
}
"""python-binance order parameters: a buy far below the simulated market, so it rests."""


@asynccontextmanager
async def binance_client(
    sim: SimExchange,
    *,
    api_key: str = DEFAULT_API_KEY,
    api_secret: str = DEFAULT_API_SECRET,
    ping: bool = True,
) -> AsyncIterator[tuple[AsyncClient, BinanceSocketManager]]:
    client = AsyncClient(api_key, api_secret)
    client.API_URL = f"{sim.http_url}/api"
    client.ws_api = WebsocketAPI(url=f"{sim.ws_url}/ws-api/v3")
    try:
        if ping:
            await client.ping()
        manager = BinanceSocketManager(client)
        manager.STREAM_URL = f"{sim.ws_url}/"
        yield client, manager
    finally:
        await client.close_connection()


def as_svc_error(error: BinanceAPIException) -> ExchangeError:
    """python-binance's exception -> the svc exception tree (what svc's client side does)."""
    return exchange_error(error.code, error.message, http_status=error.status_code)


async def recv(socket: Any, *, within: float = 10.0) -> Any:
    """The next message of a python-binance socket, failing after ``within`` seconds."""
    return await asyncio.wait_for(socket.recv(), within)


def market_order(
    client_order_id: str, *, symbol: str = "BTCUSDT", quantity: str = "0.001"
) -> NewOrder:
    """A BUY market order command with the given client order id."""
    return NewOrder(
        client_order_id=client_order_id,
        symbol=symbol,
        side="BUY",
        order_type="MARKET",
        quantity=Decimal(quantity),
        price=Decimal(0),
        time_in_force="",
        strategy="test",
        ts_init=0,
    )


class RecordingService(Service):
    """Remembers every closed kline that reached the strategies."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.closed: dict[tuple[str, str], list[int]] = {}

    async def _on_market(self, item: Event | Traced) -> None:
        event = item.item if isinstance(item, Traced) else item  # sampled ticks come wrapped
        if isinstance(event, Candle) and event.closed:
            self.closed.setdefault((event.symbol, event.interval), []).append(event.open_time)
        await super()._on_market(item)
