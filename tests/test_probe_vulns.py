"""`mailca check` vulnerability probes (issue #13 part C) against the purpose-built servers
of tests/vuln_servers.py, all on 127.0.0.1:

* each server with exactly one weakness (Heartbleed, CCS injection, ROBOT oracle, SSLv2,
  STARTTLS command injection) gets exactly that vulnerability finding, with its severity,
  fix and JSON form, on implicit TLS and behind STARTTLS;
* the same server without the weakness (``clean``) and a STARTTLS server that discards
  pipelined plaintext get none;
* hostile variants: a server that stalls after the ServerHelloDone, and one that streams
  heartbeat records forever, cost at most the bounded waits and never crash the audit.

The differential against testssl.sh / sslyze and the hardened Postfix are in
tests/interop/test_check_vulns_live.py.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import pytest

from conftest import run
from vuln_servers import StartTLSInjectionServer, VulnServer

VULN_IDS = {"heartbleed": "vuln.heartbleed", "ccs": "vuln.ccs_injection", "robot": "vuln.robot",
            "sslv2": "vuln.sslv2"}
FACT_KEYS = {"heartbleed": "heartbleed", "ccs": "ccs_injection", "robot": "robot", "sslv2": "sslv2"}


def check(port: int, role: str) -> dict:
    r = run(["check", "127.0.0.1", "--port", f"{port}:{role}", "--name", "vuln.test", "--json", "--timeout", "10"])
    assert r.returncode in (0, 5, 6), r.stderr
    rep = json.loads(r.stdout)
    assert len(rep["ports"]) == 1
    return rep["ports"][0]


def vuln_findings(port: dict) -> dict[str, dict]:
    return {f["id"]: f for f in port["findings"] if f["id"].startswith("vuln.") and f["id"] != "vuln.checked"}


@pytest.mark.parametrize("kind", ["heartbleed", "ccs", "robot", "sslv2"])
@pytest.mark.parametrize("role", ["submissions", "smtp"])
def test_each_weakness_reported_alone(kind, role):
    with VulnServer(kind, starttls=(role == "smtp")) as srv:
        port = check(srv.port, role)
    assert port["error"] is None and port["incomplete"] == []
    got = vuln_findings(port)
    assert set(got) == {VULN_IDS[kind]}, got
    f = got[VULN_IDS[kind]]
    assert f["severity"] == "CRITICAL"
    assert f["fix"]
    vul = port["vulnerabilities"]
    assert vul[FACT_KEYS[kind]]["status"] == "vulnerable"
    others = {k: v["status"] for k, v in vul.items() if k != FACT_KEYS[kind] and k != "starttls_injection"}
    assert set(others.values()) == {"not_vulnerable"}, others
    if kind == "robot":
        assert vul["robot"]["strong_oracle"] is True
        assert "wrong first two bytes: alert decrypt_error" in vul["robot"]["detail"]
    if kind == "heartbleed":
        assert "answered with 16384 bytes" in f["detail"]
        assert "password" not in json.dumps(port)  # the leaked memory is counted, never shown
    if kind == "sslv2":
        assert "SSL_CK_RC4_128_WITH_MD5" in f["detail"]
    # STARTTLS injection is only probed on STARTTLS ports.
    assert ("starttls_injection" in vul) == (role == "smtp")


def test_clean_server_reports_none():
    with VulnServer("clean") as srv:
        port = check(srv.port, "submissions")
    assert vuln_findings(port) == {}
    assert {k: v["status"] for k, v in port["vulnerabilities"].items()} == {
        "heartbleed": "not_vulnerable", "ccs_injection": "not_vulnerable", "robot": "not_vulnerable",
        "sslv2": "not_vulnerable"}
    assert "alert unexpected_message" in port["vulnerabilities"]["ccs_injection"]["detail"]


@pytest.mark.parametrize("vulnerable", [True, False])
def test_starttls_injection(tmp_path, vulnerable):
    with StartTLSInjectionServer(tmp_path, vulnerable=vulnerable) as srv:
        port = check(srv.port, "smtp")
    assert port["error"] is None
    got = vuln_findings(port)
    inj = port["vulnerabilities"]["starttls_injection"]
    if vulnerable:
        assert set(got) == {"vuln.starttls_injection"}
        assert got["vuln.starttls_injection"]["severity"] == "HIGH"
        assert inj["status"] == "vulnerable" and "250" in inj["detail"]
    else:
        assert got == {}
        assert inj["status"] == "not_vulnerable"
    # A real TLS 1.2+/ECDHE server: no RSA key exchange offered -> ROBOT does not apply.
    assert port["vulnerabilities"]["robot"]["status"] == "not_applicable"


def test_text_output_names_the_fix():
    with VulnServer("heartbleed") as srv:
        r = run(["check", "127.0.0.1", "--port", f"{srv.port}:submissions", "--min-severity", "CRITICAL"])
        assert r.returncode == 5
        assert "CRITICAL  Heartbleed (CVE-2014-0160)" in r.stdout
        assert "fix: update OpenSSL" in r.stdout
        # -v also lists what was probed and found clean.
        r = run(["check", "127.0.0.1", "--port", f"{srv.port}:submissions", "-v"])
    assert ("OK        vulnerability probes: Heartbleed: VULNERABLE, CCS injection: no, ROBOT: no, SSLv2: no"
            in r.stdout), r.stdout


# --- hostile servers ------------------------------------------------------------------

class _Hostile(VulnServer):
    """The clean server, but after ServerHelloDone it either stalls on anything but a key
    exchange (says nothing, keeps the connection) or streams heartbeat records without end."""

    def __init__(self, mode: str):
        super().__init__("clean")
        self.mode = mode
        self.stop = threading.Event()

    def after_hello(self, c):
        if self.mode == "stall":
            # A key exchange (the policy session's real handshake, the ROBOT probes) gets the
            # clean answer; anything else (heartbeat, early CCS) silence.
            if c.fill(6) and c.buf[0] == 22 and c.buf[5] == 0x10:
                return super().after_hello(c)
            self.stop.wait(30)
            return
        junk = struct.pack("!BHH", 24, 0x0303, 16384) + b"\x02" + b"A" * 16383
        deadline = time.monotonic() + 30
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                c.sock.sendall(junk)
            except OSError:
                return


@pytest.mark.parametrize("mode", ["stall", "flood"])
def test_hostile_server_bounded(mode):
    """A stall costs the quiet wait (at most --timeout, capped at 5 s) once, in parallel;
    a flood is cut off by the read limit.  Neither crashes or hangs the audit."""
    with _Hostile(mode) as srv:
        t0 = time.monotonic()
        r = run(["check", "127.0.0.1", "--port", f"{srv.port}:submissions", "--json", "--timeout", "3",
                 "--port-deadline", "20"])
        took = time.monotonic() - t0
        srv.stop.set()
    rep = json.loads(r.stdout)
    port = rep["ports"][0]
    assert port["error"] is None, port["error"]
    assert "internal error" not in r.stdout
    vul = port["vulnerabilities"]
    if mode == "stall":
        # No answer is no evidence: nothing is "vulnerable".
        assert all(v["status"] != "vulnerable" for v in vul.values()), vul
    else:
        # Heartbeat records that do not echo our request (wrong length field; or, read from
        # the middle of the stream, not even TLS records) are no Heartbleed.
        assert vul["heartbleed"]["status"] == "not_vulnerable", vul["heartbleed"]
        assert ("do not echo our request" in vul["heartbleed"]["detail"]
                or "garbage" in vul["heartbleed"]["detail"]), vul["heartbleed"]
    assert took < 20 + 5, f"{took:.1f} s"  # a hang detector: the port deadline plus start-up


def test_probe_functions_on_a_refusing_socket():
    """Straight calls: a peer that closes at once gives "not_applicable"/"not_vulnerable",
    never an exception."""
    from mailca.probe import vulns

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)

    def closer():
        for _ in range(4):
            try:
                s, _ = lsock.accept()
            except OSError:
                return
            s.close()

    t = threading.Thread(target=closer, daemon=True)
    t.start()
    port = lsock.getsockname()[1]
    outs = []
    for fn, kw in ((vulns.heartbleed, {"sni": None}), (vulns.ccs_injection, {"sni": None}),
                   (vulns.robot_variant, {"sni": None, "variant": 0}), (vulns.sslv2, {})):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            outs.append(fn(s, timeout=2, **kw).status)
        except OSError:
            outs.append("oserror")  # the caller (_on_socket) turns this into "unknown"
        finally:
            s.close()
    lsock.close()
    assert all(o in ("not_applicable", "not_vulnerable", "oserror", "unknown") for o in outs), outs
    assert "vulnerable" not in outs


def test_robot_verdict_rules():
    """Same answers: no oracle; differing answers confirmed by a second round: an oracle
    (strong when the malformed-padding variants already differ); not confirmed: unknown."""
    from mailca.probe.vulns import VulnResult, robot_verdict

    def rnd(*sigs):
        return [VulnResult("not_vulnerable", "TLS_RSA_WITH_AES_128_GCM_SHA256", signature=s) for s in sigs]

    same = rnd(*["alert bad_record_mac"] * 5)
    assert robot_verdict([same]).status == "not_vulnerable"
    weak = rnd("alert bad_record_mac", "timeout", "timeout", "timeout", "timeout")
    v = robot_verdict([weak, weak])
    assert v.status == "vulnerable" and v.strong is False
    strong = rnd("alert bad_record_mac", "alert decrypt_error", "alert bad_record_mac", "alert bad_record_mac",
                 "alert bad_record_mac")
    v = robot_verdict([strong, strong])
    assert v.status == "vulnerable" and v.strong is True
    assert robot_verdict([strong, same]).status == "unknown"
    na = [VulnResult("not_applicable", "no TLS <= 1.2 handshake (handshake_failure)")] * 5
    assert robot_verdict([na]).status == "not_applicable"
