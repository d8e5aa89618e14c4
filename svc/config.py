"""Configuration of ``svc run``: one immutable ``Config``, from defaults, a TOML file,
``SVC_*`` environment variables and command-line options, in that order of precedence.

Every field can be set in all four places. In the environment a top-level field is
``SVC_<FIELD>`` and a section's field is ``SVC_<SECTION>_<FIELD>`` (``SVC_RISK_MAX_POSITION``);
lists are comma-separated. Unknown fields are errors. Every error is a ``ConfigError`` naming
the field (``risk.max_position``) and the expected form.

API keys never live in ``Config``: ``load_credentials`` reads them from
``BINANCE_API_KEY``/``BINANCE_API_SECRET`` or from the files named by
``BINANCE_API_KEY_FILE``/``BINANCE_API_SECRET_FILE``, into a ``Credentials`` whose repr
hides them.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from svc.errors import ConfigError

ENV_PREFIX = "SVC_"
INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "1d")
Exchange = Literal["sim", "binance", "binance-testnet"]
OrderTransport = Literal["ws", "rest"]


class SimSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The embedded simulator (``exchange = "sim"``)."""

    speed: float = 60.0
    """Market time per wall time; 60 closes a 1m kline every second."""
    rate: float = 20.0
    """Market ticks per second (one frame per subscribed stream per tick)."""
    frames: str = ""
    """Replay this JSONL capture of raw frames instead of the generated market."""
    market: str = "synthetic"
    seed: int = 7
    url: str = ""
    """An already running simulator (``svc sim``), e.g. ``http://127.0.0.1:8765``; empty
    embeds one in the process. An external one keeps its orders and balances when svc is
    restarted, like a real exchange."""


class FeedSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    watchdog_seconds: float = 10.0
    """Reconnect a stream that has sent nothing for this long."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    healthy_seconds: float = 30.0
    """A connection that lived this long resets the backoff."""
    connect_attempts: int = 8
    """Consecutive failed connects before the exchange counts as unreachable (exit code 3)."""
    warmup_klines: int = 100
    """Closed klines fetched over REST at start, per symbol and interval."""


class RiskSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_position: float = 0.05
    max_order_notional: float = 2_000.0
    max_orders_per_minute: int = 60
    kill_switch: bool = False
    max_signal_age_seconds: float = 5.0
    """Signals from events older than this do not trade (warm-up, backfill); 0 disables."""


class AuditSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: str = "svc-audit.jsonl"
    fsync: Literal["always", "critical", "batch", "never"] = "critical"


class TelemetrySection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """svc's own telemetry settings; OpenTelemetry's are the standard ``OTEL_*`` variables."""

    slow_tick_ms: float = 5.0
    """An unsampled tick slower than this (receive to decision) is traced anyway; 0: never."""
    max_traces_per_second: float = 20.0
    """Cap on sampled and slow ticks traced per second (errors are never capped); keeps the
    export thread's cost bounded at any message rate. 0: no cap."""
    health_host: str = "127.0.0.1"
    """Where /livez, /readyz and /metrics listen (0.0.0.0 inside Kubernetes)."""
    health_port: int = 8080
    """0 picks a free port; -1 disables the health server."""
    gc_freeze: bool = True
    """Move start-up objects out of the collected generations (``gc.freeze()``) after warm-up."""
    loop_lag_interval: float = 0.05


class EmergencySection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The shutdown path (SIGTERM, SIGINT, a fatal error): see ``svc.app``."""

    shutdown_budget_seconds: float = 20.0
    """The whole shutdown path ends within this; keep it below the pod's grace period."""
    flatten: bool = False
    """On SIGTERM/SIGINT, close this service's positions with market orders."""
    flatten_on_fatal: bool = False
    """The same after a fatal error (the state may be suspect, hence a separate choice)."""


class ReconcileSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Start-up reconciliation with the exchange and the audit journal."""

    unknown_orders: Literal["adopt", "cancel", "ignore"] = "adopt"
    """Open orders on the exchange that the journal does not know: track them (and cancel
    them at shutdown), cancel them now, or leave them alone."""
    retry_seconds: float = 5.0
    """Wait between attempts while reconciliation fails (the service does not trade)."""


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    exchange: Exchange = "sim"
    order_transport: OrderTransport = "ws"
    """How orders are placed, cancelled and queried: ``ws`` over Binance's WebSocket API (one
    signed JSON message on a connection that stays open; a shorter round trip than REST,
    ``bench/README.md`` has both), ``rest`` over signed HTTPS requests. Market data, the
    user-data stream and everything else use the same paths either way."""
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    intervals: tuple[str, ...] = ("1m", "5m")
    duration: float = 0.0
    """Seconds to run; 0 runs until SIGTERM/SIGINT."""
    status_interval: float = 1.0
    summary_json: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_file: str = ""
    strategies: tuple[dict[str, Any], ...] = ()
    """Strategy specs (``kind`` plus parameters); empty: the defaults of ``default_strategies``."""
    shard_count: int = 1
    """Replicas sharing ``symbols``; each trades a deterministic, balanced subset."""
    shard_index: int = -1
    """This replica's shard, 0..shard_count-1; -1 takes the StatefulSet ordinal at the end of
    ``HOSTNAME`` (``svc-2`` -> 2) when ``shard_count`` > 1, else 0."""
    sim: SimSection = SimSection()
    feed: FeedSection = FeedSection()
    risk: RiskSection = RiskSection()
    audit: AuditSection = AuditSection()
    telemetry: TelemetrySection = TelemetrySection()
    emergency: EmergencySection = EmergencySection()
    reconcile: ReconcileSection = ReconcileSection()


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "sim": SimSection,
    "feed": FeedSection,
    "risk": RiskSection,
    "audit": AuditSection,
    "telemetry": TelemetrySection,
    "emergency": EmergencySection,
    "reconcile": ReconcileSection,
}


def _fields(kind: type[msgspec.Struct]) -> dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(kind)}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``SVC_*`` variables -> a nested mapping of raw strings (converted later)."""
    found: dict[str, Any] = {}
    top = _fields(Config)
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in top and name not in _SECTIONS and name != "strategies":
            found[name] = value
            continue
        section, _, field = name.partition("_")
        if section in _SECTIONS and field in _fields(_SECTIONS[section]):
            found.setdefault(section, {})[field] = value
    return found


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _coerce_strings(
    raw: Mapping[str, Any], kind: type[msgspec.Struct], prefix: str
) -> dict[str, Any]:
    """Strings from the environment or the command line -> the field's type."""
    types = _fields(kind)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS and isinstance(value, Mapping):
            out[key] = _coerce_strings(value, _SECTIONS[key], f"{prefix}{key}.")
            continue
        if not isinstance(value, str) or key not in types:
            out[key] = value
            continue
        annotation = str(types[key])
        field = f"{prefix}{key}"
        if "tuple" in annotation:
            out[key] = tuple(part.strip() for part in value.split(",") if part.strip())
        elif annotation in ("float", "<class 'float'>"):
            out[key] = _number(value, field, float)
        elif annotation in ("int", "<class 'int'>"):
            out[key] = _number(value, field, int)
        elif annotation in ("bool", "<class 'bool'>"):
            lowered = value.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ConfigError(field, f"expected true or false, got {value!r}")
            out[key] = lowered in ("1", "true", "yes", "on")
        else:
            out[key] = value
    return out


def _number(text: str, field: str, kind: type[float] | type[int]) -> float | int:
    try:
        return kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(field, f"expected {expected}, got {text!r}") from None


def _field_of(error: msgspec.ValidationError) -> tuple[str, str]:
    text = str(error)
    marker = " - at `$"
    at = text.rfind(marker)
    path = text[at + len(marker) : -1].lstrip(".") if at >= 0 else ""
    message = text[:at] if at >= 0 else text
    if message.startswith("Object contains unknown field `"):
        unknown = message.split("`")[1]
        section = _SECTIONS.get(path, Config)
        known = ", ".join(sorted(_fields(section)))
        path = f"{path}.{unknown}" if path else unknown
        return path, f"unknown field; expected one of: {known}"
    if message.startswith("Object missing required field `"):
        missing = message.split("`")[1]
        return (f"{path}.{missing}" if path else missing), "required field is missing"
    return path or "config", message.replace("Expected", "expected")


def build_config(
    *,
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults < TOML file < ``SVC_*`` environment < ``overrides`` (command line)."""
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError("config", f"cannot read {str(file)!r}: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(
                "config", f"{str(file)!r} is not UTF-8 text (byte {error.start})"
            ) from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError("config", f"{str(file)!r} is not valid TOML: {error}") from None
    env = _coerce_strings(_from_env(os.environ if environ is None else environ), Config, "")
    raw = _merge(raw, env)
    raw = _merge(raw, _coerce_strings(dict(overrides or {}), Config, ""))
    try:
        config = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as error:
        field, message = _field_of(error)
        raise ConfigError(field, message) from None
    validate(config)
    return config


def validate(config: Config) -> None:
    """The checks a type cannot express; each names its field."""
    if not config.symbols:
        raise ConfigError("symbols", "at least one symbol, like BTCUSDT")
    for symbol in config.symbols:
        if not (symbol.isalnum() and symbol.isupper()):
            raise ConfigError("symbols", f"{symbol!r} is not an upper-case symbol like BTCUSDT")
    if not config.intervals:
        raise ConfigError("intervals", f"at least one of {', '.join(INTERVALS)}")
    for interval in config.intervals:
        if interval not in INTERVALS:
            raise ConfigError("intervals", f"{interval!r} is not one of {', '.join(INTERVALS)}")
    _non_negative("duration", config.duration)
    if not config.status_interval >= 1.0:
        raise ConfigError(
            "status_interval",
            "expected seconds >= 1 (the status line prints at most once a second)",
        )
    _positive("sim.speed", config.sim.speed)
    _positive("sim.rate", config.sim.rate)
    if config.sim.frames and not Path(config.sim.frames).is_file():
        raise ConfigError("sim.frames", f"{config.sim.frames!r} is not a file")
    if config.sim.market != "synthetic" and not Path(config.sim.market).is_file():
        raise ConfigError("sim.market", "expected 'synthetic' or a Binance klines JSON file")
    _positive("feed.watchdog_seconds", config.feed.watchdog_seconds)
    _positive("feed.backoff_initial", config.feed.backoff_initial)
    if config.feed.backoff_max < config.feed.backoff_initial:
        raise ConfigError("feed.backoff_max", "must be >= feed.backoff_initial")
    _non_negative("feed.healthy_seconds", config.feed.healthy_seconds)
    if config.feed.connect_attempts < 1:
        raise ConfigError("feed.connect_attempts", "expected an integer >= 1")
    if not 0 <= config.feed.warmup_klines <= 1000:
        raise ConfigError("feed.warmup_klines", "expected an integer from 0 to 1000")
    _positive("risk.max_position", config.risk.max_position)
    _positive("risk.max_order_notional", config.risk.max_order_notional)
    _non_negative("risk.max_signal_age_seconds", config.risk.max_signal_age_seconds)
    if config.risk.max_orders_per_minute < 1:
        raise ConfigError("risk.max_orders_per_minute", "expected an integer >= 1")
    _non_negative("telemetry.slow_tick_ms", config.telemetry.slow_tick_ms)
    _non_negative("telemetry.max_traces_per_second", config.telemetry.max_traces_per_second)
    if not -1 <= config.telemetry.health_port <= 65535:
        raise ConfigError("telemetry.health_port", "expected a port 0-65535, or -1 to disable")
    if not config.telemetry.health_host.strip():
        # An empty host makes aiohttp listen on every interface: say so explicitly instead.
        raise ConfigError(
            "telemetry.health_host", "expected an address to listen on, like 127.0.0.1 or 0.0.0.0"
        )
    _positive("telemetry.loop_lag_interval", config.telemetry.loop_lag_interval)
    _validate_operations(config)
    if not config.audit.path:
        raise ConfigError("audit.path", "expected a file path for the audit journal")
    for index, spec in enumerate(config.strategies):
        if not isinstance(spec.get("kind"), str):
            raise ConfigError(f"strategies[{index}].kind", "expected a strategy kind string")
        wanted: Any = spec.get("symbol")
        if wanted is not None and wanted not in config.symbols:
            raise ConfigError(
                f"strategies[{index}].symbol", f"{wanted!r} is not one of symbols {config.symbols}"
            )


def _validate_operations(config: Config) -> None:
    """Simulator address, shutdown, reconciliation and sharding."""
    if config.sim.url and not config.sim.url.startswith("http://"):
        raise ConfigError("sim.url", f"expected http://host:port, got {config.sim.url!r}")
    _positive("emergency.shutdown_budget_seconds", config.emergency.shutdown_budget_seconds)
    _positive("reconcile.retry_seconds", config.reconcile.retry_seconds)
    if config.shard_count < 1:
        raise ConfigError("shard_count", f"expected an integer >= 1, got {config.shard_count}")
    if not -1 <= config.shard_index < config.shard_count:
        raise ConfigError(
            "shard_index",
            f"expected -1 (from HOSTNAME) or 0..{config.shard_count - 1}, got {config.shard_index}",
        )
    if config.shard_count > len(config.symbols):
        raise ConfigError(
            "shard_count",
            f"{config.shard_count} shards for {len(config.symbols)} symbols: "
            "some replicas would have nothing to trade",
        )


def _positive(field: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(field, f"expected a positive number, got {value!r}")


def _non_negative(field: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(field, f"expected a number >= 0, got {value!r}")


def default_strategies(config: Config) -> list[dict[str, Any]]:
    """An EMA crossover on the first interval and a trade-flow strategy, for every symbol.

    Configured strategies for symbols outside ``config.symbols`` (another shard's) are left
    out.
    """
    if config.strategies:
        return [
            dict(spec)
            for spec in config.strategies
            if spec.get("symbol") is None or spec.get("symbol") in config.symbols
        ]
    specs: list[dict[str, Any]] = []
    for symbol in config.symbols:
        quantity = 0.001 if symbol.startswith("BTC") else 0.01
        specs.append(
            {
                "kind": "ema_crossover",
                "symbol": symbol,
                "interval": config.intervals[0],
                "fast": 3,
                "slow": 8,
                "quantity": quantity,
            }
        )
        specs.append(
            {
                "kind": "trade_flow",
                "symbol": symbol,
                "window": 50,
                "threshold": 0.3,
                "quantity": quantity,
            }
        )
    return specs


@dataclass(frozen=True, slots=True)
class Credentials:
    """An API key and secret. ``repr`` and ``str`` never show them."""

    api_key: str
    api_secret: str

    def __repr__(self) -> str:
        return "Credentials(api_key=***, api_secret=***)"

    __str__ = __repr__


def _secret(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "")
    path = environ.get(f"{name}_FILE", "")
    if value and path:
        raise ConfigError(name, f"set either {name} or {name}_FILE, not both")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"{name}_FILE", f"cannot read {path!r}: {error.strerror}") from None
    return value


def load_credentials(config: Config, environ: Mapping[str, str] | None = None) -> Credentials:
    """Keys for a real exchange (``binance``, ``binance-testnet``) from the environment."""
    env = os.environ if environ is None else environ
    key, secret = _secret(env, "BINANCE_API_KEY"), _secret(env, "BINANCE_API_SECRET")
    if not key or not secret:
        raise ConfigError(
            "BINANCE_API_KEY",
            f"exchange {config.exchange!r} needs BINANCE_API_KEY and BINANCE_API_SECRET "
            "(or *_FILE variables naming files that hold them)",
        )
    return Credentials(key, secret)
