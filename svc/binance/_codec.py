"""Shared plumbing of the wire modules: msgspec errors -> ``DecodeError`` with a field path."""

from __future__ import annotations

import re
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


_BYTE_OFFSET = re.compile(r" \(byte \d+\)$")
_QUOTED_VALUE = re.compile(r"^(Invalid (?:enum )?value) .*", re.DOTALL)  # msgspec quotes input
INVALID_UTF8 = "invalid UTF-8"
NESTED_TOO_DEEPLY = "nested too deeply"


def reason_of(error: msgspec.DecodeError) -> str:
    """The error without its path, byte offset or quoted input: the same problem is the same
    reason wherever it sits in the frame (reasons are counted, and exported as metric
    attributes, so their number must not grow with the input)."""
    text = str(error)
    at = text.rfind(" - at `")
    return _QUOTED_VALUE.sub(r"\1", _BYTE_OFFSET.sub("", text[:at] if at >= 0 else text))


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
    except UnicodeError:  # msgspec raises this for invalid UTF-8 in a string
        raise DecodeError(stream, prefix, INVALID_UTF8) from None
    except RecursionError:  # msgspec recurses per nesting level, up to Python's limit
        raise DecodeError(stream, prefix, NESTED_TOO_DEEPLY) from None


def convert_as(kind: type[T], obj: Any, *, stream: str) -> T:
    """Like ``decode_as`` for an already-parsed object (python-binance hands out dicts)."""
    try:
        return msgspec.convert(obj, kind)
    except msgspec.ValidationError as error:
        raise DecodeError(stream, field_of(error), reason_of(error)) from None
    except RecursionError:
        raise DecodeError(stream, "$", NESTED_TOO_DEEPLY) from None


def encode(obj: Any) -> bytes:
    return ENCODER.encode(obj)
