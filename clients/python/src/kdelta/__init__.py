"""Python client for the kdelta edge data agent.

>>> import kdelta
>>> with kdelta.Client("http://127.0.0.1:7878") as c:          # doctest: +SKIP
...     c.readings.ingest([("greenhouse.temp", 21.5)])
...     v = c.docs.put("greenhouse/setpoint", {"temp": 22})
...     c.docs.get("greenhouse/setpoint", as_of=v.hlc).value
{'temp': 22}

See clients/python/README.md for the whole API.
"""

from ._errors import (
    ApiError, BadRequest, Conflict, DiskFull, InvalidInput, KdeltaError, NotFound, PayloadTooLarge,
    ServerError, TransportError, Unauthorized, Unavailable, UnsupportedMediaType,
)
from ._models import (
    Aggregate, Bucket, Change, Diff, Doc, Dot, Event, Latest, Peer, Reading, ReadingRange, Series,
    Source, Status, SyncResult, Twin, TwinChange, TwinWrite, Version, Written,
)
from ._requests import DELETE
from ._retry import NO_RETRY, Retry
from .aio import AsyncClient
from .client import Client

__version__ = "0.1.0"

__all__ = [
    "Client", "AsyncClient", "Retry", "NO_RETRY", "DELETE",
    "KdeltaError", "TransportError", "ApiError", "BadRequest", "Unauthorized", "NotFound", "Conflict",
    "PayloadTooLarge", "UnsupportedMediaType", "InvalidInput", "DiskFull", "Unavailable", "ServerError",
    "Aggregate", "Bucket", "Change", "Diff", "Doc", "Dot", "Event", "Latest", "Peer", "Reading",
    "ReadingRange", "Series", "Source", "Status", "SyncResult", "Twin", "TwinChange", "TwinWrite",
    "Version", "Written",
]
