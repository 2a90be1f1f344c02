#!/usr/bin/env python3
"""Benchmark: ``mailca check`` vs testssl.sh and sslyze on the same weak Postfix.

Targets (issue #5), on the deliberately weak Postfix of tests/interop/test_check_live.py
(started here through tests/postfix_harness.py, port 25 role, STARTTLS):

* ``mailca check 127.0.0.1 --port P``  <= 1/20 of ``testssl --starttls smtp`` (a full default run);
* ``mailca check 127.0.0.1 --port P``  <= 1/2  of ``sslyze --starttls smtp`` (default scan);

and (issue #13) the same two targets for a 3-port audit (25, 587 STARTTLS; 465 implicit TLS) of
the hardened Postfix that ``mailca postfix --profile strict`` configures: one ``mailca check``
process with three ``--port``s against sslyze (two processes side by side: 25 + 587 with
``--starttls smtp``, 465 without) and against three testssl.sh processes side by side -- each
tool audits the three ports concurrently, and the wall time of the whole audit is compared;

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

from _common import compile_bytecode, init_store, mailca_cmd, report  # noqa: E402


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

    hardened = hardened_rows(testssl, sslyze, env, args.runs)

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
    rows += hardened
    rc = report("check", rows)
    if missed or other:
        print(f"MISSED: mailca did not report testssl.sh MEDIUM+ findings {missed}; unmapped ids {other}")
        rc = 1
    return rc


def parallel(cmds: list[list[str]], env, ok, timeout=600) -> tuple[float, list[subprocess.CompletedProcess]]:
    """Wall time of ``cmds`` started together (each tool audits several ports at once)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for c in cmds]
    done = []
    for c, p in zip(cmds, procs):
        out, err = p.communicate(timeout=timeout)
        if p.returncode not in ok:
            raise SystemExit(f"benchmark command failed ({p.returncode}): {' '.join(c)}\n{out[-1500:]}\n{err[-1500:]}")
        done.append(subprocess.CompletedProcess(c, p.returncode, out, err))
    return time.perf_counter() - t0, done


def hardened_rows(testssl: str, sslyze: list[str], env: dict, runs: int) -> list[dict]:
    """The 3-port audit of the Postfix that `mailca postfix --profile strict` configures."""
    from postfix_harness import PostfixServer

    work = Path(tempfile.mkdtemp(prefix="mailca-bench-hard-"))
    try:
        m, menv = init_store(work / "store", ["mail.example.org", "--san", "smtp.example.org"])
        out = work / "out"
        subprocess.run([*m, "--dir", str(work / "store"), "postfix", "mail.example.org", "--profile", "strict",
                        "--write", str(out)], env=menv, check=True, capture_output=True, timeout=60)
        root = work / "store" / "ca" / "root.crt"
        with PostfixServer(work / "pf", main_cf=(out / "main.cf.mailca").read_text(),
                           master_cf="smtp inet n - n - - smtpd\n" + (out / "master.cf.mailca").read_text(),
                           sasl=True, users={"alice": "pw"}) as srv:
            p = srv.ports
            t25, t587, t465 = (f"127.0.0.1:{p[k]}" for k in ("smtp", "submission", "submissions"))
            mailca = [*m, "--dir", str(work / "store"), "check", "127.0.0.1", "--port", f"{p['smtp']}:smtp",
                      "--port", f"{p['submission']}:submission", "--port", f"{p['submissions']}:submissions",
                      "--name", "mail.example.org", "--ca", str(root), "--json"]
            sly = [[*sslyze, "--starttls", "smtp", t25, t587], [*sslyze, t465]]
            timed(mailca, env=env)
            parallel(sly, env, ok=(0, 1))
            ms, ss = [], []
            for _ in range(runs):
                ms.append(timed(mailca, env=env)[0])
                ss.append(parallel(sly, env, ok=(0, 1))[0])
            base = [testssl, "--quiet", "--warnings", "off", "--color", "0", "--nodns", "none", "--ip", "127.0.0.1",
                    "--connect-timeout", "5", "--openssl-timeout", "5"]
            t_testssl, _ = parallel([[*base, "--starttls", "smtp", t25], [*base, "--starttls", "smtp", t587],
                                     [*base, t465]], env, ok=tuple(range(0, 256)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    m_s, s_s = statistics.median(ms), statistics.median(ss)
    print(f"hardened Postfix, 3 ports; mailca runs {[round(x, 3) for x in ms]}, sslyze runs {[round(x, 3) for x in ss]}, "
          f"testssl.sh x3 {t_testssl:.1f} s")
    return [
        {"name": "check hardened Postfix, 3 ports, vs testssl.sh x3", "value_s": m_s, "anchor_s": t_testssl,
         "anchor": "3 testssl.sh full default runs side by side (1 run)", "ratio": m_s / t_testssl, "target": 0.05},
        {"name": "check hardened Postfix, 3 ports, vs sslyze", "value_s": m_s, "anchor_s": s_s,
         "anchor": f"sslyze 25+587 and 465 side by side (median of {runs})", "ratio": m_s / s_s, "target": 0.5},
    ]


if __name__ == "__main__":
    sys.exit(main())
