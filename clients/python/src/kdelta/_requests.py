"""The API's requests, built once for both clients.

Each function returns a :class:`Req`: method, path, query, body and the function that turns
the JSON answer into a typed result. :class:`kdelta.Client` runs it with a blocking
``httpx.Client``, :class:`kdelta.AsyncClient` with ``httpx.AsyncClient``; neither knows any
endpoint by itself, so the two cannot drift apart.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generic, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union
from urllib.parse import quote

from ._models import (
    Aggregate, Diff, Doc, Latest, Peer, Reading, ReadingRange, Series, Source, Status, SyncResult,
    Twin, TwinChange, TwinWrite, Version, Written,
)
from ._time import Instant, Point, instant_param, point_param, to_ms

T = TypeVar("T")

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Req(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    decode: Callable[[Any], T]
    params: Dict[str, str] = field(default_factory=dict)
    body: Optional[bytes] = None
    content_type: str = "application/json"
    #: Safe to send again after a lost answer (reads, and writes that are idempotent).
    idempotent: bool = True


def _key(key: str) -> str:
    if not key:
        raise ValueError("a key must not be empty")
    return quote(key, safe="/")


def _json_body(v: Any) -> bytes:
    return _json.dumps(v, separators=(",", ":"), allow_nan=False).encode()


def _params(**kw: Optional[str]) -> Dict[str, str]:
    return {k: v for k, v in kw.items() if v is not None}


def _opt_point(p: Optional[Point]) -> Optional[str]:
    return None if p is None else point_param(p)


def _opt_instant(t: Optional[Instant]) -> Optional[str]:
    return None if t is None else instant_param(t)


# ---- readings -------------------------------------------------------------------------------

#: One reading to ingest: a mapping with ``series``, ``value`` and optional ``ts``/``unit``,
#: or a tuple ``(series, value)`` / ``(series, value, ts)``.
ReadingIn = Union[Mapping[str, Any], Tuple[Any, ...]]


def reading_row(r: ReadingIn) -> Dict[str, Any]:
    """The API's row form of one reading (``ts`` as unix ms)."""
    if isinstance(r, Mapping):
        row = dict(r)
    else:
        if len(r) not in (2, 3):
            raise ValueError(f"a reading tuple is (series, value[, ts]), got {r!r}")
        row = {"series": r[0], "value": r[1]}
        if len(r) == 3 and r[2] is not None:
            row["ts"] = r[2]
    ts = row.get("ts")
    if ts is not None and not isinstance(ts, (int, str)):
        import datetime as dt

        if isinstance(ts, dt.datetime):
            row["ts"] = to_ms(ts)
        else:
            raise TypeError(f"reading ts must be a datetime, unix ms or RFC 3339, got {type(ts).__name__}")
    if "series" not in row or "value" not in row:
        raise ValueError(f"a reading needs series and value: {r!r}")
    return row


def ingest(rows: Sequence[Dict[str, Any]], atomic: bool = False) -> Req[Written]:
    # Not idempotent: a batch sent again after a lost answer is stored again.
    return Req("POST", "/v1/readings", Written.from_json, body=_json_body(list(rows)), idempotent=False,
               params=_params(atomic="true" if atomic else None))


def series(after: Optional[str]) -> Req[Tuple[List[Series], Optional[str]]]:
    """One page of series in name order (``GET /v1/series`` is paged by ``after``)."""
    return Req("GET", "/v1/series", lambda d: ([Series.from_json(s) for s in d["series"]], d.get("next_after")),
               params=_params(after=after))


def range_page(series: str, start: Optional[Instant], end: Optional[Instant], limit: Optional[int],
               cursor: Optional[str]) -> Req[Tuple[ReadingRange, Optional[str]]]:
    def decode(d: Any) -> Tuple[ReadingRange, Optional[str]]:
        rows = [Reading(int(r["ts"]), float(r["value"])) for r in d["readings"]]
        return ReadingRange(d["series"], d.get("unit"), rows), d.get("next_cursor")

    return Req("GET", "/v1/readings", decode, params=_params(
        series=series, **{"from": _opt_instant(start)}, to=_opt_instant(end),
        limit=None if limit is None else str(limit), cursor=cursor))


def aggregate(series: str, start: Optional[Instant], end: Optional[Instant], bucket: Union[str, int, None],
              functions: Optional[Iterable[str]]) -> Req[Aggregate]:
    return Req("GET", "/v1/readings/aggregate", Aggregate.from_json, params=_params(
        series=series, **{"from": _opt_instant(start), "fn": None if functions is None else ",".join(functions)},
        to=_opt_instant(end), bucket=None if bucket is None else str(bucket)))


def latest(names: Optional[Iterable[str]]) -> Req[List[Latest]]:
    return Req("GET", "/v1/readings/latest", lambda d: [Latest.from_json(x) for x in d["latest"]],
               params=_params(series=None if names is None else ",".join(names)))


# ---- documents ------------------------------------------------------------------------------

def doc_get(key: str, as_of: Optional[Point]) -> Req[Doc]:
    return Req("GET", f"/v1/docs/{_key(key)}", Doc.from_json, params=_params(as_of=_opt_point(as_of)))


def doc_put(key: str, value: Any) -> Req[Version]:
    return Req("PUT", f"/v1/docs/{_key(key)}", Version.from_json, body=_json_body(value), idempotent=False)


def doc_delete(key: str) -> Req[Version]:
    return Req("DELETE", f"/v1/docs/{_key(key)}", Version.from_json, idempotent=False)


#: One entry of a batch: ``(key, value)`` puts, ``(key, None)`` is *not* a delete (it stores
#: JSON null); use :data:`DELETE` as the value to delete.
DELETE: Any = object()


def doc_batch(entries: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]]) -> Req[List[Version]]:
    items = entries.items() if isinstance(entries, Mapping) else entries
    body = [{"key": k, "delete": True} if v is DELETE else {"key": k, "value": v} for k, v in items]
    if not body:
        raise ValueError("a batch needs at least one entry")
    return Req("POST", "/v1/docs", lambda d: [Version.from_json(v) for v in d["versions"]],
               body=_json_body(body), idempotent=False)


def doc_history(key: str, limit: Optional[int], before: Optional[Point]) -> Req[Tuple[List[Version], Optional[str]]]:
    return Req("GET", f"/v1/docs/{_key(key)}/history",
               lambda d: ([Version.from_json(v) for v in d["versions"]], d.get("next_before")),
               params=_params(limit=None if limit is None else str(limit), before=_opt_point(before)))


def doc_diff(key: str, start: Point, end: Optional[Point]) -> Req[Diff]:
    return Req("GET", f"/v1/docs/{_key(key)}/diff", Diff.from_json,
               params=_params(**{"from": point_param(start)}, to=_opt_point(end)))


def doc_siblings(key: str) -> Req[List[Version]]:
    return Req("GET", f"/v1/docs/{_key(key)}/siblings", lambda d: [Version.from_json(v) for v in d["siblings"]])


def doc_list(prefix: str, as_of: Optional[Point], limit: Optional[int], after: Optional[str]) -> Req[Tuple[List[Doc], Optional[str]]]:
    return Req("GET", "/v1/docs", lambda d: ([Doc.from_json(x) for x in d["docs"]], d.get("next_after")),
               params=_params(prefix=prefix or None, as_of=_opt_point(as_of),
                              limit=None if limit is None else str(limit), after=after))


# ---- twins ----------------------------------------------------------------------------------

def twin_create(key: str, value: Optional[Mapping[str, Any]]) -> Req[TwinWrite]:
    return Req("POST", f"/v1/twins/{_key(key)}", TwinWrite.from_json,
               body=b"" if value is None else _json_body(value), idempotent=False)


def twin_merge(key: str, patch: Mapping[str, Any]) -> Req[TwinWrite]:
    # A merge patch sets values: sending it twice gives the same state.
    return Req("PATCH", f"/v1/twins/{_key(key)}", TwinWrite.from_json, body=_json_body(patch),
               content_type=MERGE_PATCH)


def twin_ops(key: str, ops: Sequence[Mapping[str, Any]]) -> Req[TwinWrite]:
    # Increments and inserts are not idempotent.
    return Req("PATCH", f"/v1/twins/{_key(key)}", TwinWrite.from_json, body=_json_body({"ops": list(ops)}),
               idempotent=False)


def twin_get(key: str, as_of: Optional[Point]) -> Req[Twin]:
    return Req("GET", f"/v1/twins/{_key(key)}", Twin.from_json, params=_params(as_of=_opt_point(as_of)))


def twin_history(key: str, limit: Optional[int], before: Optional[Point]) -> Req[Tuple[List[TwinChange], Optional[str]]]:
    return Req("GET", f"/v1/twins/{_key(key)}/history",
               lambda d: ([TwinChange.from_json(c) for c in d["changes"]], d.get("next_before")),
               params=_params(limit=None if limit is None else str(limit), before=_opt_point(before)))


def twin_diff(key: str, start: Point, end: Optional[Point]) -> Req[Diff]:
    return Req("GET", f"/v1/twins/{_key(key)}/diff", Diff.from_json,
               params=_params(**{"from": point_param(start)}, to=_opt_point(end)))


def twin_list(prefix: str, limit: Optional[int], after: Optional[str]) -> Req[Tuple[List[str], Optional[str]]]:
    return Req("GET", "/v1/twins", lambda d: (list(d["twins"]), d.get("next_after")),
               params=_params(prefix=prefix or None, limit=None if limit is None else str(limit), after=after))


# ---- operations -----------------------------------------------------------------------------

def status() -> Req[Status]:
    return Req("GET", "/v1/status", Status.from_json)


def sources() -> Req[List[Source]]:
    return Req("GET", "/v1/sources", lambda d: [Source.from_json(s) for s in d["sources"]])


def peers() -> Req[List[Peer]]:
    return Req("GET", "/v1/sync/peers", lambda d: [Peer.from_json(p) for p in d["peers"]])


def sync_now(peer: Optional[str], timeout: Optional[str]) -> Req[SyncResult]:
    return Req("POST", "/v1/sync/now", SyncResult.from_json, params=_params(peer=peer, timeout=timeout))


def events_params(kind: Optional[str], series: Optional[Iterable[str]], prefix: Optional[str]) -> Dict[str, str]:
    return _params(kind=kind, series=None if series is None else ",".join(series), prefix=prefix)
