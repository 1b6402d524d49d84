# shellcheck shell=bash
# Shared by deploy/pi's test scripts (source it): how to run a kdelta binary of any of the
# package's architectures on this machine, and a free loopback port.
#
#   . deploy/pi/lib/run-bin.sh
#   emulator_for BIN     sets the array `run` to the command prefix (empty when native)
#   free_port            prints a free TCP port on 127.0.0.1
#   clear_agent_env      unsets what would configure an agent under test from outside
#                        (KDELTA_*, systemd's notify, watchdog and socket variables)
#
# qemu runs with `-L /` (the host root as the guest's library prefix): the arm64 libc that
# install-toolchain.sh brings with libstd-rust-web-dev:arm64 is multiarch-installed under / , and
# `-L /usr/aarch64-linux-gnu` (the cross libc) hangs in pthread_create once libc6:arm64 is present.

emulator_for() {
    local bin="$1" machine
    run=()
    [ "$(head -c 4 "$bin" | od -An -c | tr -d ' ')" = '177ELF' ] || return 0
    # e_machine: bytes 18-19 of the ELF header, little endian.
    machine=$(od -An -tx1 -j18 -N2 "$bin" | tr -d ' \n')
    case "$machine" in
        b700) [ "$(uname -m)" = aarch64 ] || run=(qemu-aarch64-static -L /) ;;
        2800) run=(qemu-arm-static -L /) ;;
        3e00) [ "$(uname -m)" = x86_64 ] || run=(qemu-x86_64-static -L /) ;;
        *) echo "unknown ELF machine $machine in $bin" >&2; return 1 ;;
    esac
    if [ "${#run[@]}" -gt 0 ] && ! command -v "${run[0]}" >/dev/null; then
        echo "${run[0]} missing; run deploy/pi/install-toolchain.sh" >&2
        return 1
    fi
}

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
        return
    fi
    local p
    for _ in $(seq 50); do
        p=$(( 20000 + RANDOM % 40000 ))
        (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
    return 1
}

clear_agent_env() {
    local var
    while read -r var; do unset "$var"; done < <(compgen -e | grep '^KDELTA_' || true)
    unset NOTIFY_SOCKET WATCHDOG_USEC WATCHDOG_PID LISTEN_FDS LISTEN_PID
}
