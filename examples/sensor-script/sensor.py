#!/usr/bin/env python3
"""Reads one sensor every few seconds and posts its readings to kdelta in batches.

The way you would write it on a Pi: sampling never waits for the network. Readings go into a
bounded buffer; a batch is posted when it is full or old enough; when the agent is down
(restarting, upgrading) the batch stays in the buffer and is posted again with exponential
backoff. If the agent stays away so long that the buffer fills, the oldest readings are dropped
and counted (backpressure with a bound, instead of unbounded memory on a small device).

    python3 sensor.py --url http://127.0.0.1:7878 --series greenhouse.temp \\
        --w1 /sys/bus/w1/devices/28-000005e2fdc3/w1_slave --interval 10

Without ``--w1`` a simulated sensor (a slow sine) is read. SIGTERM or Ctrl-C flushes the
buffer (for at most ``--flush-timeout`` seconds) and prints one JSON line of counters.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import signal
import sys
import time
from typing import Any, Callable, Deque, Dict, List, Optional

import kdelta


def read_w1(path: str) -> float:
    """A DS18B20 through the kernel's w1-therm driver: ``t=23125`` is 23.125 °C."""
    with open(path) as f:
        lines = f.read().splitlines()
    if len(lines) < 2 or not lines[0].endswith("YES") or "t=" not in lines[1]:
        raise ValueError(f"{path}: bad CRC or no reading: {lines!r}")
    return int(lines[1].split("t=")[1]) / 1000.0


def read_simulated() -> float:
    return round(20.0 + 3.0 * math.sin(time.time() / 60.0), 3)


class Uploader:
    """A bounded buffer of readings and the batches posted from it."""

    def __init__(self, client: kdelta.Client, capacity: int, batch: int, max_age: float,
                 max_backoff: float) -> None:
        self.client = client
        self.buf: Deque[Dict[str, Any]] = collections.deque()
        self.capacity = capacity
        self.batch = batch
        self.max_age = max_age
        self.max_backoff = max_backoff
        self.oldest_at: Optional[float] = None
        self.retry_at = 0.0
        self.backoff = 0.5
        self.stats = {"sampled": 0, "sent": 0, "batches": 0, "dropped": 0, "failures": 0}

    def add(self, reading: Dict[str, Any]) -> None:
        if len(self.buf) >= self.capacity:
            self.buf.popleft()
            self.stats["dropped"] += 1
        self.buf.append(reading)
        self.stats["sampled"] += 1
        if self.oldest_at is None:
            self.oldest_at = time.monotonic()

    def due(self, now: float) -> bool:
        if not self.buf or now < self.retry_at:
            return False
        return len(self.buf) >= self.batch or (self.oldest_at is not None and now - self.oldest_at >= self.max_age)

    def flush_one(self) -> bool:
        """Posts the oldest batch; True when it was stored. A failure keeps it buffered."""
        batch: List[Dict[str, Any]] = [self.buf[i] for i in range(min(self.batch, len(self.buf)))]
        try:
            # One attempt here: this loop does its own backoff and keeps sampling meanwhile.
            # A batch whose answer was lost is sent again (at-least-once).
            self.client.readings.ingest(batch, retry=kdelta.Retry(attempts=1), retry_lost_answers=True)
        except kdelta.KdeltaError as e:
            if isinstance(e, kdelta.ApiError) and not e.transient:
                # Refused for good (a bad reading): drop it rather than block the others.
                print(f"batch refused, dropped: {e}", file=sys.stderr)
                self.stats["dropped"] += len(batch)
                self._forget(len(batch))
                return True
            self.stats["failures"] += 1
            self.retry_at = time.monotonic() + self.backoff
            self.backoff = min(self.max_backoff, self.backoff * 2)
            print(f"agent unavailable ({e}); {len(self.buf)} readings buffered", file=sys.stderr)
            return False
        self._forget(len(batch))
        self.stats["sent"] += len(batch)
        self.stats["batches"] += 1
        self.backoff = 0.5
        self.retry_at = 0.0
        return True

    def _forget(self, n: int) -> None:
        for _ in range(n):
            self.buf.popleft()
        self.oldest_at = time.monotonic() if self.buf else None


def run(args: argparse.Namespace, read: Callable[[], float]) -> Dict[str, int]:
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with kdelta.Client(args.url, token=args.token, timeout=5.0) as client:
        up = Uploader(client, args.buffer, args.batch, args.max_age, args.max_backoff)
        next_sample = time.monotonic()
        while not stopping:
            now = time.monotonic()
            if now >= next_sample:
                try:
                    up.add({"series": args.series, "ts": int(time.time() * 1000), "value": read(),
                            "unit": args.unit})
                except (OSError, ValueError) as e:
                    print(f"sensor read failed: {e}", file=sys.stderr)
                next_sample += args.interval
                if next_sample < now:  # we fell behind (suspend, slow sensor): skip, don't burst
                    next_sample = now + args.interval
            if up.due(now):
                up.flush_one()
            time.sleep(max(0.0, min(next_sample, up.retry_at or next_sample) - time.monotonic()))
        deadline = time.monotonic() + args.flush_timeout
        while up.buf and time.monotonic() < deadline:
            if time.monotonic() >= up.retry_at:
                up.flush_one()
            else:
                time.sleep(0.05)
        up.stats["unsent"] = len(up.buf)
        return up.stats


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:7878")
    p.add_argument("--token", default=None, help="API token, for an agent that requires one")
    p.add_argument("--series", default="sensor.temperature")
    p.add_argument("--unit", default="°C")
    p.add_argument("--w1", default=None, help="path of a DS18B20 w1_slave file (default: simulated)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--batch", type=int, default=60, help="readings per POST")
    p.add_argument("--max-age", type=float, default=30.0, help="post a partial batch after this many seconds")
    p.add_argument("--buffer", type=int, default=10_000, help="readings kept while the agent is away")
    p.add_argument("--max-backoff", type=float, default=30.0)
    p.add_argument("--flush-timeout", type=float, default=10.0, help="seconds to flush on exit")
    args = p.parse_args(argv)
    if args.batch < 1 or args.buffer < args.batch or args.interval <= 0:
        p.error("need --batch >= 1, --buffer >= --batch and --interval > 0")
    path = args.w1
    stats = run(args, (lambda: read_w1(path)) if path else read_simulated)
    print(json.dumps(stats), flush=True)
    return 0 if stats["unsent"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
