"""Benchmarks, separate from tests and never gating CI: ``python -m bench <name>``."""
