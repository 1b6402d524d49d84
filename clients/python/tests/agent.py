"""Runs a real ``kdelta`` agent process for tests: a temp data dir, ``127.0.0.1:0``, and the
URL read from its ``listening on http://…`` log line (deadline 20 s). The binary is
``$KDELTA_TEST_BIN`` or the workspace's ``target/debug/kdelta`` (the one ``cargo test`` built); a
missing binary is an error, never a skip."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[3]
LISTENING = re.compile(r"listening on (http://[0-9.:]+)")


def binary() -> Path:
    b = Path(os.environ.get("KDELTA_TEST_BIN") or ROOT / "target" / "debug" / "kdelta")
    if not b.is_file():
        raise RuntimeError(f"kdelta binary not found at {b}: run `cargo build -p kdelta` or set KDELTA_TEST_BIN")
    return b


def agent_env() -> Dict[str, str]:
    """The environment for an agent: ours without ``KDELTA_*`` (agent configuration, which
    the test sets itself) and without ``NOTIFY_SOCKET``."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET" and not k.startswith("KDELTA_")}
    env.update(RUST_LOG="info", NO_COLOR="1")
    return env


class Agent:
    """One agent process; ``stop()`` sends SIGTERM and waits. ``kill()`` sends SIGKILL and
    ``start()`` runs it again on the same data directory and address (give ``listen`` a fixed
    port for a restart to keep its URL)."""

    def __init__(self, config: str = "sources = []\n", args: Optional[List[str]] = None,
                 cwd: Optional[Path] = None, listen: str = "127.0.0.1:0",
                 env: Optional[Dict[str, str]] = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="kdelta-py-")
        self.dir = Path(self._tmp.name)
        self.config = self.dir / "kdelta-test.toml"
        self.config.write_text(config)
        self.listen = listen
        self.args = args or []
        self.cwd = cwd or self.dir
        self.extra_env = env or {}
        self.log: List[str] = []
        self.url = ""
        self.start()

    def start(self) -> None:
        env = agent_env()
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            [str(binary()), "start", "--config", str(self.config), "--data-dir", str(self.dir / "data"),
             "--listen", self.listen, *self.args],
            cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        found = threading.Event()
        proc = self.proc

        def drain() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.log.append(line)
                m = LISTENING.search(line)
                if m and not found.is_set():
                    self.url = m.group(1)
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + 20
        while not found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("kdelta did not start:\n" + "".join(self.log))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._tmp.cleanup()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for an agent that restarts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
