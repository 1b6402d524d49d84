#!/usr/bin/env bash
# Makes sure a Mosquitto broker listens on 127.0.0.1:1883 for the MQTT interop tests
# (agent/tests/mqtt_interop.rs): does nothing when something already listens there, else
# installs the Debian package `mosquitto` if missing and starts it as a daemon.
# Usage: scripts/ensure-mosquitto.sh   (then: KDELTA_MOSQUITTO=127.0.0.1:1883 cargo test -p kdelta --test mqtt_interop)
set -euo pipefail

listening() { (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; }

if listening; then
    echo "mosquitto: something already listens on 127.0.0.1:1883"
    exit 0
fi
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "mosquitto: installing the Debian package"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq mosquitto >/dev/null
fi
bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
conf=/etc/mosquitto/mosquitto.conf
if [ -f "$conf" ] && grep -q '^listener' "$conf"; then
    "$bin" -d -c "$conf"
else
    # The packaged config has no listener (Mosquitto 2 then only listens on localhost:1883,
    # refusing anonymous clients): use a minimal one.
    tmp=$(mktemp /tmp/kdelta-mosquitto-XXXXXX.conf)
    printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' > "$tmp"
    "$bin" -d -c "$tmp"
fi
for _ in $(seq 1 50); do
    if listening; then
        echo "mosquitto: started on 127.0.0.1:1883"
        exit 0
    fi
    sleep 0.1
done
echo "mosquitto: did not start listening on 127.0.0.1:1883" >&2
exit 1
