"""The client's one exception hierarchy. The CLI maps every :class:`VLLMError` to exit 1.

::

    VLLMError                      base: .message, .status_code (None without a response)
    ├── VLLMConnectionError        no connection (refused, reset, DNS, dropped)      retried
    │   └── ConnectTimeoutError    connecting timed out (also a VLLMTimeoutError)     retried
    ├── VLLMTimeoutError           the server took too long (read/write/pool)     not retried
    ├── VLLMStatusError            an HTTP error status; carries vLLM's own message and type
    │   ├── BadRequestError        400 (and 422)
    │   ├── AuthenticationError    401 / 403
    │   ├── NotFoundError          404 (unknown model or adapter, missing route)
    │   ├── RateLimitError         429                                               retried
    │   └── ServerError            5xx                                   503 retried, others not
    ├── ResponseError              a 2xx answer we cannot use (not JSON, fails response_model)
    └── InvalidRequestError        a request this client refuses to send (also a ValueError)

vLLM answers errors as ``{"error": {"message", "type", "param", "code"}}`` (its auth middleware
as ``{"error": "Unauthorized"}``); the message is kept verbatim in ``.message``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["VLLMError", "VLLMConnectionError", "ConnectTimeoutError", "VLLMTimeoutError",
           "VLLMStatusError", "BadRequestError", "AuthenticationError", "NotFoundError",
           "RateLimitError", "ServerError", "ResponseError", "InvalidRequestError",
           "error_for_status"]


class VLLMError(Exception):
    """Base of every error the client raises."""

    status_code: int | None = None

    def __init__(self, message: str, *, url: str | None = None):
        super().__init__(message)
        self.message = message
        self.url = url


class VLLMConnectionError(VLLMError):
    """The server could not be reached (or dropped the connection)."""


class VLLMTimeoutError(VLLMError):
    """The server did not answer within the configured timeout."""


class ConnectTimeoutError(VLLMConnectionError, VLLMTimeoutError):
    """Connecting timed out: a connection error (retried) and a timeout."""


class VLLMStatusError(VLLMError):
    """The server answered with an error status."""

    def __init__(self, message: str, *, status_code: int, url: str | None = None,
                 error_type: str | None = None, body: Any = None, retry_after: float | None = None):
        super().__init__(message, url=url)
        self.status_code = status_code
        self.error_type = error_type
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        kind = f" {self.error_type}" if self.error_type else ""
        return f"vLLM answered {self.status_code}{kind}: {self.message}"


class BadRequestError(VLLMStatusError):
    """400/422: the server rejected the request."""


class AuthenticationError(VLLMStatusError):
    """401/403: missing or wrong API key (set VLLM_API_KEY)."""


class NotFoundError(VLLMStatusError):
    """404: unknown model or adapter, or a route this server does not have."""


class RateLimitError(VLLMStatusError):
    """429: too many requests."""


class ServerError(VLLMStatusError):
    """5xx: the server failed (503: not ready / overloaded)."""


class ResponseError(VLLMError):
    """A successful status with a body the client cannot use."""

    def __init__(self, message: str, *, url: str | None = None, content: str | None = None):
        super().__init__(message, url=url)
        self.content = content


class InvalidRequestError(VLLMError, ValueError):
    """Arguments this client refuses to turn into a request."""


def error_for_status(status: int, message: str, **kw: Any) -> VLLMStatusError:
    """The most specific :class:`VLLMStatusError` for an HTTP status."""
    if status in (400, 422):
        cls: type[VLLMStatusError] = BadRequestError
    elif status in (401, 403):
        cls = AuthenticationError
    elif status == 404:
        cls = NotFoundError
    elif status == 429:
        cls = RateLimitError
    elif status >= 500:
        cls = ServerError
    else:
        cls = VLLMStatusError
    return cls(message, status_code=status, **kw)
