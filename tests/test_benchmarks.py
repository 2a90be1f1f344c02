"""Runs every benchmark in bench/ in CI.  Each benchmark measures mailca and its anchors
(openssl, easy-rsa, testssl.sh, sslyze, python imports) in the same invocation, prints the
ratios, writes bench/results/<topic>.json, and exits 1 only on a real regression: a ratio worse
than its target by more than bench/_common.REGRESSION_MARGIN (a busy machine does not trip it;
report-only rows such as easy-rsa and mkcert are never judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHES = sorted((ROOT / "bench").glob("bench_*.py"))


@pytest.mark.bench
@pytest.mark.parametrize("script", BENCHES, ids=[b.stem for b in BENCHES])
def test_benchmark_meets_targets(script):
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    print(r.stdout[-6000:])
    print(r.stderr[-3000:], file=sys.stderr)
    assert r.returncode == 0, f"{script.name} regressed or failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    topic = script.stem.replace("bench_", "")
    result = ROOT / "bench" / "results" / f"{topic}.json"
    assert result.exists(), f"{script.name} wrote no {result}"
    rows = json.loads(result.read_text())["rows"]
    assert rows, f"{script.name} measured nothing"
    for row in rows:
        assert row["anchor_s"] > 0 and row["value_s"] > 0, row
        assert row["verdict"] in ("OK", "REPORT", "OVER TARGET", "INFEASIBLE", "REGRESSION"), row
        assert not row["regression"], row
