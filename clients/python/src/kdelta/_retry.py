"""When a request is sent again: transport failures and transient answers (503, 507), with
exponential backoff and jitter. Writes that are not idempotent are retried only when the
request certainly did not reach the agent, unless the caller accepts at-least-once delivery
(``ingest(..., retry_lost_answers=True)``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._errors import ApiError, KdeltaError, TransportError


@dataclass(frozen=True)
class Retry:
    """Retry policy: ``attempts`` in total (1 = no retry), delays from ``backoff`` seconds
    doubling up to ``max_backoff``, each with ±25 % jitter."""

    attempts: int = 3
    backoff: float = 0.2
    max_backoff: float = 10.0

    def delay(self, attempt: int) -> float:
        d: float = min(self.max_backoff, self.backoff * 2.0**attempt)
        return float(d * random.uniform(0.75, 1.25))


NO_RETRY = Retry(attempts=1)


def may_retry(err: KdeltaError, idempotent: bool) -> bool:
    """True when sending the request again is safe and may help."""
    if isinstance(err, TransportError):
        return idempotent or not err.sent
    if isinstance(err, ApiError):
        # A transient answer means the agent stored nothing for this request.
        return err.transient
    return False
