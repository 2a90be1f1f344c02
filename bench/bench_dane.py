#!/usr/bin/env python3
"""Issue #4 speed: `mailca dane` and `mailca postfix` (whole processes) for a dual
ECDSA + RSA pair, against anchors measured in the same run:

* hash-slinger `tlsa --create --certificate cert.pem` for ONE record   target: mailca dane (all 3 records) <= 1.0x
* `python -c "import cryptography.x509"` (floor of a Python tool)      target: mailca dane <= 1.5x
* `python -c "import cryptography.x509"`                               target: mailca postfix <= 1.5x
* informational: the openssl pipeline `x509 -pubkey | pkey -pubin -outform DER | sha256sum` (one record)

Usage: python bench/bench_dane.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import compile_bytecode, init_store, interleaved, report  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    for tool in ("tlsa", "openssl", "sha256sum"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (hash-slinger / openssl / coreutils)")
    compile_bytecode()
    tmp = Path(tempfile.mkdtemp(prefix="mailca-bench-dane-"))
    try:
        store = tmp / "store"
        m, env = init_store(store, ["mail.example.org", "--key-type", "ecdsa-p256", "--key-type", "rsa-2048"])
        cert = store / "certs" / "mail.example.org" / "ecdsa-p256" / "live" / "cert.pem"
        pipeline = f"openssl x509 -in {cert} -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum"
        t = interleaved(
            {
                "dane": [*m, "--dir", str(store), "dane", "mail.example.org"],
                "postfix": [*m, "--dir", str(store), "postfix", "mail.example.org", "--postfix-version", "3.7"],
                "tlsa": ["tlsa", "--create", "--certificate", str(cert), "--usage", "3", "--selector", "1",
                         "--mtype", "1", "--port", "25", "mail.example.org"],
                "x509": [sys.executable, "-c", "import cryptography.x509"],
                "openssl": ["sh", "-c", pipeline],  # a benchmark anchor, not mailca code
            },
            args.runs,
            env=env,
        )
        rows = [
            {"name": "mailca dane (2x 3 1 1 + 2 0 1) vs tlsa --create (1 rec)", "value_s": t["dane"],
             "anchor_s": t["tlsa"], "anchor": "hash-slinger tlsa --create --certificate", "target": 1.0},
            {"name": "mailca dane vs import cryptography.x509", "value_s": t["dane"], "anchor_s": t["x509"],
             "anchor": "python -c 'import cryptography.x509'", "target": 1.5},
            {"name": "mailca postfix vs import cryptography.x509", "value_s": t["postfix"], "anchor_s": t["x509"],
             "anchor": "python -c 'import cryptography.x509'", "target": 1.5},
            {"name": "mailca dane vs openssl|openssl|sha256sum (1 rec)", "value_s": t["dane"], "anchor_s": t["openssl"],
             "anchor": "openssl x509 -pubkey | openssl pkey | sha256sum", "target": 1.0,
             "infeasible": "informational: three C processes vs one Python process"},
        ]
        for r in rows:
            r["ratio"] = r["value_s"] / r["anchor_s"]
        return report("dane", rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
