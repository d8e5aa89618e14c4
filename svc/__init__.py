"""svc: an observability-first trading service for Binance."""

__version__ = "0.1.0"
