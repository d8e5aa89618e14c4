#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Print the Python stack of every thread of a running svc process, once (py-spy dump).
set -euo pipefail

PROG=dump.sh
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF_USAGE'
Usage: profiling/dump.sh [--pid PID] [--locals] [--native] [--json]

Print the current Python stack of every thread of svc (MainThread runs the event loop; the
others are the log listener, the audit writer and the telemetry threads). Take two or three
dumps a second apart: a frame that stays on top of MainThread is what blocks the loop.

Options:
  --pid PID   process to inspect (default: the one process matching 'svc run')
  --locals    also print each frame's arguments and local variables
  --native    include C/C++ frames (uvloop, orjson, msgspec)
  --json      machine-readable output
  -h, --help  show this help

py-spy pauses svc for the moment it reads the stacks (a consistent snapshot, typically well
under a millisecond per thread). Needs root or CAP_SYS_PTRACE.
Exit status: 0 printed, 1 py-spy or the process failed, 2 bad arguments.
EOF_USAGE
}

pid=""
extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --pid) need_value "$1" $#; pid=$2; shift 2 ;;
        --locals) extra+=(--locals); shift ;;
        --native) extra+=(--native); shift ;;
        --json) extra+=(--json); shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done

if [[ -z $pid ]]; then
    pid=$(find_svc_pid "$SVC_PATTERN_DEFAULT")
fi
check_pid "$pid"
py_spy=$(find_py_spy)
status=0
"$py_spy" dump --pid "$pid" "${extra[@]}" || status=$?
if [[ $status -ne 0 ]]; then
    explain_py_spy_failure "$status"
    exit 1
fi
