"""Which of the configured symbols this replica trades (``shard_index`` of ``shard_count``).

The assignment is deterministic and balanced: the symbols are sorted and dealt round-robin,
so shard ``i`` gets every ``shard_count``-th symbol starting at the ``i``-th, shard sizes
differ by at most one, and every replica computes the same split from the same list without
talking to the others. Adding or removing a symbol can move others between shards; a
rollout restarts every replica anyway, and start-up reconciliation adopts or cancels what
the previous owner left open.

On Kubernetes the shard index comes from the StatefulSet ordinal at the end of ``HOSTNAME``
(``svc-2`` is shard 2) when ``shard_index`` is -1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from svc.errors import ConfigError


def shard_of(*, shard_index: int, shard_count: int, environ: Mapping[str, str]) -> int:
    """The shard this process is; -1 means "the ordinal at the end of ``HOSTNAME``"."""
    if shard_index >= 0:
        return shard_index
    if shard_count == 1:
        return 0
    hostname = environ.get("HOSTNAME", "")
    _, _, ordinal = hostname.rpartition("-")
    if not (ordinal.isascii() and ordinal.isdigit()):  # str.isdigit also takes "²"
        raise ConfigError(
            "shard_index",
            f"-1 takes the StatefulSet ordinal from HOSTNAME, but HOSTNAME={hostname!r} does "
            "not end in -<number>; set shard_index (SVC_SHARD_INDEX or --shard-index)",
        )
    index = int(ordinal)
    if index >= shard_count:
        raise ConfigError(
            "shard_index",
            f"HOSTNAME={hostname!r} is ordinal {index}, but shard_count is {shard_count}: "
            "scale the StatefulSet and SVC_SHARD_COUNT together",
        )
    return index


def shard_symbols(symbols: Sequence[str], *, shard_index: int, shard_count: int) -> tuple[str, ...]:
    """The symbols shard ``shard_index`` of ``shard_count`` trades, in sorted order."""
    if not 0 <= shard_index < shard_count:
        raise ConfigError("shard_index", f"expected 0..{shard_count - 1}, got {shard_index}")
    ordered = sorted(dict.fromkeys(symbols))
    return tuple(ordered[shard_index::shard_count])
