"""CI check of the sensor script: it runs for a few seconds against a real agent that is
killed (SIGKILL) and restarted mid-way; every reading it sampled must be stored."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import kdelta
from agent import Agent, free_port

SCRIPT = Path(__file__).with_name("sensor.py")


def wait_until(what, check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stored(url: str, series: str) -> list:
    with kdelta.Client(url) as c:
        try:
            return [r.ts for r in c.readings.range(series)]
        except kdelta.NotFound:
            return []


def test_every_reading_arrives_across_an_agent_restart() -> None:
    agent = Agent(listen=f"127.0.0.1:{free_port()}")
    series = "test.sensor_script"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--url", agent.url, "--series", series, "--interval", "0.05",
         "--batch", "10", "--max-age", "0.3", "--max-backoff", "0.5", "--buffer", "5000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until("the first batches", lambda: len(stored(agent.url, series)) >= 20)
        agent.kill()
        time.sleep(1.5)  # the agent is away: the script keeps sampling into its buffer
        agent.start()
        before = len(stored(agent.url, series))
        wait_until("batches after the restart", lambda: len(stored(agent.url, series)) >= before + 20)
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stats = json.loads(out.strip().splitlines()[-1])
    try:
        assert proc.returncode == 0, err
        assert stats["failures"] >= 1, stats  # it did see the agent go away
        assert stats["dropped"] == 0 and stats["unsent"] == 0, stats
        got = stored(agent.url, series)
        # Every sampled reading is stored; a batch whose answer the kill cut off may be stored
        # twice (at-least-once), never more than one batch of extra rows.
        assert len(set(got)) == stats["sampled"], (len(set(got)), stats)
        assert len(got) - len(set(got)) <= 10, stats
    finally:
        agent.stop()


def test_a_full_buffer_drops_the_oldest_and_counts_them() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    import sensor

    class Down:
        class readings:  # noqa: N801 - mimics kdelta.Client.readings
            @staticmethod
            def ingest(*_a, **_k):
                raise kdelta.TransportError("down", sent=False)

    up = sensor.Uploader(Down(), capacity=5, batch=2, max_age=0.0, max_backoff=0.1)
    for i in range(8):
        up.add({"series": "s", "ts": i, "value": 1.0})
    assert [r["ts"] for r in up.buf] == [3, 4, 5, 6, 7]
    assert up.stats["dropped"] == 3
    assert up.flush_one() is False and len(up.buf) == 5 and up.stats["failures"] == 1
