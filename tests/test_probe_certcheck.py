"""Certificate and DANE findings (mailca.probe.certcheck) on real chains: mailca-issued
certificates, `openssl req -x509` self-signed ones, expiry judged at injected times, TLSA
records computed independently with `openssl` (not with the code under test)."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import require, tool
from mailca.errors import UsageError
from mailca.probe import certcheck as C
from mailca.probe.report import CATALOG


def _der_chain(pem_path) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER)
            for c in x509.load_pem_x509_certificates(pem_path.read_bytes())]


@pytest.fixture(scope="module")
def issued(shared_ca):
    shared_ca.issue("smtp.example.org", "--san", "mx.example.org")
    live = shared_ca.live("smtp.example.org")
    return {"chain": _der_chain(live / "fullchain.pem"), "live": live, "ca": shared_ca,
            "roots": C.load_ca_file(str(shared_ca.root))}


def _ids(findings):
    return {f.id: f for f in findings}


def _openssl_tlsa(cert_pem, selector: int, mtype: int, tmp_path) -> str:
    """TLSA association data the way the DANE documentation does it, with openssl."""
    openssl = require("openssl")
    if selector == 1:
        spki = subprocess.run([openssl, "x509", "-in", cert_pem, "-noout", "-pubkey"], capture_output=True, check=True).stdout
        blob = subprocess.run([openssl, "pkey", "-pubin", "-outform", "DER"], input=spki, capture_output=True, check=True).stdout
    else:
        blob = subprocess.run([openssl, "x509", "-in", cert_pem, "-outform", "DER"], capture_output=True, check=True).stdout
    if mtype == 0:
        return blob.hex()
    alg = {1: "-sha256", 2: "-sha512"}[mtype]
    out = subprocess.run([openssl, "dgst", alg, "-r"], input=blob, capture_output=True, check=True).stdout
    return out.split()[0].decode()


def now() -> dt.datetime:
    """The time when a test runs (not when the module was collected: the suite runs for
    minutes, longer than the 5-minute backdating of fixture certificates)."""
    return dt.datetime.now(dt.timezone.utc)


def test_trusted_chain_with_ca(issued):
    facts, fs = C.analyze(issued["chain"], port=25, name="mx.example.org", ca_certs=issued["roots"], tlsa=[], now=now())
    got = _ids(fs)
    assert list(got) == ["cert.ok"], fs
    assert facts["trusted"] is True and facts["hostname_ok"] is True
    assert len(facts["chain"]) == 2 and facts["chain"][0]["key"] == "ECDSA secp256r1"


def test_untrusted_without_ca_and_wrong_name(issued):
    _, fs = C.analyze(issued["chain"], port=25, name="imap.example.org", ca_certs=None, tlsa=[], now=now())
    got = _ids(fs)
    assert got["cert.untrusted"].severity == "HIGH" and "system trust store" in got["cert.untrusted"].detail
    assert "imap.example.org" in got["cert.hostname"].detail and "mx.example.org" in got["cert.hostname"].detail
    assert "cert.self_signed" not in got


def test_missing_intermediate_is_untrusted(issued):
    _, fs = C.analyze(issued["chain"][:1], port=25, name="smtp.example.org", ca_certs=issued["roots"], tlsa=[], now=now())
    got = _ids(fs)
    assert "unable to get local issuer certificate" in got["cert.untrusted"].detail


def test_expiry_at_injected_times(issued):
    leaf = x509.load_der_x509_certificate(issued["chain"][0])
    later = leaf.not_valid_after_utc + dt.timedelta(days=1)
    got = _ids(C.analyze(issued["chain"], port=25, name=None, ca_certs=issued["roots"], tlsa=[], now=later)[1])
    assert got["cert.expired"].severity == "CRITICAL"
    assert "cert.untrusted" not in got  # one problem, one finding: trust ignores time
    soon = leaf.not_valid_after_utc - dt.timedelta(days=10)
    got = _ids(C.analyze(issued["chain"], port=25, name=None, ca_certs=issued["roots"], tlsa=[], now=soon)[1])
    assert got["cert.expiring"].severity == "MEDIUM" and "10 days left" in got["cert.expiring"].detail
    before = leaf.not_valid_before_utc - dt.timedelta(days=1)
    got = _ids(C.analyze(issued["chain"], port=25, name=None, ca_certs=issued["roots"], tlsa=[], now=before)[1])
    assert "not valid before" in got["cert.expired"].detail


@pytest.mark.parametrize("selector,mtype", [(1, 1), (0, 1), (1, 2), (0, 2), (1, 0)])
def test_dane_ee_matches_openssl_computed_records(issued, selector, mtype, tmp_path):
    data = _openssl_tlsa(issued["live"] / "cert.pem", selector, mtype, tmp_path)
    rec = C.parse_tlsa(f"3 {selector} {mtype} {data}")
    facts, fs = C.analyze(issued["chain"], port=25, name=None, ca_certs=issued["roots"], tlsa=[rec], now=now())
    assert _ids(fs)["dane.match"].severity == "OK"
    assert facts["dane"]["matched"] == [rec.text]


def test_dane_ta_on_the_intermediate(issued, tmp_path):
    data = _openssl_tlsa(issued["ca"].intermediate, 1, 1, tmp_path)
    rec = C.parse_tlsa(f"2 1 1 {data}")
    got = _ids(C.analyze(issued["chain"], port=25, name=None, ca_certs=None, tlsa=[rec], now=now())[1])
    assert "dane.match" in got  # DANE-TA needs no system trust
    # The root is not in the chain as sent, so a 2 1 1 record for the root does not match.
    root = C.parse_tlsa(f"2 1 1 {_openssl_tlsa(issued['ca'].root, 1, 1, tmp_path)}")
    got = _ids(C.analyze(issued["chain"], port=25, name=None, ca_certs=None, tlsa=[root], now=now())[1])
    assert got["dane.mismatch"].severity == "HIGH"
    # A DANE-EE record for the intermediate's key is no match for the leaf.
    ee = C.parse_tlsa(f"3 1 1 {data}")
    assert "dane.mismatch" in _ids(C.analyze(issued["chain"], port=25, name=None, ca_certs=None, tlsa=[ee], now=now())[1])


def test_self_signed_weak_key_and_sha1(tmp_path):
    openssl = require("openssl")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    tool(openssl, "req", "-x509", "-newkey", "rsa:1024", "-sha1", "-nodes", "-keyout", key, "-out", cert,
         "-days", "30", "-subj", "/CN=old.example.org", check=True)
    chain = _der_chain(cert)
    got = _ids(C.analyze(chain, port=25, name="old.example.org", ca_certs=None, tlsa=[], now=now())[1])
    assert got["cert.self_signed"].severity == "HIGH"
    assert got["cert.untrusted"].severity == "HIGH" and "self-signed" in got["cert.untrusted"].detail
    assert "RSA 1024 bits" in got["cert.weak_key"].detail
    assert got["cert.weak_signature"].severity == "MEDIUM" and "SHA1" in got["cert.weak_signature"].detail
    assert "cert.hostname" not in got  # CN is used when there is no SAN at all
    # ... and trusted once it is given as --ca (a self-signed cert is its own root).
    got = _ids(C.analyze(chain, port=25, name=None, ca_certs=C.load_ca_file(str(cert)), tlsa=[], now=now())[1])
    assert "cert.untrusted" not in got and "cert.self_signed" in got


def test_hostname_matching_rules(tmp_path):
    openssl = require("openssl")
    cert = tmp_path / "w.pem"
    tool(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
         tmp_path / "k.pem", "-out", cert, "-days", "30", "-subj", "/CN=cn-only.example.com",
         "-addext", "subjectAltName=DNS:*.example.org,DNS:mail.example.net,IP:192.0.2.25", check=True)
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    assert C.hostname_matches(leaf, "smtp.example.org")
    assert C.hostname_matches(leaf, "SMTP.Example.ORG.")
    assert not C.hostname_matches(leaf, "a.b.example.org")      # one label only
    assert not C.hostname_matches(leaf, "example.org")
    assert C.hostname_matches(leaf, "mail.example.net")
    assert C.hostname_matches(leaf, "192.0.2.25") and not C.hostname_matches(leaf, "192.0.2.26")
    assert not C.hostname_matches(leaf, "cn-only.example.com")  # SAN present: CN ignored


def test_no_chain():
    assert _ids(C.analyze([], port=25, name=None, ca_certs=None, tlsa=[], now=now())[1])["cert.none"].severity == "HIGH"


@pytest.mark.parametrize("text", ["0 0 1 " + "00" * 32, "1 1 1 " + "00" * 32, "3 2 1 " + "00" * 32,
                                  "3 1 3 " + "00" * 32, "3 1 1 zz", "3 1 2 " + "00" * 32, "3 1", ""])
def test_parse_tlsa_rejects(text):
    with pytest.raises(UsageError) as e:
        C.parse_tlsa(text)
    assert "--tlsa" in str(e.value)


def test_parse_tlsa_accepts_zone_file_style():
    rec = C.parse_tlsa("TLSA 3 1 1 " + "AB" * 16 + " " + "cd" * 16)
    assert rec.usage == 3 and rec.data == bytes.fromhex("ab" * 16 + "cd" * 16)
    rec = C.parse_tlsa("_25._tcp.mail.example.org. 3600 IN TLSA 2 0 1 " + "ef" * 32)
    assert (rec.usage, rec.selector, rec.mtype) == (2, 0, 1) and rec.data == bytes.fromhex("ef" * 32)


def test_every_problem_names_a_fix():
    for c in CATALOG.values():
        if c.severity != "OK":
            assert c.fix, c.id
