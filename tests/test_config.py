"""Configuration: precedence, conversion, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from svc.config import Credentials, build_config, default_strategies, load_credentials
from svc.errors import ConfigError
from svc.strategy import build_strategies


def test_defaults_build_and_their_strategies_are_valid() -> None:
    config = build_config(environ={})
    assert config.exchange == "sim"
    assert config.symbols == ("BTCUSDT", "ETHUSDT")
    assert len(build_strategies(default_strategies(config))) == 4


def test_precedence_file_then_environment_then_command_line(tmp_path: Path) -> None:
    file = tmp_path / "svc.toml"
    file.write_text(
        'symbols = ["BTCUSDT"]\n[risk]\nmax_position = 1.0\nmax_orders_per_minute = 5\n'
    )
    environ = {"SVC_RISK_MAX_POSITION": "2.5", "SVC_INTERVALS": "5m,15m", "SVC_SIM_SPEED": "10"}
    config = build_config(file=file, environ=environ, overrides={"risk": {"max_position": "3"}})
    assert config.symbols == ("BTCUSDT",)  # file
    assert config.intervals == ("5m", "15m")  # environment
    assert config.sim.speed == 10.0  # environment, nested
    assert config.risk.max_orders_per_minute == 5  # file, not overridden
    assert config.risk.max_position == 3.0  # command line beats environment and file


@pytest.mark.parametrize(
    ("source", "field", "words"),
    [
        ({"SVC_RISK_MAX_POSITION": "lots"}, "risk.max_position", "number"),
        ({"SVC_FEED_CONNECT_ATTEMPTS": "1.5"}, "feed.connect_attempts", "integer"),
        ({"SVC_RISK_KILL_SWITCH": "maybe"}, "risk.kill_switch", "true or false"),
        ({"SVC_EXCHANGE": "kraken"}, "exchange", "enum"),
        ({"SVC_SYMBOLS": "btcusdt"}, "symbols", "upper-case"),
        ({"SVC_INTERVALS": "7m"}, "intervals", "1m"),
        ({"SVC_DURATION": "-1"}, "duration", ">= 0"),
        ({"SVC_SIM_FRAMES": "/nonexistent.jsonl"}, "sim.frames", "not a file"),
        ({"SVC_LOG_LEVEL": "LOUD"}, "log_level", "enum"),
    ],
)
def test_environment_errors_name_the_field(source: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(environ=source)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_file_errors_name_the_field(tmp_path: Path) -> None:
    file = tmp_path / "svc.toml"
    file.write_text("[feed]\nwatchdog = 3\n")
    with pytest.raises(ConfigError) as caught:
        build_config(file=file, environ={})
    assert caught.value.field == "feed.watchdog"
    assert "watchdog_seconds" in str(caught.value)
    file.write_text("symbols = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_config(file=file, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        build_config(file=tmp_path / "missing.toml", environ={})
    file.write_text('[[strategies]]\nkind = "ema_crossover"\nsymbol = "DOGEUSDT"\n')
    with pytest.raises(ConfigError) as caught:
        build_config(file=file, environ={})
    assert caught.value.field == "strategies[0].symbol"


def test_unknown_environment_variables_outside_the_schema_are_ignored() -> None:
    config = build_config(environ={"SVC_SIM_API_KEY": "x", "SVC_NOT_A_THING": "1", "HOME": "/"})
    assert config == build_config(environ={})


def test_credentials_from_environment_or_files(tmp_path: Path) -> None:
    config = build_config(environ={"SVC_EXCHANGE": "binance-testnet"})
    with pytest.raises(ConfigError) as caught:
        load_credentials(config, environ={})
    assert caught.value.field == "BINANCE_API_KEY"
    key_file, secret_file = tmp_path / "key", tmp_path / "secret"
    key_file.write_text("the-key\n")
    secret_file.write_text("the-secret\n")
    credentials = load_credentials(
        config,
        environ={
            "BINANCE_API_KEY_FILE": str(key_file),
            "BINANCE_API_SECRET_FILE": str(secret_file),
        },
    )
    assert credentials == Credentials("the-key", "the-secret")
    assert "the-key" not in repr(credentials)
    assert "the-secret" not in f"{credentials}"
    with pytest.raises(ConfigError, match="not both"):
        load_credentials(
            config,
            environ={
                "BINANCE_API_KEY": "a",
                "BINANCE_API_KEY_FILE": "b",
                "BINANCE_API_SECRET": "c",
            },
        )
    with pytest.raises(ConfigError) as caught:
        load_credentials(
            config,
            environ={"BINANCE_API_KEY_FILE": str(tmp_path / "nope"), "BINANCE_API_SECRET": "c"},
        )
    assert caught.value.field == "BINANCE_API_KEY_FILE"


def test_the_example_configuration_documents_every_field() -> None:
    import msgspec  # noqa: PLC0415

    from svc.config import _SECTIONS, Config  # noqa: PLC0415

    example = (Path(__file__).resolve().parents[1] / "examples" / "svc.toml").read_text()
    missing = [
        name
        for name in (f.name for f in msgspec.structs.fields(Config))
        if name not in _SECTIONS and f"\n{name} = " not in example and name != "strategies"
    ]
    for section, kind in _SECTIONS.items():
        block = example.split(f"[{section}]", 1)
        if len(block) == 1:
            missing.append(f"[{section}]")
            continue
        body = block[1].split("\n[", 1)[0]
        missing += [
            f"{section}.{f.name}"
            for f in msgspec.structs.fields(kind)
            if f"\n{f.name} = " not in body
        ]
    assert not missing, f"examples/svc.toml does not document: {missing}"
