"""The blocking client: ``kdelta.Client(url, token=None)``.

Groups follow the API: ``client.readings``, ``client.docs``, ``client.twins``; plus
``events()``, ``status()``, ``sources()``, ``peers()`` and ``sync_now()``. Every call raises a
:class:`kdelta.ApiError` subclass (carrying the API's ``code``) or
:class:`kdelta.TransportError`. Requests are built in ``_requests.py``, shared with
:class:`kdelta.AsyncClient`.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import httpx

from . import _requests as rq
from ._errors import KdeltaError, TransportError, error_from_response
from ._models import (
    Aggregate, Diff, Doc, Event, Latest, Peer, ReadingRange, Series, Source, Status, SyncResult,
    Twin, TwinChange, TwinWrite, Version, Written,
)
from ._retry import NO_RETRY, Retry, may_retry
from ._sse import SseParser
from ._time import Instant, Point

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:7878"
#: Readings per POST when ingesting a long list (the agent accepts up to 50,000 by default).
DEFAULT_BATCH = 5000


def headers(token: Optional[str]) -> Dict[str, str]:
    """Default headers: JSON, and ``Authorization: Bearer`` when a token is given."""
    h = {"Accept": "application/json", "User-Agent": "kdelta-python/0.1"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


def transport_error(e: httpx.TransportError, req: "rq.Req[Any]") -> TransportError:
    sent = not isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout))
    return TransportError(f"{req.method} {req.path}: cannot reach the kdelta agent ({e})", sent=sent)


class Client:
    """A connection to one agent. Use as a context manager or call :meth:`close`.

    ``token`` is sent as ``Authorization: Bearer <token>`` (for agents that require API
    tokens); ``retry`` applies to every request (see :class:`kdelta.Retry`).
    """

    def __init__(self, url: str = DEFAULT_URL, token: Optional[str] = None, *, timeout: float = 30.0,
                 retry: Retry = Retry(), transport: Optional[httpx.BaseTransport] = None) -> None:
        self.url = url.rstrip("/")
        self.retry = retry
        self._http = httpx.Client(base_url=self.url, headers=headers(token), timeout=timeout, transport=transport)
        self.readings = Readings(self)
        self.docs = Docs(self)
        self.twins = Twins(self)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, req: "rq.Req[T]", retry: Optional[Retry] = None, idempotent: Optional[bool] = None) -> T:
        policy = retry or self.retry
        safe = req.idempotent if idempotent is None else idempotent
        attempt = 0
        while True:
            try:
                return self._once(req)
            except KdeltaError as e:
                attempt += 1
                if attempt >= policy.attempts or not may_retry(e, safe):
                    raise
                time.sleep(policy.delay(attempt - 1))

    def _once(self, req: "rq.Req[T]") -> T:
        try:
            r = self._http.request(req.method, req.path, params=req.params, content=req.body,
                                   headers={"Content-Type": req.content_type} if req.body is not None else None)
        except httpx.TransportError as e:
            raise transport_error(e, req) from e
        if r.status_code >= 400:
            raise error_from_response(r.status_code, r.content, method=req.method, url=req.path)
        return req.decode(r.json())

    # ---- operations ---------------------------------------------------------------------

    def status(self) -> Status:
        """``GET /v1/status``."""
        return self._run(rq.status())

    def sources(self) -> List[Source]:
        """``GET /v1/sources``."""
        return self._run(rq.sources())

    def peers(self) -> List[Peer]:
        """``GET /v1/sync/peers``."""
        return self._run(rq.peers())

    def sync_now(self, peer: Optional[str] = None, timeout: Optional[str] = None) -> SyncResult:
        """``POST /v1/sync/now``: connect at once and wait until peers caught up."""
        return self._run(rq.sync_now(peer, timeout), retry=NO_RETRY)

    def events(self, *, kind: Optional[str] = None, series: Optional[Iterable[str]] = None,
               prefix: Optional[str] = None) -> Iterator[Event]:
        """Server-sent events of changes as they become durable (``GET /v1/events``).

        ``kind`` is ``readings`` or ``doc``; the iterator ends when the agent stops. Break out
        of the loop to close the stream.
        """
        params = rq.events_params(kind, series, prefix)
        try:
            with self._http.stream("GET", "/v1/events", params=params, timeout=httpx.Timeout(None, connect=10.0),
                                   headers={"Accept": "text/event-stream"}) as r:
                if r.status_code >= 400:
                    raise error_from_response(r.status_code, r.read(), method="GET", url="/v1/events")
                parser = SseParser()
                for line in r.iter_lines():
                    ev = parser.line(line)
                    if ev is not None:
                        yield ev
        except httpx.TransportError as e:
            raise TransportError(f"GET /v1/events: {e}") from e


class Readings:
    """``client.readings``: ingest and queries of time series."""

    def __init__(self, c: Client) -> None:
        self._c = c

    def ingest(self, readings: Iterable[rq.ReadingIn], *, batch_size: int = DEFAULT_BATCH,
               retry: Optional[Retry] = None, retry_lost_answers: bool = False,
               atomic: bool = False) -> List[Written]:
        """Stores readings in batches of ``batch_size``, each answered once durable.

        A reading is ``{"series", "value", "ts"?, "unit"?}`` or ``(series, value[, ts])``;
        ``ts`` is a datetime, unix ms or RFC 3339 (default: the agent's time of arrival).
        Transient failures are retried (``retry``, default the client's); a batch whose answer
        was lost is sent again only with ``retry_lost_answers=True`` (at-least-once: it may
        then be stored twice). A reading the agent cannot hold (bad series name, timestamp
        outside 1970..9999, unit over 32 bytes) is left out and listed in its batch's
        ``Written.rejected``, the rest stored; with ``atomic=True`` it refuses its whole batch
        instead. A refused batch stores nothing and raises; batches before it stay stored.
        """
        out = []
        for batch in _batches(readings, batch_size):
            out.append(self._c._run(rq.ingest(batch, atomic), retry, idempotent=retry_lost_answers))
        return out

    def series(self) -> List[Series]:
        """Every series with its unit, metadata, count and time span (all pages)."""
        out: List[Series] = []
        after: Optional[str] = None
        while True:
            page, after = self._c._run(rq.series(after))
            out.extend(page)
            if after is None:
                return out

    def range(self, series: str, start: Optional[Instant] = None, end: Optional[Instant] = None, *,
              limit: Optional[int] = None, page_size: int = 10_000) -> ReadingRange:
        """Readings of ``series`` in ``[start, end)``, following pages up to ``limit`` rows."""
        rows: List[Any] = []
        cursor: Optional[str] = None
        unit = None
        while True:
            want = page_size if limit is None else min(page_size, limit - len(rows))
            page, cursor = self._c._run(rq.range_page(series, start, end, want, cursor))
            rows.extend(page.readings)
            unit = page.unit
            if cursor is None or (limit is not None and len(rows) >= limit):
                return ReadingRange(series, unit, rows)

    def aggregate(self, series: str, start: Optional[Instant] = None, end: Optional[Instant] = None, *,
                  bucket: Union[str, int, None] = None, functions: Optional[Iterable[str]] = None) -> Aggregate:
        """Buckets of ``bucket`` (``"1m"``, ``"10s"`` or ms) with ``functions`` (count, min,
        max, avg, sum, first, last; default all)."""
        return self._c._run(rq.aggregate(series, start, end, bucket, functions))

    def latest(self, series: Optional[Iterable[str]] = None) -> List[Latest]:
        """The latest reading of each named series (default every series)."""
        return self._c._run(rq.latest(series))


class Docs:
    """``client.docs``: versioned documents (every version kept; siblings on conflict)."""

    def __init__(self, c: Client) -> None:
        self._c = c

    def put(self, key: str, value: Any) -> Version:
        """Writes a new version; answered once durable."""
        return self._c._run(rq.doc_put(key, value))

    def delete(self, key: str) -> Version:
        """Writes a tombstone version (history is kept); ``NotFound`` without a live value."""
        return self._c._run(rq.doc_delete(key))

    def batch(self, entries: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]]) -> List[Version]:
        """Puts and deletes over many keys as one atomic change (``POST /v1/docs``): a mapping
        or ``(key, value)`` pairs, ``kdelta.DELETE`` as a value deletes. All or nothing: a bad
        entry raises (its message starts ``entry <index>:``) and nothing is stored. Returns the
        new versions in entry order (one ``seq`` and ``hlc`` for all)."""
        return self._c._run(rq.doc_batch(entries))

    def get(self, key: str, as_of: Optional[Point] = None) -> Doc:
        """The current value, or the value ``as_of`` a datetime / unix ms / HLC string."""
        return self._c._run(rq.doc_get(key, as_of))

    def history(self, key: str, *, limit: Optional[int] = None, before: Optional[Point] = None) -> List[Version]:
        """Versions newest first (all of them unless ``limit``), following pages."""
        return list(_paged_history(lambda lim, b: self._c._run(rq.doc_history(key, lim, b)), limit, before))

    def diff(self, key: str, start: Point, end: Optional[Point] = None) -> Diff:
        """The document between two points (``end`` defaults to now)."""
        return self._c._run(rq.doc_diff(key, start, end))

    def siblings(self, key: str) -> List[Version]:
        """Every concurrent current version (one without a conflict)."""
        return self._c._run(rq.doc_siblings(key))

    def list(self, prefix: str = "", *, as_of: Optional[Point] = None, limit: Optional[int] = None) -> List[Doc]:
        """Live documents whose key starts with ``prefix``, in key order, following pages."""
        out: List[Doc] = []
        after: Optional[str] = None
        while True:
            page, after = self._c._run(rq.doc_list(prefix, as_of, _page(limit, len(out)), after))
            out.extend(page)
            if after is None or (limit is not None and len(out) >= limit):
                return out


class Twins:
    """``client.twins``: merge documents (device twins) that merge field by field."""

    def __init__(self, c: Client) -> None:
        self._c = c

    def create(self, key: str, value: Optional[Mapping[str, Any]] = None) -> TwinWrite:
        """Creates the twin (``Conflict`` ``twin_exists`` when it exists)."""
        return self._c._run(rq.twin_create(key, value))

    def merge_patch(self, key: str, patch: Mapping[str, Any]) -> TwinWrite:
        """Applies a JSON Merge Patch (RFC 7396) as one change; ``None`` deletes a field."""
        return self._c._run(rq.twin_merge(key, patch))

    def ops(self, key: str, ops: Sequence[Mapping[str, Any]]) -> TwinWrite:
        """Applies path operations (set, delete, increment, insert) as one change."""
        return self._c._run(rq.twin_ops(key, ops))

    def get(self, key: str, as_of: Optional[Point] = None) -> Twin:
        """The merged value, or the value at a past point."""
        return self._c._run(rq.twin_get(key, as_of))

    def history(self, key: str, *, limit: Optional[int] = None, before: Optional[Point] = None) -> List[TwinChange]:
        """Who changed which paths, newest first, following pages."""
        return list(_paged_history(lambda lim, b: self._c._run(rq.twin_history(key, lim, b)), limit, before))

    def diff(self, key: str, start: Point, end: Optional[Point] = None) -> Diff:
        """JSON-pointer changes between two points."""
        return self._c._run(rq.twin_diff(key, start, end))

    def list(self, prefix: str = "", *, limit: Optional[int] = None) -> List[str]:
        """Twin keys starting with ``prefix``."""
        out: List[str] = []
        after: Optional[str] = None
        while True:
            page, after = self._c._run(rq.twin_list(prefix, _page(limit, len(out)), after))
            out.extend(page)
            if after is None or (limit is not None and len(out) >= limit):
                return out


def _page(limit: Optional[int], have: int) -> Optional[int]:
    return None if limit is None else max(1, min(1000, limit - have))


def _paged_history(fetch: Any, limit: Optional[int], before: Optional[Point]) -> Iterator[Any]:
    got = 0
    while True:
        items, before = fetch(_page(limit, got), before)
        for it in items:
            yield it
            got += 1
            if limit is not None and got >= limit:
                return
        if before is None:
            return


def _batches(readings: Iterable[rq.ReadingIn], size: int) -> Iterator[List[Dict[str, Any]]]:
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    batch: List[Dict[str, Any]] = []
    for r in readings:
        batch.append(rq.reading_row(r))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
