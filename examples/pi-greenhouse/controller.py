#!/usr/bin/env python3
"""The greenhouse's heating decision, next to kdelta on the Pi: reads the coldest probe and
the setpoint from the device twin, and reports whether the heater should run.

    python3 controller.py --url http://127.0.0.1:7878 --device greenhouse [--once]

Switching a real relay is one line where ``heater_on`` is decided (e.g. gpiozero's
``OutputDevice(17).value = heater_on``). The decision goes back into the twin under
``reported.heater`` so it is in the history, synced to the hub and visible in the dashboard's
explorer (twins → device/greenhouse).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

import kdelta

HYSTERESIS_C = 0.5


def decide(coldest: float, setpoint: float, was_on: bool) -> bool:
    """On below setpoint − hysteresis, off above setpoint, otherwise unchanged."""
    if coldest < setpoint - HYSTERESIS_C:
        return True
    if coldest > setpoint:
        return False
    return was_on


def step(c: kdelta.Client, twin_key: str) -> Optional[dict]:
    twin = c.twins.get(twin_key).value
    setpoint = (twin.get("desired") or {}).get("greenhouse", {}).get("setpoint_c")
    probes = [x for x in c.readings.latest() if x.series.startswith("w1.")]
    if setpoint is None or not probes:
        print(f"waiting: setpoint={setpoint!r}, probes={len(probes)}", file=sys.stderr)
        return None
    coldest = min(p.value for p in probes)
    was_on = bool(((twin.get("reported") or {}).get("heater") or {}).get("on"))
    on = decide(coldest, float(setpoint), was_on)
    state = {"on": on, "coldest_c": coldest, "setpoint_c": setpoint}
    if on != was_on or not (twin.get("reported") or {}).get("heater"):
        c.twins.merge_patch(twin_key, {"reported": {"heater": state}})
    return state


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:7878")
    p.add_argument("--token", default=None)
    p.add_argument("--device", default="greenhouse")
    p.add_argument("--every", type=float, default=30.0)
    p.add_argument("--once", action="store_true")
    args = p.parse_args()
    with kdelta.Client(args.url, token=args.token) as c:
        while True:
            state = step(c, f"device/{args.device}")
            if state is not None:
                print(f"heater {'ON' if state['on'] else 'off'}: coldest {state['coldest_c']} °C, "
                      f"setpoint {state['setpoint_c']} °C", flush=True)
            if args.once:
                return 0 if state is not None else 1
            time.sleep(args.every)


if __name__ == "__main__":
    sys.exit(main())
