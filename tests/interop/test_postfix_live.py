"""A real Postfix (3.7 from Debian) on 127.0.0.1 high ports, configured ONLY with what
`mailca postfix` (strict profile) wrote and a certificate from `mailca issue`, checked with
openssl s_client, posttls-finger, smtplib and hash-slinger; then a DANE key rollover
(`rekey --stage` / `dane` / `rekey --commit` / `postfix reload`).

The tests share one server (module fixture) and run in file order; the rollover test is last
because it changes the server's key.
"""

from __future__ import annotations

import datetime as dt
import json
import smtplib
import ssl
import re
import subprocess

import pytest

from conftest import base_env, make_ca, require, snapshot, tool
from postfix_harness import PostfixServer

pytestmark = [pytest.mark.interop]

HOST = "mail.example.org"
SMTP_LINE = "smtp      inet  n       -       n       -       -       smtpd\n"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    require("postfix")
    require("dovecot")
    require("openssl")
    base = tmp_path_factory.mktemp("pflive")
    ca = make_ca(base / "store", "example.org")
    ca.issue(HOST)
    out = base / "mailca-out"
    ca.ok("postfix", HOST, "--profile", "strict", "--write", out, "--secure-domain", "example.org")
    # master.cf.mailca never carries an 'smtp inet' line (it would replace postscreen): the
    # admin's own port-25 line stays, here a plain smtpd one
    srv = PostfixServer(base / "pf", main_cf=(out / "main.cf.mailca").read_text(),
                        master_cf=SMTP_LINE + (out / "master.cf.mailca").read_text(), sasl=True, users={"alice": "s3cret-pw"})
    with srv:
        yield ca, srv, out


def s_client(port: int, *extra: str, starttls: bool = True, timeout=20) -> subprocess.CompletedProcess:
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief", *extra]
    if starttls:
        argv[2:2] = ["-starttls", "smtp"]
    return subprocess.run(argv, input="QUIT\n", capture_output=True, text=True, timeout=timeout)


def handshake_ok(r: subprocess.CompletedProcess) -> bool:
    return r.returncode == 0 and "CONNECTION ESTABLISHED" in r.stderr and "Verification: OK" in r.stderr


# ------------------------------------------------------------------------------ 1. postconf
def test_postconf_accepts_the_rendered_config_without_warnings(live):
    ca, srv, out = live
    for flag in ("-n", "-M", "-P"):
        r = tool("postconf", "-c", srv.config_dir, flag)
        assert r.returncode == 0 and r.stderr == "", (flag, r.stderr)
    n = srv.postconf("-n")
    assert f"smtpd_tls_chain_files = {ca.live(HOST)}/keyfullchain.pem" in n
    assert "smtpd_tls_protocols = >=TLSv1.2" in n
    assert "smtpd_tls_CAfile" not in n  # deliberately unset (no client certificates)
    assert "smtp_tls_security_level = dane" in n
    # the policy map the snippet points at parses as a Postfix table
    r = tool("postmap", "-q", "example.org", f"texthash:{out / 'mailca-tls-policy'}")
    assert r.returncode == 0 and r.stdout.strip() == f"secure match=nexthop:dot-nexthop tafile={ca.root}", r


# -------------------------------------------------------------------- 2. chain verification
@pytest.mark.parametrize("svc", ["smtp", "submission", "submissions"])
def test_openssl_verifies_chain_and_hostname(live, svc):
    ca, srv, _ = live
    r = s_client(srv.ports[svc], "-verify_return_error", "-verify_hostname", HOST, "-CAfile", ca.root,
                 starttls=svc != "submissions")
    assert handshake_ok(r), r.stderr
    assert f"Verified peername: {HOST}" in r.stderr
    # control: without our root the same handshake must NOT verify
    r = s_client(srv.ports[svc], "-verify_return_error", "-CAfile", "/dev/null", "-no-CApath",
                 starttls=svc != "submissions")
    assert r.returncode != 0


def test_posttls_finger_reports_verified(live):
    ca, srv, _ = live
    require("posttls-finger")
    r = tool("posttls-finger", "-c", "-l", "secure", "-F", ca.root, f"[127.0.0.1]:{srv.ports['smtp']}", HOST,
             timeout=30)
    assert "Verified TLS connection established" in r.stdout, r.stdout + r.stderr


# ----------------------------------------------------------------- 3. SMTP policy (587, 25)
def _ctx(ca, check_hostname=True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.root))
    ctx.check_hostname = check_hostname
    return ctx


def starttls(s: smtplib.SMTP, ca) -> None:
    """STARTTLS verifying the chain AND the name mail.example.org (smtplib takes the name
    to check from the host it connected to, 127.0.0.1, so tell it the real one)."""
    s._host = HOST
    code, _ = s.starttls(context=_ctx(ca))
    assert code == 220


def test_submission_auth_only_after_starttls(live):
    ca, srv, _ = live
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], local_hostname="client.example", timeout=15) as s:
        s.ehlo()
        assert not s.has_extn("auth"), "AUTH offered before STARTTLS"
        assert s.has_extn("starttls")
        code, msg = s.mail("alice@example.org")
        assert code == 530, (code, msg)  # "Must issue a STARTTLS command first"
        s.rset()
        starttls(s, ca)
        s.ehlo()
        assert s.has_extn("auth"), "AUTH missing after STARTTLS"
        assert "PLAIN" in s.esmtp_features["auth"].upper()
        code, _ = s.login("alice", "s3cret-pw")
        assert code == 235
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], local_hostname="client.example", timeout=15) as s:
        starttls(s, ca)
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("alice", "wrong")


def test_submissions_implicit_tls_offers_auth(live):
    ca, srv, _ = live
    with smtplib.SMTP_SSL("127.0.0.1", srv.ports["submissions"], local_hostname="client.example", timeout=15,
                          context=_ctx(ca, check_hostname=False)) as s:  # chain checked; name checked by openssl above
        s.ehlo()
        assert s.has_extn("auth")


def test_port25_refuses_vrfy_and_offers_no_auth(live):
    ca, srv, _ = live
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], local_hostname="client.example", timeout=15) as s:
        code, _ = s.verify("postmaster")
        assert code == 502, code
        s.ehlo()
        assert not s.has_extn("auth")
        starttls(s, ca)
        s.ehlo()
        assert not s.has_extn("auth"), "AUTH must not be offered on the MX port"



# ------------------------------------------------------------------ swaks: a real submission
def swaks(port: int, *extra: str, timeout=60) -> subprocess.CompletedProcess:
    """swaks as a mail client would use it: EHLO, (STARTTLS), (AUTH), MAIL, RCPT, DATA."""
    require("swaks")
    argv = ["swaks", "--server", "127.0.0.1", "--port", str(port), "--ehlo", "client.example",
            "--from", "alice@example.org", "--timeout", "15", *extra]
    if "--to" not in extra:
        argv += ["--to", "postmaster@localhost"]  # the harness queues and discards local mail
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


AUTH = ("--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "s3cret-pw")


def test_swaks_submits_on_587_after_starttls_and_auth(live):
    ca, srv, _ = live
    r = swaks(srv.ports["submission"], "--tls", "--tls-verify", "--tls-ca-path", str(ca.root), *AUTH)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "TLS started" in out, out
    assert re.search(r"<~\s+235 ", out), out                  # authenticated, inside TLS (<~)
    assert re.search(r"<~\s+250 .*queued as", out), out       # the message was accepted


def test_swaks_on_587_refuses_auth_without_tls_and_relay_without_auth(live):
    ca, srv, _ = live
    r = swaks(srv.ports["submission"], *AUTH)                  # no STARTTLS: AUTH is not offered
    assert r.returncode == 28, r.stdout + r.stderr             # swaks: error in AUTH transaction
    r = swaks(srv.ports["submission"], "--tls", "--tls-verify", "--tls-ca-path", str(ca.root))
    assert r.returncode in (23, 24), r.stdout + r.stderr       # TLS but no AUTH: sender/recipient refused
    assert not re.search(r"queued as", r.stdout), r.stdout
    r = swaks(srv.ports["submission"], "--tls", "--tls-verify", "--tls-ca-path", str(ca.root), *AUTH,
              "--to", "bob@example.net")                      # authenticated, but the test server relays nothing
    assert re.search(r"<~\s+235 ", r.stdout), r.stdout         # (so AUTH itself worked)


def test_swaks_verification_is_real(live):
    """The same submission against a CA file that does not hold our root fails in TLS."""
    ca, srv, _ = live
    other = make_ca(ca.dir.parent / "other-ca", "example.org")
    r = swaks(srv.ports["submission"], "--tls", "--tls-verify", "--tls-ca-path", str(other.root), *AUTH)
    assert r.returncode == 29, r.stdout + r.stderr             # swaks: error in TLS transaction


def test_swaks_submits_on_465_implicit_tls(live):
    ca, srv, _ = live
    r = swaks(srv.ports["submissions"], "--tls-on-connect", "--tls-verify", "--tls-ca-path", str(ca.root), *AUTH)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert re.search(r"<~\s+250 .*queued as", out), out


# ------------------------------------------------------------------- 4. weak handshakes fail
WEAK = {
    "TLSv1.0": ["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"],
    "TLSv1.1": ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
    "aNULL": ["-no_tls1_3", "-cipher", "aNULL:@SECLEVEL=0"],
    "eNULL": ["-no_tls1_3", "-cipher", "eNULL:@SECLEVEL=0"],
    "EXPORT": ["-no_tls1_3", "-cipher", "EXPORT:@SECLEVEL=0"],
    "DES": ["-no_tls1_3", "-cipher", "DES:@SECLEVEL=0"],
    "3DES": ["-no_tls1_3", "-cipher", "3DES:@SECLEVEL=0"],
    "RC4": ["-no_tls1_3", "-cipher", "RC4:@SECLEVEL=0"],
}


def client_can_offer(case: str) -> bool:
    """Whether this OpenSSL can offer the class at all (OpenSSL 3 has no EXPORT/DES/RC4:
    for those the refusal is trivially the client's, which the test still asserts)."""
    args = WEAK[case]
    if case.startswith("TLSv1."):
        return True
    r = tool("openssl", "ciphers", args[-1])
    return r.returncode == 0 and r.stdout.strip() != ""


@pytest.mark.parametrize("case", list(WEAK))
def test_weak_protocols_and_ciphers_fail_on_every_port(live, case):
    ca, srv, _ = live
    offered = client_can_offer(case)
    for svc, port in srv.ports.items():
        r = s_client(port, *WEAK[case], starttls=svc != "submissions")
        assert r.returncode != 0 and "CONNECTION ESTABLISHED" not in r.stderr, (svc, case, r.stderr)
    if case in ("TLSv1.0", "TLSv1.1", "aNULL", "eNULL"):
        # these the client really offers: the refusal is the server's doing
        assert offered, f"this OpenSSL cannot offer {case}; the test would prove nothing"


RAW_CASES = [("SSLv3", "AEAD"), ("TLSv1.0", "CBC"), ("TLSv1.1", "CBC"), ("TLSv1.2", "EXPORT"), ("TLSv1.2", "LOW"),
             ("TLSv1.2", "3DES"), ("TLSv1.2", "RC4"), ("TLSv1.2", "NULL"), ("TLSv1.2", "aNULL")]


def test_hand_built_client_hellos_for_what_openssl_3_cannot_offer(live):
    """OpenSSL 3 cannot even offer SSLv3/EXPORT/DES/3DES/RC4, so the s_client cases above fail
    on the client side.  Here the weak suites are really put on the wire, in hand-built
    ClientHellos (mailca.probe.hello, from `mailca check`): the server must not answer with a
    ServerHello.  (The server's OpenSSL 3 lacks most of them too - the config is the second
    line of defence, which the aNULL/eNULL/TLS 1.0/1.1 cases above exercise.)"""
    from mailca.probe.hello import CIPHER_CLASSES, SSL3, TLS1_0, TLS1_1, TLS1_2, probe
    from mailca.probe.smtp import Endpoint, open_for_tls

    versions = {"SSLv3": SSL3, "TLSv1.0": TLS1_0, "TLSv1.1": TLS1_1, "TLSv1.2": TLS1_2}
    ca, srv, _ = live
    for svc, port in srv.ports.items():
        ep = Endpoint("127.0.0.1", port, role=svc)
        for ver, cls in RAW_CASES:
            sock = open_for_tls(ep)
            try:
                res = probe(sock, versions[ver], CIPHER_CLASSES[cls], sni=HOST, timeout=10)
            finally:
                sock.close()
            assert not res.accepted, (svc, ver, cls, res)
        # control: the same machinery gets a ServerHello for TLS 1.2 + AEAD suites
        sock = open_for_tls(ep)
        try:
            res = probe(sock, TLS1_2, CIPHER_CLASSES["AEAD"], sni=HOST, timeout=10)
        finally:
            sock.close()
        assert res.accepted and res.version == TLS1_2, (svc, res)


# --------------------------------------------------------------------------------- 5. DANE
def dane_records(ca, *args, env=None) -> list[dict]:
    r = ca.run("dane", HOST, "--ta-selector", "both", "--json", *args, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["records"]


def dane_ok(port: int, rdata: str, starttls=True) -> bool:
    r = s_client(port, "-dane_tlsa_domain", HOST, "-dane_tlsa_rrdata", rdata, "-verify_return_error",
                 starttls=starttls)
    return handshake_ok(r)


def test_dane_records_verify_against_the_live_server(live):
    ca, srv, _ = live
    recs = dane_records(ca)
    kinds = sorted(r["rdata"][:5] for r in recs)
    assert kinds == ["2 0 1", "2 1 1", "3 1 1"], kinds
    for rec in recs:
        for svc in ("smtp", "submissions"):
            assert dane_ok(srv.ports[svc], rec["rdata"], starttls=svc != "submissions"), (svc, rec["rdata"])
    # control: a record with a wrong digest must fail
    bad = "3 1 1 " + "00" * 32
    assert not dane_ok(srv.ports["smtp"], bad)


def test_dane_rollover_new_key_matches_the_next_record(live):
    ca, srv, _ = live
    old = [r for r in dane_records(ca) if r["role"] == "current"][0]["rdata"]
    ca.ok("rekey", HOST, "--stage")
    # 'dane' first prints the next record "3 hours ago" (TTL 3600: 2 x TTL = 2 h have passed)
    t0 = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recs = dane_records(ca, "--ttl", "3600", env=base_env(MAILCA_NOW=t0))
    nxt = [r for r in recs if r["role"] == "next"]
    assert len(nxt) == 1 and nxt[0]["rdata"] != old
    # too early (1 h after first publication): refused, store unchanged
    early = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = snapshot(ca.dir)
    r = ca.run("rekey", HOST, "--commit", env=base_env(MAILCA_NOW=early))
    assert r.returncode == 3 and "2 x TTL" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert snapshot(ca.dir) == before
    # the server still has the old key
    assert dane_ok(srv.ports["smtp"], old) and not dane_ok(srv.ports["smtp"], nxt[0]["rdata"])
    ca.ok("rekey", HOST, "--commit")
    srv.reload()
    for svc in ("smtp", "submission", "submissions"):
        assert dane_ok(srv.ports[svc], nxt[0]["rdata"], starttls=svc != "submissions"), svc
    assert not dane_ok(srv.ports["smtp"], old)
    # and 'dane' now prints the switched-to key as current, with no next key left
    after = dane_records(ca)
    assert [r["rdata"] for r in after if r["role"] == "current"] == [nxt[0]["rdata"]]
    assert not [r for r in after if r["role"] == "next"]


# ------------------------------------------------- dual certificates, root as DANE-TA anchor
def test_dual_pair_and_root_trust_anchor(tmp_path):
    """A second instance: ECDSA + RSA pair for mx2, rendered with --dane-ta root.  An RSA-only
    client gets the RSA certificate, an ECDSA client the ECDSA one, each verifies with its own
    3 1 1 record, and the root's 2 0 1 record verifies because the root is now sent."""
    require("postfix")
    ca = make_ca(tmp_path / "store", "example.org")
    mx2 = "mx2.example.org"
    ca.issue(mx2, "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")
    out = tmp_path / "out"
    ca.ok("postfix", mx2, "--write", out, "--dane-ta", "root", "--ports", "25")
    r = ca.run("dane", mx2, "--ta", "root", "--json")
    recs = json.loads(r.stdout)["records"]
    ee = {x["key_type"]: x["rdata"] for x in recs if x["usage"] == 3}
    ta = [x["rdata"] for x in recs if x["usage"] == 2]
    with PostfixServer(tmp_path / "pf", main_cf=(out / "main.cf.mailca").read_text(),
                       master_cf=SMTP_LINE + (out / "master.cf.mailca").read_text()) as srv:
        port = srv.ports["smtp"]
        rsa_only = ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256"]
        ec_only = ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
        for client, kt in ((rsa_only, "rsa-2048"), (ec_only, "ecdsa-p256")):
            other = "ecdsa-p256" if kt == "rsa-2048" else "rsa-2048"
            r = s_client(port, *client, "-verify_return_error", "-verify_hostname", mx2, "-CAfile", ca.root)
            assert handshake_ok(r), (kt, r.stderr)
            r = s_client(port, *client, "-dane_tlsa_domain", mx2, "-dane_tlsa_rrdata", ee[kt], "-verify_return_error")
            assert handshake_ok(r), (kt, r.stderr)
            r = s_client(port, *client, "-dane_tlsa_domain", mx2, "-dane_tlsa_rrdata", ee[other], "-verify_return_error")
            assert not handshake_ok(r), (kt, "verified against the other key's record")
        r = s_client(port, "-dane_tlsa_domain", mx2, "-dane_tlsa_rrdata", ta[0], "-verify_return_error")
        assert handshake_ok(r), r.stderr
        assert "matched TA certificate at depth 2" in r.stderr  # the root, sent as the 3rd certificate
