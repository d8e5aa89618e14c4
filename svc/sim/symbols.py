"""The simulated exchange's listing: symbols, their filters, start prices and exchangeInfo.

Filters are shaped exactly as Binance spot publishes them (PRICE_FILTER, LOT_SIZE,
ICEBERG_PARTS, MARKET_LOT_SIZE, TRAILING_DELTA, PERCENT_PRICE_BY_SIDE, NOTIONAL,
MAX_NUM_ORDERS, MAX_NUM_ALGO_ORDERS), with the values Binance used for the well-known
symbols when the recorded exchangeInfo in the test data was captured.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from svc.binance.rest import ExchangeInfo, RateLimit, SymbolInfo, symbol_rules
from svc.errors import ConfigError
from svc.model import SymbolRules


@dataclass(frozen=True, slots=True)
class Listing:
    base: str
    quote: str
    start_price: Decimal
    tick_size: str
    step_size: str
    min_notional: str


# Well-known symbols; any other symbol ending in a known quote asset gets generic filters.
LISTINGS: dict[str, Listing] = {
    "BTCUSDT": Listing("BTC", "USDT", Decimal("60000"), "0.01000000", "0.00001000", "5.00000000"),
    "ETHUSDT": Listing("ETH", "USDT", Decimal("3000"), "0.01000000", "0.00010000", "5.00000000"),
    "BNBUSDT": Listing("BNB", "USDT", Decimal("600"), "0.01000000", "0.00100000", "5.00000000"),
    "SOLUSDT": Listing("SOL", "USDT", Decimal("150"), "0.01000000", "0.00100000", "5.00000000"),
    "ETHBTC": Listing("ETH", "BTC", Decimal("0.05"), "0.00001000", "0.00010000", "0.00010000"),
}
QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "BTC", "ETH", "BNB")
ORDER_TYPES = ["LIMIT", "LIMIT_MAKER", "MARKET"]
RATE_LIMITS = [
    RateLimit("REQUEST_WEIGHT", "MINUTE", 1, 6000),
    RateLimit("ORDERS", "SECOND", 10, 100),
    RateLimit("ORDERS", "DAY", 1, 200000),
    RateLimit("RAW_REQUESTS", "MINUTE", 5, 61000),
]


def listing(symbol: str) -> Listing:
    """The listing of ``symbol``; unknown symbols get generic filters and a start price of 100."""
    if symbol in LISTINGS:
        return LISTINGS[symbol]
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return Listing(
                symbol[: -len(quote)], quote, Decimal(100), "0.01000000", "0.00100000", "5.00000000"
            )
    raise ConfigError(
        "symbols", f"{symbol!r} is not a symbol the simulator can list (quote in {QUOTE_ASSETS})"
    )


def symbol_info(symbol: str) -> SymbolInfo:
    item = listing(symbol)
    filters: list[dict[str, Any]] = [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": item.tick_size,
            "maxPrice": "1000000.00000000",
            "tickSize": item.tick_size,
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": item.step_size,
            "maxQty": "9000.00000000",
            "stepSize": item.step_size,
        },
        {"filterType": "ICEBERG_PARTS", "limit": 10},
        {
            "filterType": "MARKET_LOT_SIZE",
            "minQty": "0.00000000",
            "maxQty": "100.00000000",
            "stepSize": "0.00000000",
        },
        {
            "filterType": "TRAILING_DELTA",
            "minTrailingAboveDelta": 10,
            "maxTrailingAboveDelta": 2000,
            "minTrailingBelowDelta": 10,
            "maxTrailingBelowDelta": 2000,
        },
        {
            "filterType": "PERCENT_PRICE_BY_SIDE",
            "bidMultiplierUp": "5",
            "bidMultiplierDown": "0.2",
            "askMultiplierUp": "5",
            "askMultiplierDown": "0.2",
            "avgPriceMins": 5,
        },
        {
            "filterType": "NOTIONAL",
            "minNotional": item.min_notional,
            "applyMinToMarket": True,
            "maxNotional": "9000000.00000000",
            "applyMaxToMarket": False,
            "avgPriceMins": 5,
        },
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
    ]
    return SymbolInfo(
        symbol=symbol,
        status="TRADING",
        base_asset=item.base,
        quote_asset=item.quote,
        order_types=list(ORDER_TYPES),
        filters=filters,
        permissions=[],
        permission_sets=[["SPOT"]],
        allowed_self_trade_prevention_modes=["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    )


def exchange_info(symbols: list[str], *, server_time_ms: int) -> ExchangeInfo:
    return ExchangeInfo(
        server_time=server_time_ms,
        rate_limits=list(RATE_LIMITS),
        symbols=[symbol_info(s) for s in symbols],
    )


def rules_for(symbols: list[str]) -> dict[str, SymbolRules]:
    return {s: symbol_rules(symbol_info(s), index=i) for i, s in enumerate(symbols)}
