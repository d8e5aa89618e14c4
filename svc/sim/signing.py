"""Request authentication of the simulated exchange: API key, timestamp window, HMAC-SHA256.

Binance signs ``totalParams``: the raw query string concatenated with the raw request body
(no separator), with the ``signature`` parameter removed. The simulator checks the same
bytes the client sent, so any client that Binance would reject is rejected here too.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qsl

from svc.errors import ExchangeError, exchange_error

MAX_RECV_WINDOW_MS = 60_000
DEFAULT_RECV_WINDOW_MS = 5_000


@dataclass(frozen=True, slots=True)
class Credentials:
    """The one API key the simulator accepts, and its secret."""

    api_key: str
    api_secret: str

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials(api_key={self.api_key[:4]}..., api_secret=***)"


def sign(secret: str, payload: str) -> str:
    """HMAC-SHA256 of ``payload`` as lowercase hex, as Binance expects."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _without_signature(raw: str) -> tuple[str, str | None]:
    """Split ``a=1&b=2&signature=abc`` into (``a=1&b=2``, ``abc``)."""
    if not raw:
        return "", None
    kept, signature = [], None
    for part in raw.split("&"):
        if part.startswith("signature="):
            signature = part[len("signature=") :]
        else:
            kept.append(part)
    return "&".join(kept), signature


def check_api_key(credentials: Credentials, header: str | None) -> ExchangeError | None:
    if not header:
        return exchange_error(-2014, "API-key format invalid.", http_status=401)
    if not hmac.compare_digest(header, credentials.api_key):
        return exchange_error(
            -2015, "Invalid API-key, IP, or permissions for action.", http_status=401
        )
    return None


def verify_signed(
    credentials: Credentials,
    *,
    api_key_header: str | None,
    query: str,
    body: str,
    server_time_ms: int,
) -> tuple[dict[str, str], ExchangeError | None]:
    """Authenticate a SIGNED request. Returns its parameters and the error to answer, if any."""
    error = check_api_key(credentials, api_key_header)
    query_part, query_signature = _without_signature(query)
    body_part, body_signature = _without_signature(body)
    params = dict(parse_qsl(query_part, keep_blank_values=True))
    params.update(parse_qsl(body_part, keep_blank_values=True))
    if error is not None:
        return params, error
    signature = query_signature or body_signature
    if "timestamp" not in params or not params["timestamp"].isdigit():
        return params, _mandatory("timestamp")
    if not signature:
        return params, _mandatory("signature")
    recv_window = params.get("recvWindow", str(DEFAULT_RECV_WINDOW_MS))
    if not recv_window.isdigit():
        return params, _mandatory("recvWindow")
    if int(recv_window) > MAX_RECV_WINDOW_MS:
        return params, exchange_error(-1131, "recvWindow must be less than 60000")
    timestamp = int(params["timestamp"])
    if timestamp >= server_time_ms + 1000:
        return params, exchange_error(
            -1021, "Timestamp for this request was 1000ms ahead of the server's time."
        )
    if server_time_ms - timestamp > int(recv_window):
        return params, exchange_error(
            -1021, "Timestamp for this request is outside of the recvWindow."
        )
    expected = sign(credentials.api_secret, query_part + body_part)
    if not hmac.compare_digest(expected, signature.lower()):
        return params, exchange_error(-1022, "Signature for this request is not valid.")
    return params, None


def _mandatory(name: str) -> ExchangeError:
    return exchange_error(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )
