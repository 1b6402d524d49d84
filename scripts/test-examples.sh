#!/usr/bin/env bash
# CI of the starter templates in examples/ (issue 18): each template's own pytest checks, run
# against real agent processes of target/debug/kdelta, in the venv scripts/test-python.sh made
# (target/pyenv, with the Python client installed). Run after scripts/test-python.sh; any
# non-zero exit, including pytest's 5 (no tests collected), fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=target/pyenv/bin/python
[ -x $py ] || { echo "error: $py missing: run scripts/test-python.sh first" >&2; exit 1; }
$py -c 'import kdelta, fastapi' || { echo "error: the venv lacks kdelta or fastapi: run scripts/test-python.sh" >&2; exit 1; }
if [ -z "${KDELTA_TEST_BIN:-}" ]; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    [ -x target/debug/kdelta ] || cargo build -q -p kdelta --bin kdelta
    export KDELTA_TEST_BIN=$root/target/debug/kdelta
fi
for t in pi-greenhouse fastapi-audit-log sensor-script; do
    [ -f "examples/$t/README.md" ] || { echo "error: examples/$t has no README.md" >&2; exit 1; }
done
# --import-mode=importlib: each template's test files import their own app/script by path.
$py -m pytest -q -p no:cacheprovider --import-mode=importlib examples
