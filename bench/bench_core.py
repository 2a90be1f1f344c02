#!/usr/bin/env python3
"""Issue #2 speed: one `mailca issue` (ECDSA P-256, whole process, durable writes) and
`mailca --help`, against anchors measured in the same run:

* `python -c "import cryptography.x509"`      target: issue <= 1.5x
* `python -c "import click"`                   target: --help <= 1.3x
* easy-rsa `build-server-full NAME nopass`     report only (EC P-256, batch mode)
* mkcert (one certificate per process, ECDSA)  report only: `mailca issue` per process, and the
                                               per-certificate cost of `mailca issue --batch`

The easy-rsa 0.5x target of issue #2 was withdrawn (issue #9): it asked a Python process to be
within ~1.1x of its own import floor.  mkcert is a single Go binary with no interpreter start-up,
so its row shows what start-up costs us; --batch pays start-up once.

Usage: python bench/bench_core.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_env, compile_bytecode, init_store, interleaved, report, time_once  # noqa: E402

EASYRSA = "/usr/share/easy-rsa/easyrsa"


def easyrsa_per_cert(tmp: Path, runs: int) -> float:
    if not os.path.exists(EASYRSA):
        raise SystemExit("easy-rsa is not installed (apt-get install easy-rsa)")
    work = tmp / "easyrsa"
    work.mkdir()
    env = bench_env(EASYRSA_PKI=str(work / "pki"), EASYRSA_BATCH="1", EASYRSA_ALGO="ec", EASYRSA_CURVE="prime256v1")
    for args in (["init-pki"], ["build-ca", "nopass"]):
        e = dict(env, EASYRSA_REQ_CN="Bench CA") if args[0] == "build-ca" else env
        r = subprocess.run([EASYRSA, *args], env=e, cwd=work, capture_output=True)
        if r.returncode != 0:
            raise SystemExit(f"easyrsa {args} failed: {r.stderr.decode()[-1500:]}")
    times = [time_once([EASYRSA, "build-server-full", f"mail{i}.example.org", "nopass"], env=env, cwd=work)
             for i in range(runs)]
    return statistics.median(times)


def mkcert_per_cert(tmp: Path, runs: int) -> float:
    """mkcert issuing one ECDSA P-256 certificate per process (its CA made beforehand)."""
    import shutil as _sh

    mk = _sh.which("mkcert")
    if mk is None:
        raise SystemExit("mkcert is not installed (apt-get install mkcert)")
    work = tmp / "mkcert"
    work.mkdir()
    env = bench_env(CAROOT=str(work / "caroot"), TRUST_STORES="none")
    subprocess.run([mk, "-install"], env=env, cwd=work, capture_output=True)  # creates the CA (trust stores: none)
    times = [time_once([mk, "-ecdsa", "-cert-file", f"c{i}.pem", "-key-file", f"k{i}.pem", f"mail{i}.example.org",
                        "smtp.example.org"], env=env, cwd=work) for i in range(runs)]
    return statistics.median(times)


def batch_per_cert(tmp: Path, n: int, runs: int) -> float:
    """Per-certificate wall time of one `mailca issue --batch` of n hosts (median of runs)."""
    out = []
    for r in range(runs):
        store = tmp / f"batch-store-{r}"
        m, env = init_store(store)
        f = tmp / f"batch-{r}.txt"
        f.write_text("".join(f"b{i}.example.org smtp{i}.example.org\n" for i in range(n)))
        out.append(time_once([*m, "--dir", str(store), "issue", "--batch", str(f)], env=env) / n)
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--easyrsa-runs", type=int, default=5)
    ap.add_argument("--mkcert-runs", type=int, default=11)
    ap.add_argument("--batch-size", type=int, default=200)
    args = ap.parse_args()
    compile_bytecode()
    tmp = Path(tempfile.mkdtemp(prefix="mailca-bench-"))
    try:
        store = tmp / "store"
        m, env = init_store(store)
        py = sys.executable
        t = interleaved(
            {
                "x509": [py, "-c", "import cryptography.x509"],
                "click": [py, "-c", "import click"],
                "issue": [*m, "--dir", str(store), "issue", "mail.example.org", "--san", "smtp.example.org", "--replace"],
                "help": [*m, "--help"],
            },
            args.runs,
            env=env,
        )
        easy = easyrsa_per_cert(tmp, args.easyrsa_runs)
        mkc = mkcert_per_cert(tmp, args.mkcert_runs)
        per_batch = batch_per_cert(tmp, args.batch_size, 3)
        rows = [
            {"name": "mailca issue (ECDSA P-256) vs import cryptography.x509", "value_s": t["issue"], "anchor_s": t["x509"],
             "anchor": "python -c 'import cryptography.x509'", "target": 1.5},
            {"name": "mailca --help vs import click", "value_s": t["help"], "anchor_s": t["click"],
             "anchor": "python -c 'import click'", "target": 1.3},
            {"name": "mailca issue (ECDSA P-256) vs easy-rsa build-server-full", "value_s": t["issue"], "anchor_s": easy,
             "anchor": "easyrsa build-server-full (EC P-256, nopass)", "target": None},
            {"name": "floor: import cryptography.x509 vs easy-rsa", "value_s": t["x509"], "anchor_s": easy,
             "anchor": "easyrsa build-server-full", "target": None},
            {"name": "mailca issue (ECDSA P-256) vs mkcert, per process", "value_s": t["issue"], "anchor_s": mkc,
             "anchor": "mkcert -ecdsa NAME NAME (one process)", "target": None},
            {"name": f"mailca issue --batch ({args.batch_size}), per cert, vs mkcert/process", "value_s": per_batch,
             "anchor_s": mkc, "anchor": "mkcert -ecdsa NAME NAME (one process)", "target": None},
        ]
        for r in rows:
            r["ratio"] = r["value_s"] / r["anchor_s"]
        return report("core", rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
