"""docs/guidelines.md says only what is true here: its shell commands run, its Python compiles
(and the blocks marked to run, run), its benchmark tables are the JSON in bench/results/,
its metric names are svc's, its links resolve.

Marking, in the Markdown, on the line before a fence:

* ``<!-- tested -->`` before a ``sh`` block: the block runs with bash (``set -euo pipefail``)
  from the repository root and must exit 0; before a ``python`` block: it runs in a fresh
  interpreter and must exit 0.
* ``<!-- tested by tests/NAME.py -->`` before a ``sh`` block: too slow to run here; that test
  file runs every script the block names.
* ``<!-- not tested: REASON -->``: needs what a test cannot have (a cluster, a browser).

Every ``sh`` block carries one of these; every ``python`` block at least compiles.

The benchmark tables are generated from ``bench/results/*.json`` between the
``<!-- bench-tables:begin/end -->`` and ``<!-- bench-claims:begin/end -->`` markers; after a
benchmark run, regenerate them with
``.venv/bin/python tests/test_guidelines.py --update``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "guidelines.md"
RESULTS = REPO / "bench" / "results"
FENCE = re.compile(r"^```(\w*)\s*$")
TAG = re.compile(r"^<!--\s*(tested|tested by (\S+)|not tested: (.+?))\s*-->$")


@dataclasses.dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    tag: str  # "tested", "tested by", "not tested" or ""
    detail: str  # the test file or the reason

    def __str__(self) -> str:
        return f"guidelines.md:{self.line}"


def blocks(text: str) -> Iterator[Block]:
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        before = index - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        tag = TAG.match(lines[before].strip()) if before >= 0 else None
        end = index + 1
        while not lines[end].startswith("```"):
            end += 1
        kind, detail = "", ""
        if tag is not None:
            if tag.group(2):
                kind, detail = "tested by", tag.group(2)
            elif tag.group(3):
                kind, detail = "not tested", tag.group(3)
            else:
                kind = "tested"
        yield Block(opening.group(1), "\n".join(lines[index + 1 : end]), index + 1, kind, detail)
        index = end + 1


GUIDE_BLOCKS = list(blocks(GUIDE.read_text()))


def of(language: str, tag: str | None = None) -> list[Block]:
    return [b for b in GUIDE_BLOCKS if b.language == language and (tag is None or b.tag == tag)]


# ------------------------------------------------------------------- benchmark tables


def _us(value: float) -> str:
    if value < 1:
        return f"{value:.2f} µs"
    if value < 100:
        return f"{value:.1f} µs"
    return f"{value:,.0f} µs"


def _name(result: dict[str, Any]) -> str:
    return str(result.get("name") or result["benchmark"])  # newer results say "name"


def _bench_command(result: dict[str, Any]) -> str:
    """The command that produced ``result``: ``--quick`` when it says so, or when its plan
    is the benchmark's quick plan (results written before the ``quick`` field)."""
    name = _name(result)
    if "quick" in result:
        quick = bool(result["quick"])
    else:
        plan = dataclasses.asdict(importlib.import_module(f"bench.{name}").QUICK)
        quick = all(result["plan"].get(k) == v for k, v in plan.items())
    return f"`.venv/bin/python -m bench {name}{' --quick' if quick else ''}`"


def _provenance(result: dict[str, Any]) -> str:
    machine = result["machine"]
    return (
        f"Produced by {_bench_command(result)} (`bench/results/{_name(result)}.json`) "
        f"on {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}."
    )


def _pipeline_tables(result: dict[str, Any]) -> list[str]:
    labels = {
        "off": "no telemetry (the floor)",
        "svc": "svc's defaults: stage histograms + 1% sampled tick traces",
        "naive": "naive OpenTelemetry: an SDK span and an SDK histogram per stage",
    }
    lines = [
        _provenance(result),
        "Receive -> decision per message (" + result["plan"]["frames"] + "):",
        "",
        "| telemetry | p50 | p99 | p99.9 | messages/s | throughput vs none |",
        "|---|---|---|---|---|---|",
    ]
    for mode, figures in result["modes"].items():
        median = figures["median"]
        ratio = result["ratios_vs_off"].get(mode, {}).get("throughput", 1.0)
        lines.append(
            f"| {labels.get(mode, mode)} | {_us(median['p50_us'])} | {_us(median['p99_us'])} "
            f"| {_us(median['p999_us'])} | {median['messages_per_s']:,.0f} | {ratio:.2f}x |"
        )
    paired = result.get("paired_ratios_vs_off", {}).get("svc")
    if paired:  # results written since the paired ratios exist
        lines += [
            "",
            (
                f"svc's defaults against none, paired per repetition (median of "
                f"{result['plan']['repetitions']}): "
                f"throughput {paired['throughput']['median']:.2f}x, "
                f"p50 {paired['p50']['median']:.2f}x, p99 {paired['p99']['median']:.2f}x "
                f"(range {paired['p99']['min']:.2f}x-{paired['p99']['max']:.2f}x)."
            ),
        ]
    lines += ["", "One call, on the same machine:", "", "| call | cost |", "|---|---|"]
    lines += [f"| `{call}` | {_us(cost)} |" for call, cost in result["per_call_us"].items()]
    return lines


def _decode_table(result: dict[str, Any]) -> list[str]:
    decoders = list(dict.fromkeys(row["decoder"] for row in result["results"]))
    frames = list(dict.fromkeys(row["frame"] for row in result["results"]))
    cost = {(row["frame"], row["decoder"]): row["median_us"] for row in result["results"]}
    lines = [
        _provenance(result),
        "One raw frame -> one typed event, median per frame (`svc` is `FrameDecoder.decode`):",
        "",
        "| frame | " + " | ".join(f"`{d}`" for d in decoders) + " |",
        "|---" * (len(decoders) + 1) + "|",
    ]
    for frame in frames:
        cells = [_us(cost[frame, d]) if (frame, d) in cost else "" for d in decoders]
        lines.append(f"| {frame} | " + " | ".join(cells) + " |")
    return lines


def _markdown(text: str) -> str:
    """Plain text safe inside a Markdown table cell (``__slots__`` must not turn bold)."""
    return text.replace("|", "/").replace("_", "\\_")


def _claims_table() -> list[str]:
    """The seed review's numeric claims as ``python -m bench roadmap`` judged them."""
    path = RESULTS / "roadmap.json"
    if not path.exists():
        return ["`bench/results/roadmap.json` is missing: run `.venv/bin/python -m bench roadmap`."]
    result = json.loads(path.read_text())
    lines = [
        _provenance(result),
        "",
        "| the seed review claims | verdict | measured |",
        "|---|---|---|",
    ]
    lines += [
        f"| {_markdown(claim['claim'])} | **{claim['verdict']}** | {_markdown(claim['measured'])} |"
        for claim in result["claims"]
    ]
    return lines


def generated() -> dict[str, str]:
    """The text of every generated block, by marker name."""
    pipeline = json.loads((RESULTS / "pipeline.json").read_text())
    decode = json.loads((RESULTS / "decode.json").read_text())
    return {
        "bench-tables": "\n".join([*_pipeline_tables(pipeline), "", *_decode_table(decode)]),
        "bench-claims": "\n".join(_claims_table()),
    }


def _regenerated(text: str) -> str:
    for name, body in generated().items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        head, found, rest = text.partition(begin)
        assert found, f"docs/guidelines.md has no {begin}"
        _, found, tail = rest.partition(end)
        assert found, f"docs/guidelines.md has no {end}"
        text = f"{head}{begin}\n{body}\n{end}{tail}"
    return text


# ------------------------------------------------------------------- tests


def test_every_shell_block_is_tested_or_says_why() -> None:
    untagged = [str(b) for b in of("sh") if not b.tag]
    assert not untagged, (
        f"sh blocks without <!-- tested ... --> or <!-- not tested: ... -->: {untagged}"
    )
    assert len(of("sh", "tested")) >= 3
    for block in of("sh", "tested by"):
        test_file = REPO / block.detail
        assert test_file.is_file(), f"{block}: {block.detail} does not exist"
        scripts = set(re.findall(r"profiling/[\w.-]+\.sh", block.code))
        assert scripts, f"{block}: 'tested by' names no script"
        source = test_file.read_text()
        for script in scripts:
            assert Path(script).name in source, f"{block}: {block.detail} never runs {script}"


@pytest.mark.parametrize("block", of("sh", "tested"), ids=str)
def test_tested_shell_blocks_run(block: Block) -> None:
    bin_dir = str(Path(sys.executable).parent)
    environ = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    ran = subprocess.run(  # noqa: S603 - bash on the documentation's own commands
        ["/bin/bash", "-euo", "pipefail", "-c", block.code],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, f"{block} failed:\n{block.code}\n{ran.stdout}\n{ran.stderr}"


def test_every_python_block_compiles() -> None:
    assert len(of("python")) >= 10
    for block in of("python"):
        compile(block.code, str(block), "exec")


@pytest.mark.parametrize("block", of("python", "tested"), ids=str)
def test_tested_python_blocks_run(block: Block) -> None:
    ran = subprocess.run(  # noqa: S603 - this interpreter on the documentation's own code
        [sys.executable, "-c", block.code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, f"{block} failed:\n{block.code}\n{ran.stdout}\n{ran.stderr}"


def test_benchmark_tables_are_the_results_json() -> None:
    text = GUIDE.read_text()
    assert _regenerated(text) == text, (
        "docs/guidelines.md's benchmark tables differ from bench/results/*.json: "
        "run `.venv/bin/python tests/test_guidelines.py --update`"
    )


def test_metric_names_are_svc_names() -> None:
    from svc import names  # noqa: PLC0415 - only this test needs svc

    published = {value for value in vars(names).values() if isinstance(value, str)}
    mentioned = set(re.findall(r"`(svc\.[a-z_]+(?:\.[a-z_]+)+)`", GUIDE.read_text()))
    mentioned = {name for name in mentioned if not name.endswith(".py")}
    assert len(mentioned) >= 10
    unknown = sorted(mentioned - published)
    assert not unknown, f"metric names not in svc/names.py: {unknown}"


def test_links_resolve() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", GUIDE.read_text())
    local = [link for link in links if "://" not in link]
    assert local
    missing = [link for link in local if not (GUIDE.parent / link).exists()]
    assert not missing, f"broken links in docs/guidelines.md: {missing}"


def main(argv: list[str]) -> int:
    if argv != ["--update"]:
        print("usage: python tests/test_guidelines.py --update", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    GUIDE.write_text(_regenerated(GUIDE.read_text()))
    print(f"rewrote the benchmark tables in {GUIDE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
