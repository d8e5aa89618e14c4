#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# A live, top-like view of the functions a running svc process spends its time in (py-spy top).
set -euo pipefail

PROG=top.sh
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF_USAGE'
Usage: profiling/top.sh [--pid PID] [--rate HZ] [--idle] [--gil]

A live table of the functions svc is in, refreshed every second: %Own is time in the
function itself, %Total includes what it calls. Sort with the number keys, quit with q or
Ctrl-C. Runs with --nonblocking: svc is never paused.

Options:
  --pid PID   process to watch (default: the one process matching 'svc run')
  --rate HZ   samples per second (default 100)
  --idle      include idle threads and waits
  --gil       only samples that hold the GIL
  -h, --help  show this help

Needs a terminal, and root or CAP_SYS_PTRACE.
Exit status: 0 quit, 1 py-spy or the process failed, 2 bad arguments.
EOF_USAGE
}

pid="" rate=100
extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --pid) need_value "$1" $#; pid=$2; shift 2 ;;
        --rate) need_value "$1" $#; rate=$2; shift 2 ;;
        --idle) extra+=(--idle); shift ;;
        --gil) extra+=(--gil); shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done

positive_int --rate "$rate"
if [[ -z $pid ]]; then
    pid=$(find_svc_pid "$SVC_PATTERN_DEFAULT")
fi
check_pid "$pid"
py_spy=$(find_py_spy)
exec "$py_spy" top --pid "$pid" --rate "$rate" --nonblocking "${extra[@]}"
