"""Command line of the benchmarks: ``python -m bench <name> [--quick] [--json PATH]``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bench import decode, pipeline

BENCHMARKS: dict[str, Callable[..., int]] = {
    "decode": decode.main,
    "pipeline": pipeline.main,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark to run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer, smaller batches (decode < 15 s, pipeline < 60 s)",
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the results (JSON)")
    args = parser.parse_args(argv)
    return BENCHMARKS[args.name](quick=args.quick, json_path=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
