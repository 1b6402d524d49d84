#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 with trust authentication and a
# database `test`, for the hub change-log tests (pg/tests/pg_hub.rs): does nothing to a server
# that already answers (but creates `test` if missing), else installs the Debian package
# `postgresql` if missing and starts its cluster.
# Usage: scripts/ensure-postgres.sh
#   then: KDELTA_POSTGRES=postgres://postgres@127.0.0.1:5432/test cargo test --workspace --test pg_hub
set -euo pipefail

sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    echo "postgres: installing the Debian package"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql >/dev/null
fi

if ! ready; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    conf=/etc/postgresql/$version/main
    if [ -d "$conf" ]; then
        # Local test server only: trust on the loopback interface.
        if ! grep -q '^host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"; then
            $sudo_cmd sed -i '1i host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"
        fi
        $sudo_cmd pg_ctlcluster "$version" main start || true
    fi
    for _ in $(seq 1 100); do
        ready && break
        sleep 0.1
    done
fi
if ! ready; then
    echo "postgres: nothing answers on 127.0.0.1:5432" >&2
    exit 1
fi
if ! psql -h 127.0.0.1 -U postgres -d test -c 'SELECT 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null
fi
echo "postgres: ready on 127.0.0.1:5432, database test"
