"""`mailca check`'s TLS features (issue #13 part A, probe/tlsfeatures.py) against real
servers on 127.0.0.1 that each have exactly one of the weaknesses, differentially against
sslyze and testssl.sh:

* one Postfix configured from `mailca postfix --profile strict` (a `mailca issue` ECDSA + RSA
  pair, so DHE-RSA suites exist), whose three listeners each get one `-o` override:
  port 25 allows client-initiated renegotiation (tls_ssl_options = 0x100,
  SSL_OP_ALLOW_CLIENT_RENEGOTIATION), 587 turns Extended Master Secret off (0x1,
  SSL_OP_NO_EXTENDED_MASTER_SECRET), 465 serves a self-generated 2048-bit DH group (the other
  two serve the RFC 7919 group ffdhe2048, recognised by its prime);
* haproxy with `allow-0rtt` terminating implicit TLS in front of that Postfix's port 25:
  TLS 1.3 early data (Postfix itself never accepts early data);
* the hardened Postfix of tests/interop/test_check_live.py (`strict`): none of these.

What no stock server on Debian 12 can do any more is not tested here: TLS compression
(Debian's OpenSSL 3 is built without zlib: `openssl s_server -comp` has nothing to offer) and
a server without secure renegotiation (OpenSSL always answers RFC 5746's
renegotiation_info; `-legacy_renegotiation` only also allows the unsafe kind).  Both
findings come from the raw ServerHello parser (compression method, extension 0xff01).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import make_ca, require, run, tool
from postfix_harness import PostfixServer, free_port
from test_check_live import _ports, strict, weak, weak_report  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.interop

# A 2048-bit group made with `openssl dhparam 2048` once (a safe prime: that takes seconds to
# minutes, so it is not generated per run): the same size as ffdhe2048, but no RFC 7919 group.
OWN_DH2048_PEM = """\
-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEAvUF7yzxzvslFeAWO02Vk7vsgz6vvMfdQ8H6+NsX87Lqg/Yr6QQeF
Rm+sWbyUvfNlw0bcP8hYQpxlumuJ0qUgsLRy35wIFnzxpjPNnLLqYH1kaB37mp08
p7GobJvSgPuCOHhkYoIgT62Olc07zdps5Vuyn5AOXwugrvGL1Gj5iso3SqERkP+c
QHgI/t+CiooBr23k3xsl2rRTpPXubRX930qtH0ft2L72UAzBlvn6kTkWlIndlcYe
N2cf8E5GBukv9TN/bxD4idyXwpLEVwWcz2ARnPX3xeBqW32NEBdXHiM5Hsseccl0
NvQ8vOa7lLjjvYeWCWEfvErN0sSJJNUmLwIBAg==
-----END DH PARAMETERS-----
"""

SEVERITIES = ("OK", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")


def _rank(s: str) -> int:
    s = {"WARN": "LOW"}.get(s, s)
    return SEVERITIES.index(s) if s in SEVERITIES else 0


def _add_option(master: str, service: str, option: str) -> str:
    """``option`` (``-o name=value``) appended to the ``service`` entry of master.cf text."""
    out, lines, i = [], master.splitlines(), 0
    while i < len(lines):
        out.append(lines[i])
        if lines[i].split()[:2] == [service, "inet"]:
            while i + 1 < len(lines) and lines[i + 1][:1] in (" ", "\t"):
                i += 1
                out.append(lines[i])
            out.append(f"  {option}")
        i += 1
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def onepf(tmp_path_factory):
    require("postfix")
    require("dovecot")
    openssl = require("openssl")
    base = tmp_path_factory.mktemp("onepf")
    ca = make_ca(base / "store", "example.org")
    ca.issue("mail.example.org", "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")
    out = base / "mailca-out"
    ca.ok("postfix", "mail.example.org", "--profile", "strict", "--write", out)
    (base / "dh-own.pem").write_text(OWN_DH2048_PEM)
    tool(openssl, "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
         "-out", base / "dh-ffdhe2048.pem", check=True)
    main = (out / "main.cf.mailca").read_text()
    chains = ", ".join(str(ca.live("mail.example.org", kt) / "keyfullchain.pem") for kt in ("ecdsa-p256", "rsa-2048"))
    main += f"\nsmtpd_tls_chain_files = {chains}\nsmtpd_tls_dh1024_param_file = {base / 'dh-ffdhe2048.pem'}\n"
    master = "smtp inet n - n - - smtpd\n" + (out / "master.cf.mailca").read_text()
    master = _add_option(master, "smtp", "-o tls_ssl_options=0x100")
    master = _add_option(master, "submission", "-o tls_ssl_options=0x1")
    master = _add_option(master, "submissions", f"-o smtpd_tls_dh1024_param_file={base / 'dh-own.pem'}")
    with PostfixServer(base / "pf", main_cf=main, master_cf=master, sasl=True, users={"alice": "pw"}) as srv:
        yield srv, ca


@pytest.fixture(scope="module")
def zerortt(onepf, tmp_path_factory):
    """haproxy: implicit TLS with 0-RTT on, in front of the Postfix's port 25."""
    haproxy = require("haproxy")
    srv, ca = onepf
    base = tmp_path_factory.mktemp("haproxy")
    port = free_port()
    cfg = base / "haproxy.cfg"
    cfg.write_text(f"""\
global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend tls
    bind 127.0.0.1:{port} ssl crt {ca.live('mail.example.org') / 'keyfullchain.pem'} allow-0rtt ssl-min-ver TLSv1.2 ciphers ECDHE+AESGCM:ECDHE+CHACHA20 curves X25519:P-256:P-384
    default_backend postfix
backend postfix
    server pf 127.0.0.1:{srv.ports['smtp']}
""")
    proc = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("haproxy exited: " + proc.stdout.read().decode(errors="replace"))
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def reports(onepf, zerortt):
    srv, ca = onepf
    t0 = time.monotonic()
    r = run(["check", "127.0.0.1", *_ports(srv), "--port", f"{zerortt}:submissions", "--name", "mail.example.org",
             "--ca", ca.root, "--json", "--timeout", "10"])
    took = time.monotonic() - t0
    assert r.returncode == 5, r.stdout[-3000:] + r.stderr
    rep = json.loads(r.stdout)
    return {p["port"]: p for p in rep["ports"]}, took


def _medium_plus(port: dict) -> dict[str, dict]:
    return {f["id"]: f for f in port["findings"] if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL")}


def test_each_port_has_exactly_its_weakness(onepf, zerortt, reports):
    srv, _ = onepf
    ports, took = reports
    want = {srv.ports["smtp"]: "tls.client_renegotiation", srv.ports["submission"]: "tls.no_ems",
            srv.ports["submissions"]: "kex.dh_custom", zerortt: "tls.early_data"}
    for port, fid in want.items():
        p = ports[port]
        assert p["error"] is None and not p["incomplete"], p
        assert set(_medium_plus(p)) == {fid}, (port, _medium_plus(p))
        assert "fix" in _medium_plus(p)[fid] and _medium_plus(p)[fid]["fix"]
    f = {p: p_["tls_features"] for p, p_ in ports.items()}
    smtp, sub, smtps, rtt = (f[srv.ports["smtp"]], f[srv.ports["submission"]], f[srv.ports["submissions"]],
                             f[zerortt])
    assert smtp["client_renegotiation"] is True and sub["client_renegotiation"] is False
    assert sub["extended_master_secret"] is False and smtp["extended_master_secret"] is True
    # DH group by its prime: the same size, only one is RFC 7919.
    assert smtp["dhe_group"]["group"] == "ffdhe2048" and smtp["dhe_group"]["bits"] == 2048
    assert smtps["dhe_group"]["group"] is None and smtps["dhe_group"]["bits"] == 2048
    assert {f_["id"] for f_ in ports[srv.ports["smtp"]]["findings"]} >= {"kex.dh_ffdhe2048"}
    assert rtt["early_data"]["accepted"] is True and rtt["early_data"]["max_early_data"] > 0
    assert smtp["early_data"] == {"max_early_data": 0, "accepted": False}
    for feat in f.values():
        assert feat["secure_renegotiation"] is True and feat["compression"] is False
        assert feat["fallback_scsv"] in (True, None)
        assert feat["ncsc_suites"]["insufficient"] == []
        assert "x25519" in feat["groups"] and feat["groups"]["x25519"] == "good"
    # Session resumption (facts): Postfix issues tickets; haproxy caches IDs and tickets.
    assert smtp["resumption"]["ticket"] is True and rtt["resumption"]["session_id"] is True
    assert took < 30, f"check took {took:.1f} s"


def _sslyze(targets: list[str], starttls: bool, out: Path) -> dict[str, dict]:
    sslyze = require(os.environ.get("SSLYZE") or str(Path(__file__).resolve().parents[2] / ".venv-sslyze/bin/sslyze"))
    args = [sslyze, "--quiet", f"--json_out={out}", "--reneg", "--ems", "--early_data", "--compression",
            "--fallback"]
    if starttls:
        args += ["--starttls", "smtp"]
    r = tool(*args, *targets, timeout=180)
    assert out.exists(), r.stdout[-2000:] + r.stderr[-2000:]
    res = {}
    for s in json.loads(out.read_text())["server_scan_results"]:
        port = s["server_location"]["port"]
        res[port] = s["scan_result"]
    return res


def _sslyze_verdicts(sr: dict) -> dict[str, bool]:
    """What sslyze calls a weakness -> the mailca finding id that must cover it."""
    def res(name):
        return (sr.get(name) or {}).get("result") or {}
    reneg, ems, early = res("session_renegotiation"), res("tls_extended_master_secret"), res("tls_1_3_early_data")
    comp, fb = res("tls_compression"), res("tls_fallback_scsv")
    return {
        "tls.client_renegotiation": bool(reneg.get("is_vulnerable_to_client_renegotiation_dos")),
        "tls.no_secure_renegotiation": reneg.get("supports_secure_renegotiation") is False,
        "tls.no_ems": ems.get("supports_ems_extension") is False,
        "tls.early_data": bool(early.get("supports_early_data")),
        "tls.compression": bool(comp.get("supports_compression")),
        "tls.no_fallback_scsv": fb.get("supports_fallback_scsv") is False,
    }


def test_differential_sslyze(onepf, zerortt, reports, tmp_path):
    """Every weakness sslyze reports is a MEDIUM+ finding of check on the same port, and
    check reports none of these that sslyze does not (no false positives)."""
    srv, _ = onepf
    ports, _ = reports
    t0 = time.monotonic()
    theirs = _sslyze([f"127.0.0.1:{srv.ports['smtp']}", f"127.0.0.1:{srv.ports['submission']}"], True,
                     tmp_path / "starttls.json")
    theirs.update(_sslyze([f"127.0.0.1:{srv.ports['submissions']}", f"127.0.0.1:{zerortt}"], False,
                          tmp_path / "implicit.json"))
    took = time.monotonic() - t0
    seen, extra = set(), set()
    for port, sr in theirs.items():
        verdicts = _sslyze_verdicts(sr)
        ours = _medium_plus(ports[port])
        for fid, vulnerable in verdicts.items():
            if vulnerable:
                assert fid in ours, (port, fid, sorted(ours))
                seen.add(fid)
            elif fid in ours:
                extra.add((port, fid))
    # The setup really has the weaknesses sslyze can see.
    assert seen == {"tls.client_renegotiation", "tls.early_data"}, seen
    # sslyze 6 reports EMS as supported on the port whose ServerHello does not echo it (its
    # plugin asks its own OpenSSL build, not the ServerHello): check's finding there is confirmed
    # by a third party, openssl s_client ("Extended master secret: no"), and is no false positive.
    assert extra == {(srv.ports["submission"], "tls.no_ems")}, extra
    r = tool(require("openssl"), "s_client", "-connect", f"127.0.0.1:{srv.ports['submission']}", "-starttls", "smtp",
             "-tls1_2", input="QUIT\r\n", timeout=30)
    assert "Extended master secret: no" in r.stdout
    print(f"sslyze {took:.1f} s for 4 ports")


@pytest.mark.slow
def test_differential_testssl_renegotiation(onepf, reports, tmp_path):
    """testssl.sh's renegotiation, CRIME and fallback tests (-R -C -Z) on the renegotiation
    port and the EMS port: every MEDIUM+ verdict is reported by check at least as severely."""
    testssl = require("testssl")
    srv, _ = onepf
    ports, _ = reports
    mapping = {"secure_client_renego": "tls.client_renegotiation", "secure_renego": "tls.no_secure_renegotiation",
               "CRIME_TLS": "tls.compression", "fallback_SCSV": "tls.no_fallback_scsv"}
    worst_seen = {}
    for port in (srv.ports["smtp"], srv.ports["submission"]):
        out = tmp_path / f"testssl-{port}.json"
        r = tool(testssl, "--quiet", "--warnings", "off", "--color", "0", "--nodns", "none", "--ip", "127.0.0.1",
                 "--connect-timeout", "5", "--openssl-timeout", "5", "--starttls", "smtp", "--jsonfile", out,
                 "-R", "-C", "-Z", f"127.0.0.1:{port}", timeout=240)
        assert out.exists(), r.stdout[-2000:] + r.stderr[-2000:]
        findings = {f["id"]: f for f in json.loads(out.read_text())}
        ours = {f["id"]: f for f in ports[port]["findings"]}
        for tid, fid in mapping.items():
            t = findings.get(tid)
            if t is None:
                continue
            worst_seen[(port, tid)] = t["severity"]
            if _rank(t["severity"]) >= _rank("LOW"):
                assert fid in ours and _rank(ours[fid]["severity"]) >= _rank(t["severity"]), (port, t, ours.get(fid))
            else:
                assert fid not in ours, (port, t, ours.get(fid))
    assert _rank(worst_seen[(srv.ports["smtp"], "secure_client_renego")]) >= _rank("LOW"), worst_seen
    assert _rank(worst_seen[(srv.ports["submission"], "secure_client_renego")]) < _rank("LOW"), worst_seen


def test_hardened_postfix_has_none(strict):  # noqa: F811
    srv, tlsa, ca = strict
    r = run(["check", "127.0.0.1", *_ports(srv), "--name", "mail.example.org", "--ca", ca.root, "--json"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    for p in json.loads(r.stdout)["ports"]:
        feat = p["tls_features"]
        assert "error" not in feat, feat
        assert feat["client_renegotiation"] is False and feat["extended_master_secret"] is True
        assert feat["secure_renegotiation"] is True and feat["compression"] is False
        assert feat["early_data"] == {"max_early_data": 0, "accepted": False}
        assert feat["fallback_scsv"] in (True, None)
        assert feat["ncsc_suites"]["insufficient"] == [] and feat["rsa_key_exchange"] is False
        assert feat["groups"] and all(r_ == "good" for r_ in feat["groups"].values()), feat["groups"]
        assert feat["suites_complete"] is True and feat["groups_complete"] is True
        # internet.nl's kex_hash_func, cert_pubkey and cert_signature subtests.
        assert feat["kex_sha1"] is False  # security_level = 2 in the strict profile
        assert feat["ncsc_chain"] and all(c["key"] == "good" for c in feat["ncsc_chain"]), feat["ncsc_chain"]
        assert all(c["signature_hash"] in ("good", None) for c in feat["ncsc_chain"]), feat["ncsc_chain"]
        assert {f["id"] for f in p["findings"]}.isdisjoint(
            {"tls.client_renegotiation", "tls.no_ems", "tls.early_data", "tls.compression",
             "tls.no_secure_renegotiation", "tls.no_fallback_scsv", "kex.dh_custom", "kex.rsa",
             "ncsc.suite_insufficient", "kex.group_insufficient", "kex.sha1"})


def test_weak_postfix_features(weak_report):  # noqa: F811
    """The weak Postfix of test_check_live (TLS 1.0+, ALL:eNULL:@SECLEVEL=0, Oakley group 2)."""
    rep, _ = weak_report
    smtp = rep["ports"][0]
    feat, ids = smtp["tls_features"], {f["id"]: f for f in smtp["findings"]}
    # NCSC ratings per suite: the NULL, anonymous and static-RSA suites are named one by one.
    bad = set(feat["ncsc_suites"]["insufficient"])
    assert {"TLS_RSA_WITH_NULL_SHA256", "TLS_DH_anon_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"} <= bad
    assert "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" in feat["ncsc_suites"]["sufficient"]
    assert "TLS_AES_256_GCM_SHA384" in feat["ncsc_suites"]["good"] and feat["suites_complete"] is True
    assert ids["ncsc.suite_insufficient"]["severity"] == "MEDIUM" and ids["kex.rsa"]["severity"] == "MEDIUM"
    # Oakley group 2 is well known (LOGJAM's favourite), recognised by its prime, and no RFC 7919 group.
    assert feat["dhe_group"] == {"bits": 1024, "generator": 2, "group": "RFC 2409 Oakley group 2 (1024-bit MODP)",
                                 "ncsc": "insufficient"}
    assert "Oakley group 2" in ids["kex.dh_custom"]["detail"]
    # @SECLEVEL=0: the server signs its key exchange with SHA-1 when that is all the client offers.
    assert feat["kex_sha1"] is True and ids["kex.sha1"]["severity"] == "LOW"
    # TLS 1.0 ... 1.3 on offer, and a flagged fallback is refused (OpenSSL honours the SCSV).
    assert feat["fallback_scsv"] is True and "tls.no_fallback_scsv" not in ids
    # The wrong certificate is the same with and without SNI: cert.hostname says it once.
    assert feat["no_sni_certificate"] == {"same_as_sni": True, "matches_name": False, "subject": "CN=wrong.example.com"}
    assert "cert.no_sni_mismatch" not in ids and "cert.hostname" in ids
    assert feat["ncsc_chain"] == [{"subject": "CN=wrong.example.com", "key": "phase-out", "signature_hash": "good"}]
    for fid in ("tls.client_renegotiation", "tls.no_ems", "tls.early_data", "tls.compression",
                "tls.no_secure_renegotiation"):
        assert fid not in ids, fid
