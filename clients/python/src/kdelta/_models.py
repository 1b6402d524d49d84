"""What the API answers, as small typed dataclasses.

Times are kept as the API sends them (unix ms ``ts``, HLC strings ``hlc``) and exposed as
aware UTC datetimes through ``.time`` properties. Each object built from a JSON answer keeps
that answer in ``raw`` for fields a newer agent may add.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from ._time import from_ms, hlc_ms

JSON = Any
Raw = Mapping[str, Any]


def _opt_str(v: Any) -> Optional[str]:
    return v if isinstance(v, str) else None


@dataclass(frozen=True)
class Written:
    """The change a write became: ``actor``, ``seq`` and ``hlc`` identify it everywhere."""

    actor: str
    seq: int
    hlc: str
    #: Readings stored (ingest only; 0 otherwise).
    count: int = 0
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @property
    def rejected(self) -> List[Dict[str, Any]]:
        """Readings of the batch the agent left out (ingest only): ``{"at": "readings[17]",
        "series", "reason", "message"}`` each, the first 100; ``rejected_count`` has them all."""
        return list(self.raw.get("rejected", []))

    @property
    def rejected_count(self) -> int:
        return int(self.raw.get("rejected_count", 0))

    @property
    def time(self) -> _dt.datetime:
        """Wall time of the change's HLC."""
        return from_ms(hlc_ms(self.hlc))

    @classmethod
    def from_json(cls, d: Raw) -> "Written":
        return cls(actor=d["actor"], seq=int(d["seq"]), hlc=d["hlc"], count=int(d.get("count", 0)), raw=d)


@dataclass(frozen=True)
class Series:
    """A series as stored."""

    name: str
    unit: Optional[str]
    meta: Dict[str, str]
    count: int
    first_ts: Optional[int]
    last_ts: Optional[int]
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Raw) -> "Series":
        return cls(
            name=d["name"],
            unit=_opt_str(d.get("unit")),
            meta=dict(d.get("meta") or {}),
            count=int(d.get("count", 0)),
            first_ts=d.get("first_ts"),
            last_ts=d.get("last_ts"),
            raw=d,
        )


@dataclass(frozen=True)
class Reading:
    """One stored reading: unix ms ``ts`` and ``value``."""

    ts: int
    value: float

    @property
    def time(self) -> _dt.datetime:
        return from_ms(self.ts)


@dataclass(frozen=True)
class Latest:
    """The latest reading of a series."""

    series: str
    unit: Optional[str]
    ts: int
    value: float

    @property
    def time(self) -> _dt.datetime:
        return from_ms(self.ts)

    @classmethod
    def from_json(cls, d: Raw) -> "Latest":
        return cls(series=d["series"], unit=_opt_str(d.get("unit")), ts=int(d["ts"]), value=float(d["value"]))


def _pandas() -> Any:
    try:
        import pandas  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:  # pragma: no cover - exercised only without pandas
        raise ImportError("to_pandas() needs pandas: pip install 'kdelta[pandas]'") from e
    return pandas


@dataclass(frozen=True)
class ReadingRange(Sequence[Reading]):
    """Readings of one series in time order (every page of the range, fetched)."""

    series: str
    unit: Optional[str]
    readings: List[Reading]

    def __len__(self) -> int:
        return len(self.readings)

    def __iter__(self) -> Iterator[Reading]:
        return iter(self.readings)

    def __getitem__(self, i: Any) -> Any:
        return self.readings[i]

    def to_pandas(self) -> Any:
        """A ``pandas.Series`` of the values indexed by UTC time, named after the series."""
        pd = _pandas()
        index = pd.to_datetime([r.ts for r in self.readings], unit="ms", utc=True)
        return pd.Series([r.value for r in self.readings], index=index, name=self.series, dtype="float64")


@dataclass(frozen=True)
class Bucket:
    """One aggregate bucket; functions that were not asked for are ``None``."""

    start: int
    count: Optional[int] = None
    min: Optional[float] = None
    max: Optional[float] = None
    avg: Optional[float] = None
    sum: Optional[float] = None
    first: Optional[float] = None
    last: Optional[float] = None

    @property
    def time(self) -> _dt.datetime:
        return from_ms(self.start)

    @classmethod
    def from_json(cls, d: Raw) -> "Bucket":
        def f(k: str) -> Optional[float]:
            v = d.get(k)
            return None if v is None else float(v)

        c = d.get("count")
        return cls(
            start=int(d["start"]),
            count=None if c is None else int(c),
            min=f("min"),
            max=f("max"),
            avg=f("avg"),
            sum=f("sum"),
            first=f("first"),
            last=f("last"),
        )


@dataclass(frozen=True)
class Aggregate(Sequence[Bucket]):
    """Time buckets of one series (buckets without readings are omitted)."""

    series: str
    start: int
    end: int
    bucket_ms: int
    functions: List[str]
    buckets: List[Bucket]

    def __len__(self) -> int:
        return len(self.buckets)

    def __iter__(self) -> Iterator[Bucket]:
        return iter(self.buckets)

    def __getitem__(self, i: Any) -> Any:
        return self.buckets[i]

    @classmethod
    def from_json(cls, d: Raw) -> "Aggregate":
        return cls(
            series=d["series"],
            start=int(d["from"]),
            end=int(d["to"]),
            bucket_ms=int(d["bucket_ms"]),
            functions=list(d["fn"]),
            buckets=[Bucket.from_json(b) for b in d["buckets"]],
        )

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one column per function, indexed by bucket start (UTC)."""
        pd = _pandas()
        index = pd.to_datetime([b.start for b in self.buckets], unit="ms", utc=True)
        cols = {f: [getattr(b, f) for b in self.buckets] for f in self.functions}
        return pd.DataFrame(cols, index=index)


@dataclass(frozen=True)
class Dot:
    """A change id: the writing actor and its sequence number."""

    actor: str
    seq: int


@dataclass(frozen=True)
class Version:
    """One version of a document; ``deleted`` versions (tombstones) have ``value`` None."""

    key: str
    actor: str
    seq: int
    hlc: str
    value: JSON
    deleted: bool
    supersedes: List[Dot]
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @property
    def time(self) -> _dt.datetime:
        """Wall time of the version's HLC."""
        return from_ms(hlc_ms(self.hlc))

    @classmethod
    def from_json(cls, d: Raw) -> "Version":
        return cls(
            key=d["key"],
            actor=d["actor"],
            seq=int(d["seq"]),
            hlc=d["hlc"],
            value=d.get("value"),
            deleted=bool(d.get("deleted", False)),
            supersedes=[Dot(x["actor"], int(x["seq"])) for x in d.get("supersedes") or []],
            raw=d,
        )


@dataclass(frozen=True)
class Doc:
    """A document's value: the winning version and how many concurrent versions exist."""

    key: str
    value: JSON
    actor: str
    seq: int
    hlc: str
    #: Concurrent versions (1 without a conflict); see ``docs.siblings(key)``.
    siblings: int
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @property
    def time(self) -> _dt.datetime:
        return from_ms(hlc_ms(self.hlc))

    @property
    def conflicted(self) -> bool:
        """True when writes made apart left more than one version."""
        return self.siblings > 1

    @classmethod
    def from_json(cls, d: Raw) -> "Doc":
        return cls(
            key=d["key"],
            value=d.get("value"),
            actor=d["actor"],
            seq=int(d["seq"]),
            hlc=d["hlc"],
            siblings=int(d.get("siblings", 1)),
            raw=d,
        )


@dataclass(frozen=True)
class Change:
    """One JSON-level difference: at JSON pointer ``path``, ``op`` is added/removed/changed."""

    path: str
    op: str
    before: JSON = None
    after: JSON = None

    @classmethod
    def from_json(cls, d: Raw) -> "Change":
        return cls(path=d["path"], op=d["op"], before=d.get("from"), after=d.get("to"))


@dataclass(frozen=True)
class Diff:
    """A document (or twin) between two points: both values and the changes between them."""

    key: str
    before: JSON
    after: JSON
    changes: List[Change]
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Raw) -> "Diff":
        return cls(
            key=d["key"],
            before=d.get("from"),
            after=d.get("to"),
            changes=[Change.from_json(c) for c in d.get("changes") or []],
            raw=d,
        )


@dataclass(frozen=True)
class Twin:
    """A twin's merged JSON value (``changes`` is None for an as-of read)."""

    key: str
    value: JSON
    changes: Optional[int] = None

    @classmethod
    def from_json(cls, d: Raw) -> "Twin":
        c = d.get("changes")
        return cls(key=d["key"], value=d.get("value"), changes=None if c is None else int(c))


@dataclass(frozen=True)
class TwinWrite:
    """What a twin write did: the merged value and, when it ``changed``, its change id."""

    key: str
    value: JSON
    changed: bool
    actor: Optional[str]
    seq: Optional[int]
    hlc: Optional[str]

    @classmethod
    def from_json(cls, d: Raw) -> "TwinWrite":
        seq = d.get("seq")
        return cls(
            key=d["key"],
            value=d.get("value"),
            changed=bool(d.get("changed")),
            actor=d.get("actor"),
            seq=None if seq is None else int(seq),
            hlc=d.get("hlc"),
        )


@dataclass(frozen=True)
class TwinChange:
    """One entry of a twin's history: who changed which JSON pointers, when."""

    actor: str
    seq: int
    hlc: str
    paths: List[str]
    #: True when the change touched more paths than the agent lists.
    truncated: bool

    @property
    def time(self) -> _dt.datetime:
        return from_ms(hlc_ms(self.hlc))

    @classmethod
    def from_json(cls, d: Raw) -> "TwinChange":
        return cls(
            actor=d["actor"],
            seq=int(d["seq"]),
            hlc=d["hlc"],
            paths=list(d.get("paths") or []),
            truncated=bool(d.get("truncated")),
        )


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``type`` is ``change`` (``data`` as in the API docs) or ``lagged``."""

    type: str
    id: Optional[str]
    data: Dict[str, Any]

    @property
    def kind(self) -> Optional[str]:
        """``readings``, ``doc`` or ``twin`` for a change event."""
        k = self.data.get("kind")
        return k if isinstance(k, str) else None

    @property
    def key(self) -> Optional[str]:
        return _opt_str(self.data.get("key"))

    @property
    def series(self) -> List[str]:
        return list(self.data.get("series") or [])


@dataclass(frozen=True)
class Status:
    """``GET /v1/status``: the agent's identity, counts, store size and disk."""

    version: str
    actor: str
    ready: bool
    uptime_s: int
    counts: Dict[str, int]
    db_bytes: int
    data_dir: str
    version_vector: Dict[str, int]
    digest: str
    disk: Optional[Dict[str, Any]]
    rss_bytes: Optional[int]
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Raw) -> "Status":
        return cls(
            version=d["version"],
            actor=d["actor"],
            ready=bool(d.get("ready")),
            uptime_s=int(d.get("uptime_s", 0)),
            counts=dict(d.get("counts") or {}),
            db_bytes=int(d.get("db_bytes", 0)),
            data_dir=str(d.get("data_dir", "")),
            version_vector=dict(d.get("version_vector") or {}),
            digest=str(d.get("digest", "")),
            disk=d.get("disk"),
            rss_bytes=d.get("rss_bytes"),
            raw=d,
        )


@dataclass(frozen=True)
class Source:
    """``GET /v1/sources``: one sampling source and its counters."""

    name: str
    kind: str
    interval_ms: Optional[int]
    readings: int
    errors: int
    last_reading_ms: Optional[int]
    last_error: Optional[str]
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Raw) -> "Source":
        return cls(
            name=d["name"],
            kind=d.get("kind", ""),
            interval_ms=d.get("interval_ms"),
            readings=int(d.get("readings", 0)),
            errors=int(d.get("errors", 0)),
            last_reading_ms=d.get("last_reading_ms"),
            last_error=_opt_str(d.get("last_error")),
            raw=d,
        )


@dataclass(frozen=True)
class Peer:
    """``GET /v1/sync/peers``: one sync link and how far behind each side is."""

    name: str
    direction: str
    url: Optional[str]
    connected: bool
    lag_to_peer: int
    lag_from_peer: int
    raw: Raw = field(default_factory=dict, repr=False, compare=False)

    @property
    def last_error(self) -> Optional[str]:
        e = self.raw.get("last_error")
        return e.get("message") if isinstance(e, dict) else None

    @classmethod
    def from_json(cls, d: Raw) -> "Peer":
        return cls(
            name=d["name"],
            direction=d.get("direction", ""),
            url=d.get("url"),
            connected=bool(d.get("connected")),
            lag_to_peer=int(d.get("lag_to_peer", 0)),
            lag_from_peer=int(d.get("lag_from_peer", 0)),
            raw=d,
        )


@dataclass(frozen=True)
class SyncResult:
    """``POST /v1/sync/now``: ``ok`` when every peer caught up; per-peer results in ``peers``."""

    ok: bool
    peers: List[Dict[str, Any]]

    @classmethod
    def from_json(cls, d: Raw) -> "SyncResult":
        return cls(ok=bool(d.get("ok")), peers=list(d.get("peers") or []))
