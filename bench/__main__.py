"""Command line of the benchmarks: ``python -m bench <name> [--quick] [--json PATH]``.

``python -m bench report [--results DIR] [--output PATH]`` regenerates ``bench/README.md``
from every ``bench/results/*.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bench import decode, e2e, export, gc, pipeline, report, roadmap

BENCHMARKS: dict[str, Callable[..., int]] = {
    "decode": decode.main,
    "pipeline": pipeline.main,
    "e2e": e2e.main,
    "export": export.main,
    "gc": gc.main,
    "roadmap": roadmap.main,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "name", choices=[*sorted(BENCHMARKS), "report"], help="which benchmark to run"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer, smaller batches (decode < 15 s, the others < 60 s each)",
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the results (JSON)")
    parser.add_argument(
        "--results",
        type=Path,
        default=report.RESULTS,
        help="report: the directory of results JSON (default bench/results)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=report.README,
        help="report: the README to write (default bench/README.md)",
    )
    args = parser.parse_args(argv)
    if args.name == "report":
        return report.main(results=args.results, output=args.output)
    return BENCHMARKS[args.name](quick=args.quick, json_path=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
