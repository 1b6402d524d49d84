#!/usr/bin/env bash
# Smoke-test a kdelta binary end to end; an aarch64/armhf binary runs under qemu user emulation.
#
#   deploy/pi/smoke-qemu.sh BIN
#
# Checks: `kdelta --version`; `kdelta start` in a temp data dir on a free loopback port becomes
# ready (GET /readyz 200); POST /v1/readings stores a reading that GET /v1/readings?series= returns;
# SIGTERM ends the agent with exit code 0 within 15 s. Any failure exits non-zero and prints the
# agent's log.
#
# How an aarch64/armhf binary is run (qemu with `-L /`): deploy/pi/lib/run-bin.sh.
set -euo pipefail

READY_TIMEOUT=${READY_TIMEOUT:-90}   # seconds; first start under emulation creates the store
STOP_TIMEOUT=15                       # seconds; the contract for SIGTERM

bin="${1:?usage: smoke-qemu.sh BIN}"
[ -x "$bin" ] || { echo "smoke: $bin is not executable" >&2; exit 1; }
bin=$(readlink -f "$bin")
command -v curl >/dev/null || { echo "smoke: curl is required" >&2; exit 1; }

. "$(dirname "$0")/lib/run-bin.sh"
emulator_for "$bin" || { echo "smoke: cannot run $bin here" >&2; exit 1; }

# Nothing from the caller's environment or working directory may configure the agent under test.
clear_agent_env

tmp=$(mktemp -d)
agent_pid=""
cleanup() {
    if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
        kill -KILL "$agent_pid" 2>/dev/null || true
        wait "$agent_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
    echo "smoke: FAIL: $*" >&2
    if [ -s "$tmp/agent.log" ]; then
        echo "smoke: --- agent log (last 60 lines) ---" >&2
        tail -n 60 "$tmp/agent.log" >&2
    fi
    exit 1
}

echo "smoke: binary $bin${run:+ (under ${run[*]})}"
start=$(date +%s)

# 1. --version
version=$(cd "$tmp" && "${run[@]}" "$bin" --version 2>&1) || fail "--version exited non-zero: $version"
echo "smoke: --version: $version"
case "$version" in *kdelta*) ;; *) fail "--version does not name kdelta: $version" ;; esac

# 2. start, wait for readiness
port=$(free_port) || fail "no free port"
base="http://127.0.0.1:$port"
mkdir "$tmp/data"
(cd "$tmp" && exec "${run[@]}" "$bin" start --data-dir "$tmp/data" --listen "127.0.0.1:$port") \
    >"$tmp/agent.log" 2>&1 &
agent_pid=$!

deadline=$(( $(date +%s) + READY_TIMEOUT ))
while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base/readyz" || true)
    [ "$code" = 200 ] && break
    kill -0 "$agent_pid" 2>/dev/null || { wait "$agent_pid" && rc=0 || rc=$?; agent_pid=""; fail "agent exited ($rc) before /readyz answered 200"; }
    [ "$(date +%s)" -lt "$deadline" ] || fail "/readyz not 200 within ${READY_TIMEOUT}s (last: ${code:-none})"
    sleep 0.5
done
echo "smoke: ready on $base after $(( $(date +%s) - start ))s"

# 3. ingest one reading, read it back
body='[{"series":"smoke.temp","value":21.5}]'
code=$(curl -s -o "$tmp/post.out" -w '%{http_code}' --max-time 10 \
    -H 'Content-Type: application/json' --data-binary "$body" "$base/v1/readings" || true)
case "$code" in 2??) ;; *) fail "POST /v1/readings answered ${code:-nothing}: $(head -c 500 "$tmp/post.out" 2>/dev/null)" ;; esac
echo "smoke: POST /v1/readings -> $code"

code=$(curl -s -o "$tmp/get.out" -w '%{http_code}' --max-time 10 "$base/v1/readings?series=smoke.temp" || true)
[ "$code" = 200 ] || fail "GET /v1/readings?series=smoke.temp answered ${code:-nothing}: $(head -c 500 "$tmp/get.out" 2>/dev/null)"
grep -Eq '(^|[^0-9.])21\.5([^0-9]|$)' "$tmp/get.out" \
    || fail "GET /v1/readings?series=smoke.temp does not contain 21.5: $(head -c 500 "$tmp/get.out")"
echo "smoke: GET /v1/readings?series=smoke.temp -> 200 with 21.5"

# 4. SIGTERM: clean exit 0 within STOP_TIMEOUT (qemu forwards the signal to the guest)
kill -TERM "$agent_pid"
deadline=$(( $(date +%s) + STOP_TIMEOUT ))
while kill -0 "$agent_pid" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "still running ${STOP_TIMEOUT}s after SIGTERM"
    sleep 0.2
done
wait "$agent_pid" && rc=0 || rc=$?
agent_pid=""
[ "$rc" -eq 0 ] || fail "exit code $rc after SIGTERM (want 0)"
echo "smoke: SIGTERM -> exit 0"

echo "smoke: OK in $(( $(date +%s) - start ))s"
