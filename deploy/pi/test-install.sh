#!/usr/bin/env bash
# Install a kdelta .deb for real, in a throwaway copy of this machine, and check what the
# package promises an admin (docs/security.md, "The local admin token"; docs/raspberry-pi.md):
#
#   deploy/pi/test-install.sh target/deb/kdelta_0.1.0_arm64.deb
#
# Needs root. The script re-runs itself in a private mount namespace where /etc, /usr and /var
# are overlays on a tmpfs and /run is empty (no systemd to talk to, as in an image build), so
# `dpkg -i`, the maintainer scripts, the system user and everything they write vanish when it
# exits: the machine itself is not changed. An arm64 package runs under qemu (install-toolchain.sh
# installs it and libc6:arm64, which the package depends on).
#
# Checks, in the order an admin meets them:
#   1. `dpkg -i` configures the package: user and group kdelta, /var/lib/kdelta (kdelta, 0750),
#      the config root:kdelta 0640, the unit enabled, /etc/kdelta/token (64 hex digits,
#      root:kdelta 0640) and /etc/default/kdelta naming it.
#   2. The agent, started as the unit starts it (user kdelta, EnvironmentFile, WorkingDirectory),
#      answers /readyz, and its API wants the token: no token → 401.
#   3. `sudo -u kdelta kdelta status` works with no flag, and so does a user added to group
#      kdelta; a user outside the group gets a 401 whose message names /etc/kdelta/token.
#   4. Reinstalling (an upgrade) keeps the token and an admin's edit of /etc/default/kdelta.
#   5. `dpkg --purge` removes the token, /etc/default/kdelta, the store and the user.
set -euo pipefail

deb="${1:?usage: test-install.sh DEB}"
[ -f "$deb" ] || { echo "test-install: $deb not found" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "test-install: needs root (dpkg -i in a private mount namespace)" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
deb=$(readlink -f "$deb")

if [ -z "${KDELTA_TEST_INSTALL_NS:-}" ]; then
    command -v unshare >/dev/null || { echo "test-install: unshare (util-linux) is required" >&2; exit 1; }
    exec unshare --mount --propagation private env KDELTA_TEST_INSTALL_NS=1 bash "$0" "$deb"
fi

# --- inside the namespace ---------------------------------------------------------------------

READY_TIMEOUT=${READY_TIMEOUT:-90}
. "$here/lib/run-bin.sh"
clear_agent_env

ns=$(mktemp -d)
agent_pid=""
cleanup() {
    if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
        kill -KILL "$agent_pid" 2>/dev/null || true
        wait "$agent_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

fail() {
    echo "test-install: FAIL: $*" >&2
    if [ -s "$ns/agent.log" ]; then
        echo "test-install: --- agent log (last 40 lines) ---" >&2
        tail -n 40 "$ns/agent.log" >&2
    fi
    exit 1
}
ok() { echo "test-install: ok: $*"; }

# Overlays: everything written under /etc, /usr and /var lands on this tmpfs (an overlay's upper
# directory cannot itself be on an overlay, which the root file system may be).
mount -t tmpfs -o size=1g tmpfs "$ns"
for d in etc usr var; do
    mkdir -p "$ns/upper/$d" "$ns/work/$d"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$ns/upper/$d,workdir=$ns/work/$d" "/$d" \
        || fail "cannot mount an overlay on /$d"
done
mount -t tmpfs -o size=16m tmpfs /run
mkdir -p /run/lock

# 1. install
dpkg -i "$deb" >"$ns/dpkg-install.log" 2>&1 || { cat "$ns/dpkg-install.log" >&2; fail "dpkg -i failed"; }
ok "dpkg -i $(basename "$deb")"

getent passwd kdelta >/dev/null || fail "no user kdelta"
getent group kdelta >/dev/null || fail "no group kdelta"
want_stat() {  # PATH "OWNER:GROUP MODE"
    local got
    got=$(stat -c '%U:%G %a' "$1" 2>/dev/null) || fail "$1 is missing"
    [ "$got" = "$2" ] || fail "$1 is $got, want $2"
}
want_stat /var/lib/kdelta "kdelta:kdelta 750"
want_stat /etc/kdelta/kdelta.toml "root:kdelta 640"
want_stat /etc/kdelta/token "root:kdelta 640"
grep -Eqx '[0-9a-f]{64}' /etc/kdelta/token || fail "/etc/kdelta/token is not one line of 64 hex digits"
grep -qx 'KDELTA_API__ADMIN_TOKEN_FILE=/etc/kdelta/token' /etc/default/kdelta \
    || fail "/etc/default/kdelta does not set KDELTA_API__ADMIN_TOKEN_FILE=/etc/kdelta/token"
[ -L /etc/systemd/system/multi-user.target.wants/kdelta.service ] \
    || fail "kdelta.service is not enabled (no multi-user.target.wants link)"
ok "user, store directory, config, token and /etc/default/kdelta as documented; unit enabled"
token_before=$(sha256sum /etc/kdelta/token)

bin=/usr/bin/kdelta
emulator_for "$bin" || fail "cannot run $bin here"
# `kdelta` as a user runs it: the CLI reads /etc/kdelta/token itself when no token is given.
as() { local user="$1"; shift; runuser -u "$user" -- "${run[@]}" "$bin" "$@"; }

# 2. the agent as the unit starts it
port=$(free_port) || fail "no free port"
base="http://127.0.0.1:$port"
(
    cd /var/lib/kdelta
    set -a; . /etc/default/kdelta; set +a
    export STATE_DIRECTORY=/var/lib/kdelta CONFIGURATION_DIRECTORY=/etc/kdelta
    export KDELTA_API__LISTEN="127.0.0.1:$port"
    umask 0027
    # setpriv execs the agent itself (runuser would stay as its parent and turn SIGTERM into
    # its own exit 143), as systemd's User=/Group=/SupplementaryGroups= do.
    exec setpriv --reuid=kdelta --regid=kdelta --init-groups \
        "${run[@]}" "$bin" start --config /etc/kdelta/kdelta.toml
) >"$ns/agent.log" 2>&1 &
agent_pid=$!
deadline=$(( $(date +%s) + READY_TIMEOUT ))
while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base/readyz" || true)
    [ "$code" = 200 ] && break
    kill -0 "$agent_pid" 2>/dev/null || fail "agent exited before /readyz answered 200"
    [ "$(date +%s)" -lt "$deadline" ] || fail "/readyz not 200 within ${READY_TIMEOUT}s (last: ${code:-none})"
    sleep 0.5
done
ok "agent (user kdelta, /etc/default/kdelta) ready on $base"

code=$(curl -s -o "$ns/anon.out" -w '%{http_code}' --max-time 10 "$base/v1/status" || true)
[ "$code" = 401 ] || fail "GET /v1/status without a token answered ${code:-nothing}, want 401: $(head -c 300 "$ns/anon.out")"
ok "GET /v1/status without a token -> 401"

# 3. the CLI with the packaged token, as kdelta, as a member of the group, and as an outsider
as kdelta status --url "$base" >"$ns/status-kdelta.out" 2>&1 \
    || fail "'sudo -u kdelta kdelta status' failed: $(cat "$ns/status-kdelta.out")"
ok "sudo -u kdelta kdelta status"
useradd --system --no-create-home --shell /usr/sbin/nologin -G kdelta kdelta-admin
as kdelta-admin status --url "$base" >"$ns/status-member.out" 2>&1 \
    || fail "a member of group kdelta: 'kdelta status' failed: $(cat "$ns/status-member.out")"
ok "a member of group kdelta: kdelta status"
if as nobody status --url "$base" >"$ns/status-nobody.out" 2>&1; then
    fail "user nobody (not in group kdelta) ran 'kdelta status' successfully"
fi
grep -q '401' "$ns/status-nobody.out" && grep -q '/etc/kdelta/token' "$ns/status-nobody.out" \
    || fail "user nobody: the error should be a 401 naming /etc/kdelta/token: $(cat "$ns/status-nobody.out")"
ok "user nobody: refused (401), the message names /etc/kdelta/token"

kill -TERM "$agent_pid"
wait "$agent_pid" && rc=0 || rc=$?
agent_pid=""
[ "$rc" -eq 0 ] || fail "agent exit code $rc after SIGTERM (want 0)"

# 4. upgrade: the token and the admin's environment stay
echo 'KDELTA_LOG=debug  # edited by the admin' >>/etc/default/kdelta
dpkg -i "$deb" >"$ns/dpkg-upgrade.log" 2>&1 || { cat "$ns/dpkg-upgrade.log" >&2; fail "reinstall failed"; }
[ "$(sha256sum /etc/kdelta/token)" = "$token_before" ] || fail "reinstalling changed /etc/kdelta/token"
grep -q 'edited by the admin' /etc/default/kdelta || fail "reinstalling overwrote /etc/default/kdelta"
want_stat /etc/kdelta/token "root:kdelta 640"
ok "reinstall keeps the token and the admin's /etc/default/kdelta"

# 5. purge
userdel kdelta-admin
dpkg --purge kdelta >"$ns/dpkg-purge.log" 2>&1 || { cat "$ns/dpkg-purge.log" >&2; fail "dpkg --purge failed"; }
for gone in /etc/kdelta/token /etc/default/kdelta /var/lib/kdelta /usr/bin/kdelta; do
    [ ! -e "$gone" ] || fail "$gone is still there after purge"
done
! getent passwd kdelta >/dev/null || fail "user kdelta is still there after purge"
ok "purge removes the token, /etc/default/kdelta, the store and the user"

echo "test-install: OK"
