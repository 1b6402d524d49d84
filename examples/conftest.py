"""Shared by the templates' tests (run by scripts/test-examples.sh): the real-agent harness
of the Python client's tests (clients/python/tests/agent.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python" / "tests"))
