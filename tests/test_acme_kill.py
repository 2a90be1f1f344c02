"""kill -9 robustness of `mailca acme serve` (issue #14): 10 lego processes place 50 orders
(http-01 through a shared webroot, served by one loopback responder) while the server is
killed with SIGKILL at seeded random moments and restarted on the same port.  Afterwards the
store is consistent ('mailca doctor'), every certificate a client got is in the index, and the
restarted server finishes the orders that were open (the client's retry completes them)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest
from cryptography import x509

from acme_client import IP_PROFILE, AcmeProcess, Http01Responder
from conftest import make_ca, require

pytestmark = pytest.mark.slow

PROCS, PER_PROC = 10, 5


class _Files:
    def __init__(self, d):
        self.d = d

    def __contains__(self, t):
        return "/" not in t and (self.d / t).is_file()

    def get(self, t, default=""):
        return (self.d / t).read_text() if t in self else default


def test_kill9_during_concurrent_lego_orders(tmp_path):
    require("lego")
    prof = tmp_path / "ip.toml"
    prof.write_text(IP_PROFILE)
    ca = make_ca(tmp_path / "store", "example.org", extra=["--profile", str(prof)])
    webroot = tmp_path / "webroot"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    resp = Http01Responder()
    resp.tokens = _Files(webroot / ".well-known" / "acme-challenge")
    args = ("--http01-port", str(resp.port), "--resolve-to", "127.0.0.1")
    srv = AcmeProcess(ca, *args)
    port = srv.port
    eabs = [json.loads(ca.ok("acme", "eab", "new", "--allow", "*.mx.example.org", "--json").stdout)
            for _ in range(PROCS)]
    env = dict(os.environ, LEGO_CA_CERTIFICATES=str(ca.root))

    def start(i, j):
        argv = ["lego", "--server", srv.directory, "--email", f"p{i}@example.org", "--accept-tos", "--eab",
                "--kid", eabs[i]["kid"], f"--hmac={eabs[i]['hmac']}", "--domains", f"o{i}x{j}.mx.example.org",
                "--path", str(tmp_path / f"lego{i}"), "--http", "--http.webroot", str(webroot), "run"]
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    rng = random.Random(14)
    todo = {i: list(range(PER_PROC)) for i in range(PROCS)}
    running: dict[int, tuple[int, subprocess.Popen]] = {}
    kills, failed_attempts, done = 0, 0, 0
    # progress-driven (not clock-driven) kills, each after a random extra delay: the same
    # number of kills on a fast or a slow machine, at moments that differ run to run
    kill_at = [8, 18, 28, 38]
    kill_when = None
    deadline = time.monotonic() + 240
    try:
        while (todo and any(todo.values())) or running:
            assert time.monotonic() < deadline, f"orders left: {todo}"
            for i in range(PROCS):
                if i not in running and todo.get(i):
                    running[i] = (todo[i][0], start(i, todo[i][0]))
            for i, (j, p) in list(running.items()):
                rc = p.poll()
                if rc is None:
                    continue
                del running[i]
                if rc == 0:
                    todo[i].pop(0)
                    done += 1
                else:
                    failed_attempts += 1  # the server died under it: the client tries again
            if kill_at and done >= kill_at[0] and kill_when is None:
                kill_at.pop(0)
                kill_when = time.monotonic() + rng.uniform(0.0, 0.4)
            if kill_when is not None and time.monotonic() >= kill_when:
                kill_when = None
                srv.stop(signal.SIGKILL)
                kills += 1
                time.sleep(rng.uniform(0.0, 0.3))
                srv = AcmeProcess(ca, *args, port=port)
            time.sleep(0.05)
    finally:
        for _, p in running.values():
            p.kill()
            p.wait()
        srv.stop()
        resp.close()
    assert kills == 4
    # the store is consistent
    r = ca.run("doctor", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    idx = json.loads((ca.dir / "index.json").read_text())["certs"]
    serials = {int(e["serial"], 16) for e in idx}
    got = 0
    for i in range(PROCS):
        for j in range(PER_PROC):
            crt = tmp_path / f"lego{i}" / "certificates" / f"o{i}x{j}.mx.example.org.crt"
            c = x509.load_pem_x509_certificate(crt.read_bytes())
            assert c.serial_number in serials
            got += 1
    assert got == PROCS * PER_PROC
    # every ACME object file parses (none torn)
    for p in (ca.dir / "acme").rglob("*.json"):
        json.loads(p.read_text())
    print(f"kills={kills} failed_attempts={failed_attempts} certs={got} index={len(idx)}")
