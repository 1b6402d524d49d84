"""Exceptions raised by the kdelta client.

Every error answer of the agent is JSON ``{"error": {"code", "message"}}``; it is raised as
an :class:`ApiError` subclass chosen by its ``code`` (falling back to the HTTP status), so
callers can catch ``kdelta.NotFound`` or test ``err.code == "wrong_kind"``. Network failures
(agent down, connection reset, timeout) are :class:`TransportError`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class KdeltaError(Exception):
    """Base class of every error this package raises."""


class TransportError(KdeltaError):
    """The agent could not be reached or the connection broke (nothing was answered).

    ``sent`` is False when the request certainly did not reach the agent (connection refused
    or the connect timed out), so retrying cannot store anything twice.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class ApiError(KdeltaError):
    """The agent answered with an error.

    ``status`` is the HTTP status, ``code`` the API's stable error code (``not_found``,
    ``invalid_batch``, ``wrong_kind``, …; see the agent's ``/v1/openapi.json``) and ``message``
    the agent's explanation.
    """

    #: True when the same request may succeed later (the agent is busy, starting or draining).
    transient: bool = False

    def __init__(self, status: int, code: str, message: str, *, method: str = "", url: str = "") -> None:
        where = f" ({method} {url})" if method else ""
        super().__init__(f"{status} {code}: {message}{where}")
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.url = url


class BadRequest(ApiError):
    """400: a malformed body or query parameter (``bad_request``, ``bad_time``, ``malformed_body``, …)."""


class Unauthorized(ApiError):
    """401/403: a token is missing, wrong or lacks the scope."""


class NotFound(ApiError):
    """404: no such document, twin, series or route (``not_found``, ``unknown_series``, …);
    also 410 ``history_pruned``: retention pruned the value current at the as-of point."""


class Conflict(ApiError):
    """409: the write conflicts with what is stored (``wrong_kind``, ``twin_exists``, ``clock_skew``)."""


class PayloadTooLarge(ApiError):
    """413: the body or value is over the agent's limit (``body_too_large``, ``value_too_large``)."""


class UnsupportedMediaType(ApiError):
    """415: the body's Content-Type is not accepted."""


class InvalidInput(ApiError):
    """422: well-formed but refused input (``invalid_batch``, ``invalid_key``, ``invalid_patch``)."""


class DiskFull(ApiError):
    """507: the agent's disk is full; it keeps serving reads."""

    transient = True


class Unavailable(ApiError):
    """503 (``unavailable``, ``not_ready``) or another 5xx the agent may recover from."""

    transient = True


class ServerError(ApiError):
    """500: an internal error of the agent."""


_BY_CODE: Dict[str, Type[ApiError]] = {
    "not_found": NotFound,
    "unknown_series": NotFound,
    "before_history": NotFound,
    "history_pruned": NotFound,
    "no_route": NotFound,
    "unknown_peer": NotFound,
    "bad_request": BadRequest,
    "bad_time": BadRequest,
    "malformed_body": BadRequest,
    "invalid_query": BadRequest,
    "unauthorized": Unauthorized,
    "forbidden": Unauthorized,
    "wrong_kind": Conflict,
    "twin_exists": Conflict,
    "clock_skew": Conflict,
    "seq_gap": Conflict,
    "body_too_large": PayloadTooLarge,
    "value_too_large": PayloadTooLarge,
    "unsupported_media_type": UnsupportedMediaType,
    "invalid_batch": InvalidInput,
    "invalid_key": InvalidInput,
    "invalid_patch": InvalidInput,
    "disk_full": DiskFull,
    "unavailable": Unavailable,
    "not_ready": Unavailable,
    "internal": ServerError,
}

_BY_STATUS: Dict[int, Type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidInput,
    500: ServerError,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
    507: DiskFull,
}


def error_from_response(status: int, body: bytes, *, method: str = "", url: str = "") -> ApiError:
    """The exception for an error answer: by the body's ``code``, else by ``status``."""
    code, message = _parse_error_body(body)
    if code is None:
        code = f"http_{status}"
        text = body[:500].decode("utf-8", "replace").strip()
        message = text or f"HTTP {status} with no error body"
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = Unavailable if status >= 500 else ApiError
    return cls(status, code, message or "", method=method, url=url)


def _parse_error_body(body: bytes) -> "tuple[Optional[str], Optional[str]]":
    import json

    try:
        doc: Any = json.loads(body)
    except ValueError:
        return None, None
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        msg = err.get("message")
        return err["code"], msg if isinstance(msg, str) else ""
    return None, None
