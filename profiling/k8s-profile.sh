#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Profile svc inside a Kubernetes pod without restarting it: add an ephemeral debug
# container (py-spy, SYS_PTRACE) that shares the svc container's process namespace, record
# py-spy there, copy the files out. Requirements and RBAC: profiling/README.md.
set -euo pipefail

PROG=k8s-profile.sh
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: profiling/k8s-profile.sh --pod POD [--namespace NS] [--context CTX] [--container NAME]
                                [--image IMAGE] [--duration S] [--rate HZ] [--out DIR]
                                [--idle] [--gil] [--dump [--locals]] [--match PATTERN]
                                [--profile general|restricted] [--run-as-root] [--keep S]
                                [--dry-run]

1. kubectl debug adds an ephemeral container to POD (image IMAGE; --profile=general, which
   grants it SYS_PTRACE; --target=NAME, so it shares the svc container's process
   namespace). Its command is `sleep KEEP`: it must outlive py-spy so that kubectl cp can
   read the files.
2. waits until that container runs (kubectl get pod, up to 120 s).
3. kubectl exec into it: pgrep finds svc, two py-spy recorders (flamegraph SVG and
   speedscope JSON, --nonblocking: svc is never paused) sample it for S seconds.
   With --dump: one py-spy dump of every thread instead, printed here.
4. kubectl cp copies both files to DIR and the script prints their paths.

Options:
  --pod POD          the svc pod (e.g. svc-0)                                   (required)
  --namespace NS     its namespace (default: the kubectl context's)
  --context CTX      kubectl context (default: the current one)
  --container NAME   the svc container in the pod, the --target (default: svc)
  --image IMAGE      debug image with py-spy, pgrep, tar and sleep (default: $SVC_PYSPY_IMAGE;
                     build one from profiling/k8s/Dockerfile)
  --duration S       seconds to record (default 30)
  --rate HZ          samples per second (default 100)
  --out DIR          local output directory (default: profiles)
  --idle, --gil      passed to py-spy record (see profiling/record.sh --help)
  --dump             print one `py-spy dump` of all threads instead of recording
  --locals           with --dump: also print local variables
  --match PATTERN    pgrep -f pattern for the svc process (default: 'svc run')
  --profile P        kubectl debug profile: general (default; adds SYS_PTRACE, needs a
                     namespace whose Pod Security level is "privileged") or restricted (no
                     capabilities, runs as the pod's user; passes the "restricted" level, and
                     works only where the node's kernel.yama.ptrace_scope is 0)
  --run-as-root      with --profile general: add --custom=profiling/k8s/run-as-root.yaml
                     (runAsUser 0 + SYS_PTRACE) for pods whose securityContext sets a non-root
                     user, for whom an added capability never takes effect. kubectl >= 1.31
  --keep S           lifetime of the debug container (default: duration + 300)
  --dry-run          print the kubectl commands instead of running them
  -h, --help         show this help

Ephemeral containers cannot be removed: the stopped debug container stays in the pod's
spec until the pod is replaced. Each run adds one, named pyspy-<time>.
Exit status: 0 done, 1 kubectl or py-spy failed, 2 bad arguments.
EOF
}

pod="" namespace="" context="" container=svc image=${SVC_PYSPY_IMAGE:-} duration=30 rate=100
out=profiles dump=0 locals=0 match="svc run" profile=general run_as_root=0 keep="" dry_run=0
record_flags=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --pod) need_value "$1" $#; pod=${2#pod/}; shift 2 ;;
        --namespace | -n) need_value "$1" $#; namespace=$2; shift 2 ;;
        --context) need_value "$1" $#; context=$2; shift 2 ;;
        --container) need_value "$1" $#; container=$2; shift 2 ;;
        --image) need_value "$1" $#; image=$2; shift 2 ;;
        --duration) need_value "$1" $#; duration=$2; shift 2 ;;
        --rate) need_value "$1" $#; rate=$2; shift 2 ;;
        --out) need_value "$1" $#; out=$2; shift 2 ;;
        --idle | --gil) record_flags+=" $1"; shift ;;
        --dump) dump=1; shift ;;
        --locals) locals=1; shift ;;
        --match) need_value "$1" $#; match=$2; shift 2 ;;
        --profile) need_value "$1" $#; profile=$2; shift 2 ;;
        --run-as-root) run_as_root=1; shift ;;
        --keep) need_value "$1" $#; keep=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done

[[ -n $pod ]] || usage_error "--pod is required"
[[ -n $image ]] || usage_error "--image is required (or set SVC_PYSPY_IMAGE); build one from profiling/k8s/Dockerfile"
[[ -n $match ]] || usage_error "--match must not be empty"
positive_int --duration "$duration"
positive_int --rate "$rate"
[[ -z $keep ]] && keep=$((duration + 300))
positive_int --keep "$keep"
[[ $locals -eq 1 && $dump -eq 0 ]] && usage_error "--locals goes with --dump"
[[ $keep -le $duration ]] && usage_error "--keep must be longer than --duration"
case $profile in
    general | restricted) ;;
    *) usage_error "--profile must be general or restricted, got '$profile'" ;;
esac
[[ $run_as_root -eq 1 && $profile != general ]] && usage_error "--run-as-root needs --profile general"

kubectl_cmd=(kubectl)
[[ -n $context ]] && kubectl_cmd+=(--context "$context")
[[ -n $namespace ]] && kubectl_cmd+=(--namespace "$namespace")
debug_name="pyspy-$(date -u +%Y%m%d%H%M%S)"
stem="svc-$pod-$(date -u +%Y%m%dT%H%M%SZ)"
remote_dir=/tmp/svc-profile
custom_file="$PROFILING_DIR/k8s/run-as-root.yaml"

# pgrep -f matches full command lines, and the `sh -c` running in the debug container carries
# the pattern in its own arguments: bracket the first letter ('[s]vc run') so that the
# pattern no longer matches its own text. -o: the oldest match, the svc process itself.
if [[ $match =~ ^[A-Za-z0-9/_-] ]]; then
    pgrep_pattern="[${match:0:1}]${match:1}"
else
    pgrep_pattern=$match
fi

run() {
    if [[ $dry_run -eq 1 ]]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

if [[ $dry_run -eq 0 ]]; then
    command -v kubectl >/dev/null 2>&1 || die "kubectl not found in PATH"
    minor=$(kubectl version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -n 1)
    if [[ -n $minor ]]; then
        [[ $minor -ge 27 ]] || die "kubectl 1.$minor is too old: --profile=general needs kubectl >= 1.27"
        if [[ $run_as_root -eq 1 && $minor -lt 31 ]]; then
            die "kubectl 1.$minor: --custom (used by --run-as-root) needs kubectl >= 1.31"
        fi
    else
        note "could not read kubectl's version; continuing"
    fi
    mkdir -p -- "$out" || die "cannot create output directory '$out'"
    out=$(cd -- "$out" && pwd)
fi

# 1. the ephemeral debug container
debug_cmd=("${kubectl_cmd[@]}" debug "pod/$pod" --image="$image" --target="$container"
    --profile="$profile" --container="$debug_name")
[[ $run_as_root -eq 1 ]] && debug_cmd+=(--custom="$custom_file")
debug_cmd+=(-- sleep "$keep")
note "adding ephemeral container $debug_name (image $image) to pod $pod, target $container"
run "${debug_cmd[@]}" || die "kubectl debug failed (RBAC: patch pods/ephemeralcontainers;" \
    "Pod Security: SYS_PTRACE needs the 'privileged' level, else try --profile restricted)"

# 2. wait until it runs
state_cmd=("${kubectl_cmd[@]}" get "pod/$pod" -o
    "jsonpath={.status.ephemeralContainerStatuses[?(@.name==\"$debug_name\")].state}")
if [[ $dry_run -eq 1 ]]; then
    printf '# repeated until the state is "running" (at most 120 s):\n'
    run "${state_cmd[@]}"
else
    waited=0
    while true; do
        state=$("${state_cmd[@]}" 2>/dev/null || true)
        case $state in
            *running*) break ;;
            *terminated*) die "debug container $debug_name terminated: $state" ;;
            *ErrImagePull* | *ImagePullBackOff* | *InvalidImageName* | *CreateContainer*Error*)
                die "debug container $debug_name cannot start: $state" ;;
        esac
        [[ $waited -ge 120 ]] && die "debug container $debug_name not running after 120 s: ${state:-no status}"
        sleep 2
        waited=$((waited + 2))
    done
fi

# 3. py-spy inside the debug container (positional arguments keep the quoting simple)
# shellcheck disable=SC2016  # expanded by the shell in the debug container
find_pid='pid=$(pgrep -o -f "$1") || {
    echo "k8s-profile: nothing matches $1 in the target container (--container, --match?)" >&2
    exit 3
}
echo "k8s-profile: pid $pid: $(tr "\0" " " </proc/$pid/cmdline)" >&2'
if [[ $dump -eq 1 ]]; then
    dump_flags=""
    [[ $locals -eq 1 ]] && dump_flags="--locals"
    # shellcheck disable=SC2016  # expanded by the shell in the debug container
    remote_script="$find_pid"'
py-spy dump --pid "$pid" $2'
    run "${kubectl_cmd[@]}" exec "$pod" -c "$debug_name" -- \
        sh -c "$remote_script" sh "$pgrep_pattern" "$dump_flags" || die "py-spy dump failed"
    exit 0
fi
# shellcheck disable=SC2016  # expanded by the shell in the debug container
remote_script="$find_pid"'
mkdir -p "$5"
py-spy record --pid "$pid" --duration "$2" --rate "$3" --nonblocking $4 --format flamegraph --output "$5/$6.svg" &
flame=$!
py-spy record --pid "$pid" --duration "$2" --rate "$3" --nonblocking $4 --format speedscope --output "$5/$6.speedscope.json" &
speed=$!
wait "$flame"
wait "$speed"'
note "recording svc for ${duration}s"
run "${kubectl_cmd[@]}" exec "$pod" -c "$debug_name" -- \
    sh -c "$remote_script" sh "$pgrep_pattern" "$duration" "$rate" "${record_flags# }" \
    "$remote_dir" "$stem" || die "py-spy record failed in the debug container"

# 4. copy the results out (kubectl cp runs tar in the debug container)
for suffix in svg speedscope.json; do
    run "${kubectl_cmd[@]}" cp -c "$debug_name" "$pod:$remote_dir/$stem.$suffix" \
        "$out/$stem.$suffix" || die "kubectl cp of $stem.$suffix failed"
done
note "the debug container exits by itself after ${keep}s"
printf 'flamegraph: %s\n' "$out/$stem.svg"
printf 'speedscope: %s\n' "$out/$stem.speedscope.json"
