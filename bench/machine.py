"""The machine a benchmark ran on, as one JSON-ready mapping and one printable line.

Every benchmark stores ``describe(...)`` under ``"machine"`` in its JSON and prints
``summary_line`` above its table, so a number is never read without its CPU, core count,
Python, event loop and the load the machine already carried (this host is shared: read the
one-minute load average before comparing two runs).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def event_loop() -> str:
    """The loop ``svc run`` uses: uvloop when it is installed, else asyncio's own."""
    try:
        return f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        return "asyncio"


def describe(*packages: str) -> dict[str, Any]:
    """CPU, cores, Python, loop, load average at the start, and the versions of ``packages``."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loop": event_loop(),
    }
    with contextlib.suppress(OSError):  # not every platform has a load average
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    for package in packages:
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def summary_line(info: dict[str, Any]) -> str:
    """``Intel Xeon, 2 cores, CPython 3.11.7, uvloop 0.23.0, load 1.2`` (what is known)."""
    parts = [
        str(info.get("cpu", "unknown CPU")),
        f"{info.get('cores', '?')} cores",
        f"{info.get('implementation', 'Python')} {info.get('python', '?')}",
    ]
    if "loop" in info:
        parts.append(str(info["loop"]))
    if "load_average_1m" in info:
        parts.append(f"load {info['load_average_1m']}")
    return ", ".join(parts)


def save_figure(figure: Any, path: Path, *, dpi: int = 110) -> None:
    """Lay out ``figure``, write it as PNG to ``path`` (creating its folder) and close it."""
    import matplotlib.pyplot as plt  # noqa: PLC0415  (only the plotting step needs it)

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
