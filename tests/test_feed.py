"""The market feed against scripted sockets: decoding, malformed frames, gaps, reconnects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest

from svc.errors import ExchangeUnavailable
from svc.exchange import FakeExchange
from svc.feed import Backoff, FeedSettings, MarketFeed
from svc.model import Candle, Event, Trade
from tests.recorded import recorded_rules

MINUTE_NS = 60 * 10**9
T0 = 1_700_000_040 * 10**9  # a minute boundary


def kline_frame(open_ns: int, *, closed: bool, close: str = "100.0") -> str:
    open_ms = open_ns // 10**6
    return json.dumps(
        {
            "stream": "btcusdt@kline_1m",
            "data": {
                "e": "kline",
                "E": open_ms + 59_000,
                "s": "BTCUSDT",
                "k": {
                    "t": open_ms,
                    "T": open_ms + 59_999,
                    "s": "BTCUSDT",
                    "i": "1m",
                    "f": 1,
                    "L": 2,
                    "o": "100.0",
                    "c": close,
                    "h": "101.0",
                    "l": "99.0",
                    "v": "1.0",
                    "n": 2,
                    "x": closed,
                    "q": "100.0",
                    "V": "0.5",
                    "Q": "50.0",
                    "B": "0",
                },
            },
        }
    )


def candle(open_ns: int) -> Candle:
    return Candle(
        "BTCUSDT",
        "1m",
        open_ns,
        open_ns + MINUTE_NS - 10**6,
        100.0,
        101.0,
        99.0,
        100.0,
        1.0,
        100.0,
        2,
        True,
        open_ns + MINUTE_NS,
        0,
    )


class ScriptedSocket:
    """Yields scripted messages; an exception in the script is raised from recv()."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)

    async def recv(self) -> Any:
        if not self.script:
            await asyncio.sleep(3600)
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        if item == "SILENCE":
            await asyncio.sleep(3600)
        return item


class Opener:
    def __init__(self, scripts: list[list[Any] | BaseException]) -> None:
        self.scripts = list(scripts)
        self.opened = 0

    def __call__(self, _streams: list[str]) -> Any:
        @asynccontextmanager
        async def connection() -> AsyncIterator[ScriptedSocket]:
            self.opened += 1
            script = self.scripts.pop(0) if self.scripts else ["SILENCE"]
            if isinstance(script, BaseException):
                raise script
            yield ScriptedSocket(script)

        return connection()


def make_feed(
    opener: Opener, exchange: FakeExchange, published: list[Event], **settings: Any
) -> MarketFeed:
    base = {
        "watchdog_seconds": 5.0,
        "backoff_initial": 0.001,
        "backoff_max": 0.002,
        "warmup_klines": 0,
    }
    return MarketFeed(
        streams=["btcusdt@kline_1m", "btcusdt@aggTrade"],
        open_socket=opener,
        exchange=exchange,
        publish=published.append,
        settings=FeedSettings(**{**base, **settings}),
    )


@pytest.fixture
def exchange() -> FakeExchange:
    rules = {"BTCUSDT": recorded_rules("BTCUSDT")}
    return FakeExchange(rules=rules, prices={"BTCUSDT": Decimal(100)})


async def run_until(feed: MarketFeed, condition: Any, *, within: float = 5.0) -> None:
    task = asyncio.create_task(feed.run())
    try:
        async with asyncio.timeout(within):
            while not condition():
                if task.done():
                    task.result()
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_malformed_frames_are_counted_and_the_stream_keeps_flowing(
    exchange: FakeExchange,
) -> None:
    trade = json.dumps(
        {
            "stream": "btcusdt@aggTrade",
            "data": {
                "e": "aggTrade",
                "E": 1,
                "s": "BTCUSDT",
                "a": 1,
                "p": "1.5",
                "q": "2",
                "f": 1,
                "l": 1,
                "T": 1,
                "m": False,
            },
        }
    )
    script = [trade, "{not json", trade.replace('"1.5"', '"abc"'), trade, '{"e":"newThing"}', trade]
    published: list[Event] = []
    feed = make_feed(Opener([script]), exchange, published)
    await run_until(feed, lambda: len(published) == 3)
    assert all(isinstance(e, Trade) for e in published)
    malformed = feed.statistics.malformed
    assert sum(malformed.values()) == 2
    assert any(reason.startswith("$.data.p") for reason in malformed)
    assert any(reason.startswith("$:") for reason in malformed)
    assert feed.statistics.unknown == {"newThing": 1}


async def test_a_missed_closed_kline_is_backfilled_before_the_next_one(
    exchange: FakeExchange,
) -> None:
    exchange.candles[("BTCUSDT", "1m")] = [candle(T0 + i * MINUTE_NS) for i in range(6)]
    script = [
        kline_frame(T0, closed=True),
        kline_frame(T0 + MINUTE_NS, closed=False),
        # minutes 1..3 closed while we were away; the next frame is minute 4, still open
        kline_frame(T0 + 4 * MINUTE_NS, closed=False),
        kline_frame(T0 + 4 * MINUTE_NS, closed=True),
        kline_frame(T0 + 4 * MINUTE_NS, closed=True),  # a duplicate close
    ]
    published: list[Event] = []
    feed = make_feed(Opener([script]), exchange, published)
    await run_until(feed, lambda: feed.statistics.duplicates == 1)
    closed = [e.open_time for e in published if isinstance(e, Candle) and e.closed]
    assert closed == [T0 + i * MINUTE_NS for i in range(5)]
    assert feed.statistics.gaps == 1
    assert feed.statistics.backfilled == 3
    assert feed.statistics.unfilled == 0


async def test_warm_up_publishes_closed_history_and_sets_the_baseline(
    exchange: FakeExchange,
) -> None:
    exchange.candles[("BTCUSDT", "1m")] = [candle(T0 + i * MINUTE_NS) for i in range(10)]
    published: list[Event] = []
    feed = make_feed(
        Opener([[kline_frame(T0 + 10 * MINUTE_NS, closed=True)]]),
        exchange,
        published,
        warmup_klines=5,
    )
    await run_until(feed, lambda: len(published) == 7)
    # The last REST row (minute 9) is taken as still forming; the 5 before it warm up.
    # Minute 9 turns out closed when the stream starts at minute 10: it is backfilled.
    assert [e.open_time for e in published if isinstance(e, Candle)] == [
        T0 + i * MINUTE_NS for i in range(4, 11)
    ]
    assert feed.statistics.gaps == 1


async def test_silence_triggers_a_reconnect(exchange: FakeExchange) -> None:
    opener = Opener([["SILENCE"], ["SILENCE"]])
    feed = make_feed(opener, exchange, [], watchdog_seconds=0.05)
    await run_until(feed, lambda: opener.opened >= 2)
    assert feed.statistics.reconnects["silent"] >= 1


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("BinanceWebsocketQueueOverflow", "queue_overflow"),
        ("BinanceWebsocketUnableToConnect", "unable_to_connect"),
    ],
)
async def test_python_binance_give_up_and_overflow_reconnect(
    exchange: FakeExchange, kind: str, reason: str
) -> None:
    error = {"e": "error", "type": kind, "m": "boom"}
    opener = Opener([[error], ["SILENCE"]])
    feed = make_feed(opener, exchange, [])
    await run_until(feed, lambda: opener.opened >= 2)
    assert feed.statistics.reconnects[reason] == 1


async def test_consecutive_connect_failures_mean_unreachable(exchange: FakeExchange) -> None:
    opener = Opener([ConnectionRefusedError("refused")] * 3)
    feed = make_feed(opener, exchange, [], connect_attempts=3)
    with pytest.raises(ExchangeUnavailable, match="3 connection attempts failed"):
        await asyncio.wait_for(feed.run(), 5)


def test_backoff_is_full_jitter_and_resets() -> None:
    import random  # noqa: PLC0415

    backoff = Backoff(initial=1.0, maximum=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert backoff.attempt == 6
    backoff.reset()
    assert backoff.attempt == 0


async def test_implausible_values_are_counted_under_debug(exchange: FakeExchange) -> None:
    # `python -O` (no __debug__) skips this check; the test suite always runs with it.
    broken = kline_frame(T0, closed=True).replace('"h": "101.0"', '"h": "98.0"')
    published: list[Event] = []
    feed = make_feed(
        Opener([[broken, kline_frame(T0 + MINUTE_NS, closed=True)]]), exchange, published
    )
    await run_until(feed, lambda: len(published) == 1)
    assert feed.statistics.malformed == {"invariant: implausible values": 1}


@pytest.mark.parametrize("recording", [False, True], ids=["no recorder", "recorder"])
async def test_streams_beyond_the_key_cap_count_under_other(
    exchange: FakeExchange, recording: bool
) -> None:
    """Counts and feed-lag histograms keep at most the cap's keys; later symbols go to OTHER,
    every message is still counted once, and a recorder changes none of the counts."""
    from svc.feed import OTHER  # noqa: PLC0415
    from svc.latency import StageRecorder  # noqa: PLC0415

    def trade(symbol: str, trade_id: int) -> str:
        data = {"e": "aggTrade", "E": 1, "s": symbol, "a": trade_id, "p": "1.5", "q": "2"}
        data |= {"f": 1, "l": 1, "T": 1, "m": False}
        return json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": data})

    symbols = [f"S{n}USDT" for n in range(6)]
    # Each symbol three times, interleaved, so that capped keys come back after the cap.
    script = [trade(symbol, i) for i in range(3) for symbol in symbols]
    published: list[Event] = []
    feed = make_feed(Opener([script]), exchange, published)
    recorder = StageRecorder()
    if recording:
        feed._recorder = recorder
        feed._record_parse = recorder.parse.record
        feed._record_publish = recorder.publish.record
    feed._message_keys = 3
    await run_until(feed, lambda: len(published) == len(script))
    messages = feed.statistics.messages
    assert messages == {
        (Trade, "S0USDT", ""): 3,
        (Trade, "S1USDT", ""): 3,
        (Trade, "S2USDT", ""): 3,
        (Trade, OTHER, ""): 9,
    }
    lags = {stream: h.count for stream, h in recorder.feed_lag_by_stream.items()}
    if recording:
        assert sorted(lags.values()) == [3, 3, 3, 9]
        assert sum(lags.values()) == len(script)
    else:
        assert lags == {}
