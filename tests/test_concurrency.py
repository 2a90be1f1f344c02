"""Concurrency: 8 processes issuing 50 certificates each into ONE store give 400 certificates,
400 unique serials, and an index that lists exactly them (the store lock serialises writers;
nothing is lost or duplicated).  Checked against the files on disk and with `mailca doctor`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from conftest import base_env, make_ca, mailca_argv

WORKERS, PER_WORKER = 8, 50


def check_exact(store, expected_names: set[str]):
    idx = json.loads((store / "index.json").read_text())["certs"]
    assert len(idx) == len(expected_names)
    assert {e["name"] for e in idx} == expected_names
    serials = [e["serial"] for e in idx]
    assert len(set(serials)) == len(serials)
    # every index entry is on disk, and every archive version on disk is in the index
    on_disk = {str(p.relative_to(store)) for p in store.glob("certs/*/*/archive/[0-9]*")}
    assert on_disk == {e["path"] for e in idx}
    from cryptography import x509

    for e in idx:
        cert = x509.load_pem_x509_certificate((store / e["path"] / "cert.pem").read_bytes())
        assert format(cert.serial_number, "x") == e["serial"]
    r = subprocess.run([*mailca_argv(), "--dir", str(store), "doctor"], env=base_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "is consistent." in r.stdout, r.stdout + r.stderr


def test_8_processes_x_50_batch(tmp_path):
    store = tmp_path / "store"
    make_ca(store, "example.org", extra=["--no-root-passphrase"])
    procs, names = [], set()
    for w in range(WORKERS):
        lines = [f"w{w}-h{i}.example.org" for i in range(PER_WORKER)]
        names |= set(lines)
        f = tmp_path / f"batch{w}.txt"
        f.write_text("\n".join(lines) + "\n")
        procs.append(subprocess.Popen([*mailca_argv(), "--dir", str(store), "issue", "--batch", str(f),
                                       "--json"], env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
        assert json.loads(out)["issued"] == PER_WORKER
    check_exact(store, names)


@pytest.mark.slow
def test_8_processes_x_50_single_issues(tmp_path):
    """The same with 400 separate `mailca issue` processes, 8 at a time."""
    store = tmp_path / "store"
    make_ca(store, "example.org", extra=["--no-root-passphrase"])
    failures: list[str] = []

    def worker(w):
        for i in range(PER_WORKER):
            r = subprocess.run([*mailca_argv(), "--dir", str(store), "issue", f"p{w}-{i}.example.org"],
                               env=base_env(), capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                failures.append(r.stderr)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    check_exact(store, {f"p{w}-{i}.example.org" for w in range(WORKERS) for i in range(PER_WORKER)})
