#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Record a running svc process with py-spy: a flamegraph (SVG) and a speedscope profile
# (JSON) of the same time window. See profiling/README.md for how to read them.
set -euo pipefail

PROG=record.sh
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: profiling/record.sh [--pid PID] [--duration S] [--rate HZ] [--out DIR] [--name NAME]
                           [--idle] [--gil] [--native]

Sample a running svc process with py-spy and write, for the same time window,
  DIR/NAME.svg               a flamegraph (open it in a browser; click to zoom)
  DIR/NAME.speedscope.json   a speedscope profile (https://www.speedscope.app, or
                             `npx speedscope FILE`): time order, per-thread views
then print both paths. Two py-spy recorders run side by side, both with --nonblocking:
svc is never paused.

Options:
  --pid PID       process to record (default: the one process matching 'svc run')
  --duration S    seconds to sample (default 10)
  --rate HZ       samples per second (default 100)
  --out DIR       output directory, created if missing (default: profiles)
  --name NAME     file name stem (default: svc-PID-UTCTIMESTAMP)
  --idle          include idle threads and waits (where the loop sleeps, who waits on locks)
  --gil           only samples that hold the GIL (who competes with the event loop)
  --native        include C/C++ frames (uvloop, orjson, msgspec, zlib). py-spy cannot do
                  this without pausing the process, so --native drops --nonblocking and
                  records the two formats one after the other (twice the duration)
  -h, --help      show this help

Needs root or CAP_SYS_PTRACE. py-spy: $PY_SPY, else .venv/bin/py-spy, else PATH.
Exit status: 0 both files written, 1 py-spy or the process failed, 2 bad arguments.
EOF
}

pid="" duration=10 rate=100 out=profiles name="" native=0
extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --pid) need_value "$1" $#; pid=$2; shift 2 ;;
        --duration) need_value "$1" $#; duration=$2; shift 2 ;;
        --rate) need_value "$1" $#; rate=$2; shift 2 ;;
        --out) need_value "$1" $#; out=$2; shift 2 ;;
        --name) need_value "$1" $#; name=$2; shift 2 ;;
        --idle) extra+=(--idle); shift ;;
        --gil) extra+=(--gil); shift ;;
        --native) native=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done

positive_int --duration "$duration"
positive_int --rate "$rate"
if [[ -z $pid ]]; then
    pid=$(find_svc_pid "$SVC_PATTERN_DEFAULT")
fi
check_pid "$pid"
py_spy=$(find_py_spy)
[[ -z $name ]] && name="svc-$pid-$(date -u +%Y%m%dT%H%M%SZ)"
[[ $name == */* ]] && usage_error "--name must be a file name, not a path: '$name'"
mkdir -p -- "$out" || die "cannot create output directory '$out'"
out=$(cd -- "$out" && pwd)
svg="$out/$name.svg"
speedscope="$out/$name.speedscope.json"

common=(record --pid "$pid" --duration "$duration" --rate "$rate" "${extra[@]}")
if [[ $native -eq 1 ]]; then
    common+=(--native)
else
    common+=(--nonblocking)
fi

note "sampling pid $pid for ${duration}s at ${rate} Hz"
if [[ $native -eq 1 ]]; then
    note "--native pauses the process for every sample; recording the two formats in turn"
    status=0
    "$py_spy" "${common[@]}" --format flamegraph --output "$svg" >&2 || status=$?
    if [[ $status -eq 0 ]]; then
        "$py_spy" "${common[@]}" --format speedscope --output "$speedscope" >&2 || status=$?
    fi
    if [[ $status -ne 0 ]]; then
        explain_py_spy_failure "$status"
        exit 1
    fi
else
    # Both recorders see the same window. Ctrl-C reaches them too (same process group);
    # py-spy then writes what it has, so keep waiting for them instead of leaving.
    recorders=()
    trap 'note "interrupted: waiting for py-spy to write its files"' INT
    trap 'kill -INT "${recorders[@]}" 2>/dev/null || true' TERM
    "$py_spy" "${common[@]}" --format flamegraph --output "$svg" >&2 &
    recorders+=($!)
    "$py_spy" "${common[@]}" --format speedscope --output "$speedscope" >&2 &
    recorders+=($!)
    status=0
    for recorder in "${recorders[@]}"; do
        while true; do
            rc=0
            wait "$recorder" || rc=$?
            # 127: already reaped; >128 with the process alive: wait was interrupted by a trap
            if [[ $rc -gt 128 ]] && kill -0 "$recorder" 2>/dev/null; then
                continue
            fi
            break
        done
        [[ $rc -ne 0 && $rc -ne 127 ]] && status=$rc
    done
    trap - INT TERM
    if [[ $status -ne 0 ]]; then
        explain_py_spy_failure "$status"
        exit 1
    fi
fi

for file in "$svg" "$speedscope"; do
    [[ -s $file ]] || die "py-spy wrote no data to $file (process idle? try --idle)"
done
printf 'flamegraph: %s\n' "$svg"
printf 'speedscope: %s\n' "$speedscope"
