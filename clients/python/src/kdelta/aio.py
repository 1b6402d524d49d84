"""The asyncio client: ``kdelta.AsyncClient(url, token=None)``, the same calls as
:class:`kdelta.Client` as coroutines (``events()`` is an async iterator). Requests come from
``_requests.py``, shared with the blocking client."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

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
from .client import DEFAULT_BATCH, DEFAULT_URL, _batches, _page, headers, transport_error

T = TypeVar("T")


class AsyncClient:
    """An asyncio connection to one agent; ``async with`` it or ``await aclose()``."""

    def __init__(self, url: str = DEFAULT_URL, token: Optional[str] = None, *, timeout: float = 30.0,
                 retry: Retry = Retry(), transport: Optional[httpx.AsyncBaseTransport] = None) -> None:
        self.url = url.rstrip("/")
        self.retry = retry
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers(token), timeout=timeout, transport=transport)
        self.readings = AsyncReadings(self)
        self.docs = AsyncDocs(self)
        self.twins = AsyncTwins(self)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, req: "rq.Req[T]", retry: Optional[Retry] = None, idempotent: Optional[bool] = None) -> T:
        policy = retry or self.retry
        safe = req.idempotent if idempotent is None else idempotent
        attempt = 0
        while True:
            try:
                return await self._once(req)
            except KdeltaError as e:
                attempt += 1
                if attempt >= policy.attempts or not may_retry(e, safe):
                    raise
                await asyncio.sleep(policy.delay(attempt - 1))

    async def _once(self, req: "rq.Req[T]") -> T:
        try:
            r = await self._http.request(req.method, req.path, params=req.params, content=req.body,
                                         headers={"Content-Type": req.content_type} if req.body is not None else None)
        except httpx.TransportError as e:
            raise transport_error(e, req) from e
        if r.status_code >= 400:
            raise error_from_response(r.status_code, r.content, method=req.method, url=req.path)
        return req.decode(r.json())

    async def status(self) -> Status:
        return await self._run(rq.status())

    async def sources(self) -> List[Source]:
        return await self._run(rq.sources())

    async def peers(self) -> List[Peer]:
        return await self._run(rq.peers())

    async def sync_now(self, peer: Optional[str] = None, timeout: Optional[str] = None) -> SyncResult:
        return await self._run(rq.sync_now(peer, timeout), retry=NO_RETRY)

    async def events(self, *, kind: Optional[str] = None, series: Optional[Iterable[str]] = None,
                     prefix: Optional[str] = None) -> AsyncIterator[Event]:
        """Server-sent events of durable changes, as an async iterator."""
        params = rq.events_params(kind, series, prefix)
        try:
            async with self._http.stream("GET", "/v1/events", params=params,
                                         timeout=httpx.Timeout(None, connect=10.0),
                                         headers={"Accept": "text/event-stream"}) as r:
                if r.status_code >= 400:
                    raise error_from_response(r.status_code, await r.aread(), method="GET", url="/v1/events")
                parser = SseParser()
                async for line in r.aiter_lines():
                    ev = parser.line(line)
                    if ev is not None:
                        yield ev
        except httpx.TransportError as e:
            raise TransportError(f"GET /v1/events: {e}") from e


class AsyncReadings:
    """``client.readings`` of :class:`AsyncClient`; see :class:`kdelta.client.Readings`."""

    def __init__(self, c: AsyncClient) -> None:
        self._c = c

    async def ingest(self, readings: Iterable[rq.ReadingIn], *, batch_size: int = DEFAULT_BATCH,
                     retry: Optional[Retry] = None, retry_lost_answers: bool = False,
                     atomic: bool = False) -> List[Written]:
        return [await self._c._run(rq.ingest(b, atomic), retry, idempotent=retry_lost_answers)
                for b in _batches(readings, batch_size)]

    async def series(self) -> List[Series]:
        out: List[Series] = []
        after: Optional[str] = None
        while True:
            page, after = await self._c._run(rq.series(after))
            out.extend(page)
            if after is None:
                return out

    async def range(self, series: str, start: Optional[Instant] = None, end: Optional[Instant] = None, *,
                    limit: Optional[int] = None, page_size: int = 10_000) -> ReadingRange:
        rows: List[Any] = []
        cursor: Optional[str] = None
        while True:
            want = page_size if limit is None else min(page_size, limit - len(rows))
            page, cursor = await self._c._run(rq.range_page(series, start, end, want, cursor))
            rows.extend(page.readings)
            if cursor is None or (limit is not None and len(rows) >= limit):
                return ReadingRange(series, page.unit, rows)

    async def aggregate(self, series: str, start: Optional[Instant] = None, end: Optional[Instant] = None, *,
                        bucket: Union[str, int, None] = None, functions: Optional[Iterable[str]] = None) -> Aggregate:
        return await self._c._run(rq.aggregate(series, start, end, bucket, functions))

    async def latest(self, series: Optional[Iterable[str]] = None) -> List[Latest]:
        return await self._c._run(rq.latest(series))


async def _history(fetch: Any, limit: Optional[int], before: Optional[Point]) -> List[Any]:
    out: List[Any] = []
    while True:
        items, before = await fetch(_page(limit, len(out)), before)
        out.extend(items)
        if limit is not None and len(out) >= limit:
            return out[:limit]
        if before is None:
            return out


class AsyncDocs:
    """``client.docs`` of :class:`AsyncClient`; see :class:`kdelta.client.Docs`."""

    def __init__(self, c: AsyncClient) -> None:
        self._c = c

    async def put(self, key: str, value: Any) -> Version:
        return await self._c._run(rq.doc_put(key, value))

    async def delete(self, key: str) -> Version:
        return await self._c._run(rq.doc_delete(key))

    async def batch(self, entries: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]]) -> List[Version]:
        return await self._c._run(rq.doc_batch(entries))

    async def get(self, key: str, as_of: Optional[Point] = None) -> Doc:
        return await self._c._run(rq.doc_get(key, as_of))

    async def history(self, key: str, *, limit: Optional[int] = None, before: Optional[Point] = None) -> List[Version]:
        return await _history(lambda lim, b: self._c._run(rq.doc_history(key, lim, b)), limit, before)

    async def diff(self, key: str, start: Point, end: Optional[Point] = None) -> Diff:
        return await self._c._run(rq.doc_diff(key, start, end))

    async def siblings(self, key: str) -> List[Version]:
        return await self._c._run(rq.doc_siblings(key))

    async def list(self, prefix: str = "", *, as_of: Optional[Point] = None, limit: Optional[int] = None) -> List[Doc]:
        out: List[Doc] = []
        after: Optional[str] = None
        while True:
            page, after = await self._c._run(rq.doc_list(prefix, as_of, _page(limit, len(out)), after))
            out.extend(page)
            if after is None or (limit is not None and len(out) >= limit):
                return out


class AsyncTwins:
    """``client.twins`` of :class:`AsyncClient`; see :class:`kdelta.client.Twins`."""

    def __init__(self, c: AsyncClient) -> None:
        self._c = c

    async def create(self, key: str, value: Optional[Mapping[str, Any]] = None) -> TwinWrite:
        return await self._c._run(rq.twin_create(key, value))

    async def merge_patch(self, key: str, patch: Mapping[str, Any]) -> TwinWrite:
        return await self._c._run(rq.twin_merge(key, patch))

    async def ops(self, key: str, ops: Sequence[Mapping[str, Any]]) -> TwinWrite:
        return await self._c._run(rq.twin_ops(key, ops))

    async def get(self, key: str, as_of: Optional[Point] = None) -> Twin:
        return await self._c._run(rq.twin_get(key, as_of))

    async def history(self, key: str, *, limit: Optional[int] = None, before: Optional[Point] = None) -> List[TwinChange]:
        return await _history(lambda lim, b: self._c._run(rq.twin_history(key, lim, b)), limit, before)

    async def diff(self, key: str, start: Point, end: Optional[Point] = None) -> Diff:
        return await self._c._run(rq.twin_diff(key, start, end))

    async def list(self, prefix: str = "", *, limit: Optional[int] = None) -> List[str]:
        out: List[str] = []
        after: Optional[str] = None
        while True:
            page, after = await self._c._run(rq.twin_list(prefix, _page(limit, len(out)), after))
            out.extend(page)
            if after is None or (limit is not None and len(out) >= limit):
                return out
