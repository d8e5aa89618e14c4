"""Binance spot REST payloads: wire structs, decoders to svc types, encoders for the simulator.

Covered: ``/api/v3/exchangeInfo`` (symbol filters PRICE_FILTER, LOT_SIZE, MIN_NOTIONAL or
NOTIONAL), ``/api/v3/klines`` arrays, new-order responses in the three ``newOrderRespType``
shapes (ACK, RESULT, FULL), cancel responses, query-order and open-orders responses,
``/api/v3/account``, ``/api/v3/time``, listen keys, and error bodies ``{"code", "msg"}``.
Field names follow Binance exactly (including its ``cummulativeQuoteQty`` spelling). Fields
that only some shapes carry default to ``UNSET`` so that encoding an ACK response writes
exactly the ACK fields.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from svc.binance._codec import NS_PER_MS, decode_as, encode
from svc.errors import DecodeError, ExchangeError, exchange_error
from svc.model import Candle, SymbolRules

# ---------------------------------------------------------------- exchangeInfo


class RateLimit(msgspec.Struct, rename="camel"):
    rate_limit_type: str
    interval: str
    interval_num: int
    limit: int


class SymbolInfo(msgspec.Struct, rename="camel", kw_only=True):
    """One entry of ``symbols``; filters stay as dicts because their shapes differ by type."""

    symbol: str
    status: str
    base_asset: str
    base_asset_precision: int = 8
    quote_asset: str
    quote_precision: int = 8
    quote_asset_precision: int = 8
    base_commission_precision: int = 8
    quote_commission_precision: int = 8
    order_types: list[str] = msgspec.field(default_factory=list)
    iceberg_allowed: bool = True
    oco_allowed: bool = True
    quote_order_qty_market_allowed: bool = True
    allow_trailing_stop: bool = False
    cancel_replace_allowed: bool = False
    is_spot_trading_allowed: bool = True
    is_margin_trading_allowed: bool = False
    filters: list[dict[str, Any]] = msgspec.field(default_factory=list)
    permissions: list[str] = msgspec.field(default_factory=list)
    permission_sets: list[Any] = msgspec.field(default_factory=list)  # spot: lists; USD-M: strings
    default_self_trade_prevention_mode: str = "EXPIRE_MAKER"
    allowed_self_trade_prevention_modes: list[str] = msgspec.field(default_factory=list)


class ExchangeInfo(msgspec.Struct, rename="camel", kw_only=True):
    timezone: str = "UTC"
    server_time: int
    rate_limits: list[RateLimit] = msgspec.field(default_factory=list)
    exchange_filters: list[dict[str, Any]] = msgspec.field(default_factory=list)
    symbols: list[SymbolInfo] = msgspec.field(default_factory=list)


_EXCHANGE_INFO = msgspec.json.Decoder(ExchangeInfo)
_ZERO = Decimal(0)


def _decimal(filter_: dict[str, Any], key: str, *, route: str, path: str) -> Decimal:
    value = filter_.get(key, "0")
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        number = Decimal("NaN")
    if not number.is_finite() or number < 0:
        raise DecodeError(route, f"{path}.{key}", f"not a non-negative decimal: {value!r}")
    return number


def symbol_rules(info: SymbolInfo, *, index: int = 0) -> SymbolRules:
    """Extract the filters svc enforces from one exchangeInfo symbol."""
    route = "/api/v3/exchangeInfo"
    by_type: dict[str, tuple[int, dict[str, Any]]] = {}
    for position, filter_ in enumerate(info.filters):
        kind = filter_.get("filterType")
        if not isinstance(kind, str):
            path = f"$.symbols[{index}].filters[{position}].filterType"
            raise DecodeError(route, path, "missing filter type")
        by_type[kind] = (position, filter_)

    def number(kind: str, key: str) -> Decimal:
        if kind not in by_type:
            return _ZERO
        position, filter_ = by_type[kind]
        return _decimal(filter_, key, route=route, path=f"$.symbols[{index}].filters[{position}]")

    # Spot replaced MIN_NOTIONAL with NOTIONAL in 2023; USD-M still sends MIN_NOTIONAL {notional}.
    if "NOTIONAL" in by_type:
        min_notional = number("NOTIONAL", "minNotional")
        max_notional = number("NOTIONAL", "maxNotional")
        apply_to_market = bool(by_type["NOTIONAL"][1].get("applyMinToMarket", True))
    elif "MIN_NOTIONAL" in by_type:
        filter_ = by_type["MIN_NOTIONAL"][1]
        key = "minNotional" if "minNotional" in filter_ else "notional"
        min_notional = number("MIN_NOTIONAL", key)
        max_notional = _ZERO
        apply_to_market = bool(filter_.get("applyToMarket", True))
    else:
        min_notional = max_notional = _ZERO
        apply_to_market = False
    return SymbolRules(
        symbol=info.symbol,
        status=info.status,
        base_asset=info.base_asset,
        quote_asset=info.quote_asset,
        tick_size=number("PRICE_FILTER", "tickSize"),
        min_price=number("PRICE_FILTER", "minPrice"),
        max_price=number("PRICE_FILTER", "maxPrice"),
        step_size=number("LOT_SIZE", "stepSize"),
        min_quantity=number("LOT_SIZE", "minQty"),
        max_quantity=number("LOT_SIZE", "maxQty"),
        min_notional=min_notional,
        max_notional=max_notional,
        apply_min_notional_to_market=apply_to_market,
        order_types=tuple(info.order_types),
    )


def decode_exchange_info(raw: bytes | str) -> ExchangeInfo:
    return decode_as(_EXCHANGE_INFO, raw, stream="/api/v3/exchangeInfo")


def exchange_rules(raw: bytes | str) -> dict[str, SymbolRules]:
    """``/api/v3/exchangeInfo`` body -> rules by symbol."""
    info = decode_exchange_info(raw)
    return {s.symbol: symbol_rules(s, index=i) for i, s in enumerate(info.symbols)}


# ---------------------------------------------------------------- klines


class KlineRow(msgspec.Struct, array_like=True):
    """One row of ``/api/v3/klines``: a 12-element JSON array."""

    open_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    close_time: int
    quote_volume: str
    trades: int
    taker_buy_volume: str
    taker_buy_quote_volume: str
    ignore: str = "0"


_KLINES = msgspec.json.Decoder(list[KlineRow])


def decode_klines(raw: bytes | str) -> list[KlineRow]:
    return decode_as(_KLINES, raw, stream="/api/v3/klines")


def klines_to_candles(
    rows: list[KlineRow], *, symbol: str, interval: str, ts_init: int, now_ms: int | None = None
) -> list[Candle]:
    """REST klines -> candles. A row is closed once its close time has passed ``now_ms``.

    REST klines have no event time; ``ts_event`` is the kline's close time (the moment its
    data became final), or ``ts_init`` for the still-open last row.
    """
    now = ts_init // NS_PER_MS if now_ms is None else now_ms
    candles = []
    for index, row in enumerate(rows):
        closed = row.close_time < now
        prices = [_number(getattr(row, name), index, position) for position, name in _KLINE_NUMBERS]
        candles.append(
            Candle(
                symbol=symbol,
                interval=interval,
                open_time=row.open_time * NS_PER_MS,
                close_time=row.close_time * NS_PER_MS,
                open=prices[0],
                high=prices[1],
                low=prices[2],
                close=prices[3],
                volume=prices[4],
                quote_volume=prices[5],
                trades=row.trades,
                closed=closed,
                ts_event=row.close_time * NS_PER_MS if closed else ts_init,
                ts_init=ts_init,
            )
        )
    return candles


_KLINE_NUMBERS = (
    (1, "open"),
    (2, "high"),
    (3, "low"),
    (4, "close"),
    (5, "volume"),
    (7, "quote_volume"),
)


def _number(text: str, row: int, position: int) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise DecodeError("/api/v3/klines", f"$[{row}][{position}]", f"not a number: {text!r}")
    return number


# ---------------------------------------------------------------- orders


class OrderFill(msgspec.Struct, rename="camel"):
    price: str
    qty: str
    commission: str
    commission_asset: str
    trade_id: int


class OrderResponse(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=False):
    """``POST /api/v3/order``: ACK carries the first five fields, RESULT adds the order's
    state, FULL adds ``fills``."""

    symbol: str
    order_id: int
    order_list_id: int = -1
    client_order_id: str
    transact_time: int
    price: str | UnsetType = UNSET
    orig_qty: str | UnsetType = UNSET
    executed_qty: str | UnsetType = UNSET
    orig_quote_order_qty: str | UnsetType = UNSET
    cummulative_quote_qty: str | UnsetType = UNSET
    status: str | UnsetType = UNSET
    time_in_force: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    side: str | UnsetType = UNSET
    working_time: int | UnsetType = UNSET
    self_trade_prevention_mode: str | UnsetType = UNSET
    fills: list[OrderFill] | UnsetType = UNSET


class CancelResponse(msgspec.Struct, rename="camel", kw_only=True):
    """``DELETE /api/v3/order``."""

    symbol: str
    orig_client_order_id: str
    order_id: int
    order_list_id: int = -1
    client_order_id: str
    transact_time: int
    price: str
    orig_qty: str
    executed_qty: str
    orig_quote_order_qty: str = "0.00000000"
    cummulative_quote_qty: str
    status: str
    time_in_force: str
    type: str
    side: str
    self_trade_prevention_mode: str = "NONE"


class OrderState(msgspec.Struct, rename="camel", kw_only=True):
    """``GET /api/v3/order`` and each entry of ``GET /api/v3/openOrders``."""

    symbol: str
    order_id: int
    order_list_id: int = -1
    client_order_id: str
    price: str
    orig_qty: str
    executed_qty: str
    cummulative_quote_qty: str
    status: str
    time_in_force: str
    type: str
    side: str
    stop_price: str = "0.00000000"
    iceberg_qty: str = "0.00000000"
    time: int
    update_time: int
    is_working: bool
    working_time: int | UnsetType = UNSET
    orig_quote_order_qty: str = "0.00000000"
    self_trade_prevention_mode: str = "NONE"


class AccountBalance(msgspec.Struct):
    asset: str
    free: str
    locked: str


class CommissionRates(msgspec.Struct):
    maker: str
    taker: str
    buyer: str
    seller: str


class Account(msgspec.Struct, rename="camel", kw_only=True):
    """``GET /api/v3/account``."""

    maker_commission: int = 10
    taker_commission: int = 10
    buyer_commission: int = 0
    seller_commission: int = 0
    commission_rates: CommissionRates | UnsetType = UNSET
    can_trade: bool = True
    can_withdraw: bool = True
    can_deposit: bool = True
    brokered: bool = False
    require_self_trade_prevention: bool = False
    prevent_sor: bool = False
    update_time: int = 0
    account_type: str = "SPOT"
    balances: list[AccountBalance]
    permissions: list[str] = msgspec.field(default_factory=lambda: ["SPOT"])
    uid: int | UnsetType = UNSET


class ServerTime(msgspec.Struct, rename="camel"):
    server_time: int


class ListenKey(msgspec.Struct, rename="camel"):
    listen_key: str


_ORDER = msgspec.json.Decoder(OrderResponse)
_CANCEL = msgspec.json.Decoder(CancelResponse)
_ORDER_STATE = msgspec.json.Decoder(OrderState)
_OPEN_ORDERS = msgspec.json.Decoder(list[OrderState])
_ACCOUNT = msgspec.json.Decoder(Account)
_SERVER_TIME = msgspec.json.Decoder(ServerTime)


def decode_order_response(raw: bytes | str) -> OrderResponse:
    return decode_as(_ORDER, raw, stream="POST /api/v3/order")


def decode_cancel_response(raw: bytes | str) -> CancelResponse:
    return decode_as(_CANCEL, raw, stream="DELETE /api/v3/order")


def decode_order_state(raw: bytes | str) -> OrderState:
    return decode_as(_ORDER_STATE, raw, stream="GET /api/v3/order")


def decode_open_orders(raw: bytes | str) -> list[OrderState]:
    return decode_as(_OPEN_ORDERS, raw, stream="GET /api/v3/openOrders")


def decode_account(raw: bytes | str) -> Account:
    return decode_as(_ACCOUNT, raw, stream="GET /api/v3/account")


def decode_server_time(raw: bytes | str) -> ServerTime:
    return decode_as(_SERVER_TIME, raw, stream="GET /api/v3/time")


# ---------------------------------------------------------------- errors


class ErrorBody(msgspec.Struct):
    code: int
    msg: str


_ERROR = msgspec.json.Decoder(ErrorBody)


def decode_error(raw: bytes | str, *, route: str = "?") -> ErrorBody:
    return decode_as(_ERROR, raw, stream=route)


def error_from_response(
    raw: bytes | str, *, http_status: int, retry_after: float = 0.0, route: str = "?"
) -> ExchangeError:
    """An error response (status >= 400) -> the narrowest ``ExchangeError``.

    A body that is not ``{"code", "msg"}`` (a proxy's HTML page, say) still maps by status.
    """
    try:
        body = decode_error(raw, route=route)
    except DecodeError:
        text = raw if isinstance(raw, str) else raw.decode(errors="replace")
        return exchange_error(0, text[:200], http_status=http_status, retry_after=retry_after)
    return exchange_error(body.code, body.msg, http_status=http_status, retry_after=retry_after)


# ---------------------------------------------------------------- encoders (the simulator's side)


def encode_error(code: int, msg: str) -> bytes:
    return encode(ErrorBody(code=code, msg=msg))


encode_payload = encode
"""Encode any wire struct in this module (or a list of them) to Binance's JSON."""
