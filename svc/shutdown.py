"""The bounded, ordered shutdown path: steps, their budget, and what each one did.

``svc.app.Service`` runs its shutdown as a sequence of named steps through one
``ShutdownPath``. The whole path shares one budget (``emergency.shutdown_budget_seconds``,
sized below the pod's termination grace period); each step gets at most its own cap and
never more than what is left, less what it must leave for the steps after it (``reserve``).
A step that raises or runs out of time is recorded as failed and the next step still runs,
so a stuck exchange cannot keep the audit journal or the telemetry from being flushed.
Every step is logged and passed to ``record`` (the audit journal while it is open) with its
outcome and duration; ``complete`` is False when a critical step failed (orders,
positions, the audit journal), and the service then exits with ``EXIT_SHUTDOWN_INCOMPLETE``.
Housekeeping steps (``critical=False``: closing connections, flushing telemetry to a
collector that may be down) are logged when they fail but do not make the shutdown
incomplete: nothing is left unattended because of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

log = logging.getLogger(__name__)

Outcome = Literal["ok", "failed", "timeout"]
StepAction = Callable[[], Awaitable[str | None]]
"""A step: returns a short detail for the log, or raises ``StepFailed``/anything."""


class StepFailed(Exception):
    """A step finished but did not achieve its goal (e.g. an order is still open)."""


@dataclasses.dataclass(frozen=True, slots=True)
class StepResult:
    step: str
    outcome: Outcome
    seconds: float
    detail: str
    critical: bool = True


class ShutdownPath:
    """Runs shutdown steps in order within one budget; see the module docstring."""

    def __init__(
        self,
        *,
        reason: str,
        budget_seconds: float,
        record: Callable[[str, dict[str, Any]], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reason = reason
        self._monotonic = monotonic
        self._started = monotonic()
        self._deadline = self._started + budget_seconds
        self.record = record
        self.results: list[StepResult] = []

    @property
    def complete(self) -> bool:
        return all(result.outcome == "ok" for result in self.results if result.critical)

    def elapsed(self) -> float:
        return self._monotonic() - self._started

    def remaining(self) -> float:
        return max(0.0, self._deadline - self._monotonic())

    async def step(
        self,
        name: str,
        action: StepAction,
        *,
        cap: float,
        reserve: float = 0.0,
        critical: bool = True,
    ) -> StepResult:
        """Run ``action`` for at most ``min(cap, remaining() - reserve)`` seconds and record it.

        ``reserve`` is budget kept for the steps after this one, so a step stuck on the
        exchange cannot leave nothing for flushing the journal.
        """
        allowed = max(0.0, min(cap, self.remaining() - reserve))
        started = self._monotonic()
        outcome: Outcome = "ok"
        detail = ""
        try:
            async with asyncio.timeout(allowed):
                detail = await action() or ""
        except TimeoutError:
            outcome, detail = "timeout", f"not done within {allowed:.1f} s"
        except Exception as error:  # noqa: BLE001  (a step must never stop the steps after it)
            outcome, detail = "failed", f"{type(error).__name__}: {error}"
        result = StepResult(name, outcome, self._monotonic() - started, detail, critical)
        self.results.append(result)
        level = logging.INFO if outcome == "ok" else logging.ERROR if critical else logging.WARNING
        log.log(
            level,
            "shutdown step %s: %s in %.3f s%s",
            name,
            outcome,
            result.seconds,
            f" ({detail})" if detail else "",
        )
        if self.record is not None:
            try:
                self.record(
                    "shutdown.step",
                    {
                        "step": name,
                        "outcome": outcome,
                        "seconds": round(result.seconds, 6),
                        "detail": detail,
                        "critical": critical,
                        "reason": self.reason,
                    },
                )
            except Exception:  # the journal must not break the path either
                log.exception("shutdown step %s could not be audited", name)
        return result

    def summary(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "complete": self.complete,
            "seconds": round(self.elapsed(), 6),
            "steps": [dataclasses.asdict(result) for result in self.results],
        }
