#!/usr/bin/env bash
# Run every benchmark under bench/ (each prints ratios against anchors measured in the same
# run and exits 1 if a target ratio is missed).  Uses the virtualenvs scripts/test.sh made
# (.venv, and .venv-sslyze for the sslyze anchor).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MAILCA_VENV:-.venv}"
[[ -x "$VENV/bin/python" ]] || { echo "run scripts/test.sh first (creates $VENV)" >&2; exit 1; }
export SSLYZE="${SSLYZE:-$PWD/.venv-sslyze/bin/sslyze}"
rc=0
for b in bench/bench_*.py; do
  "$VENV/bin/python" "$b" "$@" || rc=1
done
exit $rc
