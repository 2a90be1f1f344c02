#!/usr/bin/env python3
"""Benchmark: a CRL with 100,000 revoked entries, mailca vs ``openssl ca -gencrl``.

Target (issue #6): ``mailca crl`` is no slower than ``openssl ca -gencrl`` over the same
100,000 entries, measured in this run (ratio mailca/openssl <= 1.0).

Both sides are measured as whole commands in a subprocess (start-up, reading their
database, encoding, signing with the same intermediate ECDSA key, writing the CRL):

* openssl: an ``openssl ca`` database in a temp dir - ``index.txt`` with 100,000 ``R``
  lines, a minimal ``openssl.cnf`` (AKI + CRL number, sha256, 7 days), the mailca
  intermediate key and certificate;
* mailca: ``mailca crl`` on a store whose ``index.json`` holds 100,000 revoked entries
  with every field ``mailca revoke`` writes, and whose revocation journal
  (``crl/revocations.tsv``, what ``mailca crl`` reads) lists the same 100,000.  Both are
  written directly (no archive directories): the benchmark measures CRL generation, not
  100,000 revocations.

Both CRLs are then checked: ``openssl crl -verify`` against the chain and cryptography's
``is_signature_valid``; the mailca CRL must list exactly the 100,000 serials with their
reasons.  Optional ``--naive N``: time cryptography's ``CertificateRevocationListBuilder``
loop over N entries too (quadratic, so keep N small; shown for context only).

Times are medians of interleaved runs (openssl, mailca, openssl, ...) after a warm-up, so
that load on the machine hits both alike.  Prints a table, writes ``bench/results/crl.json``
(rows as in bench/_common.py) and exits 1 if the target is missed or a CRL is wrong.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REASONS = ["keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged", "unspecified"]

OPENSSL_CNF = """\
[ ca ]
default_ca = CA_default

[ CA_default ]
dir               = {dir}
database          = $dir/index.txt
crlnumber         = $dir/crlnumber
certificate       = $dir/intermediate.crt
private_key       = $dir/intermediate.key
default_md        = sha256
default_crl_days  = 7
crl_extensions    = crl_ext
unique_subject    = no

[ crl_ext ]
authorityKeyIdentifier = keyid:always
"""


def utctime(iso: str) -> str:
    """2026-11-25T10:00:00Z -> 261125100000Z (openssl index.txt format)."""
    return iso[2:4] + iso[5:7] + iso[8:10] + iso[11:13] + iso[14:16] + iso[17:19] + "Z"


def make_entries(n: int, now: dt.datetime, rng: random.Random) -> list[dict]:
    out = []
    seen = set()
    for i in range(n):
        serial = rng.getrandbits(159) | (1 << 158)
        while serial in seen:
            serial = rng.getrandbits(159) | (1 << 158)
        seen.add(serial)
        host = f"host{i:06d}.example.org"
        issued = now - dt.timedelta(days=200, seconds=rng.randrange(86400 * 100))
        revoked = issued + dt.timedelta(days=rng.randrange(1, 150), seconds=rng.randrange(86400))
        iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
        out.append({
            "serial": format(serial, "x"),
            "name": host,
            "names": [host],
            "ips": [],
            "key_type": "ecdsa-p256",
            "not_before": iso(issued - dt.timedelta(minutes=5)),
            "not_after": iso(issued + dt.timedelta(days=365)),
            "spki_sha256": "%064x" % rng.getrandbits(256),
            "cert_sha256": "%064x" % rng.getrandbits(256),
            "status": "revoked",
            "version": 1,
            "path": f"certs/{host}/ecdsa-p256/archive/0001",
            "profile": "default",
            "source": "issue",
            "issued_at": iso(issued),
            "revoked_at": iso(revoked),
            "revocation_reason": REASONS[i % len(REASONS)],
        })
    return out


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--entries", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per side (median reported)")
    ap.add_argument("--naive", type=int, default=0, metavar="N",
                    help="also time cryptography's add_revoked_certificate loop over N entries (context only)")
    ap.add_argument("--target", type=float, default=1.0, help="maximum ratio mailca/openssl (default 1.0)")
    args = ap.parse_args()

    sys.path.insert(0, str(HERE))
    from _common import compile_bytecode, interleaved, mailca_cmd, report

    openssl = shutil.which("openssl")
    if not openssl:
        sys.exit("openssl is not installed (apt-get install openssl)")
    compile_bytecode()
    tmp = Path(tempfile.mkdtemp(prefix="bench-crl-"))
    try:
        store_dir = tmp / "store"
        env = dict(os.environ, MAILCA_DIR=str(store_dir))
        env.pop("MAILCA_NOW", None)
        mailca = mailca_cmd()
        r = run([*mailca, "init", "--domain", "example.org", "--org", "Bench Mail", "--no-root-passphrase"], env=env)
        if r.returncode != 0:
            sys.exit(f"mailca init failed: {r.stderr.strip()}")

        # ---- the same revocations on both sides
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        entries = make_entries(args.entries, now, random.Random(20261125))
        from mailca.lifecycle import crl as crlmod
        from mailca.storage.index import Index
        from mailca.storage.store import Store

        store = Store(store_dir)
        with store.lock():
            Index.rebuild(store, entries)
            crlmod.write_journal(store, {int(e["serial"], 16): crlmod.journal_record(e) for e in entries})
        index_mb = store.index_path.stat().st_size / 1e6

        odir = tmp / "openssl-ca"
        odir.mkdir()
        shutil.copy(store_dir / "ca" / "intermediate.crt", odir / "intermediate.crt")
        shutil.copy(store_dir / "ca" / "intermediate.key", odir / "intermediate.key")
        (odir / "openssl.cnf").write_text(OPENSSL_CNF.format(dir=odir))
        (odir / "crlnumber").write_text("01\n")
        lines = []
        for e in entries:
            rev = utctime(e["revoked_at"])
            if e["revocation_reason"] != "unspecified":
                rev += "," + e["revocation_reason"]
            lines.append(f"R\t{utctime(e['not_after'])}\t{rev}\t{e['serial'].upper()}\tunknown\t/CN={e['name']}\n")
        (odir / "index.txt").write_text("".join(lines))
        (odir / "index.txt.attr").write_text("unique_subject = no\n")

        ossl_cmd = [openssl, "ca", "-config", str(odir / "openssl.cnf"), "-gencrl", "-out", str(odir / "crl.pem")]
        mailca_crl = [*mailca, "crl", "--out", str(tmp / "mailca.crl.pem")]
        t = interleaved({"openssl": ossl_cmd, "mailca": mailca_crl}, args.runs, env=env, warmup=1)

        # in-process, for context: journal -> entries -> encode + sign (no process start-up)
        from mailca.issuance.ca import load_ca

        ca = load_ca(store)
        with crlmod.bulk_objects():
            t0 = time.perf_counter()
            revoked = crlmod.crl_entries_from_journal(store)
            t_journal = time.perf_counter() - t0
            t0 = time.perf_counter()
            der = crlmod.build_crl_der(ca.intermediate, ca.intermediate_key, revoked, this_update=now,
                                       next_update=now + dt.timedelta(days=7), number=999)
            t_build = time.perf_counter() - t0
            t0 = time.perf_counter()
            json.loads(store.index_path.read_bytes())
            t_json = time.perf_counter() - t0

        # ---- correctness of both CRLs
        chain = tmp / "chain.pem"
        chain.write_bytes((store_dir / "ca" / "root.crt").read_bytes() + (store_dir / "ca" / "intermediate.crt").read_bytes())
        checks = {}
        for label, path in (("openssl", odir / "crl.pem"), ("mailca", tmp / "mailca.crl.pem")):
            r = run([openssl, "crl", "-in", str(path), "-CAfile", str(chain), "-noout", "-verify"])
            checks[f"{label} CRL: openssl crl -verify"] = r.returncode == 0 and "verify OK" in (r.stdout + r.stderr)
        from cryptography import x509

        crl = x509.load_pem_x509_crl((tmp / "mailca.crl.pem").read_bytes())
        checks["mailca CRL: cryptography is_signature_valid"] = crl.is_signature_valid(ca.intermediate.public_key())
        checks["mailca CRL: exactly the revoked serials"] = (
            {rc.serial_number for rc in crl} == {int(e["serial"], 16) for e in entries})
        ok = True
        for e in entries[:2000]:
            rc = crl.get_revoked_certificate_by_serial_number(int(e["serial"], 16))
            try:
                got = rc.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
            except x509.ExtensionNotFound:
                got = "unspecified"
            ok &= got == e["revocation_reason"] and crlmod.certinfo.iso(rc.revocation_date_utc) == e["revoked_at"]
        checks["mailca CRL: reasons and dates (2,000 sampled)"] = ok
        checks["openssl CRL: same number of entries"] = len(x509.load_pem_x509_crl((odir / "crl.pem").read_bytes())) == len(entries)

        naive = None
        if args.naive:
            from cryptography.hazmat.primitives import hashes

            b = (x509.CertificateRevocationListBuilder().issuer_name(ca.intermediate.subject)
                 .last_update(now).next_update(now + dt.timedelta(days=7)))
            t0 = time.perf_counter()
            for e in entries[: args.naive]:
                b = b.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(int(e["serial"], 16))
                    .revocation_date(dt.datetime.strptime(e["revoked_at"], "%Y-%m-%dT%H:%M:%SZ")).build())
            b.sign(ca.intermediate_key, hashes.SHA256())
            naive = time.perf_counter() - t0

        print(f"CRL with {args.entries:,} revoked entries: CRL {len(der) / 1e6:.1f} MB DER, "
              f"index.json {index_mb:.1f} MB; medians of {args.runs} interleaved runs")
        print(f"  in-process: read journal {t_journal * 1000:.0f} ms, encode + sign {t_build * 1000:.0f} ms "
              f"(for scale: json.loads(index.json) alone {t_json * 1000:.0f} ms)")
        if naive is not None:
            print(f"  cryptography add_revoked_certificate loop over {args.naive:,} entries: {naive:.2f} s")
        for k, v in checks.items():
            print(f"  [{'ok' if v else 'FAIL'}] {k}")
        rows = [
            {"name": f"mailca crl, {args.entries:,} revoked", "value_s": t["mailca"], "anchor_s": t["openssl"],
             "anchor": "openssl ca -gencrl (same entries, same key)", "target": args.target},
            {"name": f"in-process journal + encode + sign, {args.entries:,}", "value_s": t_journal + t_build,
             "anchor_s": t["openssl"], "anchor": "openssl ca -gencrl", "target": args.target,
             "infeasible": "informational row (no process start-up)"},
        ]
        for row in rows:
            row["ratio"] = row["value_s"] / row["anchor_s"]
        rows[0]["checks"] = checks
        if naive is not None:
            rows[0]["naive_builder"] = {"entries": args.naive, "seconds": naive}
        rc = report("crl", rows)
        if not all(checks.values()):
            print("FAIL: a CRL check failed (see above)")
            return 1
        return rc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
