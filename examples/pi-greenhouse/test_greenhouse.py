"""CI check of the greenhouse template: the agent starts with this folder's kdelta.toml (the
sysfs root pointed at the 1-Wire fixture tree, MQTT off since CI has no Home Assistant),
records both probes' temperature series, the setpoint written to the device twin is readable,
and the controller decides from both."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import kdelta
from agent import Agent

HERE = Path(__file__).parent
PROBES = {"w1.28-00000a1b2c3d": 23.125, "w1.28-00000d4e5f60": 18.75}


def template_config() -> str:
    text = (HERE / "kdelta.toml").read_text()
    fixture = (HERE / "fixture" / "sys").resolve()
    assert 'root = "/sys"' in text
    return text.replace('root = "/sys"', f'root = "{fixture}"').replace('interval = "30s"', 'interval = "1s"')


def wait_until(what, check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_template_records_probes_and_serves_the_setpoint() -> None:
    agent = Agent(config=template_config(), env={"KDELTA_MQTT__ENABLED": "false"})
    try:
        with kdelta.Client(agent.url) as c:
            def probes():
                got = {x.series: x for x in c.readings.latest() if x.series.startswith("w1.")}
                return got if set(got) == set(PROBES) else None

            latest = wait_until("both probes", probes)
            assert {s: x.value for s, x in latest.items()} == PROBES
            assert all(x.unit == "°C" for x in latest.values())
            # A series, not one value: a second round of samples arrives.
            wait_until("a second sample", lambda: len(c.readings.range("w1.28-00000a1b2c3d")) >= 2)

            # The agent made its twin; the setpoint goes into `desired` as the README shows.
            wait_until("the device twin", lambda: "device/greenhouse" in c.twins.list("device/"))
            c.twins.merge_patch("device/greenhouse", {"desired": {"greenhouse": {"setpoint_c": 21.0}}})
            twin = c.twins.get("device/greenhouse").value
            assert twin["desired"]["greenhouse"]["setpoint_c"] == 21.0
            assert twin["reported"]["sources"]["probes"]["kind"] == "sysfs"

        out = subprocess.run([sys.executable, str(HERE / "controller.py"), "--url", agent.url, "--once"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "heater ON: coldest 18.75 °C, setpoint 21.0 °C" in out.stdout
        with kdelta.Client(agent.url) as c:
            assert c.twins.get("device/greenhouse").value["reported"]["heater"]["on"] is True
    finally:
        agent.stop()


def test_the_config_is_valid_as_shipped() -> None:
    """`kdelta config check` accepts the template unchanged (MQTT on, real /sys)."""
    from agent import agent_env, binary

    out = subprocess.run([str(binary()), "config", "check", "--config", str(HERE / "kdelta.toml")],
                         capture_output=True, text=True, timeout=60, env=agent_env())
    assert out.returncode == 0, out.stderr + out.stdout
    assert "homeassistant.local" in out.stdout
