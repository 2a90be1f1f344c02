#!/usr/bin/env bash
# Run every benchmark under bench/ (each prints ratios against anchors measured in the same
# run and exits 1 if a target ratio is missed).  Uses the test virtualenv; installs the
# 'bench' extra (sslyze) into it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MAILCA_VENV:-.venv}"
[[ -x "$VENV/bin/python" ]] || { echo "run scripts/test.sh first (creates $VENV)" >&2; exit 1; }
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,bench]'
rc=0
for b in bench/bench_*.py; do
  "$VENV/bin/python" "$b" "$@" || rc=1
done
exit $rc
