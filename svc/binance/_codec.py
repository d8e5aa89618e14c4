"""Shared plumbing of the wire modules: msgspec errors -> ``DecodeError`` with a field path."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from svc.errors import DecodeError

T = TypeVar("T")

ENCODER = msgspec.json.Encoder()
NS_PER_MS = 1_000_000


def field_of(error: msgspec.DecodeError, prefix: str = "$") -> str:
    """The JSON path msgspec names in a validation error (``$.k.o``), re-rooted at ``prefix``."""
    text = str(error)
    marker = " - at `"
    at = text.rfind(marker)
    if at < 0:
        return prefix if isinstance(error, msgspec.ValidationError) else "$"
    path = text[at + len(marker) : -1]
    return prefix + path[1:] if path.startswith("$") else path


def reason_of(error: msgspec.DecodeError) -> str:
    text = str(error)
    at = text.rfind(" - at `")
    return text[:at] if at >= 0 else text


def decode_as(
    decoder: msgspec.json.Decoder[T],
    raw: bytes | str | msgspec.Raw,
    *,
    stream: str,
    prefix: str = "$",
) -> T:
    """Decode ``raw`` or raise ``DecodeError`` naming ``stream`` and the offending field."""
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as error:
        raise DecodeError(stream, field_of(error, prefix), reason_of(error)) from None
    except UnicodeError as error:  # msgspec raises this for invalid UTF-8 in a string
        raise DecodeError(stream, prefix, f"invalid UTF-8: {error}") from None


def convert_as(kind: type[T], obj: Any, *, stream: str) -> T:
    """Like ``decode_as`` for an already-parsed object (python-binance hands out dicts)."""
    try:
        return msgspec.convert(obj, kind)
    except msgspec.ValidationError as error:
        raise DecodeError(stream, field_of(error), reason_of(error)) from None


def encode(obj: Any) -> bytes:
    return ENCODER.encode(obj)
