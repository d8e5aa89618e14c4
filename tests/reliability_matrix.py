"""The reliability matrix: which tests prove which failure behaviour (``docs/reliability.md``).

Each ``Row`` names a fault, how the tests inject it, what svc is expected to do, and the
tests that check it, as ``fnmatch`` patterns over pytest node ids, so that a row can point
at tests other engineers write (``tests/test_*.py::*disconnect*``) and at every case of a
parametrized test (``...::test_x[*]``). ``tests/matrix_plugin.py`` gives every test a row
matches the ``faults`` marker (``pytest -m faults`` runs the whole matrix) and records the
outcomes; ``tools/reliability_report.py`` renders the document from them. A row whose tests
do not exist, or did not run, reads "not run": the matrix never claims more than the run
showed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Row:
    area: str
    fault: str
    injection: str
    expectation: str
    tests: tuple[str, ...]
    in_faults_suite: bool = True
    """False for tests that need more than this machine offers (the drills need Prometheus):
    they keep their own marker and appear when a run includes them."""


EXCHANGE = "1. Exchange faults"
TELEMETRY = "2. Telemetry faults"
CRASH = "3. Crash safety"
INPUT = "4. Bad input"
SECRETS = "5. Secrets"
DRILLS = "Incident drills"

ROWS: tuple[Row, ...] = (
    # ------------------------------------------------------------------ 1. exchange
    Row(
        EXCHANGE,
        "Websocket disconnects",
        "The simulator closes every market-data and user-data socket every few seconds "
        "(`disconnect_every`).",
        "Reconnect with jittered backoff; after backfill no closed kline is missing or "
        "duplicated against the simulator's own record; memory flat.",
        (
            "tests/test_service.py::test_disconnects_mid_run_lose_no_closed_kline*",
            "tests/test_sim_python_binance.py::test_forced_disconnect_is_survived_by_python_binance",
            "tests/test_exchange_faults.py::*disconnect*",
        ),
    ),
    Row(
        EXCHANGE,
        "Silent stream",
        "A socket that stays open and sends nothing (`silent`, a scripted socket).",
        "The watchdog reconnects within `feed.watchdog_seconds`.",
        (
            "tests/test_feed.py::test_silence_triggers_a_reconnect",
            "tests/test_exchange_faults.py::*silent*",
        ),
    ),
    Row(
        EXCHANGE,
        "python-binance gives up or its queue overflows",
        "`BinanceWebsocketUnableToConnect`, `BinanceWebsocketQueueOverflow`; a tenfold burst.",
        "Counted and answered with a fresh connection, never a crash; bursts do not overflow.",
        (
            "tests/test_feed.py::test_python_binance_give_up_and_overflow_reconnect*",
            "tests/test_service.py::test_a_tenfold_burst_does_not_overflow_python_binance",
        ),
    ),
    Row(
        EXCHANGE,
        "Exchange unreachable",
        "Every connection attempt fails.",
        "`feed.connect_attempts` failures in a row end the run with exit code 3.",
        ("tests/test_feed.py::test_consecutive_connect_failures_mean_unreachable",),
    ),
    Row(
        EXCHANGE,
        "HTTP 429 with Retry-After, then 418",
        "The simulator rate-limits (`rate_limit_seconds`, `extra_weight`) and bans clients "
        "that keep sending.",
        "Order submission backs off until Retry-After, then halts on 418 until the ban ends; "
        "metrics and one log line per state change.",
        (
            "tests/test_throttle.py::*",
            "tests/test_sim_python_binance.py::test_rate_limit_then_ban_carry_retry_after",
            "tests/test_drills.py::test_sim_extra_weight_answers_429_with_the_used_weight",
            "tests/test_exchange_faults.py::*429*",
            "tests/test_exchange_faults.py::*418*",
        ),
    ),
    Row(
        EXCHANGE,
        "-1021 timestamp outside recvWindow",
        "The simulator's clock is skewed (`clock_skew_ms`).",
        "svc resynchronises with the exchange's server time and retries once.",
        (
            "tests/test_sim_python_binance.py::test_clock_skew_gives_minus_1021",
            "tests/test_*.py::*clock_skew*",
            "tests/test_*.py::*resync*",
            "tests/test_exchange_faults.py::*1021*",
        ),
    ),
    Row(
        EXCHANGE,
        "Order rejects",
        "-2010 (`reject_next`), filter violations, duplicate client ids.",
        "The order ends REJECTED, the position is unchanged, nothing is sent twice.",
        (
            "tests/test_orders.py::test_exchange_rejects_become_rejected_orders*",
            "tests/test_orders.py::test_refused_requests_are_rejected_and_re_raised*",
            "tests/test_orders.py::test_filter_violation_is_raised_before_anything_is_sent",
            "tests/test_orders.py::test_the_same_client_id_is_never_sent_twice",
            "tests/test_sim_python_binance.py::test_order_rejections_use_binance_codes*",
            "tests/test_sim_python_binance.py::test_reject_next_and_admin_faults_endpoint",
        ),
    ),
    Row(
        EXCHANGE,
        "Partial fills, duplicates, reordering",
        "Execution reports in every arrival order (hypothesis), duplicated, late after cancel.",
        "The order state machine converges; cumulative fills never decrease; positions right.",
        (
            "tests/test_orders.py::test_any_arrival_order_converges_to_the_same_result",
            "tests/test_orders.py::test_cumulative_fill_never_decreases_and_late_trades_after_cancel_count",
            "tests/test_orders.py::test_duplicate_trade_reports_are_ignored",
            "tests/test_orders.py::test_unavailable_exchange_leaves_the_order_pending_with_unknown_outcome",
        ),
    ),
    # ------------------------------------------------------------------ 2. telemetry
    Row(
        TELEMETRY,
        "Collector stopped mid-run",
        "A real collector (rotel) receiving every span is stopped after 5 s of a 14 s run.",
        "Trading goes on; dropped spans are counted; loop lag stays far below a second; exit 0.",
        ("tests/test_telemetry_e2e.py::test_trading_goes_on_when_the_collector_stops",),
    ),
    Row(
        TELEMETRY,
        "OTLP endpoint that accepts and never answers (gRPC)",
        "A loopback port that accepts TCP connections and holds them; every span sampled.",
        "Orders and fills as without export; loop-lag p99 within 4x the run without export; "
        "dropped spans counted; /metrics answers; RSS flat; the telemetry flush times out "
        "after its 5 s cap, the shutdown is complete and the exit code 0.",
        ("tests/test_telemetry_faults.py::test_an_endpoint_that_never_answers[[]grpc[]]",),
    ),
    Row(
        TELEMETRY,
        "OTLP endpoint that accepts and never answers (HTTP)",
        "The same black hole, `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`.",
        "As for gRPC.",
        ("tests/test_telemetry_faults.py::test_an_endpoint_that_never_answers[[]http*",),
    ),
    Row(
        TELEMETRY,
        "Log and audit queues full",
        "More records than the bounded queues hold.",
        "Records are dropped and counted, the caller never blocks; critical audit records "
        "are never lost.",
        (
            "tests/test_logs.py::test_full_queue_drops_and_counts_without_blocking",
            "tests/test_audit.py::test_normal_records_beyond_capacity_are_dropped_and_counted",
            "tests/test_audit.py::test_critical_records_are_never_lost_and_record_never_blocks",
        ),
    ),
    Row(
        TELEMETRY,
        "Invalid OTel settings",
        "`OTEL_EXPORTER_OTLP_PROTOCOL=pigeon`; `OTEL_BSP_MAX_QUEUE_SIZE` below the batch size.",
        "Exit code 2 naming the variable, not a crash.",
        ("tests/test_fuzz.py::test_the_real_process_exits_2_naming_the_field*",),
    ),
    # ------------------------------------------------------------------ 3. crash safety
    Row(
        CRASH,
        "kill -9 during order flow, repeatedly",
        "SIGKILL at random points of order flow, with restarts.",
        "Every acknowledged order is in the journal or recovered at reconciliation; no order "
        "is sent twice; `svc audit verify` passes or reports one torn final record.",
        (
            "tests/test_lifecycle.py::test_kill_9_*",
            "tests/test_crash*.py::*",
        ),
    ),
    Row(
        CRASH,
        "Torn final journal record",
        "The journal's last line cut mid-record.",
        "Reported by `audit verify`, repaired by the next start; damage before the last line "
        "refuses to start, naming audit.path.",
        (
            "tests/test_audit.py::test_torn_final_line_is_reported_then_repaired_by_the_next_start*",
            "tests/test_audit.py::test_start_refuses_a_journal_damaged_before_its_final_line",
            "tests/test_recovery.py::test_a_torn_final_line_is_skipped_and_the_next_start_repairs_it",
            "tests/test_recovery.py::test_a_damaged_line_before_the_last_is_a_config_error_naming_audit_path",
        ),
    ),
    Row(
        CRASH,
        "Crash between sending an order and recording its outcome",
        "A journal that ends after `order.new`, or after a FILLED response without its fill.",
        "Reconciliation recovers the order and books each fill once; an order the exchange "
        "does not know is marked not placed.",
        (
            "tests/test_recovery.py::test_an_order_sent_before_a_crash_is_recovered_and_its_fills_booked_once",
            "tests/test_recovery.py::test_a_fill_lost_after_its_filled_response_is_booked_from_the_exchange",
            "tests/test_recovery.py::test_an_order_the_exchange_does_not_know_was_not_placed",
            "tests/test_recovery.py::test_a_reconciliation_retried_after_a_failure_books_each_fill_once",
        ),
    ),
    Row(
        CRASH,
        "The journal cannot record",
        "Write failures; an intent the journal cannot take.",
        "The order is not sent; the failure is counted and the hash chain survives.",
        (
            "tests/test_audit.py::test_an_order_is_not_sent_when_the_journal_cannot_record_it_first",
            "tests/test_audit.py::test_a_failed_write_is_counted_logged_and_cut_so_the_chain_survives",
        ),
    ),
    Row(
        CRASH,
        "SIGTERM, and a stuck exchange at shutdown",
        "SIGTERM mid-run (with and without flatten); an exchange that stops answering.",
        "Open orders canceled (or positions flattened), every step journaled; a stuck "
        "exchange leaves the shutdown incomplete (exit 4) but journaled within the budget.",
        (
            "tests/test_lifecycle.py::test_sigterm_*",
            "tests/test_lifecycle.py::test_a_stuck_exchange_*",
            "tests/test_lifecycle.py::test_flatten_right_after_a_restart_*",
            "tests/test_shutdown.py::*",
        ),
    ),
    Row(
        CRASH,
        "Two services on one journal",
        "A second `svc run` with the same audit.path.",
        "Refused with a clear error.",
        ("tests/test_lifecycle.py::test_a_second_service_on_the_same_journal_is_refused",),
    ),
    # ------------------------------------------------------------------ 4. bad input
    Row(
        INPUT,
        "Mutated recorded frames",
        "7,200 mutations of the recorded frames: byte flips, truncation, junk around the "
        "frame, duplicate keys, deep nesting, deleted fields, swapped types, huge numbers, "
        "NaN/Infinity strings, odd unicode, nested values.",
        "An svc event with finite numbers, or `DecodeError` naming stream, JSON path and "
        "reason; truncations always fail; a deleted field or swapped type is reported at "
        "its own path.",
        (
            "tests/test_fuzz.py::test_the_corpus_is_ten_thousand_frames_and_every_recording_decodes",
            "tests/test_fuzz.py::test_mutated_recordings_decode_or_fail_with_a_path_and_reason",
        ),
    ),
    Row(
        INPUT,
        "Generated frames (hypothesis)",
        "600 each: random JSON in Binance's vocabulary, random bytes behind real prefixes, "
        "recorded frames with fields of the wrong type.",
        "As above: an event or `DecodeError`, nothing else.",
        (
            "tests/test_fuzz.py::test_random_json",
            "tests/test_fuzz.py::test_random_bytes",
            "tests/test_fuzz.py::test_recorded_frames_with_fields_of_the_wrong_type",
        ),
    ),
    Row(
        INPUT,
        "Deep nesting",
        "Frames nested 1,000 and 100,000 levels deep, on every route.",
        "`DecodeError` 'nested too deeply' (was: `RecursionError` out of the decoder).",
        ("tests/test_fuzz.py::test_deeply_nested_frames_are_malformed_not_a_crash*",),
    ),
    Row(
        INPUT,
        "NaN and Infinity as numbers",
        '"NaN", "Infinity", "sNaN", "1e400" in prices, quantities and user-data decimals.',
        "Malformed at the field (was: accepted as float NaN/inf and Decimal NaN).",
        (
            "tests/test_fuzz.py::test_non_finite_market_prices_are_malformed*",
            "tests/test_fuzz.py::test_non_finite_user_data_decimals_are_malformed*",
        ),
    ),
    Row(
        INPUT,
        "Mutated REST bodies",
        "1,200 mutations of the recorded klines, exchangeInfo, order and error bodies, "
        "through every REST decoder and `convert_as`.",
        "`DecodeError` or a value; an error response always maps to an `ExchangeError`.",
        ("tests/test_fuzz.py::test_mutated_rest_bodies_raise_only_decode_errors",),
    ),
    Row(
        INPUT,
        "Garbage through the feeds",
        "The 7,200 mutated frames through `MarketFeed`, 1,000 through `UserDataFeed`.",
        "Every frame counted once (message, unknown type or malformed reason); reasons carry "
        "no offsets or input text; counters keep at most 256 keys (then `(other)`).",
        (
            "tests/test_fuzz.py::test_every_mutated_frame_is_counted_once_and_the_statistics_stay_bounded",
            "tests/test_fuzz.py::test_mutated_user_data_is_counted_once",
            "tests/test_fuzz.py::test_malformed_reasons_do_not_carry_offsets_or_input_text*",
        ),
    ),
    Row(
        INPUT,
        "A kline with a corrupt open time",
        "One kline whose open time is 10^30 ms, its close time intact.",
        "Malformed (times do not match the interval); later klines still arrive (was: the gap "
        "detector's baseline moved and every later kline was dropped as a duplicate).",
        ("tests/test_fuzz.py::test_one_corrupt_kline_does_not_stop_the_klines_after_it",),
    ),
    Row(
        INPUT,
        "Bad frames on a live feed",
        "`svc run --sim-frames`: 300 recorded klines with 1,560 bad frames of 13 categories "
        "interleaved, sent by the simulator over a websocket, read by python-binance.",
        "No crash, no reconnect; all 300 klines arrive (50 after the last bad frame); the "
        "summary's malformed counts by reason equal the decoder's in process.",
        ("tests/test_fuzz.py::test_a_live_feed_with_bad_frames_interleaved",),
    ),
    Row(
        INPUT,
        "Bad configuration and command lines",
        "Bad TOML values and files (not TOML, not UTF-8), SVC_* variables, options of "
        "`svc run` / `svc sim` / `svc audit`.",
        "Exit code 2 and a message naming the field or option (was: exit 70 for a file that "
        "is not UTF-8).",
        (
            "tests/test_fuzz.py::test_bad_toml_names_the_field*",
            "tests/test_fuzz.py::test_a_file_that_is_not_toml_names_the_config*",
            "tests/test_fuzz.py::test_bad_environment_names_the_field*",
            "tests/test_fuzz.py::test_bad_command_lines_name_the_option*",
            "tests/test_config.py::test_environment_errors_name_the_field*",
            "tests/test_config.py::test_file_errors_name_the_field",
            "tests/test_run.py::test_configuration_errors_name_the_field*",
            "tests/test_cli_sim.py::test_bad_configuration_names_the_field*",
        ),
    ),
    # ------------------------------------------------------------------ 5. secrets
    Row(
        SECRETS,
        "Sentinel credentials",
        "`svc run` at DEBUG against `svc sim` accepting only a sentinel key and secret (from "
        "the environment, from *_FILE files, and with a wrong secret), every span exported "
        "to a real collector.",
        "Key, secret, their first 12 characters and their tails appear in no log line, log "
        "file, span, metric, /metrics, /livez, /readyz, summary or audit record.",
        ("tests/test_secrets.py::test_sentinel_credentials_appear_nowhere*",),
    ),
    Row(
        SECRETS,
        "Unsigned and wrongly signed requests",
        "Over HTTP: no key, another key, no signature, another secret, parameters changed "
        "after signing, a truncated signature, a replay after recvWindow; listen keys and "
        "WebSocket-API subscriptions without the key.",
        "401 -2014/-2015, 400 -1102/-1022/-1021; no order reaches the matching engine.",
        (
            "tests/test_secrets.py::test_the_simulator_rejects_unsigned_and_wrongly_signed_requests*",
            "tests/test_secrets.py::test_the_simulator_refuses_listen_keys_and_user_data_without_the_key",
            "tests/test_sim_python_binance.py::test_wrong_secret_and_wrong_key_are_refused",
            "tests/test_sim_python_binance.py::test_unsigned_and_unknown_symbol_requests",
        ),
    ),
    Row(
        SECRETS,
        "Health endpoints: binding and exposure",
        "The health server bound to 127.0.0.1 (and to another interface), probed from every "
        "local address; its bodies searched for configuration values; failing callbacks.",
        "Listens only on the configured address; no path, URL or credential in any body; a "
        "failing check answers 500 without the exception's text.",
        (
            "tests/test_secrets.py::test_the_health_server_binds_only_where_configured*",
            "tests/test_health.py::test_a_failing_callback_gives_500_without_its_message*",
        ),
    ),
    Row(
        SECRETS,
        "Redaction",
        "Credential values and secret-looking keys in log records and audit payloads.",
        "Masked in logs, `[REDACTED]` in the journal, at any depth.",
        (
            "tests/test_logs.py::test_secrets_are_redacted",
            "tests/test_audit.py::test_secret_looking_keys_are_redacted_at_any_depth",
        ),
    ),
    Row(
        SECRETS,
        "Known bug: --duration while credentials are refused",
        "`svc run --duration 3` with a secret the exchange refuses (-1022 on every signed "
        "request).",
        "The run ends after its duration. Today it retries reconciliation until SIGTERM.",
        ("tests/test_secrets.py::test_duration_ends_a_run_whose_reconciliation_keeps_failing",),
    ),
    # ------------------------------------------------------------------ drills
    Row(
        DRILLS,
        "Incident drills (docs/drills.md)",
        "`svc run` with one fault each against a real Prometheus evaluating the shipped rules.",
        "The expected alerts fire, no other critical alert does.",
        ("tests/test_drills.py::test_drill[[]*",),
        in_faults_suite=False,
    ),
)

NOT_COVERED: tuple[str, ...] = (
    (
        "Faults injected by hand into a running service, and `kill -9` at moments chosen by a "
        "person: the suite chooses its own moments."
    ),
    (
        "Real Binance (testnet or production): every exchange here is the simulator, which "
        "speaks Binance's wire format but is not Binance."
    ),
    (
        "Network faults below the socket (packet loss, latency jitter, half-open TCP) other "
        "than the black-hole collector: no tc/netem in this environment."
    ),
    (
        "Memory over hours: RSS is compared over 10 s runs; slow leaks need the soak run and "
        "the SvcMemoryGrowth alert."
    ),
    "A collector that answers slowly or with errors (as opposed to not at all).",
    (
        "Leaks through the simulator (`svc sim` prints the key it accepts) and through "
        "python-binance's `verbose` mode, which svc never enables."
    ),
)

FINDINGS: tuple[tuple[str, str], ...] = (
    (
        (
            "A frame nested about 1,000 levels deep raised `RecursionError` out of "
            "`FrameDecoder.decode` and the REST decoders: one such frame ended `svc run` "
            "(exit 70)."
        ),
        "Fixed: `DecodeError` 'nested too deeply' (`svc/binance/_codec.py`, `streams.py`).",
    ),
    (
        (
            '"NaN", "Infinity" and "inf" strings decoded to float NaN/inf prices; "NaN", "sNaN" '
            'and "Infinity" to Decimal user-data quantities (a signalling NaN raises on the '
            "first comparison in the order manager)."
        ),
        (
            "Fixed: market numbers must be finite and >= 0 (msgspec bounds, in C); user-data "
            "decimals must be finite (`__post_init__`)."
        ),
    ),
    (
        (
            "Malformed reasons carried byte offsets and input text (\"Invalid value 'x'\", "
            '"expected a string, got [...]"), and the feed\'s counters kept every distinct key: '
            "garbage grew memory, the summary and the `svc.feed.malformed` metric's cardinality "
            "without bound; every frame symbol became a `svc.feed.messages` series."
        ),
        (
            "Fixed: reasons without offsets or input; at most 256 keys per counter, then "
            "`(other)` (`svc/feed.py`)."
        ),
    ),
    (
        (
            "One kline with a corrupt open time moved the gap detector's baseline: every later "
            "kline of that stream was dropped as a duplicate."
        ),
        "Fixed: a kline whose close time does not match its interval is malformed.",
    ),
    (
        (
            "The simulator's frame replay died on a line nested deeper than Python's json "
            "module recurses: the rest of the capture was never sent."
        ),
        "Fixed in `svc/sim/server.py`.",
    ),
    (
        (
            "A configuration file that is not UTF-8 ended `svc check-config`/`svc run` with a "
            "traceback and exit 70."
        ),
        "Fixed: exit 2, 'config: ... is not UTF-8 text'.",
    ),
    (
        "`OTEL_BSP_MAX_QUEUE_SIZE` below the batch size ended `svc run` with exit 70.",
        "Fixed: exit 2 naming `OTEL_BSP_*`.",
    ),
    (
        (
            "An empty `telemetry.health_host` (`SVC_TELEMETRY_HEALTH_HOST=`) was accepted, and "
            "aiohttp then listens on every interface: /metrics exposed by a templating slip."
        ),
        "Fixed: a configuration error naming `telemetry.health_host`.",
    ),
    (
        (
            "With the collector unreachable, the process outlived its shutdown path by up to the "
            "whole budget: the telemetry flush step stopped after its 5 s cap, but its worker "
            "thread kept the executor (and the exit) waiting for the remaining budget."
        ),
        (
            "Fixed: the flush is bounded by its step's cap (`svc/app.py`); exit 5 s after the "
            "run ends instead of ~20 s."
        ),
    ),
    (
        (
            "`--duration` is not honoured while start-up reconciliation keeps failing (for example "
            "when the exchange refuses the credentials): the run retries until SIGTERM."
        ),
        (
            "Fixed: the reconciliation retries stop at the end of `--duration`; the run exits 3 "
            "with the exchange's error (`svc/app.py`)."
        ),
    ),
    (
        (
            "Events whose symbol was never subscribed are published and remembered "
            "(`Service._last_price`, the gap detector): an exchange sending arbitrary symbols "
            "grows those maps."
        ),
        "Open: filter events to the subscribed symbols in the feed.",
    ),
)
