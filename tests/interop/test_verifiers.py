"""Certificates mailca issues verify with every verifier mail software is built on.

For each CA key type and each leaf key type, a multi-SAN host, an IDN host, a dual
ECDSA+RSA pair and a CSR-signed certificate, the chain root -> intermediate -> leaf
must verify for every name in the SAN with:

* OpenSSL   ``openssl verify -x509_strict -purpose sslserver -verify_hostname NAME``
* GnuTLS    ``certtool --verify --verify-hostname NAME --verify-purpose serverAuth``
* NSS       ``vfychain -pp -u 1`` (certutil DB trusting only the root) + ``CERT_VerifyCertName``
* pyca      ``cryptography.x509.verification`` server verifier

and each verifier must *reject* a name the certificate does not carry (so the host
name check is real and the test could fail).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import make_ca, require, tool

import _verifiers as V

pytestmark = pytest.mark.interop

CA_KEY_TYPES = ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096"]
LEAF_KEY_TYPES = ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096"]


@pytest.fixture(scope="session")
def tools():
    for t in ("openssl", "certtool", "vfychain", "certutil"):
        require(t)


@pytest.fixture(scope="session")
def ca_by_type(tmp_path_factory):
    """One CA per CA key type, created on first use (RSA-4096 keys are made once)."""
    made = {}

    def get(kt: str):
        if kt not in made:
            made[kt] = make_ca(tmp_path_factory.mktemp(f"ca-{kt}") / "store", "example.org", "example.net",
                               extra=["--key-type", kt])
        return made[kt]

    return get


@pytest.fixture(scope="session")
def nss_work(tmp_path_factory):
    return tmp_path_factory.mktemp("nss")


def check_all(ca, cert: dict, names: list[str], workdir: Path, *, wrong: str = "nothere.example.org",
              ip: bool = False):
    paths = cert["paths"]
    leaf, chain, full = Path(paths["cert"]), Path(paths["chain"]), Path(paths["fullchain"])
    if not ip and not any(n.startswith("*.") for n in cert["names"]):
        assert set(names) <= set(cert["names"]), cert["names"]
    failures = []
    for name in names:
        for tool_name, verdict in V.all_verifiers(ca.root, chain, leaf, full, name, workdir, ip=ip).items():
            if not verdict.ok:
                failures.append(f"{tool_name} rejected {name}:\n{verdict.output}")
    # the host-name check is real: every verifier refuses a name the certificate lacks
    for tool_name, verdict in V.all_verifiers(ca.root, chain, leaf, full, wrong, workdir, ip=ip).items():
        if verdict.ok:
            failures.append(f"{tool_name} accepted {wrong}, which is not in the certificate")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("leaf_kt", LEAF_KEY_TYPES)
def test_each_leaf_key_type(tools, ca_by_type, nss_work, leaf_kt):
    ca = ca_by_type("ecdsa-p256")
    [cert] = ca.issue(f"{leaf_kt}.example.org", "--key-type", leaf_kt)
    assert cert["key_type"] == leaf_kt
    check_all(ca, cert, [f"{leaf_kt}.example.org"], nss_work)


@pytest.mark.parametrize("ca_kt", CA_KEY_TYPES[1:])
def test_each_ca_key_type(tools, ca_by_type, nss_work, ca_kt):
    ca = ca_by_type(ca_kt)
    # a leaf of the CA's own key type and the default ECDSA leaf, both under this CA
    for leaf_kt in sorted({ca_kt, "ecdsa-p256"}):
        [cert] = ca.issue("mail.example.org", "--key-type", leaf_kt)
        check_all(ca, cert, ["mail.example.org"], nss_work)
    # the CA certificates really use the requested key type
    out = tool("openssl", "x509", "-in", ca.intermediate, "-noout", "-text").stdout
    expect = {"ecdsa-p384": "384 bit", "rsa-2048": "2048 bit", "rsa-3072": "3072 bit", "rsa-4096": "4096 bit"}[ca_kt]
    assert expect in out


def test_multi_san_host(tools, ca_by_type, nss_work):
    ca = ca_by_type("ecdsa-p256")
    names = ["mail.example.org", "smtp.example.org", "imap.example.org", "mx1.example.net", "example.org"]
    [cert] = ca.issue(names[0], *[a for n in names[1:] for a in ("--san", n)])
    assert cert["names"] == names
    check_all(ca, cert, names, nss_work, wrong="pop.example.org")


def test_idn_host(tools, ca_by_type, nss_work):
    ca = ca_by_type("ecdsa-p256")
    [cert] = ca.issue("bücher.example.org")
    assert cert["names"] == ["xn--bcher-kva.example.org"]
    check_all(ca, cert, ["xn--bcher-kva.example.org"], nss_work, wrong="xn--bchen-kva.example.org")
    # the A-label is what the certificate carries (mail clients match A-labels)
    text = tool("openssl", "x509", "-in", cert["paths"]["cert"], "-noout", "-ext", "subjectAltName").stdout
    assert "DNS:xn--bcher-kva.example.org" in text


def test_idn_domain_ca(tools, tmp_path_factory, nss_work):
    """A CA whose permitted domain is itself an IDN (bücher.de): constraints hold A-labels."""
    ca = make_ca(tmp_path_factory.mktemp("idnca") / "store", "bücher.de")
    [cert] = ca.issue("mail.bücher.de", "--san", "bücher.de")
    assert cert["names"] == ["mail.xn--bcher-kva.de", "xn--bcher-kva.de"]
    check_all(ca, cert, cert["names"], nss_work, wrong="mail.xn--bcher-kva.com")


def test_dual_pair(tools, ca_by_type, nss_work):
    ca = ca_by_type("ecdsa-p256")
    certs = ca.issue("dual.example.org", "--san", "smtp-dual.example.org",
                     "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")
    assert [c["key_type"] for c in certs] == ["ecdsa-p256", "rsa-2048"]
    assert certs[0]["live_dir"] != certs[1]["live_dir"]
    assert certs[0]["spki_sha256"] != certs[1]["spki_sha256"]
    for cert in certs:
        check_all(ca, cert, ["dual.example.org", "smtp-dual.example.org"], nss_work)
    # each key matches its own certificate (Postfix pairs them by algorithm)
    for cert in certs:
        k = tool("openssl", "pkey", "-in", cert["paths"]["key"], "-pubout").stdout
        c = tool("openssl", "x509", "-in", cert["paths"]["cert"], "-noout", "-pubkey").stdout
        assert k and k == c


def test_wildcard_certificate(tools, ca_by_type, nss_work):
    """*.example.org (wildcard profile) matches one label, not two, and not the bare domain."""
    ca = ca_by_type("ecdsa-p256")
    [cert] = ca.issue("*.example.org", "--profile", "wildcard")
    assert cert["names"] == ["*.example.org"]
    check_all(ca, cert, ["imap.example.org", "smtp.example.org"], nss_work, wrong="a.b.example.org")
    paths = cert["paths"]
    for verdict in V.all_verifiers(ca.root, paths["chain"], paths["cert"], paths["fullchain"], "example.org",
                                   nss_work).values():
        assert not verdict.ok, f"{verdict.tool} matched the bare domain against *.example.org"


def test_ip_address_certificate(tools, tmp_path_factory, nss_work):
    """With a profile that permits IP ranges, IP SANs verify (and other addresses do not)."""
    prof = tmp_path_factory.mktemp("ipprof") / "ip.toml"
    prof.write_text('[ca]\npermitted_ip_ranges = ["192.0.2.0/24", "2001:db8::/32"]\n[leaf]\nallow_ip = true\n')
    ca = make_ca(tmp_path_factory.mktemp("ipca") / "store", "example.org", extra=["--profile", prof])
    [cert] = ca.issue("mail.example.org", "--ip", "192.0.2.25", "--ip", "2001:db8::25")
    assert cert["ips"] == ["192.0.2.25", "2001:db8::25"]
    check_all(ca, cert, ["192.0.2.25", "2001:db8::25"], nss_work, wrong="192.0.2.26", ip=True)
    check_all(ca, cert, ["mail.example.org"], nss_work)
    # an address outside the permitted ranges is refused before signing
    r = ca.run("issue", "mail.example.org", "--ip", "198.51.100.25")
    assert r.returncode == 2 and "outside the CA's permitted IP ranges" in r.stderr


def test_csr_signed_certificate(tools, ca_by_type, nss_work, tmp_path):
    ca = ca_by_type("ecdsa-p256")
    key, csr = tmp_path / "mail.key", tmp_path / "mail.csr"
    r = tool("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-subj", "/CN=csr.example.org", "-addext", "subjectAltName=DNS:csr.example.org",
             "-out", csr)
    assert r.returncode == 0, r.stderr
    r = ca.ok("sign", csr, "--san", "smtp-csr.example.org", "--json")
    [cert] = json.loads(r.stdout)["certificates"]
    assert cert["names"] == ["csr.example.org", "smtp-csr.example.org"]
    check_all(ca, cert, cert["names"], nss_work)
    # the certificate carries the CSR's key, which never entered the store
    k = tool("openssl", "pkey", "-in", key, "-pubout").stdout
    c = tool("openssl", "x509", "-in", cert["paths"]["cert"], "-noout", "-pubkey").stdout
    assert k == c
    assert not (Path(cert["live_dir"]) / "key.pem").exists()


def test_openssl_s_server_handshake_verifies(tools, ca_by_type, tmp_path):
    """The live files work in a real TLS handshake (127.0.0.1 only): s_server serves
    fullchain + key, s_client verifies against the root with the host name."""
    import socket
    import time

    ca = ca_by_type("ecdsa-p256")
    [cert] = ca.issue("tls.example.org")
    live = Path(cert["live_dir"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", live / "cert.pem",
         "-cert_chain", live / "chain.pem", "-key", live / "key.pem", "-quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        out = ""
        while time.monotonic() < deadline:
            r = subprocess.run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "tls.example.org",
                 "-CAfile", ca.root, "-verify_hostname", "tls.example.org", "-verify_return_error", "-brief"],
                input="", capture_output=True, text=True, timeout=20)
            out = r.stdout + r.stderr
            if "connect:errno" not in out and "Connection refused" not in out:
                break
            time.sleep(0.1)
        assert r.returncode == 0, out
        assert "Verification: OK" in out, out
    finally:
        srv.kill()
        srv.wait()
