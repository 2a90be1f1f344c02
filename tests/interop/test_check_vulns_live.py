"""Vulnerability probes of `mailca check` (issue #13 part C) against the references and a real
Postfix, all on 127.0.0.1:

1. the hardened Postfix of `mailca postfix --profile strict` (port 25, 587 and 465): none of
   Heartbleed, CCS injection, ROBOT, SSLv2, STARTTLS injection -- and ROBOT is "not
   applicable" there (no RSA key exchange);
2. (slow) differential against testssl.sh 3.0.8 and sslyze 6, one purpose-built server per
   weakness (tests/vuln_servers.py), only the relevant checks (testssl -H, -I, -BB, -p for
   SSLv2; sslyze --heartbleed, --openssl_ccs, --robot): every weakness a reference reports is
   reported by `check` at least as severely (sslyze rates nothing: its "vulnerable" counts as
   HIGH, a strong ROBOT oracle as CRITICAL).  The clean server is clean for all three tools.

3. a weak Postfix *with* RSA key exchange (test_check_live.weak_postfix, OpenSSL 3): ROBOT is
   probed and `not_vulnerable` (the same alert for all five variants), nothing else fires.

What the references cannot do (also in docs/check.md): sslyze --sslv2 counts a suite only after
a complete SSLv2 handshake, and the SSLv2 server stops after its SERVER-HELLO (testssl.sh, like
`check`, reads the SERVER-HELLO): sslyze finds no SSLv2 suite there, which the test asserts.
Neither sslyze nor testssl.sh 3.0.8 has a STARTTLS command injection check (testssl's
--starttls-injection came after 3.0): the injection server is compared with nothing;
tests/test_probe_vulns.py shows the vulnerable and the fixed server side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_ca, require, run
from postfix_harness import PostfixServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vuln_servers import VulnServer  # noqa: E402

pytestmark = pytest.mark.interop

RANK = {"OK": 0, "INFO": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}
# purpose-built server -> (testssl flags, testssl id, mailca id)
CASES = {
    "heartbleed": (["-H"], "heartbleed", "vuln.heartbleed"),
    "ccs": (["-I"], "CCS", "vuln.ccs_injection"),
    "robot": (["-BB"], "ROBOT", "vuln.robot"),
    "sslv2": (["-p"], "SSLv2", "vuln.sslv2"),
}
# sslyze scan command -> (purpose-built server, mailca id, how to read its JSON result)
SSLYZE = {
    "heartbleed": ("heartbleed", "vuln.heartbleed", lambda r: r["is_vulnerable_to_heartbleed"] and "HIGH"),
    "openssl_ccs": ("ccs", "vuln.ccs_injection", lambda r: r["is_vulnerable_to_ccs_injection"] and "HIGH"),
    "robot": ("robot", "vuln.robot", lambda r: {"VULNERABLE_STRONG_ORACLE": "CRITICAL",
                                                "VULNERABLE_WEAK_ORACLE": "HIGH"}.get(r["robot_result"], False)),
}
JSON_KEY = {"heartbleed": "heartbleed", "openssl_ccs": "openssl_ccs_injection", "robot": "robot"}


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """Postfix configured only from `mailca postfix --profile strict` output (as in
    test_check_live.py) with a `mailca issue` certificate."""
    require("postfix")
    require("dovecot")
    base = tmp_path_factory.mktemp("strict-vulns")
    ca = make_ca(base / "store", "example.org")
    ca.issue("mail.example.org")
    out = base / "mailca-out"
    ca.ok("postfix", "mail.example.org", "--profile", "strict", "--write", out)
    with PostfixServer(base / "pf", main_cf=(out / "main.cf.mailca").read_text(),
                       master_cf="smtp inet n - n - - smtpd\n" + (out / "master.cf.mailca").read_text(),
                       sasl=True, users={"alice": "pw"}) as srv:
        yield srv, ca


def test_hardened_postfix_has_none_of_them(strict):
    srv, ca = strict
    p = srv.ports
    r = run(["check", "127.0.0.1", "--port", f"{p['smtp']}:smtp", "--port", f"{p['submission']}:submission",
             "--port", f"{p['submissions']}:submissions", "--name", "mail.example.org", "--ca", ca.root, "--json"])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    rep = json.loads(r.stdout)
    assert [f for f in rep["findings"] if f["id"].startswith("vuln.") and f["id"] != "vuln.checked"] == []
    for port in rep["ports"]:
        vul = port["vulnerabilities"]
        assert port["error"] is None and port["incomplete"] == []
        status = {k: v["status"] for k, v in vul.items()}
        expect = {"heartbleed": "not_vulnerable", "ccs_injection": "not_vulnerable", "sslv2": "not_vulnerable",
                  "robot": "not_applicable"}
        if port["tls_mode"] == "starttls":
            expect["starttls_injection"] = "not_vulnerable"
        assert status == expect, (port["port"], port["role"], status)
        # OpenSSL 3 refuses the early CCS with unexpected_message, as it should.
        assert "unexpected_message" in vul["ccs_injection"]["detail"]


def _testssl(testssl: str, port: int, flags: list[str], out: Path) -> subprocess.Popen:
    return subprocess.Popen([testssl, "--quiet", "--warnings", "off", "--color", "0", "--nodns", "none",
                             "--ip", "127.0.0.1", "--jsonfile", str(out), *flags, f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _sslyze(port: int, tmp_path: Path, tag: str) -> dict:
    sslyze = os.environ.get("SSLYZE") or str(Path(".venv-sslyze/bin/sslyze").resolve())
    if not Path(sslyze).exists():
        pytest.fail(f"sslyze not found at {sslyze} (scripts/test.sh makes .venv-sslyze)")
    out = tmp_path / f"sslyze-{tag}.json"
    r = subprocess.run([sslyze, *(f"--{c}" for c in SSLYZE), "--json_out", str(out), f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    res = json.loads(out.read_text())["server_scan_results"][0]
    assert res["scan_status"] == "COMPLETED", res.get("connectivity_error_trace") or res["scan_status"]
    return {c: SSLYZE[c][2](res["scan_result"][JSON_KEY[c]]["result"]) for c in SSLYZE}


@pytest.mark.slow
def test_differential_testssl_and_sslyze(tmp_path):
    """Each weakness: the rating of testssl.sh (run in parallel, about 15-30 s) and of sslyze
    <= check's rating; the clean server is clean for all."""
    testssl = require("testssl")
    servers = {k: VulnServer(k).__enter__() for k in CASES}
    try:
        t0 = time.monotonic()
        procs = {k: _testssl(testssl, servers[k].port, CASES[k][0], tmp_path / f"{k}.json") for k in CASES}
        ours = {}
        for k, srv in servers.items():
            r = run(["check", "127.0.0.1", "--port", f"{srv.port}:submissions", "--json"])
            assert r.returncode == 5, r.stderr
            ours[k] = {f["id"]: f["severity"] for f in json.loads(r.stdout)["findings"]}
        for k, proc in procs.items():
            assert proc.wait(timeout=240) in (0, 1), k
        took = time.monotonic() - t0
        for k, (_, their_id, our_id) in CASES.items():
            theirs = {e["id"]: e["severity"] for e in json.loads((tmp_path / f"{k}.json").read_text())}
            assert their_id in theirs, (k, theirs)
            assert RANK[theirs[their_id]] >= RANK["MEDIUM"], f"testssl.sh did not detect {k}: {theirs[their_id]}"
            assert our_id in ours[k], f"check misses {k} that testssl.sh rates {theirs[their_id]}"
            assert RANK[ours[k][our_id]] >= RANK[theirs[their_id]], (k, ours[k][our_id], theirs[their_id])
            # Nothing else of ours fires on a server with one weakness.
            assert {i for i in ours[k] if i.startswith("vuln.") and i != "vuln.checked"} == {our_id}
        print(f"testssl.sh: 4 checks in parallel in {took:.1f} s, all detected and matched")

        for cmd, (k, our_id, _) in SSLYZE.items():
            theirs = _sslyze(servers[k].port, tmp_path, k)
            assert theirs[cmd], f"sslyze --{cmd} did not detect the {k} server: {theirs}"
            assert [c for c, v in theirs.items() if v and c != cmd] == [], (k, theirs)
            assert RANK[ours[k][our_id]] >= RANK[theirs[cmd]], (k, ours[k][our_id], theirs[cmd])
        # The SSLv2 limitation of sslyze (see the module docstring).
        r = subprocess.run([os.environ.get("SSLYZE") or str(Path(".venv-sslyze/bin/sslyze").resolve()), "--sslv2",
                            f"127.0.0.1:{servers['sslv2'].port}"], capture_output=True, text=True, timeout=120)
        assert "the server rejected all cipher suites" in r.stdout, r.stdout[-1500:]
        with VulnServer("clean") as clean:
            assert _sslyze(clean.port, tmp_path, "clean") == {c: False for c in SSLYZE}
            r = run(["check", "127.0.0.1", "--port", f"{clean.port}:submissions", "--json"])
            found = json.loads(r.stdout)["findings"]
            assert [f for f in found if f["id"].startswith("vuln.") and f["id"] != "vuln.checked"] == []
    finally:
        for srv in servers.values():
            srv.__exit__(None, None, None)


def test_weak_postfix_with_rsa_kex_is_no_oracle(tmp_path):
    """A real OpenSSL 3 server with RSA key exchange: ROBOT applies and finds no oracle."""
    require("postfix")
    require("dovecot")
    from test_check_live import weak_postfix

    with weak_postfix(tmp_path / "weak") as srv:
        r = run(["check", "127.0.0.1", "--port", f"{srv.ports['smtp']}:smtp", "--json"])
    port = json.loads(r.stdout)["ports"][0]
    vul = port["vulnerabilities"]
    assert vul["robot"]["status"] == "not_vulnerable", vul["robot"]
    assert "the same answer to all five" in vul["robot"]["detail"]
    assert {k: v["status"] for k, v in vul.items() if k != "robot"} == {
        "heartbleed": "not_vulnerable", "ccs_injection": "not_vulnerable", "sslv2": "not_vulnerable",
        "starttls_injection": "not_vulnerable"}
    assert [f for f in port["findings"] if f["id"].startswith("vuln.") and f["id"] != "vuln.checked"] == []
