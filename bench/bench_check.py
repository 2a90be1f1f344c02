#!/usr/bin/env python3
"""Benchmark: ``mailca check`` vs testssl.sh and sslyze on the same weak Postfix.

Targets (issue #5), on the deliberately weak Postfix of tests/interop/test_check_live.py
(started here through tests/postfix_harness.py, port 25 role, STARTTLS):

* ``mailca check 127.0.0.1 --port P``  <= 1/20 of ``testssl --starttls smtp`` (a full default run);
* ``mailca check 127.0.0.1 --port P``  <= 1/2  of ``sslyze --starttls smtp`` (default scan);

all measured in this run, as whole processes.  mailca and sslyze: medians of interleaved
runs after a warm-up; testssl.sh (about a minute per run): one run.  The testssl.sh run
writes JSON, and the benchmark also checks that mailca reported every protocol, cipher
class and chain finding testssl.sh rated MEDIUM or worse (same mapping as the
differential test), so the speed is not bought by checking less.

sslyze comes from its own virtualenv (scripts/test.sh makes .venv-sslyze); set ``SSLYZE`` to a
command (e.g. ``/opt/sslyze-venv/bin/sslyze``) to use one installed elsewhere -- sslyze
pins cryptography < 47, which may not fit the development venv.
Prints a table, writes bench/results/check.json, exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "interop"))

from _common import compile_bytecode, mailca_cmd, report  # noqa: E402


def sslyze_cmd() -> list[str] | None:
    if os.environ.get("SSLYZE"):
        return [os.environ["SSLYZE"]]
    beside = Path(sys.executable).with_name("sslyze")
    if beside.exists():
        return [str(beside)]
    try:
        import importlib.util

        if importlib.util.find_spec("sslyze") is not None:
            return [sys.executable, "-m", "sslyze"]
    except (ImportError, ValueError):
        pass
    found = shutil.which("sslyze")
    return [found] if found else None


def timed(cmd: list[str], ok=(0,), env=None, timeout=600) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    dt = time.perf_counter() - t0
    if r.returncode not in ok:
        raise SystemExit(f"benchmark command failed ({r.returncode}): {' '.join(cmd)}\n"
                         f"{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    return dt, r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="interleaved runs of mailca and sslyze (default 5)")
    args = ap.parse_args()

    from test_check_live import NOT_COMPARED, TESTSSL_MAP, weak_postfix

    testssl = shutil.which("testssl") or shutil.which("testssl.sh")
    sslyze = sslyze_cmd()
    if testssl is None:
        raise SystemExit("testssl (Debian package testssl.sh) is not installed")
    if sslyze is None:
        raise SystemExit("sslyze is not installed: run scripts/test.sh (it makes .venv-sslyze) or set SSLYZE=/path/to/sslyze")
    compile_bytecode()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")

    work = Path(tempfile.mkdtemp(prefix="mailca-bench-check-"))
    try:
        with weak_postfix(work) as srv:
            port = srv.ports["smtp"]
            target = f"127.0.0.1:{port}"
            mailca = [*mailca_cmd(), "check", "127.0.0.1", "--port", str(port), "--name", "mail.example.org", "--json"]
            sly = [*sslyze, "--starttls", "smtp", target]
            # Warm-up (page cache, Postfix processes), then interleave.
            timed(mailca, ok=(5,), env=env)
            _, r = timed(sly, ok=(0, 1), env=env)  # 1: "not Mozilla-compliant", as expected here
            if "SCANS COMPLETED" not in r.stdout:
                raise SystemExit(f"sslyze did not complete a scan:\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
            ms, ss = [], []
            last = None
            for _ in range(args.runs):
                dt, last = timed(mailca, ok=(5,), env=env)
                ms.append(dt)
                dt, _ = timed(sly, ok=(0, 1), env=env)
                ss.append(dt)
            ours = json.loads(last.stdout)
            tjson = work / "testssl.json"
            t_testssl, _ = timed([testssl, "--quiet", "--warnings", "off", "--color", "0", "--nodns", "none",
                                  "--ip", "127.0.0.1", "--connect-timeout", "5", "--openssl-timeout", "5",
                                  "--starttls", "smtp", "--jsonfile", str(tjson), target],
                                 ok=tuple(range(0, 256)), env=env, timeout=600)
            theirs = {f["id"]: f for f in json.loads(tjson.read_text())
                      if f.get("severity") in ("MEDIUM", "HIGH", "CRITICAL")}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    m = statistics.median(ms)
    s = statistics.median(ss)
    our_ids = {f["id"] for f in ours["findings"] if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL")}
    compared = {t for t in theirs if t in TESTSSL_MAP}
    missed = sorted(t for t in compared if not any(c in our_ids for c in TESTSSL_MAP[t]))
    other = sorted(set(theirs) - set(TESTSSL_MAP) - NOT_COMPARED)
    print(f"weak Postfix on {target}; mailca runs {[round(x, 3) for x in ms]}, sslyze runs {[round(x, 3) for x in ss]}")
    print(f"testssl.sh MEDIUM+ ids: {sorted(theirs)}")
    print(f"compared {len(compared)}, missed by mailca: {missed or 'none'}; not compared: "
          f"{sorted(set(theirs) - compared)}")
    print(f"mailca MEDIUM+ ids: {sorted(our_ids)}")
    rows = [
        {"name": "check weak Postfix vs testssl --starttls smtp", "value_s": m, "anchor_s": t_testssl,
         "anchor": "testssl.sh full default run (1 run)", "ratio": m / t_testssl, "target": 0.05},
        {"name": "check weak Postfix vs sslyze --starttls smtp", "value_s": m, "anchor_s": s,
         "anchor": f"sslyze default scan (median of {args.runs})", "ratio": m / s, "target": 0.5},
    ]
    rc = report("check", rows)
    if missed or other:
        print(f"MISSED: mailca did not report testssl.sh MEDIUM+ findings {missed}; unmapped ids {other}")
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
