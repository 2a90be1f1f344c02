"""mailca check --dane DOMAIN against real DNSSEC (Knot + validating unbound, tests/dns_harness.py)
and a real Postfix serving an ECDSA + RSA chain: a differential test against posttls-finger
-l dane (resolving through the same unbound: its own mount namespace with a bind-mounted
resolv.conf) and ldns-dane verify, on every case of the zone."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT, make_ca, require
from dns_harness import DnsHarness
from postfix_harness import PLAIN_MASTER_CF, PostfixServer

HOST = "mail.example.org"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    for t in ("knotd", "unbound", "unbound-control", "nsupdate", "posttls-finger", "ldns-dane", "unshare"):
        require(t)
    d = tmp_path_factory.mktemp("checkdane")
    ca = make_ca(d / "store", "example.org", "example.net")
    ca.issue(HOST, "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")
    ec, rsa = ca.live(HOST, "ecdsa-p256"), ca.live(HOST, "rsa-2048")
    main = f"smtpd_tls_chain_files = {ec}/keyfullchain.pem, {rsa}/keyfullchain.pem\nsmtpd_tls_security_level = may\n"
    with DnsHarness(d / "dns", "example.org") as dnsz, PostfixServer(d / "pf", main_cf=main, master_cf=PLAIN_MASTER_CF) as pf:
        yield {"ca": ca, "dns": dnsz, "port": pf.ports["smtp"], "ec": ec, "rsa": rsa}


def rdatas(ca, *args) -> list[str]:
    r = ca.ok("dane", HOST, "--json", *args)
    return [x["rdata"] for x in json.loads(r.stdout)["records"]]


def set_tlsa(w, host: str, records: list[str]) -> None:
    """Replace the TLSA RRset with nsupdate (TSIG) and make the resolver forget its cache."""
    addr, port = w["dns"].primary.split("@")
    owner = f"_{w['port']}._tcp.{host}."
    script = f"server {addr} {port}\nupdate delete {owner} TLSA\n"
    script += "".join(f"update add {owner} 15 TLSA {r}\n" for r in records) + "send\n"
    p = subprocess.run(["nsupdate", "-k", str(w["dns"].tsig_file)], input=script, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    deadline = time.monotonic() + 10
    while w["dns"].tlsa(owner, w["dns"].primary) != {r.lower() for r in records} and time.monotonic() < deadline:
        time.sleep(0.1)
    w["dns"].flush_resolver()


def ours(w, domain: str, *extra):
    r = w["ca"].run("check", "--dane", domain, "--resolver", w["dns"].resolver, "--port", w["port"], "--json", *extra)
    assert r.returncode in (0, 5), (r.returncode, r.stderr)
    return r.returncode, json.loads(r.stdout)


def posttls_finger(w, domain: str) -> str:
    """'verified' | 'untrusted' | 'failed', as Postfix's own DANE client sees the domain
    (posttls-finger completes the handshake either way: 'failed' is its num=65 DANE error)."""
    rc = w["dns"].resolv_conf()
    p = subprocess.run(["unshare", "--mount", "--", "sh", "-c",
                        'mount --bind "$1" /etc/resolv.conf && exec posttls-finger -c -l dane -t 5 "$2"', "sh",
                        str(rc), f"{domain}:{w['port']}"], capture_output=True, text=True, timeout=90)
    out = p.stdout + p.stderr
    if "Verified TLS connection established" in out:
        return "verified"
    if "no matching DANE TLSA records" in out:  # a Postfix at 'dane' level defers here
        return "failed"
    if "Untrusted TLS connection established" in out or "Anonymous TLS connection established" in out:
        return "untrusted"
    return "failed"


def ldns_dane(w, host: str, live) -> str:
    """'validated' | 'no-tlsa' | 'failed' for the chain the server sends (its live fullchain)."""
    p = subprocess.run(["ldns-dane", "-r", w["dns"].resolver_addr, "-c", str(live / "fullchain.pem"), "verify", host,
                        str(w["port"])], capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    if p.returncode == 0 and "dane-validated successfully" in out:
        return "validated"
    if "No TLSA records" in out or "No usable TLSA" in out or "insecure" in out.lower():
        return "no-tlsa"
    return "failed"


def test_differential_against_posttls_finger_and_ldns_dane(world):
    ca = world["ca"]
    ee = rdatas(ca, "--usage", "3")  # ecdsa, rsa
    ta = rdatas(ca, "--usage", "2")
    wrong = "3 1 1 " + "00" * 32
    cases = {
        # name: (TLSA RRset, our verdict, posttls-finger, ldns-dane, our status)
        "ee+ta": (ee + ta, "verified", "verified", "validated", "OK"),
        "ta-only": (ta, "verified", "verified", "validated", "OK"),
        "ee-only": (ee, "verified", "verified", "validated", "WARNING"),  # no rollover record
        "wrong": ([wrong], "fails", "failed", "failed", "CRITICAL"),
        "wrong-ta": (["2 0 1 " + "11" * 32], "fails", "failed", "failed", "CRITICAL"),
        "none": ([], "not-in-effect", "untrusted", "no-tlsa", "WARNING"),
    }
    seen = {}
    for name, (recs, verdict, ptf, ldns, status) in cases.items():
        set_tlsa(world, HOST, recs)
        rc, rep = ours(world, "example.org")
        seen[name] = (rep["verdict"], posttls_finger(world, "example.org"), ldns_dane(world, HOST, world["ec"]))
        assert seen[name] == (verdict, ptf, ldns), (name, seen[name], rep["items"])
        assert rep["status"] == status, (name, rep["items"])
        assert rc == (0 if status == "OK" else 5)
        assert rep["mx_status"] == "secure" and rep["dane_in_effect"] == {HOST: bool(recs)}
        if name == "none":
            assert any("DANE not in effect" in i["message"] and "denial of existence" in i["message"] for i in rep["items"])
    # the unsigned domain: DANE not in effect, for all three
    rc, rep = ours(world, "example.net")
    assert rep["status"] == "WARNING" and rep["verdict"] == "not-in-effect" and rep["mx_status"] == "insecure" and rc == 5
    assert any("DANE not in effect" in i["message"] for i in rep["items"])
    assert posttls_finger(world, "example.net") == "untrusted"
    assert ldns_dane(world, "mail.example.net", world["ec"]) == "no-tlsa"


def test_both_algorithms_are_checked_and_a_wrong_rsa_record_is_critical(world):
    ca = world["ca"]
    ec_rec, rsa_rec = rdatas(ca, "--usage", "3")
    set_tlsa(world, HOST, [ec_rec, "3 1 1 " + "22" * 32])
    rc, rep = ours(world, "example.org")
    by_alg = {s["algorithm"]: s for s in rep["served"]}
    assert by_alg["ecdsa"]["matched"] == [ec_rec] and by_alg["rsa"]["matched"] == []
    assert by_alg["rsa"]["leaf_spki_sha256"] == rsa_rec.split()[-1]
    assert rep["status"] == "CRITICAL" and rc == 5
    # Nagios exit codes: CRITICAL is 2
    r = ca.run("check", "--dane", "example.org", "--resolver", world["dns"].resolver, "--port", world["port"], "--nagios")
    assert r.returncode == 2 and r.stdout.startswith("DANE CRITICAL"), r.stdout


def test_usage_0_1_ignored_rollover_scheme_and_at(world):
    ca = world["ca"]
    ee = rdatas(ca, "--usage", "3")
    ta = rdatas(ca, "--usage", "2")
    set_tlsa(world, HOST, ee + ["1 1 1 " + "33" * 32])
    rc, rep = ours(world, "example.org")
    assert rep["status"] == "WARNING", rep["items"]  # matches, but no rollover record
    msgs = [i["message"] for i in rep["items"]]
    assert any("usage 1 record ignored" in m for m in msgs) and any("no rollover record" in m for m in msgs)
    set_tlsa(world, HOST, ee + ta)
    assert ours(world, "example.org")[1]["status"] == "OK"
    # --at: DANE-TA needs the chain valid on that day; DANE-EE does not (RFC 7672 3.1.1)
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3650)).strftime("%Y-%m-%d")
    set_tlsa(world, HOST, ta)
    rc, rep = ours(world, "example.org", "--at", later)
    assert rep["status"] == "CRITICAL" and rep["at"].startswith(later), rep["items"]
    set_tlsa(world, HOST, ee)
    rc, rep = ours(world, "example.org", "--at", later)
    assert all(s["matched"] for s in rep["served"]), rep["served"]


def test_two_mx_dual_algorithm_domain_is_read_quickly(world):
    """Two MX hosts x two key algorithms on loopback.  The issue asks for < 1 s; the bound
    asserted is 3 s so that a loaded 2-core CI machine does not trip it (the figure is printed)."""
    dnsz, ca = world["dns"], world["ca"]
    dnsz.update_direct(["example.org. 15 MX 20 mx2.example.org.", "mx2.example.org. 15 A 127.0.0.1"])
    ca.ok("issue", "mx2.example.org", "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")
    recs = rdatas(ca, "--usage", "2")
    set_tlsa(world, HOST, recs)
    set_tlsa(world, "mx2.example.org", recs)  # same CA: the 2 0 1 matches mail's chain, served for both names
    sys.path.insert(0, str(ROOT))
    from mailca.probe import danecheck

    addr, port = dnsz.resolver.split("@")
    t0 = time.monotonic()
    rep = danecheck.check_domain("example.org", (addr, int(port)), port=world["port"],
                                 at=dt.datetime.now(dt.timezone.utc), timeout=5)
    took = time.monotonic() - t0
    print(f"check --dane: 2 MX x 2 algorithms in {took:.3f} s")
    assert rep.mx_hosts == [HOST, "mx2.example.org"]
    # mx2's name is not in mail's certificate: DANE-TA's name check fails there, as a sender's would
    got = {(s.mx, s.alg): bool(s.matched) for s in rep.served}
    assert got == {(HOST, "ecdsa"): True, (HOST, "rsa"): True, ("mx2.example.org", "ecdsa"): False,
                   ("mx2.example.org", "rsa"): False}
    assert took < 3.0, took


def test_bogus_zone_is_critical(world):
    """A resolver whose trust anchor is a key the zone never had: every answer is bogus."""
    bogus = world["dns"].bogus_resolver()
    r = world["ca"].run("check", "--dane", "example.org", "--resolver", bogus, "--port", world["port"], "--json")
    assert r.returncode == 5, (r.returncode, r.stderr)
    rep = json.loads(r.stdout)
    assert rep["status"] == "CRITICAL" and rep["verdict"] == "fails" and rep["mx_status"] == "bogus"
    assert any("bogus" in i["message"] for i in rep["items"] if i["severity"] == "CRITICAL")
    n = world["ca"].run("check", "--dane", "example.org", "--resolver", bogus, "--port", world["port"], "--nagios")
    assert n.returncode == 2 and n.stdout.startswith("DANE CRITICAL"), n.stdout
    # and the DNS gate refuses to switch a key on the strength of a bogus answer
    world["ca"].ok("rekey", HOST, "--stage")
    g = world["ca"].run("rekey", HOST, "--commit", "--resolver", bogus, "--ns-port", str(world["dns"].port))
    assert g.returncode == 6 and "SERVFAIL" in g.stderr and "bogus" in g.stderr and g.stderr.count("\n") == 1, g.stderr
    world["ca"].ok("rekey", HOST, "--abort")


@pytest.mark.parametrize("tls12_ciphers", [False, True], ids=["sigalgs", "tls12-cipher-suites"])
def test_each_algorithm_gets_its_own_chain_by_either_route(world, tls12_ciphers):
    """The private sigalgs call and its public fallback (TLS 1.2 cipher suites) both make the
    dual-certificate Postfix show the ECDSA chain to an ECDSA-only offer and the RSA one to RSA."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from mailca.probe.danecheck import served_chain

    for alg, kind, live in (("ecdsa", ec.EllipticCurvePublicKey, world["ec"]), ("rsa", rsa.RSAPublicKey, world["rsa"])):
        chain = served_chain("127.0.0.1", world["port"], alg, HOST, 10, tls12_ciphers=tls12_ciphers)
        leaf = x509.load_der_x509_certificate(chain[0])
        assert isinstance(leaf.public_key(), kind), (alg, leaf.public_key())
        assert leaf == x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
