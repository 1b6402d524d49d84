#!/usr/bin/env bash
# Tests of the Python client (clients/python) and the dashboard in headless Chromium, against
# real agent processes of target/debug/kdelta (the binary `cargo test` built; built here if
# missing). Installs what it needs, idempotently: a venv in target/pyenv with
# clients/python/requirements-test.txt, and Debian's chromium. Anything missing fails loudly;
# pytest's exit 5 (no tests collected) fails too, like every non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=target/pyenv
req=clients/python/requirements-test.txt

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

if ! command -v chromium >/dev/null 2>&1; then
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq chromium
fi
command -v chromium >/dev/null || { echo "error: chromium is not installed" >&2; exit 1; }

python3 -c 'import venv, ensurepip' 2>/dev/null || {
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq python3-venv
}
stamp=$venv/.requirements
if [ ! -x $venv/bin/python ] || ! cmp -s "$req" "$stamp"; then
    python3 -m venv $venv
    $venv/bin/pip install -q --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
fi
py=$venv/bin/python

if [ -z "${KDELTA_TEST_BIN:-}" ]; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    [ -x target/debug/kdelta ] || cargo build -q -p kdelta --bin kdelta
    export KDELTA_TEST_BIN=$root/target/debug/kdelta
fi

echo "--- mypy --strict (clients/python)"
(cd clients/python && "$root/$py" -m mypy)

echo "--- sdist and wheel; pip install ./clients/python into a fresh venv"
dist=$(mktemp -d)
fresh=$(mktemp -d)
trap 'rm -rf "$dist" "$fresh"' EXIT
$py -m build -q --no-isolation --outdir "$dist" clients/python >/dev/null
ls "$dist"/kdelta-*.tar.gz "$dist"/kdelta-*-py3-none-any.whl
python3 -m venv "$fresh/venv"
"$fresh/venv/bin/pip" install -q --disable-pip-version-check ./clients/python
"$fresh/venv/bin/python" -c 'import kdelta, sys; c = kdelta.Client(); print("installed kdelta", kdelta.__version__, "from", kdelta.__file__); c.close()'

echo "--- pytest: client and dashboard (against the wheel just built)"
$venv/bin/pip install -q --disable-pip-version-check --no-deps --force-reinstall "$dist"/kdelta-*.whl
$py -m pytest -q -p no:cacheprovider clients/python/tests
