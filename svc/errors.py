"""The one exception tree of svc. Every error the service raises on purpose is here.

::

    SvcError
    ├── ConfigError                  bad configuration; names the field and the expected form
    ├── DecodeError                  a malformed exchange payload; names the stream and the field
    └── ExchangeError                the exchange answered with an error, or could not be reached
        ├── ExchangeUnavailable      network failure, timeout, HTTP 5xx
        ├── RateLimited              HTTP 429 (-1003 and friends); carries retry_after seconds
        │   └── IpBanned             HTTP 418: the IP is banned until retry_after
        ├── TimestampOutsideWindow   -1021: our clock and the exchange's disagree beyond recvWindow
        ├── AuthenticationFailed     -1022 bad signature, -2014/-2015 bad or unauthorised API key
        ├── InvalidRequest           -1100..-1199 malformed parameters, -1121 unknown symbol
        ├── OrderRejected            -2010 the matching engine refused the order
        │   ├── DuplicateOrder       -2010 "Duplicate order sent." (newClientOrderId reused)
        │   ├── InsufficientBalance  -2010 "Account has insufficient balance ..."
        │   └── FilterViolation      -1013 PRICE_FILTER / LOT_SIZE / NOTIONAL failures
        ├── UnknownOrder             -2011 cancel rejected / -2013 order does not exist
        └── AuditUnavailable         not sent: the audit journal could not record it first

Catch the narrowest type. ``exchange_error(code, msg, http_status=...)`` maps a Binance error
body to the right class; the simulator and the client side share that table.
"""

from __future__ import annotations


class SvcError(Exception):
    """Root of every error svc raises on purpose."""


class ConfigError(SvcError):
    """A configuration value is missing or malformed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class DecodeError(SvcError):
    """An exchange payload could not be decoded.

    ``stream`` is the websocket stream or REST route it came from; ``field`` is the JSON path
    that was wrong (``$`` when the document itself is not valid JSON).
    """

    def __init__(self, stream: str, field: str, reason: str) -> None:
        super().__init__(f"malformed payload on {stream!r} at {field}: {reason}")
        self.stream = stream
        self.field = field
        self.reason = reason


class ExchangeError(SvcError):
    """The exchange answered with an error body ``{"code", "msg"}`` or could not be reached."""

    def __init__(self, code: int, msg: str, *, http_status: int = 0) -> None:
        super().__init__(f"Binance error {code} (HTTP {http_status}): {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status


class ExchangeUnavailable(ExchangeError):
    """Network failure, timeout or HTTP 5xx: the request's outcome is unknown."""


class RateLimited(ExchangeError):
    """HTTP 429: back off for ``retry_after`` seconds before sending again."""

    def __init__(
        self, code: int, msg: str, *, http_status: int = 429, retry_after: float = 0.0
    ) -> None:
        super().__init__(code, msg, http_status=http_status)
        self.retry_after = retry_after


class IpBanned(RateLimited):
    """HTTP 418: the IP kept sending after 429s and is banned for ``retry_after`` seconds."""


class TimestampOutsideWindow(ExchangeError):
    """-1021: the request's timestamp is outside recvWindow; resynchronise the clock."""


class AuthenticationFailed(ExchangeError):
    """-1022 invalid signature, -2014 malformed API key, -2015 key rejected for this action."""


class InvalidRequest(ExchangeError):
    """-11xx: a parameter is missing, malformed or unknown (including -1121 invalid symbol)."""


class OrderRejected(ExchangeError):
    """-2010: the exchange refused a new order."""


class DuplicateOrder(OrderRejected):
    """-2010 "Duplicate order sent.": the newClientOrderId is already used by an open order."""


class InsufficientBalance(OrderRejected):
    """-2010: the account cannot pay for the order."""


class FilterViolation(OrderRejected):
    """-1013: the order breaks one of the symbol's filters (price, lot size, notional)."""


class UnknownOrder(ExchangeError):
    """-2011 cancel rejected / -2013 the order does not exist."""


class AuditUnavailable(ExchangeError):
    """Raised by svc, not the exchange: an order command was not sent because the audit
    journal could not record it first (write-ahead; see ``svc.orders.OrderManager``). Under
    ``ExchangeError`` so the order path handles it like any other refusal before matching."""


_AUTH_CODES = frozenset({-1002, -1022, -2014, -2015})


def exchange_error(
    code: int, msg: str, *, http_status: int = 400, retry_after: float = 0.0
) -> ExchangeError:
    """Map a Binance error body (and its HTTP status) to the narrowest svc exception."""
    if http_status == 418:
        return IpBanned(code, msg, http_status=http_status, retry_after=retry_after)
    if http_status == 429 or code in (-1003, -1015):
        return RateLimited(code, msg, http_status=http_status, retry_after=retry_after)
    if http_status >= 500 or code in (-1000, -1001, -1006, -1007, -1008):
        return ExchangeUnavailable(code, msg, http_status=http_status)
    if code == -1021:
        return TimestampOutsideWindow(code, msg, http_status=http_status)
    if code in _AUTH_CODES:
        return AuthenticationFailed(code, msg, http_status=http_status)
    if code == -1013:
        return FilterViolation(code, msg, http_status=http_status)
    if code == -2010:
        lowered = msg.lower()
        if "duplicate" in lowered:
            return DuplicateOrder(code, msg, http_status=http_status)
        if "insufficient balance" in lowered:
            return InsufficientBalance(code, msg, http_status=http_status)
        return OrderRejected(code, msg, http_status=http_status)
    if code in (-2011, -2013):
        return UnknownOrder(code, msg, http_status=http_status)
    if -1199 <= code <= -1100:
        return InvalidRequest(code, msg, http_status=http_status)
    return ExchangeError(code, msg, http_status=http_status)
