"""CI check of the audit-log service: FastAPI's TestClient against a real kdelta agent."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from agent import Agent

sys.path.insert(0, str(Path(__file__).parent))
from app import make_app  # noqa: E402


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    agent = Agent()
    with TestClient(make_app(agent.url)) as c:
        yield c
    agent.stop()


def test_history_and_as_of(api: TestClient) -> None:
    r1 = api.put("/records/invoice-17", json={"actor": "alice", "state": {"amount": 120, "status": "draft"}})
    assert r1.status_code == 200, r1.text
    first = r1.json()
    deadline = time.monotonic() + 5
    while time.time() * 1000 <= int(first["hlc"].split(":")[0]) + 2:  # the next write a later ms
        assert time.monotonic() < deadline
        time.sleep(0.001)
    r2 = api.put("/records/invoice-17", json={"actor": "bob", "state": {"amount": 120, "status": "paid"},
                                             "reason": "bank transfer 2026-12-05"})
    assert r2.status_code == 200, r2.text

    now = api.get("/records/invoice-17").json()
    assert (now["state"]["status"], now["actor"]) == ("paid", "bob")
    h = api.get("/records/invoice-17/history").json()
    assert [(e["actor"], e["state"]["status"]) for e in h] == [("bob", "paid"), ("alice", "draft")]
    assert h[0]["reason"] == "bank transfer 2026-12-05"
    # As of the first version: by its HLC and by its time.
    by_hlc = api.get("/records/invoice-17", params={"at": first["hlc"]}).json()
    assert by_hlc["state"]["status"] == "draft"
    by_time = api.get("/records/invoice-17", params={"at": first["at"]}).json()
    assert by_time["state"]["status"] == "draft" and by_time["actor"] == "alice"
    assert api.get("/records/invoice-17", params={"at": "2000-01-01T00:00:00Z"}).status_code == 404
    assert "invoice-17" in api.get("/records").json()


def test_bad_input_is_refused(api: TestClient) -> None:
    assert api.put("/records/x", json={"state": {}}).status_code == 422  # no actor
    assert api.get("/records/nothing-here").status_code == 404
    assert api.get("/records/nothing-here/history").status_code == 404
    assert api.get("/records/x", params={"at": "yesterday-ish"}).status_code == 422
