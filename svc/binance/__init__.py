"""Binance's wire formats, and nothing else: pure decoding and encoding, no I/O.

``streams`` owns websocket frames (market data and user data), ``rest`` owns REST payloads.
Decoders produce ``svc.model`` types; encoders produce Binance's exact JSON shapes and are
what the simulator speaks. Every malformed payload raises ``svc.errors.DecodeError``.
"""

from svc.binance.rest import (
    error_from_response,
    exchange_rules,
    klines_to_candles,
)
from svc.binance.streams import EVENT_TYPES, FrameDecoder, channel_of

__all__ = [
    "EVENT_TYPES",
    "FrameDecoder",
    "channel_of",
    "error_from_response",
    "exchange_rules",
    "klines_to_candles",
]
