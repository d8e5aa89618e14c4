"""Hostile input: fuzzed frames through the decoders and a live feed, and bad configuration.

Three layers, each with its own oracle:

1. **Decoders, in process.** ``MUTATED_STREAM_FRAMES`` mutations of the real captures in
   ``../shared/data/binance`` (byte flips, truncation, deleted fields, swapped types, deep
   nesting, huge numbers, ``NaN``/``Infinity`` strings, odd unicode, duplicate keys, junk
   around the frame), ``MUTATED_REST_BODIES`` mutations of the recorded REST bodies, and
   three hypothesis strategies of ``HYPOTHESIS_EXAMPLES`` each (random JSON, random bytes,
   recorded frames with fields of the wrong type): 10,000 frames and more. Every frame
   decodes to an svc event with finite numbers, or raises ``DecodeError`` naming the stream,
   the JSON path and the reason; nothing else escapes. Truncations always fail; a deleted
   required field and a swapped type are reported at their own path.
2. **The market feed, in process.** The same mutations through ``MarketFeed``: every frame
   is counted exactly once (message, unknown type or malformed reason), and the statistics
   stay bounded however many distinct garbage texts arrive.
3. **A live feed.** ``svc run --sim-frames`` replays a capture of 300 recorded klines with
   some 1,500 bad frames of known categories interleaved (the embedded simulator sends them
   over a real websocket, python-binance reads them): no crash, every recorded kline after
   the bad frames still arrives, and the summary's malformed counts by reason are exactly
   those the same frames produce in process.

Bad configuration and command lines end with exit code 2 and a message naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import os
import random
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svc.binance import rest
from svc.binance._codec import convert_as
from svc.binance.streams import FrameDecoder
from svc.cli import main as svc_main
from svc.errors import DecodeError
from svc.exchange import FakeExchange
from svc.feed import FeedSettings, MarketFeed, UserDataFeed
from svc.latency import StageRecorder
from svc.model import BookDelta, Candle, Event, OrderUpdate, Quote, Trade, UnknownEvent
from tests.recorded import CAPTURED_KLINE, closed_kline_frames, recorded_rules

pytestmark = pytest.mark.faults

SVC = [sys.executable, "-m", "svc.cli"]
TS_INIT = 1_700_000_000_000_000_000
MUTATED_STREAM_FRAMES = 7_200
MUTATED_REST_BODIES = 1_200
HYPOTHESIS_EXAMPLES = 600
FUZZED_FRAMES = MUTATED_STREAM_FRAMES + MUTATED_REST_BODIES + 3 * HYPOTHESIS_EXAMPLES
SEED = 20_240_808  # the corpus is deterministic: a failure names a reproducible frame

JsonPath = tuple[str | int, ...]


# ---------------------------------------------------------------------- the recorded corpus


@dataclass(frozen=True, slots=True)
class Frame:
    """One recorded frame: its parsed document, and the connection stream it arrives on."""

    doc: Any
    stream: str  # "" for market-data connections, "userData" for a listen key
    source: str

    def raw(self) -> bytes:
        return compact(self.doc)


def compact(doc: Any) -> bytes:
    # Binance writes compact JSON with "stream" first; dict order is kept, so the combined
    # fast path is taken until a mutation moves or breaks the prefix.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def _examples(path: Path) -> list[Any]:
    return [record["payload"] for record in json.loads(path.read_text())["examples"]]


kline_frames = closed_kline_frames


def recorded_frames(data: Path) -> list[Frame]:
    """Every recorded websocket frame in the shared data, plus 40 frames built from klines."""
    frames: list[Frame] = []
    for line in (data / "ws" / "unittest_unicorn_fy.messages.jsonl").read_text().splitlines():
        record = json.loads(line)
        frames.append(Frame(json.loads(record["raw"]), "", "unicorn-fy"))
    for line in (data / "ws" / "wsHandleData.json").read_text().splitlines():
        with contextlib.suppress(ValueError):
            frames.append(Frame(json.loads(line), "", "gocryptotrader"))
    docs = data / "docs"
    frames += [
        Frame(p, "", "binance-docs") for p in _examples(docs / "web-socket-streams.examples.json")
    ]
    frames += [
        Frame(p, "userData", "binance-docs")
        for p in _examples(docs / "user-data-stream.examples.json")
    ]
    frames += [Frame(doc, "", "klines") for doc in kline_frames(data, 40)]
    return frames


def recorded_rest_bodies(data: Path) -> list[Any]:
    bodies: list[Any] = []
    klines = json.loads(
        (data / "klines" / "api_v3_klines_BTCUSDT_1h_20200501_1000.json").read_text()
    )
    bodies.append(klines[:20])
    info = json.loads((data / "rest" / "api_v3_exchangeInfo.json").read_text())
    bodies.append({**info, "symbols": info["symbols"][:3]})
    bodies += [
        entry["body"] for entry in json.loads((data / "rest" / "error_responses.json").read_text())
    ]
    bodies += _examples(data / "docs" / "rest-api.examples.json")
    return bodies


# ---------------------------------------------------------------------- JSON-path helpers


def leaf_paths(doc: Any, prefix: JsonPath = ()) -> list[JsonPath]:
    """Paths to every value below the root, containers included."""
    paths: list[JsonPath] = []
    children: Any = ()
    if isinstance(doc, dict):
        children = doc.items()
    elif isinstance(doc, list):
        children = enumerate(doc)
    for key, value in children:
        path = (*prefix, key)
        paths.append(path)
        paths += leaf_paths(value, path)
    return paths


def json_path(path: JsonPath) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def get_at(doc: Any, path: JsonPath) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def set_at(doc: Any, path: JsonPath, value: Any) -> None:
    get_at(doc, path[:-1])[path[-1]] = value


def is_ancestor_or_self(outer: str, inner: str) -> bool:
    """``$.data`` is an ancestor of ``$.data.k.o`` and of ``$.data[0]``, not of ``$.dataX``."""
    return inner == outer or inner.startswith((outer + ".", outer + "["))


# ---------------------------------------------------------------------- mutations

NON_FINITE = ["NaN", "nan", "-NaN", "sNaN", "Infinity", "-Infinity", "inf", "-inf", "1e400"]
HUGE = [10**19, 2**64, -(2**63) - 1, 10**400, 1e308, -1e308, "9" * 400, "1e-400", 5e-324]
ODD_TEXT = [
    "",
    "\u0000",
    "\ud800",  # a lone surrogate: json.dumps escapes it, msgspec must refuse it
    "BTC\u202eUSDT",
    "１２３",  # full-width digits
    "١٢٣",  # Arabic-Indic digits
    "💥" * 64,
    "e\u0301",
    "\u2028\u2029",
    "\ufeffBTCUSDT",
    "BTCUSDT\u0000",
    "x" * 4096,
]
OTHER_TYPES: list[Any] = [None, True, False, 0, -1, 1.5, "", "x", "1.0", [], {}, [1, "a"], {"a": 1}]


@dataclass(frozen=True, slots=True)
class Mutant:
    kind: str
    raw: bytes
    stream: str
    path: JsonPath = ()
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} at {json_path(self.path)} ({self.detail}): {self.raw[:300]!r}"


def _same_type(a: Any, b: Any) -> bool:
    return type(a) is type(b) or (isinstance(a, int | float) and isinstance(b, int | float))


def _nest(depth: int, rng: random.Random) -> Any:
    inner: Any = rng.choice([1, "x", None])
    for _ in range(depth):
        inner = [inner] if rng.random() < 0.5 else {"k": inner}
    return inner


def _nested_text(depth: int) -> str:
    # Built as text: json.dumps itself recurses and gives up long before msgspec does.
    return "[" * depth + "1" + "]" * depth


def mutate(frame: Frame, kind: str, rng: random.Random) -> Mutant:
    """One mutation of ``kind`` applied to a copy of ``frame``."""
    raw = frame.raw()
    doc = copy.deepcopy(frame.doc)
    paths = leaf_paths(doc)
    if kind == "byte_flip":
        mutable = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            mutable[rng.randrange(len(mutable))] = rng.randrange(256)
        return Mutant(kind, bytes(mutable), frame.stream)
    if kind == "truncate":
        cut = rng.randrange(len(raw))
        return Mutant(kind, raw[:cut], frame.stream, detail=f"{cut} of {len(raw)} bytes")
    if kind == "junk":
        junk = rng.choice([b" ", b"\xef\xbb\xbf", b"\x00", b",", b"]", b"}", b"{}", b"\n\n"])
        mutated = junk + raw if rng.random() < 0.5 else raw + junk
        return Mutant(kind, mutated, frame.stream, detail=repr(junk))
    if kind == "duplicate_key":
        key = rng.choice(['"e":"trade",', '"stream":"btcusdt@trade",', '"data":7,', '"e":null,'])
        at = raw.find(b"{", rng.randrange(len(raw)))
        at = raw.find(b"{") if at < 0 else at
        return Mutant(kind, raw[: at + 1] + key.encode() + raw[at + 1 :], frame.stream, detail=key)
    if kind == "deep_nest":
        depth = rng.choice([64, 512, 2_000, 20_000])
        marker = "__NEST__"
        if paths:
            path = rng.choice(paths)
            set_at(doc, path, marker)
        else:
            path, doc = (), marker
        text = compact(doc).replace(f'"{marker}"'.encode(), _nested_text(depth).encode(), 1)
        return Mutant(kind, text, frame.stream, path, f"depth {depth}")
    if not paths:
        return Mutant(kind, raw, frame.stream)
    if kind == "delete":
        path = rng.choice([p for p in paths if isinstance(p[-1], str)] or paths)
        parent = get_at(doc, path[:-1])
        del parent[path[-1]]
        return Mutant(kind, compact(doc), frame.stream, path)
    if kind == "type_swap":
        path = rng.choice(paths)
        old = get_at(doc, path)
        value = rng.choice([v for v in OTHER_TYPES if not _same_type(v, old)])
        set_at(doc, path, value)
        return Mutant(kind, compact(doc), frame.stream, path, repr(value))
    scalars = [p for p in paths if not isinstance(get_at(doc, p), dict | list)] or paths
    if kind == "huge_number":
        numeric = [p for p in scalars if _numeric(get_at(doc, p))] or scalars
        path, value = rng.choice(numeric), rng.choice(HUGE)
    elif kind == "non_finite":
        numeric = [p for p in scalars if _numeric(get_at(doc, p))] or scalars
        path, value = rng.choice(numeric), rng.choice(NON_FINITE)
    elif kind == "unicode":
        texts = [p for p in scalars if isinstance(get_at(doc, p), str)] or scalars
        path, value = rng.choice(texts), rng.choice(ODD_TEXT)
    elif kind == "nested_value":
        path, value = rng.choice(paths), _nest(rng.randint(1, 40), rng)
    else:
        raise AssertionError(f"unknown mutation {kind}")
    set_at(doc, path, value)
    return Mutant(kind, compact(doc), frame.stream, path, repr(value)[:40])


def _numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


MUTATIONS = (
    "byte_flip",
    "truncate",
    "junk",
    "duplicate_key",
    "deep_nest",
    "delete",
    "type_swap",
    "huge_number",
    "non_finite",
    "unicode",
    "nested_value",
)


def mutants(frames: list[Frame], count: int, seed: int = SEED) -> list[Mutant]:
    rng = random.Random(seed)
    return [
        mutate(rng.choice(frames), MUTATIONS[index % len(MUTATIONS)], rng) for index in range(count)
    ]


@pytest.fixture(scope="module")
def corpus(binance_data: Path) -> list[Frame]:
    return recorded_frames(binance_data)


@pytest.fixture(scope="module")
def stream_mutants(corpus: list[Frame]) -> list[Mutant]:
    return mutants(corpus, MUTATED_STREAM_FRAMES)


# ---------------------------------------------------------------------- oracles


def _numbers(value: Any) -> Iterator[float | Decimal]:
    if isinstance(value, bool):
        return
    if isinstance(value, float | Decimal):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            yield from _numbers(getattr(value, name))


MARKET_DATA = (Candle, Trade, Quote, BookDelta)


def check_event(event: Event, what: object) -> None:
    """A decoded event carries only finite numbers; market data never negative ones."""
    for number in _numbers(event):
        finite = number.is_finite() if isinstance(number, Decimal) else math.isfinite(number)
        assert finite, f"non-finite number in {event!r} from {what}"
        if isinstance(event, MARKET_DATA):
            assert number >= 0, f"negative market data in {event!r} from {what}"


def check_error(error: DecodeError, what: object) -> None:
    assert isinstance(error.stream, str), what
    assert error.field.startswith("$"), f"{error.field!r} is not a JSON path: {what}"
    assert error.reason, what
    assert str(error).startswith("malformed payload on "), what


def decode_or_error(decoder: FrameDecoder, raw: bytes | str, what: object) -> Event | DecodeError:
    """The one contract of ``FrameDecoder.decode``: an event, or ``DecodeError``."""
    try:
        event = decoder.decode(raw, TS_INIT)
    except DecodeError as error:
        check_error(error, what)
        return error
    except Exception as error:  # noqa: BLE001  (the oracle: anything else is the bug)
        pytest.fail(f"{type(error).__name__}: {error} escaped the decoder for {what}")
    check_event(event, what)
    return event


# ---------------------------------------------------------------------- 1. decoders


def test_the_corpus_is_ten_thousand_frames_and_every_recording_decodes(corpus: list[Frame]) -> None:
    assert FUZZED_FRAMES >= 10_000
    decoded = Counter()
    for frame in corpus:
        result = decode_or_error(FrameDecoder(stream=frame.stream), frame.raw(), frame)
        decoded[type(result).__name__] += 1
        if frame.source == "klines":
            assert isinstance(result, Candle)
    # The recordings are the valid baseline the mutations start from: none is malformed,
    # except the Binance docs' partial-depth and bookTicker examples, which are bare
    # payloads without "e" and need their stream to be routed.
    assert decoded["DecodeError"] <= 3, decoded
    assert {"Candle", "Trade", "Quote", "BookDelta", "OrderUpdate", "AccountUpdate"} <= set(decoded)


def test_mutated_recordings_decode_or_fail_with_a_path_and_reason(
    stream_mutants: list[Mutant],
) -> None:
    outcomes: Counter[tuple[str, str]] = Counter()
    for mutant in stream_mutants:
        decoder = FrameDecoder(stream=mutant.stream)
        result = decode_or_error(decoder, mutant.raw, mutant)
        outcomes[(mutant.kind, "error" if isinstance(result, DecodeError) else "event")] += 1
        if mutant.kind == "truncate":
            # No strict prefix of a JSON object is a JSON document.
            assert isinstance(result, DecodeError), mutant
        elif mutant.kind == "delete" and isinstance(result, DecodeError):
            missing = result.reason.removeprefix("Object missing required field `")
            if missing != result.reason:
                assert missing.rstrip("`") == mutant.path[-1], (result, mutant)
                assert is_ancestor_or_self(result.field, json_path(mutant.path)), (result, mutant)
        elif mutant.kind == "type_swap" and isinstance(result, DecodeError):
            if result.reason.startswith("Expected"):
                assert is_ancestor_or_self(result.field, json_path(mutant.path)) or (
                    result.field == "$" and mutant.path[0] in ("stream", "data", "event")
                ), (result, mutant)
        elif mutant.kind == "deep_nest" and "depth 20000" in mutant.detail:
            assert isinstance(result, DecodeError), mutant
    print(  # for docs/reliability.md
        json.dumps(
            {
                "frames": len(stream_mutants),
                "malformed_of_each_mutation": {
                    kind: f"{outcomes[(kind, 'error')]} of "
                    f"{outcomes[(kind, 'error')] + outcomes[(kind, 'event')]}"
                    for kind in MUTATIONS
                },
            }
        )
    )
    for kind in MUTATIONS:
        assert outcomes[(kind, "error")] > 0, f"no {kind} mutation was ever malformed: {outcomes}"


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        # The same problem at a different byte offset, or with a different value, is one
        # reason: reasons are metric attributes and summary keys, so they must not carry
        # the input's offsets or text.
        (b'{"e":"kline"} x', "$", "JSON is malformed: trailing characters"),
        (b'{"e":"kline"}    x', "$", "JSON is malformed: trailing characters"),
        (b"\xff\xfe", "$", "JSON is malformed: invalid character"),
        (b'{"stream":"btcusdt@trade","data":{"s":"\xff"}}', "$", "invalid UTF-8"),
        (b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"\xfe\xff"}}', "$", "invalid UTF-8"),
        (b'{"e":["kline"]}', "$.e", "expected a string"),
        (b'{"e":{"x":1}}', "$.e", "expected a string"),
        (b'{"stream":"btcusdt@kline_1m","data":{"e":"trade"}}', "$.data.e", "Invalid value"),
        (
            b'{"stream":"btcusdt@kline_1m","data":{"e":"\xf0\x9f\x92\xa5"}}',
            "$.data.e",
            "Invalid value",
        ),
    ],
)
def test_malformed_reasons_do_not_carry_offsets_or_input_text(
    raw: bytes, field: str, reason: str
) -> None:
    result = decode_or_error(FrameDecoder(), raw, raw)
    assert isinstance(result, DecodeError)
    assert (result.field, result.reason) == (field, reason)


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize(
    "template",
    ['{"stream":"btcusdt@kline_1m","data":%s}', '{"e":"kline","k":%s}', "%s"],
)
@pytest.mark.parametrize("stream", ["", "userData"])
def test_deeply_nested_frames_are_malformed_not_a_crash(
    template: str, depth: int, stream: str
) -> None:
    raw = (template % _nested_text(depth)).encode()
    result = decode_or_error(FrameDecoder(stream=stream), raw, raw[:60])
    assert isinstance(result, DecodeError)


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("field", ["o", "h", "l", "c", "v", "q"])
def test_non_finite_market_prices_are_malformed(value: str, field: str) -> None:
    frame = recorded_kline_frame()
    frame["data"]["k"][field] = value
    result = decode_or_error(FrameDecoder(), compact(frame), frame)
    assert isinstance(result, DecodeError)
    assert result.field == f"$.data.k.{field}"


@pytest.mark.parametrize("value", [v for v in NON_FINITE if v != "1e400"])  # a finite Decimal
@pytest.mark.parametrize("field", ["q", "p", "l", "z", "L", "n"])
def test_non_finite_user_data_decimals_are_malformed(value: str, field: str) -> None:
    report = {
        "e": "executionReport",
        "E": 1,
        "s": "BTCUSDT",
        "c": "x",
        "S": "BUY",
        "o": "LIMIT",
        "f": "GTC",
        "q": "1.0",
        "p": "1.0",
        "x": "TRADE",
        "X": "FILLED",
        "i": 1,
        "l": "1.0",
        "z": "1.0",
        "L": "1.0",
        "n": "0.001",
        "N": "BNB",
    }
    report[field] = value
    for raw in (compact(report), compact({"subscriptionId": 0, "event": report})):
        result = decode_or_error(FrameDecoder(stream="userData"), raw, raw)
        assert isinstance(result, DecodeError), raw
        # The path is the report's; the reason names the field.
        assert (result.field, result.reason) in (
            ("$", f"`{field}` is not a finite number"),
            ("$.event", f"`{field}` is not a finite number"),
        ), result


def recorded_kline_frame() -> dict[str, Any]:
    """A kline frame captured from Binance (unicorn-fy's test data, 2020-10-02), to edit."""
    return {"stream": "btcusdt@kline_1m", "data": copy.deepcopy(CAPTURED_KLINE)}


# REST: every body through every decoder, as bytes (``decode_*``) and as the dicts
# python-binance hands to ``convert_as``.
REST_DECODERS: list[tuple[str, Callable[[bytes], Any]]] = [
    (
        "klines",
        lambda raw: rest.klines_to_candles(
            rest.decode_klines(raw), symbol="BTCUSDT", interval="1h", ts_init=TS_INIT
        ),
    ),
    ("exchangeInfo", rest.exchange_rules),
    ("order", rest.decode_order_response),
    ("cancel", rest.decode_cancel_response),
    ("orderState", rest.decode_order_state),
    ("openOrders", rest.decode_open_orders),
    ("account", rest.decode_account),
    ("time", rest.decode_server_time),
    ("error", rest.decode_error),
]
REST_KINDS: list[type[Any]] = [
    rest.ExchangeInfo,
    rest.OrderResponse,
    rest.CancelResponse,
    rest.OrderState,
    list[rest.OrderState],
    list[rest.KlineRow],
    rest.Account,
]


def test_mutated_rest_bodies_raise_only_decode_errors(binance_data: Path) -> None:
    bodies = [Frame(body, "", "rest") for body in recorded_rest_bodies(binance_data)]
    failures = Counter()
    for mutant in mutants(bodies, MUTATED_REST_BODIES, seed=SEED + 1):
        for name, decode in REST_DECODERS:
            try:
                decode(mutant.raw)
            except DecodeError as error:
                check_error(error, mutant)
                failures[name] += 1
            except Exception as error:  # noqa: BLE001  (the oracle)
                pytest.fail(f"{type(error).__name__}: {error} escaped {name} for {mutant}")
        # An error response maps to an ExchangeError whatever its body.
        assert rest.error_from_response(mutant.raw, http_status=400) is not None
        try:
            parsed = json.loads(mutant.raw)
        except (ValueError, RecursionError):
            continue
        for kind in REST_KINDS:
            try:
                convert_as(kind, parsed, stream="rest")
            except DecodeError as error:
                check_error(error, mutant)
            except Exception as error:  # noqa: BLE001  (the oracle)
                pytest.fail(
                    f"{type(error).__name__}: {error} escaped convert_as({kind}) for {mutant}"
                )
    assert all(failures[name] for name, _ in REST_DECODERS), failures


# hypothesis: random JSON, random bytes, recorded frames with fields of the wrong type.

VOCABULARY = [
    "e",
    "E",
    "s",
    "k",
    "stream",
    "data",
    "event",
    "subscriptionId",
    "u",
    "result",
    "error",
    "b",
    "a",
    "B",
    "A",
    "p",
    "q",
    "t",
    "T",
    "o",
    "c",
    "h",
    "l",
    "x",
    "X",
    "i",
    "z",
    "L",
]
EVENT_TYPES = [
    "kline",
    "aggTrade",
    "trade",
    "bookTicker",
    "depthUpdate",
    "executionReport",
    "outboundAccountPosition",
    "ORDER_TRADE_UPDATE",
    "ACCOUNT_UPDATE",
    "24hrTicker",
]
STREAMS = ["", "userData", "btcusdt@bookTicker", "btcusdt@depth5"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(EVENT_TYPES + NON_FINITE + ODD_TEXT)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(VOCABULARY) | st.text(max_size=4), children, max_size=6)
    ),
    max_leaves=30,
)


@settings(
    max_examples=HYPOTHESIS_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    doc=json_values,
    stream=st.sampled_from(STREAMS),
    combined=st.sampled_from(["", "btcusdt@kline_1m", "btcusdt@aggTrade", "abc"]),
)
def test_random_json(doc: Any, stream: str, combined: str) -> None:
    if combined:
        doc = {"stream": combined, "data": doc}
    decode_or_error(FrameDecoder(stream=stream), json.dumps(doc), doc)


@settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None)
@given(
    raw=st.binary(max_size=300),
    prefix=st.sampled_from(
        [b"", b'{"stream":"', b'{"stream":"btcusdt@kline_1m","data":', b'{"e":"']
    ),
    stream=st.sampled_from(STREAMS),
)
def test_random_bytes(raw: bytes, prefix: bytes, stream: str) -> None:
    decode_or_error(FrameDecoder(stream=stream), prefix + raw, prefix + raw)


@pytest.fixture(scope="module")
def typed_frames(corpus: list[Frame]) -> list[Frame]:
    """The recordings that decode to an svc event (not ``UnknownEvent``)."""
    typed = []
    for frame in corpus:
        with contextlib.suppress(DecodeError):
            if not isinstance(
                FrameDecoder(stream=frame.stream).decode(frame.raw(), 0), UnknownEvent
            ):
                typed.append(frame)
    return typed


@settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None)
@given(data=st.data())
def test_recorded_frames_with_fields_of_the_wrong_type(
    typed_frames: list[Frame], data: st.DataObject
) -> None:
    frame = data.draw(st.sampled_from(typed_frames))
    doc = copy.deepcopy(frame.doc)
    paths = leaf_paths(doc)
    chosen = data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3, unique=True))
    for path in sorted(chosen, key=len, reverse=True):  # deepest first: parents may be replaced
        with contextlib.suppress(KeyError, IndexError, TypeError):
            set_at(doc, path, data.draw(json_values))
    decode_or_error(FrameDecoder(stream=frame.stream), compact(doc), doc)


# ---------------------------------------------------------------------- 2. the feed, in process


class ListSocket:
    """Hands out ``frames`` one by one, then stays silent."""

    def __init__(self, frames: list[bytes | str]) -> None:
        self._frames = list(reversed(frames))

    async def recv(self) -> bytes | str:
        if not self._frames:
            await asyncio.sleep(3600)
        return self._frames.pop()


def opener(frames: list[bytes | str]) -> Callable[[list[str]], Any]:
    sockets = [ListSocket(frames)]

    def open_socket(_streams: list[str]) -> Any:
        @contextlib.asynccontextmanager
        async def connection() -> AsyncIterator[ListSocket]:
            yield sockets.pop(0) if sockets else ListSocket([])

        return connection()

    return open_socket


def as_received(raw: bytes) -> bytes | str:
    """A text frame as python-binance hands it over (str); bytes where not UTF-8."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


async def feed_through(
    frames: list[bytes | str], streams: list[str]
) -> tuple[MarketFeed, list[Any]]:
    published: list[Any] = []
    feed = MarketFeed(
        streams=streams,
        open_socket=opener(frames),
        exchange=FakeExchange(
            rules={"BTCUSDT": recorded_rules("BTCUSDT")}, prices={"BTCUSDT": Decimal(100)}
        ),
        publish=published.append,
        settings=FeedSettings(watchdog_seconds=60, warmup_klines=0),
        recorder=StageRecorder(),
    )
    task = asyncio.create_task(feed.run())

    def counted() -> int:
        statistics = feed.statistics
        return (
            sum(statistics.malformed.values())
            + sum(statistics.unknown.values())
            + sum(statistics.messages.values())
        )

    try:
        async with asyncio.timeout(60):
            while counted() < len(frames):
                if task.done():
                    task.result()  # the feed died: show why
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return feed, published


async def test_every_mutated_frame_is_counted_once_and_the_statistics_stay_bounded(
    stream_mutants: list[Mutant],
) -> None:
    frames = [as_received(m.raw) for m in stream_mutants if m.stream == ""]
    feed, published = await feed_through(frames, ["btcusdt@kline_1h", "btcusdt@aggTrade"])
    statistics = feed.statistics
    counted = Counter(
        malformed=sum(statistics.malformed.values()),
        unknown=sum(statistics.unknown.values()),
        messages=sum(statistics.messages.values()),
    )
    assert counted.total() == len(frames), counted  # every frame exactly once
    assert counted["malformed"] > len(frames) / 3
    # Distinct garbage must not grow the counters (they are exported as metric attributes).
    assert len(statistics.malformed) <= 257
    assert len(statistics.unknown) <= 257
    assert len(statistics.messages) <= 257 + 2 + len({type(e) for e in published})
    for event in published:
        check_event(event, "published")


async def test_one_corrupt_kline_does_not_stop_the_klines_after_it() -> None:
    frames = _hourly_klines(6)
    corrupt = copy.deepcopy(frames[2])
    corrupt["data"]["k"]["t"] = 10**30  # an open time far in the future, close time intact
    stream = [compact(f).decode() for f in frames[:2]] + [compact(corrupt).decode()]
    stream += [compact(f).decode() for f in frames[2:]]
    feed, published = await feed_through(stream, ["btcusdt@kline_1h"])
    closed = [e for e in published if isinstance(e, Candle)]
    assert len(closed) == 6
    assert feed.statistics.duplicates == 0
    assert feed.statistics.malformed == {"invariant: kline times do not match the interval": 1}


def _hourly_klines(count: int) -> list[dict[str, Any]]:
    hour = 3_600_000
    start = 1_588_291_200_000  # 2020-05-01T00:00Z, as in the recorded klines
    frames = []
    for index in range(count):
        frame = recorded_kline_frame()
        frame["stream"] = "btcusdt@kline_1h"
        kline = frame["data"]["k"]
        kline.update(t=start + index * hour, T=start + (index + 1) * hour - 1, i="1h", x=True)
        frame["data"]["E"] = kline["T"] + 1
        frames.append(frame)
    return frames


USER_DATA_TYPES = (
    "executionReport",
    "outboundAccountPosition",
    "ORDER_TRADE_UPDATE",
    "ACCOUNT_UPDATE",
)


async def test_mutated_user_data_is_counted_once(corpus: list[Frame]) -> None:
    recorded = [
        Frame(f.doc, "userData", f.source)
        for f in corpus
        if f.stream == "userData" or (isinstance(f.doc, dict) and f.doc.get("e") in USER_DATA_TYPES)
    ]
    frames = [as_received(m.raw) for m in mutants(recorded, 1_000, seed=SEED + 2)]
    updates: list[OrderUpdate] = []
    open_socket = opener(frames)
    feed = UserDataFeed(open_socket=lambda: open_socket([]), on_update=updates.append)
    task = asyncio.create_task(feed.run())
    try:
        async with asyncio.timeout(30):
            while sum(feed.statistics.malformed.values()) + sum(
                feed.statistics.messages.values()
            ) < len(frames):
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sum(feed.statistics.malformed.values()) > 100
    assert len(feed.statistics.malformed) <= 257
    for update in updates:
        check_event(update, "user data")


# ---------------------------------------------------------------------- 3. a live feed

PRICE_FIELDS = ("o", "h", "l", "c", "v", "q")


def _bad_kline(category: str, frame: dict[str, Any], rng: random.Random) -> str:
    """One bad frame of ``category``, made from a copy of a recorded kline frame."""
    frame = copy.deepcopy(frame)
    kline = frame["data"]["k"]
    if category == "not_json":
        return "not json " + "".join(
            rng.choice("{}[],:\"'abc123 ") for _ in range(rng.randint(0, 40))
        )
    if category == "truncated":
        text = json.dumps(frame)
        return text[: rng.randrange(12, len(text) - 1)]
    if category == "deep_nesting":
        marker = json.dumps(frame).replace('"k": {', '"k": __NEST__, "ignored": {', 1)
        return marker.replace("__NEST__", _nested_text(rng.choice([2_000, 10_000])))
    if category == "wrong_type":
        kline[rng.choice(PRICE_FIELDS)] = rng.choice([None, True, [], {}, [1], {"a": 1}])
    elif category == "non_numeric":
        kline[rng.choice(PRICE_FIELDS)] = rng.choice(["abc", "1,5", "", " 12", "0x1p3", "1_0"])
    elif category == "unicode_number":
        kline[rng.choice(PRICE_FIELDS)] = rng.choice(["１２３", "١٢٣", "12\u200b3", "٣.٥"])
    elif category == "invalid_surrogate":
        kline["s"] = rng.choice(["\ud800", "BTC\udfffUSDT"])
    elif category == "non_finite":
        kline[rng.choice(PRICE_FIELDS)] = rng.choice(
            ["NaN", "Infinity", "-Infinity", "nan", "1e400"]
        )
    elif category == "missing_field":
        del kline[rng.choice(["t", "T", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "i"])]
    elif category == "huge_time":
        kline["t"] = rng.choice([10**30, 2**64, kline["t"] + 7 * 86_400_000])
    elif category == "implausible":
        kline["l"], kline["h"] = str(float(kline["h"]) + 1), kline["l"]
    elif category == "wrong_event_type":
        frame["data"]["e"] = rng.choice(["trade", "aggTrade", "klines", ""])
    elif category == "unknown_type":
        return json.dumps(
            {
                "stream": "btcusdt@miniTicker",
                "data": {"e": "24hrMiniTicker", "E": 1, "s": "BTCUSDT"},
            }
        )
    else:
        raise AssertionError(category)
    return json.dumps(frame)


BAD_CATEGORIES = (
    "not_json",
    "truncated",
    "deep_nesting",
    "wrong_type",
    "non_numeric",
    "unicode_number",
    "invalid_surrogate",
    "non_finite",
    "missing_field",
    "huge_time",
    "implausible",
    "wrong_event_type",
    "unknown_type",
)
CATEGORY_REASONS = {
    # category: what every one of its frames is counted as ("field: reason" contains one)
    "not_json": ("$: JSON is malformed",),
    "truncated": ("$: Input data was truncated",),
    "deep_nesting": ("$: nested too deeply",),
    "wrong_type": ("Expected `float`, got",),
    "non_numeric": ("Expected `float`, got `str`",),
    "unicode_number": ("Expected `float`, got `str`",),
    "invalid_surrogate": ("$: JSON is malformed",),
    "non_finite": ("Expected `float` >= 0.0", "Expected `float` <=", "Number out of range"),
    "missing_field": ("$.data.k: Object missing required field",),
    "huge_time": ("invariant: kline times do not match the interval",),
    "implausible": ("invariant: implausible values",),
    "wrong_event_type": ("$.data.e: Invalid value",),
}
BAD_PER_CATEGORY = 120
LIVE_CONFIG = """
symbols = ["BTCUSDT"]
intervals = ["1h"]
[sim]
rate = 400.0
speed = 1.0
[feed]
warmup_klines = 0
[risk]
max_orders_per_minute = 100000
max_position = 1.0
max_signal_age_seconds = 0  # recorded 2020 data: every event is old
[[strategies]]
kind = "ema_crossover"
symbol = "BTCUSDT"
interval = "1h"
fast = 3
slow = 8
quantity = 0.001
"""


def live_capture(binance_data: Path) -> tuple[list[str], dict[str, list[str]], int]:
    """300 recorded klines with ``BAD_PER_CATEGORY`` bad frames of every category between
    the first 250 of them; the last 50 arrive after all the bad ones."""
    rng = random.Random(SEED + 3)
    valid = kline_frames(binance_data, 300)
    bad = {
        c: [_bad_kline(c, rng.choice(valid), rng) for _ in range(BAD_PER_CATEGORY)]
        for c in BAD_CATEGORIES
    }
    pool = [frame for frames in bad.values() for frame in frames]
    rng.shuffle(pool)
    lines: list[str] = []
    per_gap = math.ceil(len(pool) / 250)
    for index, frame in enumerate(valid):
        lines.append(json.dumps(frame))
        lines += pool[index * per_gap : (index + 1) * per_gap]
    return lines, bad, len(valid)


async def test_a_live_feed_with_bad_frames_interleaved(tmp_path: Path, binance_data: Path) -> None:
    lines, bad, valid = live_capture(binance_data)
    assert sum(len(frames) for frames in bad.values()) >= 1_500
    # The oracle: the same frames, in the same order, through a MarketFeed in process.
    expected, _ = await feed_through(lines, ["btcusdt@kline_1h"])
    for category, frames in bad.items():
        reasons, _ = await feed_through(frames, ["btcusdt@kline_1h"])
        if category == "unknown_type":
            assert reasons.statistics.unknown == {"24hrMiniTicker": len(frames)}
        else:
            malformed = reasons.statistics.malformed
            assert sum(malformed.values()) == len(frames), (category, reasons.statistics)
            for reason in malformed:
                assert any(part in reason for part in CATEGORY_REASONS[category]), (
                    category,
                    reason,
                )
    capture = tmp_path / "hostile.jsonl"
    # Each frame travels as {"raw": ...}: the simulator splits its file on line breaks,
    # which unicode has more of than "\n".
    capture.write_text("".join(json.dumps({"raw": line}) + "\n" for line in lines))
    config = tmp_path / "svc.toml"
    config.write_text(LIVE_CONFIG)
    summary_path = tmp_path / "summary.json"
    process = await asyncio.create_subprocess_exec(
        *SVC,
        "run",
        "--config",
        str(config),
        "--sim-frames",
        str(capture),
        "--duration",
        "14",
        "--summary-json",
        str(summary_path),
        "--audit-path",
        str(tmp_path / "audit.jsonl"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SVC_TELEMETRY_HEALTH_PORT": "0"},
    )
    _, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode()[-3000:]
    summary = json.loads(summary_path.read_text())
    feed = summary["feed"]
    assert summary["exit_reason"] == "duration"
    # Not stuck: every recorded kline arrived, the 50 after the last bad frame included,
    # none was mistaken for a duplicate or a gap, and the strategy kept deciding.
    assert feed["messages"] == {"Candle": {"BTCUSDT@1h": valid}}
    assert (feed["duplicate_klines"], feed["kline_gaps"]) == (0, 0)
    assert summary["signals"] > 0
    assert feed["reconnects"] == {}
    # Counted by reason, exactly as the decoder and feed tell them apart in process.
    assert feed["malformed"] == dict(expected.statistics.malformed)
    assert sum(feed["malformed"].values()) == sum(
        len(f) for c, f in bad.items() if c != "unknown_type"
    )
    assert feed["unknown_event_types"] == {"24hrMiniTicker": BAD_PER_CATEGORY}
    print(
        json.dumps(
            {
                "klines": valid,
                "bad_frames": sum(len(f) for f in bad.values()),
                "malformed": sum(feed["malformed"].values()),
                "distinct_reasons": len(feed["malformed"]),
                "unknown": sum(feed["unknown_event_types"].values()),
                "signals": summary["signals"],
            }
        )
    )


# ---------------------------------------------------------------------- bad configuration

TOML_ROWS = [
    # (TOML text, the field the message must name); tests/test_config.py has more
    ("[emergency]\nshutdown_budget_seconds = 0\n", "emergency.shutdown_budget_seconds"),
    ("[emergency]\nshutdown_budget_seconds = -5\n", "emergency.shutdown_budget_seconds"),
    ("[emergency]\nshutdown_budget_seconds = inf\n", "emergency.shutdown_budget_seconds"),
    ('[emergency]\nflatten = "yes"\n', "emergency.flatten"),
    ("[emergency]\nflaten = true\n", "emergency.flaten"),
    ('[reconcile]\nunknown_orders = "delete"\n', "reconcile.unknown_orders"),
    ("[reconcile]\nretry_seconds = 0\n", "reconcile.retry_seconds"),
    ("[reconcile]\nretry_seconds = nan\n", "reconcile.retry_seconds"),
    ("shard_count = 0\n", "shard_count"),
    ("shard_count = 3\n", "shard_count"),  # more shards than the two default symbols
    ('shard_count = "two"\n', "shard_count"),
    ("shard_count = 2\nshard_index = 2\n", "shard_index"),
    ("shard_index = -2\n", "shard_index"),
    ('[sim]\nurl = "ftp://127.0.0.1:8765"\n', "sim.url"),
    ('[sim]\nurl = "127.0.0.1:8765"\n', "sim.url"),
    ("[sim]\nurl = 8765\n", "sim.url"),
    ("[sim]\nspeed = 0\n", "sim.speed"),
    ("[sim]\nrate = inf\n", "sim.rate"),
    ('[sim]\nseed = "x"\n', "sim.seed"),
    ('[sim]\nmarket = "/nonexistent/klines.json"\n', "sim.market"),
    ("[feed]\nbackoff_initial = 2.0\nbackoff_max = 1.0\n", "feed.backoff_max"),
    ("[feed]\nwarmup_klines = 5000\n", "feed.warmup_klines"),
    ("[feed]\nconnect_attempts = 0\n", "feed.connect_attempts"),
    ("[feed]\nwatchdog_seconds = nan\n", "feed.watchdog_seconds"),
    ("[telemetry]\nhealth_port = 70000\n", "telemetry.health_port"),
    ("[telemetry]\nhealth_port = -2\n", "telemetry.health_port"),
    ("[telemetry]\nloop_lag_interval = 0\n", "telemetry.loop_lag_interval"),
    ("[telemetry]\nslow_tick_ms = -1\n", "telemetry.slow_tick_ms"),
    ('[telemetry]\nhealth_host = ""\n', "telemetry.health_host"),
    ('[audit]\nfsync = "sometimes"\n', "audit.fsync"),
    ('[audit]\npath = ""\n', "audit.path"),
    ("[risk]\nmax_position = true\n", "risk.max_position"),
    ("[risk]\nmax_orders_per_minute = 0\n", "risk.max_orders_per_minute"),
    ("[risk]\nmax_order_notional = -1\n", "risk.max_order_notional"),
    ("duration = nan\n", "duration"),
    ("duration = inf\n", "duration"),
    ("status_interval = 0.5\n", "status_interval"),
    ('symbols = "BTCUSDT"\n', "symbols"),
    ("symbols = []\n", "symbols"),
    ('symbols = ["BTCUSDT", 5]\n', "symbols[1]"),
    ('intervals = ["1m", "90s"]\n', "intervals"),
    ('log_level = "loud"\n', "log_level"),
    ("[telemetery]\nhealth_port = 1\n", "telemetery"),
    ('[[strategies]]\nsymbol = "BTCUSDT"\n', "strategies[0].kind"),
    ('[[strategies]]\nkind = "moon"\nsymbol = "BTCUSDT"\n', "strategies[0].kind"),
    (
        (
            '[[strategies]]\nkind = "ema_crossover"\nsymbol = "BTCUSDT"\ninterval = "1m"\n'
            "fast = 9\nslow = 3\nquantity = 0.001\n"
        ),
        "strategies[0].fast",
    ),
]


@pytest.fixture
def refuse_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``svc run`` in process must stop at configuration: a Service means it was accepted."""

    def accepted(*_args: Any, **_kwargs: Any) -> Any:
        pytest.fail("the configuration was accepted and svc started")

    monkeypatch.setattr("svc.app.Service", accepted)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = svc_main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("text", "field"), TOML_ROWS)
def test_bad_toml_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str
) -> None:
    file = tmp_path / "svc.toml"
    file.write_text(text)
    code, err = run_cli(["check-config", str(file)], capsys)
    assert (code, f"configuration error: {field}:" in err) == (2, True), err


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'symbols = ["BTC\xffUSDT"]\n', "not UTF-8"),
        (b"\x00\x01\x02\x89PNG\r\n", "not"),
        (b"symbols = [\n", "not valid TOML"),
        (b"[sim\n", "not valid TOML"),
    ],
)
def test_a_file_that_is_not_toml_names_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, words: str
) -> None:
    file = tmp_path / "svc.toml"
    file.write_bytes(content)
    code, err = run_cli(["check-config", str(file)], capsys)
    assert code == 2, err
    assert "configuration error: config:" in err
    assert words in err


ENV_ROWS = [
    ({"SVC_EMERGENCY_SHUTDOWN_BUDGET_SECONDS": "soon"}, "emergency.shutdown_budget_seconds"),
    ({"SVC_EMERGENCY_FLATTEN": "perhaps"}, "emergency.flatten"),
    ({"SVC_EMERGENCY_FLATTEN_ON_FATAL": "2"}, "emergency.flatten_on_fatal"),
    ({"SVC_RECONCILE_UNKNOWN_ORDERS": "delete"}, "reconcile.unknown_orders"),
    ({"SVC_RECONCILE_RETRY_SECONDS": "-1"}, "reconcile.retry_seconds"),
    ({"SVC_SHARD_COUNT": "0"}, "shard_count"),
    ({"SVC_SHARD_COUNT": "two"}, "shard_count"),
    ({"SVC_SHARD_INDEX": "9"}, "shard_index"),
    ({"SVC_SIM_URL": "localhost:8765"}, "sim.url"),
    ({"SVC_SIM_RATE": "inf"}, "sim.rate"),
    ({"SVC_SIM_SPEED": "-60"}, "sim.speed"),
    ({"SVC_TELEMETRY_HEALTH_PORT": "http"}, "telemetry.health_port"),
    ({"SVC_TELEMETRY_HEALTH_HOST": ""}, "telemetry.health_host"),  # was: every interface
    ({"SVC_DURATION": "nan"}, "duration"),
    ({"SVC_AUDIT_FSYNC": "sometimes"}, "audit.fsync"),
    ({"SVC_SYMBOLS": ","}, "symbols"),
    ({"SVC_FEED_WARMUP_KLINES": "1e3"}, "feed.warmup_klines"),
]
CLI_ROWS = [
    (["run", "--shard-count", "0"], "shard_count:"),
    (["run", "--shard-index", "x"], "shard_index:"),
    (["run", "--sim-url", "127.0.0.1:8765"], "sim.url:"),
    (["run", "--log-level", "LOUD"], "log_level:"),
    (["run", "--duration", "-3"], "duration:"),
    (["run", "--symbols", "BTCUSDT,btcusdt"], "symbols:"),
    (["run", "--config", "/nonexistent/svc.toml"], "config:"),
    (["run", "--exchange", "kraken"], "--exchange"),
    (["run", "--no-such-option"], "--no-such-option"),
    (["sim", "--port", "0", "--duration", "0.1", "--speed", "inf"], "speed:"),
    (["sim", "--port", "0", "--duration", "0.1", "--rate", "nan"], "--rate"),
    (["sim", "--port", "0", "--duration", "0.1", "--reject-next", "-1"], "faults.reject_next:"),
    (["sim", "--port", "0", "--duration", "0.1", "--clock-skew-ms", "x"], "--clock-skew-ms"),
    (["sim", "--port", "0", "--duration", "0.1", "--symbols", "BTC-USDT"], "symbols:"),
    (["audit", "verify", "/nonexistent/audit.jsonl"], "file:"),
]


@pytest.mark.parametrize(("environ", "field"), ENV_ROWS)
def test_bad_environment_names_the_field(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    refuse_to_run: None,
    environ: dict[str, str],
    field: str,
) -> None:
    for name in [n for n in os.environ if n.startswith("SVC_")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    code, err = run_cli(["run"], capsys)
    assert (code, f"configuration error: {field}:" in err) == (2, True), err


@pytest.mark.parametrize(("argv", "words"), CLI_ROWS)
def test_bad_command_lines_name_the_option(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    refuse_to_run: None,
    argv: list[str],
    words: str,
) -> None:
    for name in [n for n in os.environ if n.startswith("SVC_")]:
        monkeypatch.delenv(name)
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert words in err


@pytest.mark.parametrize(
    ("argv", "environ", "field"),
    [
        # Errors found after start-up began (telemetry, credentials) still exit 2, promptly.
        (
            ["run"],
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "pigeon",
            },
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            ["run", "--exchange", "binance"],
            {"BINANCE_API_KEY_FILE": "/nonexistent/key", "BINANCE_API_SECRET": "s"},
            "BINANCE_API_KEY_FILE",
        ),
        (["run", "--exchange", "binance-testnet"], {}, "BINANCE_API_KEY"),
        (["run"], {"SVC_SHARD_COUNT": "0"}, "shard_count"),
        (
            ["run"],
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_BSP_MAX_QUEUE_SIZE": "256"},
            "OTEL_BSP_*",
        ),
    ],
)
async def test_the_real_process_exits_2_naming_the_field(
    tmp_path: Path, argv: list[str], environ: dict[str, str], field: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SVC_", "BINANCE_", "OTEL_"))}
    process = await asyncio.create_subprocess_exec(
        *SVC,
        *argv,
        "--duration",
        "5",
        "--audit-path",
        str(tmp_path / "audit.jsonl"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**base, "SVC_TELEMETRY_HEALTH_PORT": "-1", **environ},
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2, err.decode()[-2000:]
    assert f"configuration error: {field}:" in err.decode()
