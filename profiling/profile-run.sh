#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Start `svc run` on the embedded simulator under load, let it warm up, record it with
# record.sh, stop it cleanly and say where the flamegraph is. The one-command profile.
set -euo pipefail

PROG=profile-run.sh
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: profiling/profile-run.sh [--record S] [--warmup S] [--sim-rate N] [--rate HZ]
                                [--out DIR] [--idle] [--gil] [--native] [-- SVC-RUN-ARGS...]

Start `svc run` against the embedded Binance simulator at N market ticks per second
(one frame per subscribed stream per tick: 8 streams with the default symbols and
intervals, so --sim-rate 200 is about 1,600 messages/s), wait until it trades and has warmed
up, record it for S seconds with profiling/record.sh, stop it with SIGTERM (as Kubernetes would)
and print where the flamegraph and the speedscope profile are.

Note: the embedded simulator runs in the same process and event loop as svc, so its frames
(svc/sim/...) appear in the profile. Leave them out when you read it (profiling/README.md).

Options:
  --record S       seconds to record (default 10)
  --warmup S       seconds to let svc run after its first status line (default 5)
  --sim-rate N     simulator market ticks per second (default 200; sets SVC_SIM_RATE)
  --rate HZ        py-spy samples per second (default 100)
  --out DIR        where the profiles and svc's logs go (default: profiles)
  --idle, --gil, --native
                   passed to record.sh
  -- ARGS          extra arguments for `svc run`, e.g. -- --symbols BTCUSDT --intervals 1m
  -h, --help       show this help

Files in DIR: svc-run-TIMESTAMP.svg, .speedscope.json, .log (JSON log lines), .status.log
(status lines and the final summary), .summary.json. svc: $SVC, else .venv/bin/svc, else PATH.
Needs root or CAP_SYS_PTRACE for py-spy.
Exit status: 0 profile written, 1 svc or py-spy failed, 2 bad arguments.
EOF
}

record=10 warmup=5 sim_rate=200 rate=100 out=profiles
record_flags=()
svc_args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --record) need_value "$1" $#; record=$2; shift 2 ;;
        --warmup) need_value "$1" $#; warmup=$2; shift 2 ;;
        --sim-rate) need_value "$1" $#; sim_rate=$2; shift 2 ;;
        --rate) need_value "$1" $#; rate=$2; shift 2 ;;
        --out) need_value "$1" $#; out=$2; shift 2 ;;
        --idle | --gil | --native) record_flags+=("$1"); shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; svc_args=("$@"); break ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done
positive_int --record "$record"
[[ $warmup =~ ^[0-9]+$ ]] || usage_error "--warmup must be a whole number of seconds, got '$warmup'"
positive_int --sim-rate "$sim_rate"
positive_int --rate "$rate"

if [[ -n ${SVC:-} ]]; then
    svc=$SVC
elif [[ -x $REPO_DIR/.venv/bin/svc ]]; then
    svc=$REPO_DIR/.venv/bin/svc
else
    svc=$(command -v svc) || die "svc not found: run 'make install' or set SVC"
fi
find_py_spy >/dev/null  # fail now rather than after start-up

mkdir -p -- "$out" || die "cannot create output directory '$out'"
out=$(cd -- "$out" && pwd)
name="svc-run-$(date -u +%Y%m%dT%H%M%SZ)"
work=$(mktemp -d "${TMPDIR:-/tmp}/svc-profile.XXXXXX")
log="$out/$name.log"
status_log="$out/$name.status.log"
summary="$out/$name.summary.json"

# svc stops by itself after this long even if this script is killed: start-up allowance,
# warm-up, recording and some slack.
startup_timeout=60
svc_duration=$((startup_timeout + warmup + record + 30))
svc_pid="" svc_status=0

stop_svc() {
    [[ -n $svc_pid ]] || return 0
    local waited=0
    if kill -0 "$svc_pid" 2>/dev/null; then
        # SIGTERM, as Kubernetes stops a pod. (A background job of a script starts with SIGINT
        # ignored, so SIGINT would not stop svc before it installs its own handlers.)
        kill -TERM "$svc_pid" 2>/dev/null || true
        # svc's shutdown is bounded (cancel orders, drain, flush); give it 20 s, then insist.
        while kill -0 "$svc_pid" 2>/dev/null && [[ $waited -lt 200 ]]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$svc_pid" 2>/dev/null; then
            note "svc did not stop within 20 s of SIGTERM; sending SIGKILL"
            kill -KILL "$svc_pid" 2>/dev/null || true
        fi
    fi
    svc_status=0
    wait "$svc_pid" 2>/dev/null || svc_status=$?
    svc_pid=""
}

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    stop_svc
    rm -rf -- "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

note "starting svc run (simulator at $sim_rate ticks/s) for at most ${svc_duration}s; logs: $log"
SVC_SIM_RATE=$sim_rate SVC_TELEMETRY_HEALTH_PORT=${SVC_TELEMETRY_HEALTH_PORT:-0} \
    "$svc" run --duration "$svc_duration" --audit-path "$work/audit.jsonl" \
    --summary-json "$summary" "${svc_args[@]}" >"$log" 2>"$status_log" &
svc_pid=$!

# Trading starts when the first status line ("[   1.0s]  1602 msg/s | ...") appears.
waited=0
until grep -q 'msg/s' "$status_log" 2>/dev/null; do
    if ! kill -0 "$svc_pid" 2>/dev/null; then
        tail -n 20 "$status_log" >&2 || true
        die "svc exited during start-up (see $status_log and $log)"
    fi
    [[ $waited -ge $((startup_timeout * 10)) ]] && die "svc did not start trading within ${startup_timeout}s"
    sleep 0.1
    waited=$((waited + 1))
done
note "svc (pid $svc_pid) is trading; warming up for ${warmup}s"
sleep "$warmup"
kill -0 "$svc_pid" 2>/dev/null || die "svc exited during warm-up (see $status_log)"

recorded=$("$PROFILING_DIR/record.sh" --pid "$svc_pid" --duration "$record" --rate "$rate" \
    --out "$out" --name "$name" "${record_flags[@]}") || die "recording failed"

stop_svc
if [[ $svc_status -ne 0 ]]; then
    note "svc exited with status $svc_status (see $status_log)"
fi
printf '%s\n' "$recorded"
printf 'svc logs:   %s\n' "$log"
printf 'svc status: %s\n' "$status_log"
[[ -s $summary ]] && printf 'summary:    %s\n' "$summary"
exit 0
