"""Sharding (``svc.sharding``): a deterministic, balanced split of the configured symbols,
the StatefulSet ordinal in ``HOSTNAME``, and the path from the command line to the symbols
and strategies a replica trades."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from svc.app import Service
from svc.cli import _run_overrides, build_parser
from svc.config import build_config, default_strategies
from svc.errors import ConfigError
from svc.sharding import shard_of, shard_symbols

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")

symbol_lists = st.lists(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=8).map(
        lambda s: s + "USDT"
    ),
    min_size=1,
    max_size=40,
    unique=True,
)


def shards(symbols: tuple[str, ...] | list[str], count: int) -> list[tuple[str, ...]]:
    return [shard_symbols(symbols, shard_index=i, shard_count=count) for i in range(count)]


@given(symbols=symbol_lists, data=st.data())
def test_every_symbol_is_in_exactly_one_shard_and_sizes_differ_by_at_most_one(
    symbols: list[str], data: st.DataObject
) -> None:
    count = data.draw(st.integers(min_value=1, max_value=len(symbols)), label="shard_count")
    split = shards(symbols, count)
    everything = [symbol for shard in split for symbol in shard]
    assert sorted(everything) == sorted(symbols)  # the union, and no symbol twice
    sizes = [len(shard) for shard in split]
    assert max(sizes) - min(sizes) <= 1
    assert min(sizes) >= 1


@given(symbols=symbol_lists, data=st.data())
def test_the_split_does_not_depend_on_the_configured_order(
    symbols: list[str], data: st.DataObject
) -> None:
    count = data.draw(st.integers(min_value=1, max_value=len(symbols)), label="shard_count")
    shuffled = data.draw(st.permutations(symbols), label="shuffled")
    assert shards(symbols, count) == shards(shuffled, count)


def test_the_split_is_the_documented_round_robin_over_sorted_symbols() -> None:
    # Every replica computes the same split on its own, so pin it: a change here moves
    # symbols between running pods.
    assert shards(SYMBOLS, 2) == [
        ("BNBUSDT", "ETHUSDT", "XRPUSDT"),
        ("BTCUSDT", "SOLUSDT"),
    ]
    assert shards(SYMBOLS, 1) == [tuple(sorted(SYMBOLS))]


@pytest.mark.parametrize("index", [-1, 3, 7])
def test_an_index_outside_the_shards_is_refused(index: int) -> None:
    with pytest.raises(ConfigError) as raised:
        shard_symbols(SYMBOLS, shard_index=index, shard_count=3)
    assert raised.value.field == "shard_index"


@pytest.mark.parametrize(
    ("hostname", "count", "expected"),
    [("svc-2", 3, 2), ("svc-0", 3, 0), ("svc-trading-prod-11", 12, 11), ("svc-02", 3, 2)],
)
def test_the_statefulset_ordinal_in_hostname_is_the_shard(
    hostname: str, count: int, expected: int
) -> None:
    environ = {"HOSTNAME": hostname}
    assert shard_of(shard_index=-1, shard_count=count, environ=environ) == expected


def test_an_explicit_index_wins_over_hostname_and_one_shard_needs_no_hostname() -> None:
    assert shard_of(shard_index=1, shard_count=3, environ={"HOSTNAME": "svc-2"}) == 1
    assert shard_of(shard_index=-1, shard_count=1, environ={}) == 0


@pytest.mark.parametrize(
    "hostname", ["", "svc", "svc-", "svc-a", "laptop.local", "svc-2x", "svc-\u00b2"]
)
def test_a_hostname_without_an_ordinal_is_a_config_error_naming_shard_index(
    hostname: str,
) -> None:
    with pytest.raises(ConfigError) as raised:
        shard_of(shard_index=-1, shard_count=3, environ={"HOSTNAME": hostname})
    assert raised.value.field == "shard_index"
    assert "HOSTNAME" in str(raised.value)


def test_an_ordinal_beyond_the_shard_count_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as raised:
        shard_of(shard_index=-1, shard_count=3, environ={"HOSTNAME": "svc-3"})
    assert raised.value.field == "shard_index"
    assert "shard_count" in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"shard_count": "3", "symbols": "BTCUSDT,ETHUSDT"}, "shard_count"),
        ({"shard_count": "0"}, "shard_count"),
        ({"shard_count": "2", "shard_index": "2"}, "shard_index"),
        ({"shard_count": "2", "shard_index": "-2"}, "shard_index"),
        ({"shard_index": "two"}, "shard_index"),
    ],
)
def test_configuration_validates_the_shards(overrides: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build_config(environ={}, overrides=overrides)
    assert raised.value.field == field


def test_the_environment_sets_the_shards() -> None:
    config = build_config(environ={"SVC_SHARD_INDEX": "1", "SVC_SHARD_COUNT": "2"})
    assert (config.shard_index, config.shard_count) == (1, 2)


def test_run_options_reach_the_config() -> None:
    args = build_parser().parse_args(
        ["run", "--shard-index", "1", "--shard-count", "2", "--symbols", ",".join(SYMBOLS)]
    )
    config = build_config(environ={}, overrides=_run_overrides(args))
    assert (config.shard_index, config.shard_count) == (1, 2)


def test_the_service_trades_its_shard_and_only_its_shards_strategies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOSTNAME", "svc-1")
    strategies = tuple(
        {"kind": "trade_flow", "symbol": symbol, "quantity": 0.01} for symbol in SYMBOLS
    )
    config = msgspec.structs.replace(
        build_config(environ={}, overrides={"symbols": ",".join(SYMBOLS), "shard_count": "2"}),
        strategies=strategies,
    )
    service = Service(config)
    assert service.shard == 1
    assert service.config.symbols == ("BTCUSDT", "SOLUSDT")
    assert service.config.shard_index == 1
    assert [spec["symbol"] for spec in default_strategies(service.config)] == [
        "BTCUSDT",
        "SOLUSDT",
    ]


def test_one_shard_trades_every_symbol_and_every_configured_strategy() -> None:
    strategies = tuple(
        {"kind": "trade_flow", "symbol": symbol, "quantity": 0.01} for symbol in SYMBOLS
    )
    config = msgspec.structs.replace(
        build_config(environ={}, overrides={"symbols": ",".join(SYMBOLS)}),
        strategies=strategies,
    )
    service = Service(config)
    assert service.config.symbols == SYMBOLS
    assert len(default_strategies(service.config)) == len(SYMBOLS)


def test_the_service_refuses_a_hostname_without_an_ordinal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOSTNAME", "workstation")
    config = build_config(environ={}, overrides={"shard_count": "2"})
    with pytest.raises(ConfigError) as raised:
        Service(config)
    assert raised.value.field == "shard_index"
