#!/usr/bin/env python3
"""Lifecycle benchmarks (issue #6), anchors measured in the same run.

1. Bulk issuance: `mailca issue --batch` of 1,000 ECDSA P-256 certificates with durable writes
   (every file fsynced, every version directory renamed atomically), timed as one process
   including start-up, versus easy-rsa `build-server-full NAME nopass` (EASYRSA_BATCH=1) in a
   temporary PKI: mean of 5 builds.  Target: mailca per certificate >= 30x faster than
   easy-rsa as shipped (its default key type, RSA-2048).  Also measured and printed, without a
   target: easy-rsa configured for ECDSA P-256 (EASYRSA_ALGO=ec), the like-for-like key type.
2. Inventory: `mailca status` and `mailca renew --dry-run` over a store of 10,000 certificates
   versus one `mailca issue` process (median of 5 each).  Target: each <= 10x one issue.
   Both commands read index.json only (tests/test_status_doctor.py proves status works with every
   cert.pem unreadable), so the 10,000-entry index is built directly: 10,000 entries modelled on
   a real issued certificate (own random serial and name, notBefore spread over the past 400 days
   so that valid / due / expired states mix, 1% revoked) - building 10,000 real certificates would
   only add a minute of set-up.

Usage: bench/bench_lifecycle.py [--n 1000] [--status-n 10000] [--easyrsa-n 5]
Writes bench/results/lifecycle.json (rows as in bench/_common.py: ratio = mailca / anchor, the
bulk target is 1/30); exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _common import compile_bytecode, interleaved, mailca_cmd, report  # noqa: E402

EASYRSA = "/usr/share/easy-rsa/easyrsa"
BULK_TARGET = 30.0
STATUS_TARGET = 10.0


def env(**extra):
    e = dict(os.environ)
    e.pop("MAILCA_DIR", None)
    e.pop("MAILCA_NOW", None)
    e.update(extra)
    return e


def mailca(*args, input=None, check=True):
    p = subprocess.run([sys.executable, "-m", "mailca", *map(str, args)], env=env(), capture_output=True, text=True,
                       input=input, timeout=600)
    if check and p.returncode != 0:
        sys.exit(f"mailca {' '.join(map(str, args))} failed: {p.stderr}")
    return p


def timed(fn, n=1):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def easyrsa_per_cert(work: Path, n: int, *, ec: bool) -> list[float]:
    if not os.path.exists(EASYRSA):
        sys.exit(f"{EASYRSA} missing: apt-get install easy-rsa")
    work.mkdir(parents=True, exist_ok=True)
    pki = work / "pki"
    e = env(EASYRSA_BATCH="1", EASYRSA_PKI=str(pki), EASYRSA_CERT_EXPIRE="365")
    if ec:
        e.update(EASYRSA_ALGO="ec", EASYRSA_CURVE="prime256v1")
    for args in (["init-pki"], ["build-ca", "nopass"]):
        ee = dict(e, EASYRSA_REQ_CN="Bench CA") if args[0] == "build-ca" else e
        p = subprocess.run([EASYRSA, *args], env=ee, cwd=work, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            sys.exit(f"easyrsa {args} failed: {p.stderr[-500:]}")
    times = []
    for i in range(n):
        t = time.perf_counter()
        p = subprocess.run([EASYRSA, "build-server-full", f"host{i}.example.org", "nopass"], env=e, cwd=work,
                           capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - t)
        if p.returncode != 0:
            sys.exit(f"easyrsa build-server-full failed: {p.stderr[-500:]}")
    return times


def build_big_index(store: Path, n: int) -> None:
    """n index entries modelled on one real certificate (see module docstring)."""
    idx = json.loads((store / "index.json").read_text())
    proto = idx["certs"][0]
    rng = random.Random(6)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    certs = []
    for i in range(n):
        e = dict(proto)
        name = f"h{i}.example.org"
        nb = now - dt.timedelta(days=rng.uniform(0, 400))
        e.update(serial=format(rng.getrandbits(159) | (1 << 158), "x"), name=name, names=[name, f"smtp{i}.example.org"],
                 not_before=nb.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 not_after=(nb + dt.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 spki_sha256=format(rng.getrandbits(256), "064x"), cert_sha256=format(rng.getrandbits(256), "064x"),
                 path=f"certs/{name}/ecdsa-p256/archive/0001", version=1)
        if i % 100 == 7:
            e.update(status="revoked", revoked_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"), revocation_reason="superseded")
        certs.append(e)
    idx["certs"] = certs
    tmp = store / "index.json.bench"
    tmp.write_text(json.dumps(idx, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, store / "index.json")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="certificates in the batch (default 1000)")
    ap.add_argument("--status-n", type=int, default=10000, help="certificates in the inventory store (default 10000)")
    ap.add_argument("--easyrsa-n", type=int, default=5, help="easy-rsa builds to average (default 5)")
    ap.add_argument("--runs", type=int, default=5, help="interleaved runs for the inventory timings (default 5)")
    a = ap.parse_args()
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="mailca-bench-"))
    try:
        # ---- anchors: easy-rsa as shipped (RSA-2048) and configured for ECDSA P-256
        ez_mean = statistics.mean(easyrsa_per_cert(work / "easyrsa-default", a.easyrsa_n, ec=False))
        ez_ec_mean = statistics.mean(easyrsa_per_cert(work / "easyrsa-ec", a.easyrsa_n, ec=True))

        # ---- mailca batch, durable writes, one process including start-up
        store = work / "bulk"
        mailca("--dir", store, "init", "--domain", "example.org", "--no-root-passphrase")
        batch = work / "batch.txt"
        batch.write_text("".join(f"host{i}.example.org smtp{i}.example.org\n" for i in range(a.n)))
        t = time.perf_counter()
        p = mailca("--dir", store, "issue", "--batch", batch, "--json")
        bulk_total = time.perf_counter() - t
        issued = json.loads(p.stdout)["issued"]
        if issued != a.n:
            sys.exit(f"batch issued {issued} of {a.n}")
        doc = mailca("--dir", store, "doctor", check=False)
        if doc.returncode != 0:
            sys.exit(f"doctor found problems after the batch: {doc.stdout[-1000:]}")
        per = bulk_total / a.n

        # ---- inventory over a 10,000-certificate index vs one issue process (separate small store)
        inv, one = work / "inventory", work / "one"
        for d, seed in ((inv, "seed.example.org"), (one, "mail.example.org")):
            mailca("--dir", d, "init", "--domain", "example.org", "--no-root-passphrase")
            mailca("--dir", d, "issue", seed)
        build_big_index(inv, a.status_n)
        counts = json.loads(mailca("--dir", inv, "status", "--json").stdout)["counts"]
        cmd = mailca_cmd()
        e = env()
        med = interleaved({
            "issue": cmd + ["--dir", str(one), "issue", "mail.example.org", "--replace"],
            "status": cmd + ["--dir", str(inv), "status"],
            "status --json": cmd + ["--dir", str(inv), "status", "--json"],
            "renew --dry-run": cmd + ["--dir", str(inv), "renew", "--dry-run"],
        }, a.runs, env=e, warmup=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        {"name": f"issue --batch, per cert ({a.n:,} ECDSA P-256, durable)", "value_s": per, "anchor_s": ez_mean,
         "anchor": f"easy-rsa build-server-full nopass (default RSA-2048), mean of {a.easyrsa_n}",
         "target": round(1 / BULK_TARGET, 5), "speedup": round(ez_mean / per, 1), "mailca_total_s": round(bulk_total, 3)},
        {"name": "  same vs easy-rsa set to ECDSA P-256", "value_s": per, "anchor_s": ez_ec_mean,
         "anchor": f"easy-rsa build-server-full nopass, EASYRSA_ALGO=ec prime256v1, mean of {a.easyrsa_n}",
         "target": round(1 / BULK_TARGET, 5), "speedup": round(ez_ec_mean / per, 1),
         "infeasible": "informational like-for-like row; the target is set against easy-rsa as shipped"},
    ]
    for label in ("status", "status --json", "renew --dry-run"):
        rows.append({"name": f"{label}, {a.status_n:,} certs", "value_s": med[label], "anchor_s": med["issue"],
                     "anchor": "one 'mailca issue' process", "target": STATUS_TARGET, "states": counts})
    for r in rows:
        r["ratio"] = r["value_s"] / r["anchor_s"]
    rc = report("lifecycle", rows)
    print(f"bulk: {rows[0]['speedup']}x faster per certificate than easy-rsa (default), "
          f"{rows[1]['speedup']}x than easy-rsa with ECDSA; target {BULK_TARGET:.0f}x")
    return rc


if __name__ == "__main__":
    sys.exit(main())
