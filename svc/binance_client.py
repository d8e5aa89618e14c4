"""``ExchangeClient`` over python-binance, and the websockets svc reads through it.

The only module that imports python-binance. It points the unmodified ``AsyncClient`` and
``BinanceSocketManager`` at real Binance, the spot testnet or the embedded simulator (by
overriding their URL attributes), maps every library error to the ``svc.errors`` tree,
keeps the clock offset to the exchange (and resynchronises once on -1021), and remembers
the request weight Binance reports in ``X-MBX-USED-WEIGHT-1M``.

Orders are placed, cancelled and queried over Binance's WebSocket API (``order.place``,
``order.cancel``, ``order.status``, ``openOrders.status`` through python-binance's ``ws_*``
methods, on the connection that also carries the user-data subscription) or over REST,
as ``order_transport`` says. Both answer with the same payloads and the same error codes;
a WebSocket request that gets no answer (connection lost, python-binance's 10 s timeout)
is ``ExchangeUnavailable``, exactly like a REST request that does: the order's state is then
unknown and the order manager asks for it by client order id.

Market sockets hand svc the raw frame text: their ``json_loads`` is replaced by the
identity so that ``svc.binance.streams.FrameDecoder`` decodes each frame exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Any, Literal

import aiohttp
import msgspec
from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import (
    BinanceAPIException,
    BinanceRequestException,
    BinanceWebsocketUnableToConnect,
)
from binance.ws.constants import WSListenerState
from binance.ws.websocket_api import WebsocketAPI

from svc.binance._codec import NS_PER_MS, convert_as
from svc.binance.rest import (
    Account,
    CancelResponse,
    ExchangeInfo,
    KlineRow,
    OrderResponse,
    OrderState,
    klines_to_candles,
    symbol_rules,
)
from svc.config import OrderTransport
from svc.errors import (
    ExchangeError,
    ExchangeUnavailable,
    RateLimited,
    TimestampOutsideWindow,
    exchange_error,
)
from svc.model import Balance, Candle, NewOrder, OrderUpdate, SymbolRules
from svc.throttle import RequestGate

log = logging.getLogger(__name__)

Venue = Literal["sim", "binance", "binance-testnet"]
RECV_WINDOW_MS = 5_000


_REST_ROUTES = {
    "order.place": "POST /api/v3/order",
    "order.cancel": "DELETE /api/v3/order",
    "order.status": "GET /api/v3/order",
    "openOrders.status": "GET /api/v3/openOrders",
}


def _identity(message: Any) -> Any:
    return message


class BinanceClient:
    """svc's ``ExchangeClient`` for Binance spot (see the module docstring)."""

    def __init__(
        self,
        *,
        client: AsyncClient,
        manager: BinanceSocketManager,
        order_transport: OrderTransport = "ws",
    ) -> None:
        self._client = client
        self.manager = manager
        self.order_transport: OrderTransport = order_transport
        self.used_weight = 0
        self.requests = 0
        self.resyncs = 0
        self.gate = RequestGate()

    @classmethod
    async def connect(
        cls,
        *,
        venue: Venue,
        api_key: str,
        api_secret: str,
        sim_url: str = "",
        order_transport: OrderTransport = "ws",
    ) -> BinanceClient:
        """Create the client, check the exchange answers, and measure the clock offset."""
        client = AsyncClient(api_key, api_secret, testnet=venue == "binance-testnet")
        client.REQUEST_RECVWINDOW = RECV_WINDOW_MS
        manager = BinanceSocketManager(client)
        if venue == "sim":
            if not sim_url.startswith("http://"):
                raise ValueError("the simulator's URL is http://host:port")
            ws_url = "ws://" + sim_url[len("http://") :]
            client.API_URL = f"{sim_url}/api"
            client.ws_api = WebsocketAPI(url=f"{ws_url}/ws-api/v3")
            manager.STREAM_URL = f"{ws_url}/"
        self = cls(client=client, manager=manager, order_transport=order_transport)
        ws_api = getattr(client, "ws_api", None)
        if ws_api is not None:
            # python-binance parses every WebSocket API answer with json_loads and then drops
            # its rateLimits; parse them here so used_weight covers orders over the WS API.
            ws_api.json_loads = self._read_ws_api_answer
        try:
            await self._call(client.ping)
            await self.sync_clock()
        except BaseException:
            await client.close_connection()
            raise
        return self

    async def close(self) -> None:
        ws_api = getattr(self._client, "ws_api", None)
        if ws_api is not None:
            await _stop_read_loop(ws_api)
        await self._client.close_connection()

    # ----------------------------------------------------------------- plumbing

    async def _call(self, method: Callable[..., Awaitable[Any]], **params: Any) -> Any:
        try:
            return await self._call_once(method, **params)
        except TimestampOutsideWindow:
            log.warning("timestamp outside recvWindow (-1021): resynchronising the clock")
            await self.sync_clock()
            self.resyncs += 1
            return await self._call_once(method, **params)

    async def _call_once(self, method: Callable[..., Awaitable[Any]], **params: Any) -> Any:
        self.gate.check()
        self.requests += 1
        # python-binance keeps the last REST response; a WS API call leaves it as it was, and
        # its weight was noted from the answer's rateLimits (``_read_ws_api_answer``).
        last_response = getattr(self._client, "response", None)
        try:
            result = await method(**params)
        except BinanceAPIException as error:
            self._note_weight(getattr(error, "response", None))
            mapped = _svc_error(error)
            if isinstance(mapped, RateLimited):
                self.gate.on_limited(mapped)
            raise mapped from None
        except (
            BinanceRequestException,
            BinanceWebsocketUnableToConnect,
            aiohttp.ClientError,
            TimeoutError,
            OSError,
        ) as error:
            raise ExchangeUnavailable(0, f"{type(error).__name__}: {error}") from None
        response = getattr(self._client, "response", None)
        if response is not last_response:
            self._note_weight(response)
        self.gate.on_success()
        return result

    def _note_weight(self, response: Any) -> None:
        headers = getattr(response, "headers", None)
        if headers is None:
            return
        used = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m")
        if used and str(used).isdigit():
            self.used_weight = int(used)

    def _read_ws_api_answer(self, text: str | bytes) -> Any:
        """python-binance's parse of a WebSocket API message, noting the request weight."""
        answer = msgspec.json.decode(text)
        if isinstance(answer, dict):
            limits = answer.get("rateLimits")
            if isinstance(limits, list):
                self._note_ws_weight(limits)
        return answer

    def _note_ws_weight(self, limits: list[Any]) -> None:
        for limit in limits:
            if (
                isinstance(limit, dict)
                and limit.get("rateLimitType") == "REQUEST_WEIGHT"
                and limit.get("interval") == "MINUTE"
                and limit.get("intervalNum") == 1
                and isinstance(limit.get("count"), int)
            ):
                self.used_weight = limit["count"]

    async def sync_clock(self) -> None:
        """Set python-binance's timestamp offset to the exchange's clock."""
        before = time.time()
        answer = await self._call_once(self._client.get_server_time)
        after = time.time()
        local_ms = int((before + after) / 2 * 1000)
        self._client.timestamp_offset = int(answer["serverTime"]) - local_ms

    async def _order_call(
        self,
        ws_method: Callable[..., Awaitable[Any]],
        rest_method: Callable[..., Awaitable[Any]],
        **params: Any,
    ) -> Any:
        """One order request over ``order_transport``: the WebSocket API or REST.

        python-binance adds ``recvWindow`` to REST requests itself, not to WebSocket ones.
        """
        if self.order_transport == "ws":
            return await self._call(ws_method, recvWindow=RECV_WINDOW_MS, **params)
        return await self._call(rest_method, **params)

    def _stream(self, ws_method: str) -> str:
        """Where a payload came from, for decode errors: the WS API method or the REST route."""
        if self.order_transport == "ws":
            return f"ws-api {ws_method}"
        return _REST_ROUTES[ws_method]

    # ----------------------------------------------------------------- ExchangeClient

    async def server_time_ms(self) -> int:
        answer = await self._call(self._client.get_server_time)
        return int(answer["serverTime"])

    async def symbol_rules(self, symbols: list[str]) -> dict[str, SymbolRules]:
        raw = await self._call(self._client.get_exchange_info)
        info = convert_as(ExchangeInfo, raw, stream="/api/v3/exchangeInfo")
        rules = {s.symbol: symbol_rules(s, index=i) for i, s in enumerate(info.symbols)}
        missing = [s for s in symbols if s not in rules]
        if missing:
            raise exchange_error(-1121, f"Invalid symbol: {', '.join(missing)}")
        return {s: rules[s] for s in symbols}

    async def new_order(self, order: NewOrder) -> OrderUpdate:
        params: dict[str, Any] = {
            "symbol": order.symbol,
            "side": order.side,
            "type": order.order_type,
            "quantity": format(order.quantity, "f"),
            "newClientOrderId": order.client_order_id,
            "newOrderRespType": "FULL",
        }
        if order.order_type == "LIMIT":
            params["price"] = format(order.price, "f")
            params["timeInForce"] = order.time_in_force or "GTC"
        client = self._client
        raw = await self._order_call(client.ws_create_order, client.create_order, **params)
        response = convert_as(OrderResponse, raw, stream=self._stream("order.place"))
        return order_response_to_update(response, order, ts_init=time.time_ns())

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderUpdate:
        client = self._client
        raw = await self._order_call(
            client.ws_cancel_order,
            client.cancel_order,
            symbol=symbol,
            origClientOrderId=client_order_id,
        )
        response = convert_as(CancelResponse, raw, stream=self._stream("order.cancel"))
        return _state_update(response, execution_type="CANCELED")

    async def query_order(self, symbol: str, client_order_id: str) -> OrderUpdate:
        client = self._client
        raw = await self._order_call(
            client.ws_get_order, client.get_order, symbol=symbol, origClientOrderId=client_order_id
        )
        state = convert_as(OrderState, raw, stream=self._stream("order.status"))
        update = _state_update(state, execution_type="QUERY")
        executed = update.filled_quantity
        if not executed:
            return update
        # Report the fills so far as one trade at their average price (no trade id, fees
        # unknown): the order manager books whatever its records have not accounted yet.
        return msgspec.structs.replace(
            update,
            execution_type="TRADE",
            last_quantity=executed,
            last_price=Decimal(state.cummulative_quote_qty) / executed,
        )

    async def open_orders(self, symbol: str) -> list[OrderUpdate]:
        client = self._client
        raw = await self._order_call(
            client.ws_get_open_orders, client.get_open_orders, symbol=symbol
        )
        states = convert_as(list[OrderState], raw, stream=self._stream("openOrders.status"))
        return [_state_update(state, execution_type="NEW") for state in states]

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1000,
    ) -> list[Candle]:
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        raw = await self._call(self._client.get_klines, **params)
        rows = convert_as(list[KlineRow], raw, stream="GET /api/v3/klines")
        now_ms = await self._exchange_now_ms()
        return klines_to_candles(
            rows, symbol=symbol, interval=interval, ts_init=time.time_ns(), now_ms=now_ms
        )

    async def _exchange_now_ms(self) -> int:
        return int(time.time() * 1000) + int(self._client.timestamp_offset)

    async def balances(self) -> dict[str, Balance]:
        raw = await self._call(self._client.get_account)
        account = convert_as(Account, raw, stream="GET /api/v3/account")
        return {
            b.asset: Balance(b.asset, Decimal(b.free), Decimal(b.locked)) for b in account.balances
        }

    # ----------------------------------------------------------------- websockets

    def market_socket(self, streams: list[str]) -> AbstractAsyncContextManager[Any]:
        """A python-binance combined-stream socket whose ``recv()`` returns raw frame text."""
        socket = self.manager.multiplex_socket(streams)
        socket.json_loads = _identity
        return _closing_fast(socket)

    def user_socket(self) -> AbstractAsyncContextManager[Any]:
        """python-binance's user-data socket (WebSocket-API subscription); events as dicts."""
        return _closing_fast(self.manager.user_socket())


async def _stop_read_loop(socket: Any) -> None:
    """Make python-binance's read loop end now, not after its 10 s receive timeout.

    Its ``__aexit__`` first waits for the read loop to notice ``EXITING``, which happens only
    when ``ws.recv()`` returns; marking the socket as exiting and closing the connection
    first wakes it at once.
    """
    socket.ws_state = WSListenerState.EXITING
    connection = getattr(socket, "ws", None)
    if connection is not None:
        with contextlib.suppress(Exception):
            await connection.close()


@contextlib.asynccontextmanager
async def _closing_fast(socket: Any) -> AsyncIterator[Any]:
    async with socket:
        try:
            yield socket
        finally:
            await _stop_read_loop(socket)


def _svc_error(error: BinanceAPIException) -> ExchangeError:
    response = getattr(error, "response", None)
    retry_after = 0.0
    headers = getattr(response, "headers", None)
    if headers is not None:
        value = headers.get("Retry-After")
        if value and str(value).isdigit():
            retry_after = float(value)
    elif isinstance(response, dict):
        retry_after = _ws_retry_after(response)
    return exchange_error(
        int(error.code),
        str(error.message),
        http_status=int(error.status_code),
        retry_after=retry_after,
    )


def _ws_retry_after(answer: dict[str, Any]) -> float:
    """Seconds until a refused WebSocket API request may be retried (0: not said).

    Binance puts ``retryAfter`` (a time in ms) and ``serverTime`` in the error's ``data``.
    """
    error = answer.get("error")
    data = error.get("data") if isinstance(error, dict) else None
    if not isinstance(data, dict):
        return 0.0
    until, now = data.get("retryAfter"), data.get("serverTime")
    if not isinstance(until, int) or not isinstance(now, int):
        return 0.0
    return float(max(1, -(-(until - now) // 1000)))


def order_response_to_update(
    response: OrderResponse, order: NewOrder, *, ts_init: int
) -> OrderUpdate:
    """A RESULT/FULL new-order response -> the order's state as an ``OrderUpdate``.

    With fills, ``last_price`` is their volume-weighted average and ``commission`` their sum;
    ``trade_id`` is the last fill's (the order manager de-duplicates fills by cumulative
    quantity, so the user-data reports of the same fills change nothing).
    """
    fills = response.fills if isinstance(response.fills, list) else []
    filled = (
        Decimal(response.executed_qty) if isinstance(response.executed_qty, str) else Decimal(0)
    )
    quote = sum((Decimal(f.price) * Decimal(f.qty) for f in fills), Decimal(0))
    average = quote / filled if filled else Decimal(0)
    status = response.status if isinstance(response.status, str) else "NEW"
    return OrderUpdate(
        symbol=response.symbol,
        client_order_id=response.client_order_id,
        order_id=response.order_id,
        side=order.side,
        order_type=order.order_type,
        time_in_force=order.time_in_force,
        quantity=order.quantity,
        price=order.price,
        execution_type="TRADE" if filled else "NEW",
        status=status,
        reject_reason="NONE",
        last_quantity=filled,
        last_price=average,
        filled_quantity=filled,
        commission=sum((Decimal(f.commission) for f in fills), Decimal(0)),
        commission_asset=fills[0].commission_asset if fills else "",
        trade_id=fills[-1].trade_id if fills else -1,
        is_maker=False,
        ts_event=response.transact_time * NS_PER_MS,
        ts_init=ts_init,
    )


def _state_update(state: CancelResponse | OrderState, *, execution_type: str) -> OrderUpdate:
    """A cancel response or a queried order -> its state as an ``OrderUpdate`` (no new fill)."""
    if isinstance(state, CancelResponse):
        client_order_id, time_ms = state.orig_client_order_id, state.transact_time
    else:
        client_order_id, time_ms = state.client_order_id, state.update_time
    return OrderUpdate(
        symbol=state.symbol,
        client_order_id=client_order_id,
        order_id=state.order_id,
        side=state.side,
        order_type=state.type,
        time_in_force=state.time_in_force,
        quantity=Decimal(state.orig_qty),
        price=Decimal(state.price),
        execution_type=execution_type,
        status=state.status,
        reject_reason="NONE",
        last_quantity=Decimal(0),
        last_price=Decimal(0),
        filled_quantity=Decimal(state.executed_qty),
        commission=Decimal(0),
        commission_asset="",
        trade_id=-1,
        is_maker=False,
        ts_event=time_ms * NS_PER_MS,
        ts_init=time.time_ns(),
    )
