"""Fixtures: one real agent for the session (``agent``), a fresh key prefix per test."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agent import Agent  # noqa: E402

import kdelta  # noqa: E402


@pytest.fixture(scope="session")
def agent() -> Iterator[Agent]:
    a = Agent()
    yield a
    a.stop()


@pytest.fixture()
def client(agent: Agent) -> Iterator[kdelta.Client]:
    with kdelta.Client(agent.url) as c:
        yield c


@pytest.fixture()
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}/"


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"
