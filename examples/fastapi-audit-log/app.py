"""An audit log kept in kdelta documents, served by FastAPI.

Each audited record is one kdelta document ``audit/<record>``: every write is a new version
(who, what, when), kept with its HLC, actor and time, so the service gets history and "as it
was at" queries from the store instead of keeping a log table of its own. Writes are durable
when kdelta answers; concurrent writes from two devices surface as siblings, never lost.

    KDELTA_URL=http://127.0.0.1:7878 uvicorn app:app --port 8000
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, Dict, List, Optional

import kdelta
from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

PREFIX = "audit/"


class Change(BaseModel):
    """One write to a record: the new state and who made it."""

    actor: str = Field(min_length=1, max_length=200, description="who made the change (user, service)")
    state: Dict[str, Any] = Field(description="the record's new state")
    reason: Optional[str] = Field(default=None, max_length=2000)


class Entry(BaseModel):
    record: str
    state: Optional[Dict[str, Any]]
    actor: Optional[str]
    reason: Optional[str]
    at: str  # RFC 3339, from the version's HLC
    hlc: str
    version: str  # kdelta actor:seq


def make_app(url: Optional[str] = None, token: Optional[str] = None) -> FastAPI:
    app = FastAPI(title="audit log on kdelta")
    client = kdelta.Client(url or os.environ.get("KDELTA_URL", "http://127.0.0.1:7878"),
                           token=token or os.environ.get("KDELTA_TOKEN"))
    app.state.kdelta = client
    app.router.on_shutdown.append(client.close)

    def db() -> kdelta.Client:
        return client

    def key(record: str) -> str:
        if not record or "/" in record or len(record) > 200:
            raise HTTPException(422, "record ids are 1 to 200 characters without '/'")
        return PREFIX + record

    def entry(record: str, v: kdelta.Version) -> Entry:
        body = v.value if isinstance(v.value, dict) else {}
        return Entry(record=record, state=None if v.deleted else body.get("state"), actor=body.get("actor"),
                     reason=body.get("reason"), at=v.time.isoformat(), hlc=v.hlc, version=f"{v.actor[:8]}:{v.seq}")

    @app.put("/records/{record}", response_model=Entry)
    def write(record: str, change: Change, c: kdelta.Client = Depends(db)) -> Entry:
        v = c.docs.put(key(record), change.model_dump())
        return entry(record, v)

    @app.get("/records/{record}", response_model=Entry)
    def current(record: str, at: Optional[str] = Query(default=None, description="RFC 3339 time or kdelta HLC"),
                c: kdelta.Client = Depends(db)) -> Entry:
        k = key(record)
        point: Any = None
        if at is not None:
            point = at if ":" in at and at.replace(":", "").isdigit() else parse_time(at)
        try:
            doc = c.docs.get(k, as_of=point)
        except kdelta.NotFound:
            raise HTTPException(404, f"record {record!r} did not exist" + (f" at {at}" if at else ""))
        body = doc.value if isinstance(doc.value, dict) else {}
        return Entry(record=record, state=body.get("state"), actor=body.get("actor"), reason=body.get("reason"),
                     at=doc.time.isoformat(), hlc=doc.hlc, version=f"{doc.actor[:8]}:{doc.seq}")

    @app.get("/records/{record}/history", response_model=List[Entry])
    def history(record: str, limit: int = Query(default=100, ge=1, le=1000),
                c: kdelta.Client = Depends(db)) -> List[Entry]:
        try:
            return [entry(record, v) for v in c.docs.history(key(record), limit=limit)]
        except kdelta.NotFound:
            raise HTTPException(404, f"record {record!r} has no history")

    @app.get("/records", response_model=List[str])
    def records(c: kdelta.Client = Depends(db)) -> List[str]:
        return [d.key[len(PREFIX):] for d in c.docs.list(PREFIX, limit=1000)]

    return app


def parse_time(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(422, f"`at`: {text!r} is neither an RFC 3339 time nor an HLC")
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


app = make_app()
