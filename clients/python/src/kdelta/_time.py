"""Times as the API takes them.

An *instant* (reading timestamps, ``start``/``end`` of queries) may be given as a
:class:`datetime.datetime` (a naive one is local time, as :meth:`datetime.timestamp` takes
it), an ``int`` of unix milliseconds, a :class:`datetime.timedelta` relative to the agent's
"now" (``timedelta(hours=-1)`` is an hour ago) or a string the agent parses (RFC 3339,
``"now"``, ``"now-15m"``).

A *point in history* (``as_of``, diff ends, ``before``) is any instant, or an HLC string
``"<ms>:<logical>"`` such as a :attr:`Version.hlc` — exact, unlike a wall time.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Union

#: What an instant may be given as.
Instant = Union[_dt.datetime, _dt.timedelta, int, str]
#: What a point in history may be given as: an instant or an HLC string.
Point = Union[_dt.datetime, _dt.timedelta, int, str]

_HLC = re.compile(r"^(\d+):(\d+)$")


def instant_param(t: Instant) -> str:
    """The query-string form of an instant."""
    if isinstance(t, bool):  # bool is an int; never a time
        raise TypeError("a time cannot be a bool")
    if isinstance(t, int):
        return str(t)
    if isinstance(t, _dt.datetime):
        return str(to_ms(t))
    if isinstance(t, _dt.timedelta):
        ms = int(t / _dt.timedelta(milliseconds=1))
        return f"now-{-ms}ms" if ms < 0 else f"now+{ms}ms"
    if isinstance(t, str):
        if not t.strip():
            raise ValueError("a time cannot be an empty string")
        return t
    raise TypeError(f"cannot use {type(t).__name__} as a time; pass a datetime, unix ms, a timedelta or a string")


def point_param(p: Point) -> str:
    """The query-string form of a point in history (HLC strings pass unchanged)."""
    return instant_param(p)


def to_ms(t: _dt.datetime) -> int:
    """Unix milliseconds of a datetime (naive = local time)."""
    return int(round(t.timestamp() * 1000))


def from_ms(ms: int) -> _dt.datetime:
    """An aware UTC datetime from unix milliseconds."""
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)


def hlc_ms(hlc: str) -> int:
    """The physical (wall clock) milliseconds of an HLC string ``"<ms>:<logical>"``."""
    m = _HLC.match(hlc)
    if not m:
        raise ValueError(f"{hlc!r} is not an HLC (<ms>:<logical>)")
    return int(m.group(1))


def is_hlc(text: str) -> bool:
    """True for an HLC string."""
    return bool(_HLC.match(text))
