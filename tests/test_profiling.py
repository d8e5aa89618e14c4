"""The py-spy scripts in ``profiling/``, run as an on-call engineer runs them: against a live
``svc run`` on the embedded simulator. py-spy missing or unable to attach is a failure, never
a skip. Every process started here is stopped here, also when a test fails."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
PROFILING = REPO / "profiling"
SCRIPTS = ("record.sh", "dump.sh", "top.sh", "profile-run.sh", "k8s-profile.sh")
# Files of svc's own hot path as py-spy names them in a flamegraph (the simulator's
# svc/sim/ frames do not count: they exist only in the embedded test set-up).
HOT_PATH_FILES = (
    "svc/feed.py",
    "svc/bus.py",
    "svc/app.py",
    "svc/binance/streams.py",
    "svc/latency.py",
    "svc/tracing.py",
    "svc/strategy.py",
    "svc/binance_client.py",
)
IMAGE = "registry.example/svc-pyspy:0.4.3"


def py_spy() -> str:
    """py-spy next to this interpreter, else on PATH; its absence fails the test."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        pytest.fail("py-spy is not installed: `.venv/bin/pip install py-spy` (a dev dependency)")
    return found


def script_environment(**extra: str) -> dict[str, str]:
    environ = {**os.environ, "PY_SPY": py_spy(), **extra}
    svc = Path(sys.executable).parent / "svc"
    if svc.exists():
        environ["SVC"] = str(svc)
    environ.pop("SVC_PYSPY_IMAGE", None)
    return environ


def run_script(
    name: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a profiling script in its own process group; on timeout the whole group dies."""
    process = subprocess.Popen(  # noqa: S603 - our own scripts
        [str(PROFILING / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env if env is not None else script_environment(),
        cwd=REPO,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{name} {' '.join(args)} did not finish in {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def printed_paths(stdout: str) -> dict[str, Path]:
    """``flamegraph: PATH`` and ``speedscope: PATH`` lines -> {kind: path}."""
    paths = {}
    for line in stdout.splitlines():
        kind, _, value = line.partition(": ")
        if kind in ("flamegraph", "speedscope"):
            paths[kind] = Path(value.strip())
    return paths


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (svc's clean shutdown), then SIGKILL if it is still there after 20 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (leftovers of a test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


@dataclass(frozen=True)
class LiveSvc:
    pid: int
    audit_path: Path


@pytest.fixture(scope="module")
def live_svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSvc]:
    """``svc run`` on the embedded simulator at ~2,400 messages/s, trading, for the module."""
    py_spy()  # fail before starting anything
    work = tmp_path_factory.mktemp("live-svc")
    audit_path = work / "audit.jsonl"
    status = work / "status.log"
    environ = {**os.environ, "SVC_SIM_RATE": "300", "SVC_TELEMETRY_HEALTH_PORT": "-1"}
    with (work / "log.jsonl").open("wb") as out, status.open("wb") as err:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and svc
            [
                sys.executable,
                "-m",
                "svc.cli",
                "run",
                "--duration",
                "60",
                "--audit-path",
                str(audit_path),
            ],
            stdout=out,
            stderr=err,
            env=environ,
            cwd=work,
        )
    try:
        deadline = time.monotonic() + 60
        while b"msg/s" not in status.read_bytes():
            if process.poll() is not None:
                pytest.fail(f"svc run exited during start-up:\n{status.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"svc run did not start trading in 60 s:\n{status.read_text()}")
            time.sleep(0.1)
        time.sleep(1)  # past warm-up: strategies and orders running
        yield LiveSvc(process.pid, audit_path)
    finally:
        stop(process)


def test_every_script_has_help_and_rejects_bad_arguments() -> None:
    for name in SCRIPTS:
        shown = run_script(name, "--help")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("Usage: profiling/" + name), shown.stdout
        wrong = run_script(name, "--no-such-option")
        assert wrong.returncode == 2
        assert "unknown argument '--no-such-option'" in wrong.stderr


def test_record_and_dump_refuse_a_missing_process_or_a_bad_value() -> None:
    finished = subprocess.Popen(["/bin/sh", "-c", "exit 0"])
    finished.wait()
    for name in ("record.sh", "dump.sh", "top.sh"):
        gone = run_script(name, "--pid", str(finished.pid))
        assert gone.returncode == 1
        assert f"no process with pid {finished.pid}" in gone.stderr
    bad = run_script("record.sh", "--pid", "1", "--duration", "soon")
    assert bad.returncode == 2
    assert "--duration must be a positive integer" in bad.stderr


def test_record_writes_a_flamegraph_and_a_speedscope_profile_with_svc_frames(
    live_svc: LiveSvc, tmp_path: Path
) -> None:
    result = run_script(
        "record.sh",
        *("--pid", str(live_svc.pid), "--duration", "3", "--rate", "250", "--out", str(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    paths = printed_paths(result.stdout)
    assert set(paths) == {"flamegraph", "speedscope"}, result.stdout
    assert all(path.parent == tmp_path for path in paths.values())

    svg = paths["flamegraph"].read_text()
    assert svg.lstrip().startswith("<?xml")
    assert "<svg" in svg
    assert "svc/cli.py" in svg, "no svc frame in the flamegraph"
    assert any(name in svg for name in HOT_PATH_FILES), "no hot-path frame in the flamegraph"

    profile = json.loads(paths["speedscope"].read_text())
    assert profile["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = profile["shared"]["frames"]
    svc_files = {
        frame["file"]
        for frame in frames
        if "/svc/" in frame["file"] and "/svc/sim/" not in frame["file"]
    }
    assert any(file.endswith(name) for file in svc_files for name in HOT_PATH_FILES), svc_files
    main = [p for p in profile["profiles"] if '"MainThread"' in p["name"]]
    assert main, [p["name"] for p in profile["profiles"]]
    assert main[0]["type"] == "sampled"
    assert main[0]["samples"]
    assert all(0 <= index < len(frames) for sample in main[0]["samples"] for index in sample)


def test_dump_prints_every_thread_with_svc_frames(live_svc: LiveSvc) -> None:
    result = run_script("dump.sh", "--pid", str(live_svc.pid))
    assert result.returncode == 0, result.stderr
    assert f"Process {live_svc.pid}:" in result.stdout
    assert "Thread" in result.stdout
    assert '"MainThread"' in result.stdout
    assert "_run_service (svc/cli.py" in result.stdout
    assert '"svc-audit-writer"' in result.stdout
    assert "AuditJournal._run (svc/audit.py" in result.stdout

    with_locals = run_script("dump.sh", "--pid", str(live_svc.pid), "--locals")
    assert with_locals.returncode == 0, with_locals.stderr
    assert "Arguments:" in with_locals.stdout or "Locals:" in with_locals.stdout


def bash_words(line: str) -> list[str]:
    """Split a printed command line as bash does (the dry run quotes with ``printf %q``,
    which uses ``$'...'`` for the multi-line remote script: not POSIX, so not shlex)."""
    split = subprocess.run(  # noqa: S603 - bash, on our own script's output
        ["/bin/bash", "-c", f"set -- {line}\nprintf '%s\\0' \"$@\""],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return [word.decode() for word in split.stdout.split(b"\0")[:-1]]


def k8s_dry_run(*args: str) -> list[list[str]]:
    """The kubectl commands ``k8s-profile.sh --dry-run`` prints, split as bash would."""
    result = run_script("k8s-profile.sh", "--image", IMAGE, "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    return [bash_words(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]


def test_k8s_profile_dry_run_prints_debug_exec_and_cp(tmp_path: Path) -> None:
    commands = k8s_dry_run(
        *("--pod", "pod/svc-0", "--namespace", "svc", "--duration", "20", "--out", str(tmp_path))
    )
    assert [command[3] for command in commands] == ["debug", "get", "exec", "cp", "cp"]
    debug, get, exec_, *copies = commands
    assert debug[:5] == ["kubectl", "--namespace", "svc", "debug", "pod/svc-0"]
    assert f"--image={IMAGE}" in debug
    assert "--target=svc" in debug
    assert "--profile=general" in debug
    assert not any(arg.startswith("--custom") for arg in debug)
    [container] = [
        arg.removeprefix("--container=") for arg in debug if arg.startswith("--container=")
    ]
    assert container.startswith("pyspy-")
    assert debug[-3:] == ["--", "sleep", "320"]  # outlives the recording, for kubectl cp

    assert get[4:6] == ["pod/svc-0", "-o"]
    assert f'@.name=="{container}"' in get[6]
    assert "ephemeralContainerStatuses" in get[6]

    assert exec_[4:9] == ["svc-0", "-c", container, "--", "sh"]
    script = exec_[10]
    assert "pgrep -o -f" in script
    assert script.count("py-spy record") == 2
    assert script.count("--nonblocking") == 2
    assert "--format flamegraph" in script
    assert "--format speedscope" in script
    pattern, duration, rate, flags, remote_dir, stem = exec_[12:]
    assert (pattern, duration, rate, flags) == ("[s]vc run", "20", "100", "")

    for copy, suffix in zip(copies, ("svg", "speedscope.json"), strict=True):
        assert copy[3:6] == ["cp", "-c", container]
        assert copy[6:] == [f"svc-0:{remote_dir}/{stem}.{suffix}", f"{tmp_path}/{stem}.{suffix}"]


def test_k8s_profile_options_change_the_commands() -> None:
    debug = k8s_dry_run("--pod", "svc-0", "--run-as-root", "--context", "prod")[0]
    assert debug[:3] == ["kubectl", "--context", "prod"]
    [custom] = [arg.removeprefix("--custom=") for arg in debug if arg.startswith("--custom=")]
    assert Path(custom) == PROFILING / "k8s" / "run-as-root.yaml"
    spec = Path(custom).read_text()
    assert "runAsUser: 0" in spec
    assert 'add: ["SYS_PTRACE"]' in spec

    restricted = k8s_dry_run("--pod", "svc-0", "--profile", "restricted")[0]
    assert "--profile=restricted" in restricted

    dump = k8s_dry_run("--pod", "svc-0", "--dump", "--locals")
    assert [command[1] for command in dump] == ["debug", "get", "exec"]
    assert "py-spy dump" in dump[2][8]
    assert dump[2][-1] == "--locals"

    for wrong in (
        ["--image", IMAGE],  # no --pod
        ["--pod", "svc-0"],  # no image (SVC_PYSPY_IMAGE is cleared)
        ["--pod", "svc-0", "--image", IMAGE, "--profile", "sysadmin"],
        ["--pod", "svc-0", "--image", IMAGE, "--profile", "restricted", "--run-as-root"],
        ["--pod", "svc-0", "--image", IMAGE, "--locals"],
    ):
        result = run_script("k8s-profile.sh", *wrong, "--dry-run")
        assert result.returncode == 2, (wrong, result.stderr)


def test_k8s_profile_remote_script_records_a_live_svc(live_svc: LiveSvc, tmp_path: Path) -> None:
    """What runs inside the debug container (pgrep + two py-spy), run here against svc."""
    commands = k8s_dry_run("--pod", "svc-0", "--match", str(live_svc.audit_path))
    exec_ = commands[2]
    sh_command = exec_[exec_.index("--") + 1 :]
    assert sh_command[:2] == ["sh", "-c"]
    sh_command[-2] = str(tmp_path)  # the remote directory
    sh_command[-5] = "2"  # seconds
    environ = {**os.environ, "PATH": f"{Path(py_spy()).parent}{os.pathsep}{os.environ['PATH']}"}
    ran = subprocess.run(  # noqa: S603 - the script k8s-profile.sh runs in the pod
        sh_command, capture_output=True, text=True, env=environ, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert f"pid {live_svc.pid}:" in ran.stderr
    stem = sh_command[-1]
    assert "svc/cli.py" in (tmp_path / f"{stem}.svg").read_text()
    assert json.loads((tmp_path / f"{stem}.speedscope.json").read_text())["profiles"]

    dump = k8s_dry_run("--pod", "svc-0", "--match", str(live_svc.audit_path), "--dump")[2]
    dumped = subprocess.run(  # noqa: S603 - the script k8s-profile.sh runs in the pod
        dump[dump.index("--") + 1 :],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )
    assert dumped.returncode == 0, dumped.stderr
    assert '"MainThread"' in dumped.stdout


FAKE_KUBECTL = r"""#!/bin/bash
# A kubectl stand-in: logs its arguments, and plays the debug container on this machine.
set -euo pipefail
printf '%s\0' "$@" >>"$FAKE_LOG"; printf '\036' >>"$FAKE_LOG"
while [[ $1 == --* ]]; do shift 2; done  # --namespace NS, --context CTX
case $1 in
    version) echo '{"clientVersion": {"major": "1", "minor": "32"}}' ;;
    debug) echo "Targeting container \"svc\"." >&2 ;;
    get) echo '{"running":{"startedAt":"2026-01-01T00:00:00Z"}}' ;;
    exec)  # exec POD -c NAME -- sh -c SCRIPT sh ARGS...: run it here, remote dir remapped
        shift 5
        args=()
        for arg in "$@"; do args+=("${arg//\/tmp\/svc-profile/$FAKE_REMOTE}"); done
        exec "${args[@]}" ;;
    cp)  # cp -c NAME POD:/tmp/svc-profile/FILE LOCAL
        source=${4#*:}
        cp "${source/\/tmp\/svc-profile/$FAKE_REMOTE}" "$5" ;;
    *) echo "fake kubectl: unexpected $1" >&2; exit 64 ;;
esac
"""


def test_k8s_profile_runs_end_to_end_with_a_stand_in_kubectl(
    live_svc: LiveSvc, tmp_path: Path
) -> None:
    """The real (not dry) run, with a kubectl that executes the pod side on this machine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kubectl"
    fake.write_text(FAKE_KUBECTL)
    fake.chmod(0o755)
    remote = tmp_path / "remote"
    remote.mkdir()
    log = tmp_path / "kubectl.log"
    path = f"{bin_dir}{os.pathsep}{Path(py_spy()).parent}{os.pathsep}{os.environ['PATH']}"
    environ = script_environment(PATH=path, FAKE_LOG=str(log), FAKE_REMOTE=str(remote))
    environ["SVC_PYSPY_IMAGE"] = IMAGE  # the image from the environment, as documented
    out = tmp_path / "out"
    result = run_script(
        "k8s-profile.sh",
        *("--pod", "svc-0", "--namespace", "svc", "--duration", "2", "--out", str(out)),
        *("--match", str(live_svc.audit_path)),
        env=environ,
    )
    assert result.returncode == 0, result.stderr
    paths = printed_paths(result.stdout)
    assert set(paths) == {"flamegraph", "speedscope"}
    assert "svc/cli.py" in paths["flamegraph"].read_text()
    assert json.loads(paths["speedscope"].read_text())["profiles"]
    calls = [record.split("\0")[:-1] for record in log.read_text().split("\x1e")[:-1]]
    verbs = [call[2] if call[0] == "--namespace" else call[0] for call in calls]
    assert verbs[:3] == ["version", "debug", "get"]
    assert verbs[3:] == ["exec", "cp", "cp"]
    debug = calls[1]
    assert {f"--image={IMAGE}", "--target=svc", "--profile=general"} <= set(debug)
    assert f"pid {live_svc.pid}:" in result.stderr


def test_k8s_profile_commands_parse_with_a_real_kubectl(tmp_path: Path) -> None:
    """Every printed command reaches kubectl's network step, i.e. its flags are valid."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the dry-run test above checks the commands")
    for command in k8s_dry_run(
        "--pod", "svc-0", "--namespace", "svc", "--run-as-root", "--out", str(tmp_path)
    ):
        # A closed loopback port: kubectl parses everything, then fails to connect.
        pointed = [kubectl, "--server=http://127.0.0.1:9", *command[1:]]
        ran = subprocess.run(  # noqa: S603 - kubectl from PATH, our own arguments
            pointed,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "KUBECONFIG": os.devnull},
        )
        assert ran.returncode != 0
        assert "unknown flag" not in ran.stderr, ran.stderr
        assert "unknown shorthand" not in ran.stderr, ran.stderr
        assert "127.0.0.1:9" in ran.stderr, (command[1], ran.stderr)


def test_profile_run_starts_records_and_stops_svc(tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    try:
        result = run_script(
            "profile-run.sh",
            *("--record", "2", "--warmup", "1", "--sim-rate", "100", "--out", str(out)),
            timeout=180,
        )
        assert result.returncode == 0, result.stderr
        paths = printed_paths(result.stdout)
        svg = paths["flamegraph"]
        assert svg.parent == out
        assert svg.stat().st_size > 0
        assert "svc/cli.py" in svg.read_text()
        assert paths["speedscope"].stat().st_size > 0
        # svc stopped cleanly, on the script's SIGTERM: it wrote its summary at exit.
        [summary] = out.glob("*.summary.json")
        assert json.loads(summary.read_text())["exit_reason"] == "SIGTERM"
        assert "svc run" in result.stderr
        assert "is trading" in result.stderr
    finally:
        leftovers = processes_mentioning(str(out))
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"profile-run.sh left processes behind: {leftovers}"


def test_scripts_pass_shellcheck() -> None:
    shellcheck = os.environ.get("SHELLCHECK") or shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck), or set SHELLCHECK")
    checked = subprocess.run(  # noqa: S603 - shellcheck on our own scripts
        [shellcheck, "-x", *sorted(str(path) for path in PROFILING.glob("*.sh"))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_runbook_has_a_profiling_section_and_links_to_it() -> None:
    readme = (PROFILING / "README.md").read_text()
    sections = set(re.findall(r"^### (Svc\w+)$", readme, flags=re.MULTILINE))
    pages = {page.stem: page.read_text() for page in (REPO / "runbooks").glob("Svc*.md")}
    assert pages
    missing = sorted(set(pages) - sections)
    assert not missing, f"profiling/README.md has no '### <alert>' section for {missing}"
    assert not sections - set(pages), "profiling/README.md describes runbooks that do not exist"
    for alert, page in pages.items():
        link = f"(../profiling/README.md#{alert.lower()})"
        assert link in page, f"runbooks/{alert}.md: its py-spy step does not link to {link}"
