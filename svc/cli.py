"""The ``svc`` command line: parses arguments, builds configuration, runs one subcommand.

Subcommands: ``svc run`` (the trading service; by default against the embedded simulator),
``svc check-config FILE``, ``svc audit verify FILE``, ``svc sim`` (the simulated Binance
exchange on loopback), ``svc decode FILE`` (report what a capture of raw frames holds).

Exit codes: 0 success, 1 ``audit verify`` found a broken journal, 2 configuration or usage
error (the message names the field), 3 exchange unreachable after retries, 65 malformed input
(``svc decode`` found frames it could not decode), 70 fatal internal error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from svc import __version__
from svc.errors import ConfigError

EXIT_OK = 0
EXIT_AUDIT_BROKEN = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
EXIT_MALFORMED = 65
EXIT_INTERNAL = 70

log = logging.getLogger("svc.cli")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return int(text)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svc", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"svc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the trading service (default: against the embedded simulator)",
        description="Market data -> strategies -> risk -> orders -> audit. Every option can "
        "also be set in --config (TOML) and as SVC_* environment variables; the command line "
        "wins. Keys for real exchanges come from BINANCE_API_KEY/BINANCE_API_SECRET or the "
        "files named by BINANCE_API_KEY_FILE/BINANCE_API_SECRET_FILE.",
    )
    run.add_argument("--config", type=Path, help="TOML configuration file")
    run.add_argument("--exchange", choices=("sim", "binance", "binance-testnet"))
    run.add_argument("--duration", help="seconds to run (default: until SIGTERM/Ctrl-C)")
    run.add_argument("--symbols", help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    run.add_argument("--intervals", help="comma-separated kline intervals, e.g. 1m,5m")
    run.add_argument("--sim-frames", help="the embedded simulator replays this JSONL capture")
    run.add_argument("--summary-json", help="write a machine-readable summary here at exit")
    run.add_argument("--audit-path", help="the audit journal (JSONL, hash-chained)")
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    run.add_argument("--shard-index", help="this replica's shard (default: HOSTNAME's ordinal)")
    run.add_argument("--shard-count", help="replicas sharing the symbols (default 1)")
    run.add_argument("--sim-url", help="use this running `svc sim` instead of an embedded one")

    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", type=Path)

    audit = commands.add_parser("audit", help="audit journal tools")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_commands.add_parser("verify", help="check a journal's hash chain")
    verify.add_argument("file", type=Path)

    sim = commands.add_parser(
        "sim",
        help="run the simulated Binance exchange on loopback",
        description="A Binance-compatible exchange on loopback: REST, market-data and "
        "user-data websockets, a matching engine, fault injection.",
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sim.add_argument("--port", type=_port, default=8765, help="port (default 8765; 0 = any)")
    sim.add_argument(
        "--symbols", type=_csv, default=("BTCUSDT", "ETHUSDT"), help="comma-separated symbols"
    )
    sim.add_argument(
        "--intervals", type=_csv, default=("1m", "5m", "15m", "1h"), help="kline intervals"
    )
    sim.add_argument(
        "--market",
        default="synthetic",
        help="'synthetic' (seeded random walk) or a Binance klines JSON file to replay",
    )
    sim.add_argument("--speed", type=_positive_float, default=1.0, help="market time per wall time")
    sim.add_argument(
        "--rate",
        type=_positive_float,
        default=10.0,
        help="market ticks (messages per stream) per s",
    )
    sim.add_argument("--frames", type=Path, help="replay this JSONL file of raw frames verbatim")
    sim.add_argument(
        "--frames-pace",
        choices=("rate", "recorded"),
        default="rate",
        help="replay --frames at --rate frames/s, or at the capture's own pace (event times)",
    )
    sim.add_argument("--seed", type=int, default=7, help="seed of the synthetic market")
    sim.add_argument(
        "--api-key",
        default=os.environ.get("SVC_SIM_API_KEY"),
        help="API key the simulator accepts (env SVC_SIM_API_KEY; default svc-sim-api-key)",
    )
    sim.add_argument(
        "--api-secret",
        default=os.environ.get("SVC_SIM_API_SECRET"),
        help="its secret (env SVC_SIM_API_SECRET; default svc-sim-api-secret)",
    )
    sim.add_argument(
        "--duration", type=_positive_float, help="stop after this many seconds (default: run)"
    )
    faults = sim.add_argument_group("fault injection (also POST /_sim/faults at runtime)")
    faults.add_argument("--disconnect-every", type=_non_negative_float, default=0.0, metavar="S")
    faults.add_argument("--silent", action="store_true", help="send no market data")
    faults.add_argument("--latency-ms", type=_non_negative_float, default=0.0, metavar="MS")
    faults.add_argument(
        "--rate-limit-seconds",
        type=_non_negative_float,
        default=0.0,
        metavar="S",
        help="answer 429 for S seconds, then 418 if the client keeps sending",
    )
    faults.add_argument("--clock-skew-ms", type=int, default=0, metavar="MS")
    faults.add_argument("--reject-next", type=int, default=0, metavar="N")
    decode = commands.add_parser(
        "decode",
        help="decode a JSONL capture of raw websocket frames; report types and malformed frames",
        description="Each line is a raw frame, or an object whose `raw` field holds one (the "
        "format `svc sim --frames` replays). Exits 65 if any frame is malformed.",
    )
    decode.add_argument("file", type=Path)
    decode.add_argument(
        "--stream", default="", help="stream of bare frames without `e` (e.g. btcusdt@bookTicker)"
    )
    decode.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line options -> config overrides (strings; build_config converts them)."""
    overrides: dict[str, Any] = {}
    for name in (
        "exchange",
        "duration",
        "symbols",
        "intervals",
        "summary_json",
        "log_level",
        "shard_index",
        "shard_count",
    ):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.sim_frames is not None:
        overrides.setdefault("sim", {})["frames"] = args.sim_frames
    if args.sim_url is not None:
        overrides.setdefault("sim", {})["url"] = args.sim_url
    if args.audit_path is not None:
        overrides["audit"] = {"path": args.audit_path}
    return overrides


def _run_service(args: argparse.Namespace) -> int:
    from svc.app import Service  # noqa: PLC0415  (keep `svc --help` fast)
    from svc.config import build_config  # noqa: PLC0415
    from svc.logs import setup_logging  # noqa: PLC0415
    from svc.tracing import TraceContextFilter  # noqa: PLC0415

    config = build_config(file=args.config, overrides=_run_overrides(args))
    logging.getLogger().handlers.clear()
    log_file = Path(config.log_file) if config.log_file else None
    handle = setup_logging(level=config.log_level, file=log_file)
    handle.queue_handler.addFilter(TraceContextFilter())
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            result = runner.run(Service(config, log_dropped=lambda: handle.dropped).run())
    finally:
        handle.stop()
    return result.exit_code


def _loop_factory() -> Any:
    """uvloop's event loop when it is installed (the default), else asyncio's."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    return uvloop.new_event_loop


def _check_config(args: argparse.Namespace) -> int:
    from svc.config import build_config, default_strategies  # noqa: PLC0415
    from svc.strategy import build_strategies  # noqa: PLC0415

    config = build_config(file=args.file)
    build_strategies(default_strategies(config))
    print(
        f"{args.file}: ok ({config.exchange}; {', '.join(config.symbols)}; "
        f"{len(default_strategies(config))} strategies)"
    )
    return EXIT_OK


def _audit_verify(args: argparse.Namespace) -> int:
    from svc.audit import verify  # noqa: PLC0415

    if not args.file.is_file():
        raise ConfigError("file", f"{str(args.file)!r} is not a file")
    result = verify(args.file)
    print(f"{args.file}: {result.summary()}")
    return EXIT_OK if result.ok else EXIT_AUDIT_BROKEN


def _run_decode(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415  (cold path)
    from collections import Counter  # noqa: PLC0415

    from svc.binance import FrameDecoder  # noqa: PLC0415
    from svc.errors import DecodeError  # noqa: PLC0415
    from svc.model import UnknownEvent  # noqa: PLC0415

    decoder = FrameDecoder(stream=args.stream)
    decoded: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    malformed: Counter[str] = Counter()
    first_errors: list[str] = []
    with args.file.open(encoding="utf-8", errors="surrogateescape") as lines:
        for number, line in enumerate(lines, 1):
            frame = line.strip()
            if not frame:
                continue
            if frame.startswith(('{"source_line"', '{"raw"')):
                try:
                    wrapper = json.loads(frame)
                    frame = wrapper["raw"] if isinstance(wrapper.get("raw"), str) else frame
                except (ValueError, AttributeError):
                    pass
            try:
                event = decoder.decode(frame, 0)
            except DecodeError as error:
                malformed[f"{error.field}: {error.reason}"] += 1
                if len(first_errors) < 10:
                    first_errors.append(f"line {number}: {error}")
                continue
            if isinstance(event, UnknownEvent):
                unknown[event.event_type] += 1
            else:
                decoded[type(event).__name__] += 1
    report = {
        "frames": sum(decoded.values()) + sum(unknown.values()) + sum(malformed.values()),
        "decoded": dict(decoded.most_common()),
        "unknown_event_types": dict(unknown.most_common()),
        "malformed": dict(malformed.most_common()),
        "first_errors": first_errors,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['frames']} frames in {args.file}")
        for title, counts in (
            ("decoded", decoded),
            ("unknown (skipped)", unknown),
            ("MALFORMED", malformed),
        ):
            for name, count in counts.most_common():
                print(f"  {title:<18} {count:>8}  {name}")
        for message in first_errors:
            print(f"  {message}")
    return EXIT_MALFORMED if malformed else EXIT_OK


async def _run_sim(args: argparse.Namespace) -> int:
    from svc.sim.server import (  # noqa: PLC0415  (keep `svc --help` fast)
        DEFAULT_API_KEY,
        DEFAULT_API_SECRET,
        SimConfig,
        SimExchange,
    )

    config = SimConfig(
        host=args.host,
        port=args.port,
        symbols=args.symbols,
        intervals=args.intervals,
        market=args.market,
        speed=args.speed,
        rate=args.rate,
        frames=args.frames,
        frames_pace=args.frames_pace,
        seed=args.seed,
        api_key=args.api_key or DEFAULT_API_KEY,
        api_secret=args.api_secret or DEFAULT_API_SECRET,
    )
    exchange = SimExchange(config)
    exchange.set_faults(
        disconnect_every=args.disconnect_every,
        silent=args.silent,
        latency_ms=args.latency_ms,
        rate_limit_seconds=args.rate_limit_seconds,
        clock_skew_ms=args.clock_skew_ms,
        reject_next=args.reject_next,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with exchange:
        print(
            f"svc sim: Binance-compatible exchange on {exchange.http_url} "
            f"(REST /api/v3, websockets {exchange.ws_url}/ws/<stream> and /stream?streams=...); "
            f"symbols {','.join(config.symbols)}; API key {config.api_key}",
            flush=True,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=args.duration)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("SVC_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run_service(args)
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "audit":
            return _audit_verify(args)
        if args.command == "sim":
            return asyncio.run(_run_sim(args))
        if args.command == "decode":
            return _run_decode(args)
    except ConfigError as error:
        print(f"svc: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as error:
        print(f"svc: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception:
        log.exception("fatal internal error")
        return EXIT_INTERNAL
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
