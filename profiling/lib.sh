# shellcheck shell=bash
# Helpers shared by the profiling scripts: error reporting, argument checks, finding py-spy
# and the svc process. Sourced, never run; the caller sets `set -euo pipefail` and PROG.

PROFILING_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$PROFILING_DIR/.." && pwd)"
# The process every script looks for when --pid is not given. The first letter is bracketed
# so that a shell whose own command line carries the pattern does not match itself.
SVC_PATTERN_DEFAULT='[s]vc run'

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

usage_error() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    printf "Try '%s --help'.\n" "$PROG" >&2
    exit 2
}

note() {
    printf '%s: %s\n' "$PROG" "$*" >&2
}

# need_value OPTION "$#" : an option that takes a value must have one.
need_value() {
    [[ $2 -ge 2 ]] || usage_error "$1 needs a value"
}

# positive_int NAME VALUE
positive_int() {
    [[ $2 =~ ^[0-9]+$ && $2 -gt 0 ]] || usage_error "$1 must be a positive integer, got '$2'"
}

# find_py_spy: $PY_SPY, then the project's virtualenv, then PATH.
find_py_spy() {
    if [[ -n ${PY_SPY:-} ]]; then
        [[ -x $PY_SPY ]] || die "PY_SPY=$PY_SPY is not an executable"
        printf '%s\n' "$PY_SPY"
    elif [[ -x $REPO_DIR/.venv/bin/py-spy ]]; then
        printf '%s\n' "$REPO_DIR/.venv/bin/py-spy"
    elif command -v py-spy >/dev/null 2>&1; then
        command -v py-spy
    else
        die "py-spy not found: install it ($REPO_DIR/.venv/bin/pip install py-spy) or set PY_SPY"
    fi
}

# check_pid PID: the process exists (readable in /proc, even when owned by another user).
check_pid() {
    [[ $1 =~ ^[0-9]+$ ]] || usage_error "--pid must be a process id, got '$1'"
    [[ -d /proc/$1 ]] || die "no process with pid $1"
}

# find_svc_pid [PATTERN]: the one process whose command line matches PATTERN (default: svc run).
find_svc_pid() {
    local pattern=${1:-$SVC_PATTERN_DEFAULT} pids count
    pids=$(pgrep -f -- "$pattern" || true)
    count=$(printf '%s' "$pids" | grep -c . || true)
    if [[ $count -eq 0 ]]; then
        die "no running process matches '$pattern': start svc, or pass --pid PID"
    elif [[ $count -gt 1 ]]; then
        note "several processes match '$pattern':"
        ps -o pid=,args= -p "$(printf '%s' "$pids" | paste -sd, -)" >&2 || true
        die "pass --pid PID to choose one"
    fi
    printf '%s\n' "$pids"
}

# explain_py_spy_failure STATUS: py-spy failed; say what usually causes it.
explain_py_spy_failure() {
    note "py-spy exited with status $1"
    if [[ $(id -u) -ne 0 ]]; then
        note "reading another process's memory needs root or CAP_SYS_PTRACE (and" \
            "kernel.yama.ptrace_scope <= 1): try sudo, or add SYS_PTRACE to the container"
    fi
}
