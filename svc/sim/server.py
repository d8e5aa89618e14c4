"""The simulated Binance exchange: an aiohttp server on loopback speaking Binance's wire format.

``SimExchange`` owns the HTTP/websocket server, the market loop that drives the market
generator and the matching engine, the subscribers of every stream, the listen keys and
WebSocket-API subscriptions of the user-data stream, request weights and fault injection.
It is embeddable (``async with SimExchange(SimConfig(port=0)) as sim: sim.http_url``) and is
what ``svc sim`` runs.

Routes (as Binance serves them, on one port):

* websocket ``/ws/<stream>`` (bare frames), ``/stream?streams=a/b/c`` (combined frames),
  ``/ws/<listenKey>`` (user data), ``/ws-api/v3`` (WebSocket API: ``ping``, ``time``,
  ``userDataStream.subscribe.signature``, ``userDataStream.unsubscribe``, and ``order.place``,
  ``order.cancel``, ``order.status``, ``openOrders.status`` sharing the REST order handlers'
  implementation, faults, request weight and rate limits);
* REST ``/api/v3/ping|time|exchangeInfo|klines|ticker/bookTicker|order|openOrders|account|
  userDataStream``;
* admin ``/_sim/state``, ``/_sim/klines``, ``/_sim/faults`` (GET to read, POST JSON to set).

Streams: ``<symbol>@kline_<interval>``, ``<symbol>@aggTrade``, ``<symbol>@trade``,
``<symbol>@bookTicker``. ``rate`` is market ticks per second; each tick moves every symbol
once and sends one frame on each subscribed stream of that symbol.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import secrets
import string
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

from svc.binance._codec import encode
from svc.binance.rest import (
    Account,
    AccountBalance,
    CancelResponse,
    ListenKey,
    OrderResponse,
    OrderState,
    ServerTime,
    encode_error,
)
from svc.binance.streams import WireEvent, encode_combined, encode_event, encode_subscription_event
from svc.clock import SYSTEM_CLOCK, Clock
from svc.errors import ConfigError, ExchangeError, exchange_error
from svc.sim import frames
from svc.sim.engine import MatchingEngine, OrderEvent
from svc.sim.faults import Faults
from svc.sim.market import (
    INTERVALS_MS,
    KlineReplayMarket,
    SimBook,
    SimKline,
    SimTrade,
    SyntheticMarket,
)
from svc.sim.signing import (
    DEFAULT_RECV_WINDOW_MS,
    Credentials,
    check_api_key,
    sign,
    verify_signed,
)
from svc.sim.symbols import exchange_info, listing, rules_for

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "svc-sim-api-key"
DEFAULT_API_SECRET = "svc-sim-api-secret"  # noqa: S105  (documented default of a local simulator)
DEFAULT_BALANCES = {
    "USDT": Decimal(100_000),
    "BTC": Decimal(1),
    "ETH": Decimal(10),
    "BNB": Decimal(100),
}
MAX_REPLAY_GAP_S = 1.0
"""Longest pause between two replayed frames at the recorded pace (captures have gaps)."""
SUBSCRIBER_QUEUE = 10_000
"""Frames buffered per websocket before the simulator drops the client as too slow."""

WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/klines": 2,
    "/api/v3/ticker/bookTicker": 2,
    "/api/v3/order": 1,
    "/api/v3/openOrders": 6,
    "/api/v3/account": 20,
    "/api/v3/userDataStream": 2,
}
WS_API_WEIGHTS = {
    "order.place": 1,
    "order.cancel": 1,
    "order.status": 4,
    "openOrders.status": 6,
}
"""Request weight of the WebSocket API's order methods, as Binance documents them
(``openOrders.status`` without ``symbol``: 80). They share the REST requests' minute."""
WEIGHT_LIMIT_PER_MINUTE = 6000


@dataclass(frozen=True, slots=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port; ``SimExchange.port`` tells which."""
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    intervals: tuple[str, ...] = ("1m", "5m", "15m", "1h")
    market: str = "synthetic"
    """``synthetic`` (seeded geometric Brownian motion) or a Binance REST klines JSON file."""
    speed: float = 1.0
    """Market time per wall time: 60 closes a 1m kline every second."""
    rate: float = 10.0
    """Market ticks per second."""
    frames: Path | None = None
    """Replay this JSONL file of raw frames instead of the generated market's frames."""
    frames_pace: str = "rate"
    """``rate``: ``rate`` frames per second; ``recorded``: the capture's own pace (``E``)."""
    api_key: str = DEFAULT_API_KEY
    api_secret: str = DEFAULT_API_SECRET
    seed: int = 7
    balances: Mapping[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_BALANCES))

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ConfigError("symbols", "at least one symbol is required")
        for symbol in self.symbols:
            if symbol != symbol.upper() or not symbol.isalnum():
                raise ConfigError("symbols", f"{symbol!r} is not an upper-case symbol like BTCUSDT")
            listing(symbol)
        for interval in self.intervals:
            if interval not in INTERVALS_MS:
                raise ConfigError("intervals", f"{interval!r} is not one of {sorted(INTERVALS_MS)}")
        if not (self.speed > 0 and math.isfinite(self.speed)):
            raise ConfigError("speed", "expected a positive number")
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError("rate", "expected a positive number of ticks per second")
        if self.market != "synthetic" and not Path(self.market).is_file():
            raise ConfigError(
                "market", f"expected 'synthetic' or a klines JSON file; {self.market!r} is neither"
            )
        if self.frames_pace not in ("rate", "recorded"):
            raise ConfigError("frames_pace", "expected 'rate' or 'recorded'")
        if self.frames is not None and not self.frames.is_file():
            raise ConfigError("frames", f"{str(self.frames)!r} is not a file")
        if not self.api_key or not self.api_secret:
            raise ConfigError("api_key", "the API key and secret must not be empty")


@dataclass(frozen=True, slots=True)
class _Limit:
    """A refused request: HTTP 429 (rate-limited) or 418 (banned) until ``until_ms``."""

    status: int
    now_ms: int
    until_ms: int

    @property
    def message(self) -> str:
        if self.status == 418:
            return (
                f"Way too much request weight used; IP banned until {self.until_ms}. "
                "Please use WebSocket Streams for live updates to avoid bans."
            )
        return (
            f"Too much request weight used; current limit is {WEIGHT_LIMIT_PER_MINUTE} request "
            "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling "
            "the API."
        )


class _Subscriber:
    """One websocket connection and the frames waiting to be written to it."""

    __slots__ = ("combined", "queue", "streams", "subscription_id", "task", "ws")

    def __init__(self, ws: web.WebSocketResponse, *, streams: set[str], combined: bool) -> None:
        self.ws = ws
        self.streams = streams
        self.combined = combined
        self.subscription_id: int | None = None
        self.queue: asyncio.Queue[str] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.task: asyncio.Task[None] | None = None


class SimExchange:
    """A Binance-compatible exchange on loopback (see the module docstring)."""

    def __init__(self, config: SimConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.faults = Faults()
        self._clock = clock
        self._credentials = Credentials(config.api_key, config.api_secret)
        symbols = list(config.symbols)
        self._rules = rules_for(symbols)
        self.engine = MatchingEngine(rules=self._rules, balances=config.balances)
        self._start_wall_ms = clock.time_ns() // 1_000_000
        self._intervals = tuple(config.intervals)
        self.market = self._build_market()
        self._by_stream: dict[str, set[_Subscriber]] = defaultdict(set)
        self._replay_all: set[_Subscriber] = set()  # combined subscribers, in frames mode
        self._users: set[_Subscriber] = set()
        self._listen_keys: set[str] = set()
        self._next_subscription = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._port = 0
        self._weight_minute = 0
        self._weight_used = 0
        self._limited_until_ms = 0
        self._banned_until_ms = 0
        self._requests_while_limited = 0
        self.closed_klines: dict[tuple[str, str], deque[int]] = defaultdict(
            lambda: deque(maxlen=100_000)
        )
        """Open times (ms) of every closed kline the market produced, per (symbol, interval)."""
        self.stats: dict[str, int] = defaultdict(int)
        self.replay_done = asyncio.Event()
        self._replay_client = asyncio.Event()

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        return self._port

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self._port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self._port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await self._site.start()
        server = self._site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self._port = sockets[0].getsockname()[1] if sockets else self.config.port
        self._tasks.append(asyncio.create_task(self._run_market(), name="sim.market"))
        self._tasks.append(asyncio.create_task(self._run_disconnects(), name="sim.disconnects"))
        if self.config.frames is not None:
            self._tasks.append(
                asyncio.create_task(self._run_replay(self.config.frames), name="sim.replay")
            )
        log.info("simulated exchange listening on %s", self.http_url)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for subscriber in list(self._all_subscribers()):
            await self._drop(subscriber, code=1001, reason="server shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def set_faults(self, **changes: Any) -> None:
        """Change fault injection; raises ``ConfigError`` naming an unknown or bad field."""
        self.faults.update(changes)
        if changes.get("rate_limit_seconds"):
            self._limited_until_ms = self._now_ms() + int(self.faults.rate_limit_seconds * 1000)
            self._requests_while_limited = 0
        if "rate_limit_seconds" in changes and not changes["rate_limit_seconds"]:
            self._limited_until_ms = self._banned_until_ms = 0

    # ----------------------------------------------------------------- time and market

    def _now_ms(self) -> int:
        return self._clock.time_ns() // 1_000_000

    def server_time_ms(self) -> int:
        """The exchange's clock, including the injected skew."""
        return self._now_ms() + self.faults.clock_skew_ms

    def _market_ms(self) -> int:
        elapsed = self._now_ms() - self._start_wall_ms
        return self._start_wall_ms + int(elapsed * self.config.speed)

    def _build_market(self) -> SyntheticMarket | KlineReplayMarket:
        config = self.config
        if config.market == "synthetic":
            return SyntheticMarket(
                symbols={s: listing(s).start_price for s in config.symbols},
                rules=self._rules,
                seed=config.seed,
                start_ms=self._start_wall_ms,
                intervals=config.intervals,
            )
        rows = json.loads(Path(config.market).read_text())
        if not isinstance(rows, list) or len(rows) < 2:
            raise ConfigError("market", f"{config.market!r} is not a Binance klines JSON array")
        source_ms = int(rows[1][0]) - int(rows[0][0])
        source = next((name for name, ms in INTERVALS_MS.items() if ms == source_ms), None)
        if source is not None:
            self._intervals = tuple(dict.fromkeys((*config.intervals, source)))
        if source is None:
            raise ConfigError(
                "market",
                f"{config.market!r}: klines are {source_ms} ms apart, not a Binance interval",
            )
        return KlineReplayMarket(
            rows=rows,
            symbol=config.symbols[0],
            rules=self._rules,
            source_interval=source,
            start_ms=self._start_wall_ms,
            intervals=self._intervals,
        )

    async def _run_market(self) -> None:
        period = 1.0 / self.config.rate
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            now = loop.time()
            due = min(int((now - next_tick) / period) + 1, 1000)
            for _ in range(due):
                self._tick()
            next_tick += due * period
            if now - next_tick > 1.0:  # fell far behind (machine stalled): do not try to catch up
                next_tick = now
            await asyncio.sleep(max(0.0, next_tick - loop.time()))

    def _tick(self) -> None:
        now_ms = self._now_ms()
        records = self.market.step(time_ms=self._market_ms())
        send = not self.faults.silent and self.config.frames is None
        for record in records:
            if isinstance(record, SimBook):
                events = self.engine.set_book(
                    record.symbol,
                    bid=record.bid,
                    bid_qty=record.bid_qty,
                    ask=record.ask,
                    ask_qty=record.ask_qty,
                    time_ms=now_ms,
                )
                if events:
                    self._publish_order_events(events, now_ms)
                if send:
                    self._publish(
                        f"{record.symbol.lower()}@bookTicker", frames.book_ticker_event(record)
                    )
            elif isinstance(record, SimTrade):
                if send:
                    symbol = record.symbol.lower()
                    self._publish(
                        f"{symbol}@aggTrade", frames.agg_trade_event(record, event_time_ms=now_ms)
                    )
                    self._publish(
                        f"{symbol}@trade", frames.trade_event(record, event_time_ms=now_ms)
                    )
            elif isinstance(record, SimKline):
                if record.closed:
                    self.closed_klines[(record.symbol, record.interval)].append(record.open_time_ms)
                if send:
                    stream = f"{record.symbol.lower()}@kline_{record.interval}"
                    self._publish(stream, frames.kline_event(record, event_time_ms=now_ms))

    def _publish(self, stream: str, event: WireEvent) -> None:
        subscribers = self._by_stream.get(stream)
        if not subscribers:
            return
        bare: str | None = None
        combined: str | None = None
        for subscriber in list(subscribers):
            if subscriber.combined:
                if combined is None:
                    combined = encode_combined(stream, event).decode()
                self._enqueue(subscriber, combined)
            else:
                if bare is None:
                    bare = encode_event(event).decode()
                self._enqueue(subscriber, bare)

    def _enqueue(self, subscriber: _Subscriber, frame: str) -> None:
        try:
            subscriber.queue.put_nowait(frame)
            self.stats["frames_queued"] += 1
        except asyncio.QueueFull:
            # Binance disconnects clients that do not keep up; so does the simulator.
            self.stats["slow_consumers_dropped"] += 1
            asyncio.get_running_loop().create_task(
                self._drop(subscriber, code=1008, reason="slow consumer")
            )

    def _publish_order_events(
        self, events: list[OrderEvent], now_ms: int, *, cancel_id: str = ""
    ) -> None:
        if not self._users:
            return
        assets: set[str] = set()
        reports: list[WireEvent] = []
        for event in events:
            rules = self._rules[event.order.symbol]
            assets.update((rules.base_asset, rules.quote_asset))
            reports.append(frames.execution_report(event, cancel_client_order_id=cancel_id))
        position = frames.account_position(self.engine.balances(), assets=assets, time_ms=now_ms)
        for subscriber in list(self._users):
            for report in [*reports, position]:
                if subscriber.subscription_id is None:
                    self._enqueue(subscriber, encode_event(report).decode())
                else:
                    frame = encode_subscription_event(subscriber.subscription_id, report).decode()
                    self._enqueue(subscriber, frame)

    async def _run_disconnects(self) -> None:
        while True:
            every = self.faults.disconnect_every
            await asyncio.sleep(every if every > 0 else 0.25)
            if self.faults.disconnect_every > 0:
                self.stats["forced_disconnects"] += 1
                for subscriber in list(self._all_subscribers()):
                    await self._drop(subscriber, code=1001, reason="fault injection: disconnect")

    async def _run_replay(self, path: Path) -> None:
        """Send every line of ``path`` verbatim to every combined-stream client.

        A line is a raw frame, or an object whose ``raw`` field holds the frame as a string;
        a line that is not JSON is sent as it is (malformed input is part of a capture).
        Pace: ``rate`` frames per second scaled by ``speed``, or with ``frames_pace=
        "recorded"`` the gaps between the frames' event times (``E``) divided by ``speed``,
        each gap capped at ``MAX_REPLAY_GAP_S``.
        """
        period = 1.0 / (self.config.rate * self.config.speed)
        recorded = self.config.frames_pace == "recorded"
        previous_ms: int | None = None
        text = await asyncio.to_thread(path.read_text)
        for line in text.splitlines():
            if not line.strip():
                continue
            frame, event_ms = _replay_frame(line)
            await self._replay_client.wait()  # wait for a client, so that nothing is lost
            if recorded and event_ms is not None:
                if previous_ms is not None:
                    gap = (event_ms - previous_ms) / 1000 / self.config.speed
                    await asyncio.sleep(min(max(gap, 0.0), MAX_REPLAY_GAP_S))
                previous_ms = event_ms
            for subscriber in list(self._replay_all):
                self._enqueue(subscriber, frame)
            self.stats["frames_replayed"] += 1
            if not recorded:
                await asyncio.sleep(period)
        self.replay_done.set()

    # ----------------------------------------------------------------- websockets

    def _all_subscribers(self) -> set[_Subscriber]:
        every: set[_Subscriber] = set(self._users) | self._replay_all
        for subscribers in self._by_stream.values():
            every |= subscribers
        return every

    async def _serve(
        self,
        request: web.Request,
        subscriber_streams: set[str],
        *,
        combined: bool,
        user: bool = False,
    ) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0, autoping=True)
        await ws.prepare(request)
        subscriber = _Subscriber(ws, streams=subscriber_streams, combined=combined)
        self._attach(subscriber, user=user)
        subscriber.task = asyncio.create_task(self._write(subscriber), name="sim.ws.writer")
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await self._on_client_message(subscriber, message.data)
        finally:
            await self._drop(subscriber, code=1000, reason="closed")
        return ws

    def _attach(self, subscriber: _Subscriber, *, user: bool) -> None:
        self.stats["connections"] += 1
        if user:
            self._users.add(subscriber)
        for stream in subscriber.streams:
            self._by_stream[stream].add(subscriber)
        if subscriber.combined and self.config.frames is not None:
            self._replay_all.add(subscriber)
            self._replay_client.set()

    async def _write(self, subscriber: _Subscriber) -> None:
        ws = subscriber.ws
        while not ws.closed:
            frame = await subscriber.queue.get()
            if self.faults.latency_ms:
                await asyncio.sleep(self.faults.latency_ms / 1000)
            try:
                await ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return
            self.stats["frames_sent"] += 1

    async def _drop(self, subscriber: _Subscriber, *, code: int, reason: str) -> None:
        self._users.discard(subscriber)
        self._replay_all.discard(subscriber)
        if not self._replay_all:
            self._replay_client.clear()
        for stream in subscriber.streams:
            self._by_stream[stream].discard(subscriber)
        task = subscriber.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if not subscriber.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await subscriber.ws.close(code=code, message=reason.encode())

    async def _on_client_message(self, subscriber: _Subscriber, text: str) -> None:
        """Live SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS, as Binance's stream endpoints accept."""
        try:
            request = json.loads(text)
            method, ident = request["method"], request.get("id")
            params = request.get("params", [])
        except (ValueError, KeyError, TypeError):
            await subscriber.ws.send_str(json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}}))
            return
        if method == "SUBSCRIBE":
            for stream in params:
                subscriber.streams.add(stream)
                self._by_stream[stream].add(subscriber)
            result: Any = None
        elif method == "UNSUBSCRIBE":
            for stream in params:
                subscriber.streams.discard(stream)
                self._by_stream[stream].discard(subscriber)
            result = None
        elif method == "LIST_SUBSCRIPTIONS":
            result = sorted(subscriber.streams)
        else:
            await subscriber.ws.send_str(
                json.dumps(
                    {
                        "error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"},
                        "id": ident,
                    }
                )
            )
            return
        await subscriber.ws.send_str(json.dumps({"result": result, "id": ident}))

    async def _ws_single(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name in self._listen_keys:
            return await self._serve(request, set(), combined=False, user=True)
        if "@" not in name:
            raise exchange_error(-1125, "This listenKey does not exist.")
        return await self._serve(request, {name}, combined=False)

    async def _ws_combined(self, request: web.Request) -> web.StreamResponse:
        streams = {s for s in request.query.get("streams", "").split("/") if s}
        return await self._serve(request, streams, combined=True)

    async def _ws_api(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        subscriber = _Subscriber(ws, streams=set(), combined=False)
        subscriber.task = asyncio.create_task(self._write(subscriber), name="sim.ws_api.writer")
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    # One request at a time: a connection's answers come in its requests' order.
                    # An order's user-data events follow its answer (Binance does not promise
                    # either order; answer first is what a client waiting for an ack wants).
                    later: list[Callable[[], None]] = []
                    answer = await self._ws_api_answer(subscriber, message.data, later)
                    self._enqueue(subscriber, answer)
                    for publish in later:
                        publish()
        finally:
            await self._drop(subscriber, code=1000, reason="closed")
        return ws

    async def _ws_api_answer(
        self, subscriber: _Subscriber, text: str, later: list[Callable[[], None]]
    ) -> str:
        request = _ws_api_request(text)
        if request is None:
            malformed = exchange_error(-1100, "Illegal characters found in a parameter.")
            return _ws_api_error(None, malformed)
        ident, method, params = request
        if method in WS_API_WEIGHTS:
            return await self._ws_api_order(ident, method, params, later)
        if method == "ping":
            return _ws_api_result(ident, {})
        if method == "time":
            return _ws_api_result(ident, {"serverTime": self.server_time_ms()})
        if method == "userDataStream.subscribe.signature":
            error = self._verify_ws_api_signature(params)
            if error is not None:
                return _ws_api_error(ident, error)
            if subscriber.subscription_id is None:
                subscriber.subscription_id = self._next_subscription
                self._next_subscription += 1
                self._users.add(subscriber)
            return _ws_api_result(ident, {"subscriptionId": subscriber.subscription_id})
        if method == "userDataStream.unsubscribe":
            self._users.discard(subscriber)
            subscriber.subscription_id = None
            return _ws_api_result(ident, {})
        return _ws_api_error(ident, exchange_error(-1100, f"Unknown method {method!r}."))

    async def _ws_api_order(
        self, ident: Any, method: str, params: dict[str, Any], later: list[Callable[[], None]]
    ) -> str:
        """``order.place|cancel|status`` and ``openOrders.status``: the REST handlers' logic."""
        limit = self._rate_limited()
        if limit is not None:
            skew = self.faults.clock_skew_ms
            body = {
                "code": -1003,
                "msg": limit.message,
                "data": {"serverTime": limit.now_ms + skew, "retryAfter": limit.until_ms + skew},
            }
            used = self._used_weight(limit.now_ms)
            return _ws_api_frame(ident, status=limit.status, error=body, used_weight=used)
        weight = WS_API_WEIGHTS[method]
        if method == "openOrders.status" and "symbol" not in params:
            weight = 80
        used = self._add_weight(weight)
        try:
            error = self._verify_ws_api_signature(params)
            if error is not None:
                self.stats[f"rejected_{error.code}"] += 1
                raise error
            fields = _ws_api_params(params)
            result: Any
            if method == "order.place":
                result = await self._place(fields, later=later)
            elif method == "order.cancel":
                result = self._cancel(fields)
            elif method == "order.status":
                result = self._order_status(fields)
            else:
                result = self._open_order_states(fields)
        except ExchangeError as error:
            return _ws_api_error(ident, error, used_weight=used)
        return _ws_api_result(ident, result, used_weight=used)

    def _verify_ws_api_signature(self, params: dict[str, Any]) -> ExchangeError | None:
        error = check_api_key(self._credentials, str(params.get("apiKey", "")))
        if error is not None:
            return error
        signature = str(params.pop("signature", ""))
        payload = urlencode(sorted(params.items()))
        timestamp = params.get("timestamp")
        if not isinstance(timestamp, int):
            return _mandatory("timestamp")
        recv_window = params.get("recvWindow", DEFAULT_RECV_WINDOW_MS)
        if not isinstance(recv_window, int | float) or isinstance(recv_window, bool):
            return _mandatory("recvWindow")
        if abs(self.server_time_ms() - timestamp) > recv_window:
            return exchange_error(-1021, "Timestamp for this request is outside of the recvWindow.")
        if not secrets.compare_digest(sign(self._credentials.api_secret, payload), signature):
            return exchange_error(-1022, "Signature for this request is not valid.")
        return None

    # ----------------------------------------------------------------- REST plumbing

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            try:
                return await handler(request)
            except ConfigError as error:
                return web.json_response({"error": str(error), "field": error.field}, status=400)
        if self.faults.latency_ms and not request.path.startswith(("/ws", "/stream")):
            await asyncio.sleep(self.faults.latency_ms / 1000)
        # The WebSocket API's handshake is never refused: its requests are limited one by one,
        # answering in-band with ``retryAfter`` that a client can act on (see _ws_api_order).
        limit = None if request.path == "/ws-api/v3" else self._rate_limited()
        if limit is not None:
            return self._limit_response(limit)
        used = self._add_weight(_rest_weight(request))
        try:
            response = await handler(request)
        except ExchangeError as error:
            status = error.http_status or 400
            response = web.Response(
                body=encode_error(error.code, error.msg),
                status=status,
                content_type="application/json",
            )
        except web.HTTPException:
            raise
        if not response.prepared:
            response.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        return response

    def _add_weight(self, weight: int) -> int:
        """Count a request's weight in this minute; returns the minute's used weight."""
        minute = self._now_ms() // 60_000
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0
        self._weight_used += weight
        return self._weight_used + self.faults.extra_weight

    def _used_weight(self, now_ms: int) -> int:
        """This minute's request weight, including other clients' (``extra_weight``)."""
        used = self._weight_used if now_ms // 60_000 == self._weight_minute else 0
        return used + self.faults.extra_weight

    def _rate_limited(self) -> _Limit | None:
        """Whether the next request (REST or WebSocket API) is refused, and until when."""
        now = self._now_ms()
        limit: _Limit | None = None
        if now < self._banned_until_ms:
            limit = _Limit(418, now, self._banned_until_ms)
        elif now < self._limited_until_ms:
            self._requests_while_limited += 1
            if self._requests_while_limited > self.faults.ban_after:
                self._banned_until_ms = now + int(self.faults.ban_seconds * 1000)
                limit = _Limit(418, now, self._banned_until_ms)
            else:
                limit = _Limit(429, now, self._limited_until_ms)
        elif self._used_weight(now) >= WEIGHT_LIMIT_PER_MINUTE:
            limit = _Limit(429, now, (now // 60_000 + 1) * 60_000)
        if limit is not None:
            self.stats[f"http_{limit.status}"] += 1
        return limit

    def _limit_response(self, limit: _Limit) -> web.Response:
        response = web.Response(
            body=encode_error(-1003, limit.message),
            status=limit.status,
            content_type="application/json",
        )
        seconds = math.ceil((limit.until_ms - limit.now_ms) / 1000)
        response.headers["Retry-After"] = str(max(1, seconds))
        # Binance reports the used weight on refused requests too; clients track it from there.
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(self._used_weight(limit.now_ms))
        return response

    async def _signed(self, request: web.Request) -> dict[str, str]:
        body = await request.text() if request.can_read_body else ""
        params, error = verify_signed(
            self._credentials,
            api_key_header=request.headers.get("X-MBX-APIKEY"),
            query=request.query_string,
            body=body,
            server_time_ms=self.server_time_ms(),
        )
        if error is not None:
            self.stats[f"rejected_{error.code}"] += 1
            raise error
        return params

    async def _api_key_only(self, request: web.Request) -> dict[str, str]:
        error = check_api_key(self._credentials, request.headers.get("X-MBX-APIKEY"))
        if error is not None:
            raise error
        body = await request.post() if request.can_read_body else {}
        return {**request.query, **{k: str(v) for k, v in body.items()}}

    @staticmethod
    def _json(payload: Any) -> web.Response:
        return web.Response(body=encode(payload), content_type="application/json")

    # ----------------------------------------------------------------- REST handlers

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/ws/{name}", self._ws_single)
        app.router.add_get("/stream", self._ws_combined)
        app.router.add_get("/ws-api/v3", self._ws_api)
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/klines", self._klines)
        app.router.add_get("/api/v3/ticker/bookTicker", self._book_ticker)
        app.router.add_post("/api/v3/order", self._new_order)
        app.router.add_delete("/api/v3/order", self._cancel_order)
        app.router.add_get("/api/v3/order", self._query_order)
        app.router.add_get("/api/v3/openOrders", self._open_orders)
        app.router.add_delete("/api/v3/openOrders", self._cancel_open_orders)
        app.router.add_get("/api/v3/account", self._account)
        app.router.add_post("/api/v3/userDataStream", self._new_listen_key)
        app.router.add_put("/api/v3/userDataStream", self._keep_listen_key)
        app.router.add_delete("/api/v3/userDataStream", self._close_listen_key)
        app.router.add_get("/_sim/state", self._admin_state)
        app.router.add_get("/_sim/klines", self._admin_klines)
        app.router.add_get("/_sim/faults", self._admin_faults)
        app.router.add_post("/_sim/faults", self._admin_set_faults)

    async def _ping(self, _request: web.Request) -> web.Response:
        return self._json({})

    async def _time(self, _request: web.Request) -> web.Response:
        return self._json(ServerTime(server_time=self.server_time_ms()))

    def _symbol(self, params: Mapping[str, str]) -> str:
        symbol = params.get("symbol")
        if not symbol:
            raise _mandatory("symbol")
        if symbol not in self._rules:
            raise exchange_error(-1121, "Invalid symbol.")
        return symbol

    async def _exchange_info(self, request: web.Request) -> web.Response:
        symbols = list(self.config.symbols)
        if "symbol" in request.query:
            symbols = [self._symbol(request.query)]
        elif "symbols" in request.query:
            try:
                wanted = json.loads(request.query["symbols"])
            except ValueError:
                raise exchange_error(
                    -1100, "Illegal characters found in parameter 'symbols'."
                ) from None
            for symbol in wanted:
                self._symbol({"symbol": symbol})
            symbols = list(wanted)
        return self._json(exchange_info(symbols, server_time_ms=self.server_time_ms()))

    async def _klines(self, request: web.Request) -> web.Response:
        query = request.query
        symbol = self._symbol(query)
        interval = query.get("interval", "")
        if not interval:
            raise _mandatory("interval")
        if interval not in INTERVALS_MS or interval not in self._intervals:
            raise exchange_error(-1120, "Invalid interval.")
        limit = _int(query, "limit", None) or 500
        if not 1 <= limit <= 1000:
            raise exchange_error(
                -1100, "Illegal characters found in parameter 'limit'; legal range is '1000'."
            )
        start = _int(query, "startTime", None)
        end = _int(query, "endTime", None)
        rows = self.market.history(
            symbol=symbol, interval=interval, start_ms=start, end_ms=end, limit=limit
        )
        now = self._market_ms()
        return self._json(
            [
                [
                    k.open_time_ms,
                    frames.fixed(k.open),
                    frames.fixed(k.high),
                    frames.fixed(k.low),
                    frames.fixed(k.close),
                    frames.fixed(k.volume),
                    k.close_time_ms,
                    frames.fixed(k.quote_volume),
                    k.trades,
                    frames.fixed(k.taker_buy_volume),
                    frames.fixed(k.taker_buy_quote_volume),
                    "0",
                ]
                for k in rows
                if k.open_time_ms <= now
            ]
        )

    async def _book_ticker(self, request: web.Request) -> web.Response:
        symbol = self._symbol(request.query)
        book = self.market.book(symbol)
        return self._json(
            {
                "symbol": symbol,
                "bidPrice": frames.fixed(book.bid),
                "bidQty": frames.fixed(book.bid_qty),
                "askPrice": frames.fixed(book.ask),
                "askQty": frames.fixed(book.ask_qty),
            }
        )

    async def _new_order(self, request: web.Request) -> web.Response:
        return self._json(await self._place(await self._signed(request)))

    async def _cancel_order(self, request: web.Request) -> web.Response:
        return self._json(self._cancel(await self._signed(request)))

    async def _query_order(self, request: web.Request) -> web.Response:
        return self._json(self._order_status(await self._signed(request)))

    async def _open_orders(self, request: web.Request) -> web.Response:
        return self._json(self._open_order_states(await self._signed(request)))

    async def _cancel_open_orders(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        symbol = self._symbol(params)
        now_ms = self._now_ms()
        events = self.engine.cancel_all(symbol=symbol, time_ms=now_ms)
        if not events:
            raise exchange_error(-2011, "Unknown order sent.")
        self._publish_order_events(events, now_ms)
        return self._json(
            [
                frames.cancel_response(
                    e, cancel_client_order_id=_random_client_id(), transact_time_ms=now_ms
                )
                for e in events
            ]
        )

    async def _account(self, request: web.Request) -> web.Response:
        await self._signed(request)
        balances = [
            AccountBalance(asset=a, free=frames.fixed(free), locked=frames.fixed(locked))
            for a, (free, locked) in sorted(self.engine.balances().items())
        ]
        return self._json(Account(balances=balances, update_time=self._now_ms()))

    async def _new_listen_key(self, request: web.Request) -> web.Response:
        await self._api_key_only(request)
        key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(60))
        self._listen_keys.add(key)
        return self._json(ListenKey(listen_key=key))

    async def _keep_listen_key(self, request: web.Request) -> web.Response:
        params = await self._api_key_only(request)
        if params.get("listenKey") not in self._listen_keys:
            raise exchange_error(-1125, "This listenKey does not exist.")
        return self._json({})

    async def _close_listen_key(self, request: web.Request) -> web.Response:
        params = await self._api_key_only(request)
        self._listen_keys.discard(params.get("listenKey", ""))
        return self._json({})

    # ----------------------------------------------------------------- orders (REST and WS API)

    async def _place(
        self, params: Mapping[str, str], *, later: list[Callable[[], None]] | None = None
    ) -> OrderResponse:
        """Place an order; its user-data events are published now, or appended to ``later``."""
        symbol = self._symbol(params)
        for name in ("side", "type"):
            if not params.get(name):
                raise _mandatory(name)
        if "quoteOrderQty" in params:
            raise exchange_error(
                -2010, "Quote order qty market orders are not support for this symbol."
            )
        if self.faults.order_latency_ms:
            await asyncio.sleep(self.faults.order_latency_ms / 1000)
        if self.faults.reject_next > 0:
            self.faults.reject_next -= 1
            raise exchange_error(-2010, "Rejected by the simulator (fault reject_next).")
        now_ms = self._now_ms()
        client_id = params.get("newClientOrderId") or _random_client_id()
        order, events = self.engine.place(
            symbol=symbol,
            side=params["side"],
            order_type=params["type"],
            quantity=_decimal(params, "quantity"),
            price=_decimal(params, "price"),
            time_in_force=params.get("timeInForce"),
            client_order_id=client_id,
            time_ms=now_ms,
        )
        self.stats["orders_placed"] += 1
        if later is None:
            self._publish_order_events(events, now_ms)
        else:
            later.append(functools.partial(self._publish_order_events, events, now_ms))
        response_type = params.get("newOrderRespType") or (
            "FULL" if order.type in ("MARKET", "LIMIT") else "ACK"
        )
        if response_type not in ("ACK", "RESULT", "FULL"):
            raise exchange_error(-1100, "Illegal characters found in parameter 'newOrderRespType'.")
        final = events[-1].order if events else order
        return frames.order_response(
            final, events, response_type=response_type, transact_time_ms=now_ms
        )

    def _cancel(self, params: Mapping[str, str]) -> CancelResponse:
        symbol = self._symbol(params)
        order_id, client_id = _order_reference(params)
        now_ms = self._now_ms()
        event = self.engine.cancel(
            symbol=symbol, order_id=order_id, client_order_id=client_id, time_ms=now_ms
        )
        cancel_id = params.get("newClientOrderId") or _random_client_id()
        self._publish_order_events([event], now_ms, cancel_id=cancel_id)
        return frames.cancel_response(
            event, cancel_client_order_id=cancel_id, transact_time_ms=now_ms
        )

    def _order_status(self, params: Mapping[str, str]) -> OrderState:
        symbol = self._symbol(params)
        order_id, client_id = _order_reference(params)
        order = self.engine.get_order(symbol=symbol, order_id=order_id, client_order_id=client_id)
        return frames.order_state(order)

    def _open_order_states(self, params: Mapping[str, str]) -> list[OrderState]:
        symbol = self._symbol(params) if "symbol" in params else None
        return [frames.order_state(o) for o in self.engine.open_orders(symbol)]

    # ----------------------------------------------------------------- admin

    async def _admin_state(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "http_url": self.http_url,
                "symbols": list(self.config.symbols),
                "faults": self.faults.as_dict(),
                "open_orders": len(self.engine.open_orders()),
                "balances": {a: [str(f), str(lk)] for a, (f, lk) in self.engine.balances().items()},
                "closed_klines": {f"{s}@{i}": len(v) for (s, i), v in self.closed_klines.items()},
                "subscribers": len(self._all_subscribers()),
                "stats": dict(self.stats),
            }
        )

    async def _admin_klines(self, request: web.Request) -> web.Response:
        key = (request.query.get("symbol", ""), request.query.get("interval", ""))
        return web.json_response({"open_times": list(self.closed_klines.get(key, ()))})

    async def _admin_faults(self, _request: web.Request) -> web.Response:
        return web.json_response(self.faults.as_dict())

    async def _admin_set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
        except ValueError:
            return web.json_response(
                {"error": "body must be a JSON object of fault: value"}, status=400
            )
        if not isinstance(changes, dict):
            return web.json_response(
                {"error": "body must be a JSON object of fault: value"}, status=400
            )
        self.set_faults(**changes)
        return web.json_response(self.faults.as_dict())


def _replay_frame(line: str) -> tuple[str, int | None]:
    """A capture line -> (the frame to send, its event time in ms if it has one)."""
    # RecursionError: a hostile capture may nest deeper than the json module recurses.
    try:
        parsed = json.loads(line)
    except (ValueError, RecursionError):
        return line, None
    frame = line
    if isinstance(parsed, dict) and isinstance(parsed.get("raw"), str):
        frame = parsed["raw"]
        try:
            parsed = json.loads(frame)
        except (ValueError, RecursionError):
            return frame, None
    payload = parsed.get("data", parsed) if isinstance(parsed, dict) else None
    event_ms = payload.get("E") if isinstance(payload, dict) else None
    return frame, event_ms if isinstance(event_ms, int) else None


def _ws_api_request(text: str) -> tuple[Any, str, dict[str, Any]] | None:
    """A WebSocket API request -> (id, method, params); None if it is not one."""
    # RecursionError: hostile input may nest deeper than the json module recurses.
    try:
        request = json.loads(text)
        ident, method = request.get("id"), request["method"]
        params = dict(request.get("params") or {})
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    return (ident, method, params) if isinstance(method, str) else None


def _ws_api_params(params: Mapping[str, Any]) -> dict[str, str]:
    """WebSocket API parameters (JSON values) -> the strings a REST request would carry.

    Floats are written out in full (``1e-05`` -> ``0.00001``), as a client would in a query.
    """
    fields: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            fields[name] = "true" if value else "false"
        elif isinstance(value, float):
            fields[name] = format(Decimal(repr(value)), "f")
        elif isinstance(value, int | str):
            fields[name] = str(value)
        else:
            raise exchange_error(-1100, f"Illegal characters found in parameter '{name}'.")
    return fields


def _ws_api_rate_limits(used_weight: int) -> list[dict[str, Any]]:
    return [
        {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": WEIGHT_LIMIT_PER_MINUTE,
            "count": used_weight,
        }
    ]


def _ws_api_frame(
    ident: Any,
    *,
    status: int,
    result: Any = None,
    error: Mapping[str, Any] | None = None,
    used_weight: int | None = None,
) -> str:
    """A WebSocket API answer: ``{id, status, result | error, rateLimits?}``."""
    frame: dict[str, Any] = {"id": ident, "status": status}
    if error is None:
        frame["result"] = result
    else:
        frame["error"] = error
    if used_weight is not None:
        frame["rateLimits"] = _ws_api_rate_limits(used_weight)
    return encode(frame).decode()


def _ws_api_result(ident: Any, result: Any, *, used_weight: int | None = None) -> str:
    return _ws_api_frame(ident, status=200, result=result, used_weight=used_weight)


def _ws_api_error(ident: Any, error: ExchangeError, *, used_weight: int | None = None) -> str:
    body = {"code": error.code, "msg": error.msg}
    status = error.http_status or 400
    return _ws_api_frame(ident, status=status, error=body, used_weight=used_weight)


def _rest_weight(request: web.Request) -> int:
    if request.path == "/api/v3/openOrders" and "symbol" not in request.query:
        return 80
    return WEIGHTS.get(request.path, 1)


def _order_reference(params: Mapping[str, str]) -> tuple[int | None, str | None]:
    """``orderId`` and/or ``origClientOrderId``; Binance requires at least one."""
    order_id = _int(params, "orderId", None)
    client_id = params.get("origClientOrderId") or None
    if order_id is None and client_id is None:
        raise exchange_error(
            -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
        )
    return order_id, client_id


def _mandatory(name: str) -> ExchangeError:
    return exchange_error(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _int(params: Mapping[str, str], name: str, default: int | None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise exchange_error(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        ) from None


def _decimal(params: Mapping[str, str], name: str) -> Decimal | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite() or number < 0:
        raise exchange_error(
            -1100,
            f"Illegal characters found in parameter '{name}'; "
            "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        )
    return number


def _random_client_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(22))
