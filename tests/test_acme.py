"""The ACME server (issue #14): protocol core and refusals, driven by a small real ACME client
(tests/acme_client.py: josepy-signed JWS over HTTPS) against `mailca acme serve` on loopback."""

from __future__ import annotations

import json
import subprocess

import pytest

from acme_client import IP_PROFILE, AcmeProcess, Client, Http01Responder, make_csr
from conftest import make_ca


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("acme")
    prof = d / "ip.toml"
    prof.write_text(IP_PROFILE)
    ca = make_ca(d / "store", "example.org", "example.net", extra=["--profile", str(prof)])
    responder = Http01Responder()
    srv = AcmeProcess(ca, "--http01-port", str(responder.port), "--resolve-to", "127.0.0.1")
    eab = json.loads(ca.ok("acme", "eab", "new", "--allow", "mail.example.org", "--allow", "*.mx.example.org",
                           "--json").stdout)
    yield ca, srv, responder, eab
    srv.stop()
    responder.close()


def _client(env, alg="ES256", bind=True):
    ca, srv, responder, eab = env
    c = Client(srv.directory, str(ca.root), alg=alg)
    if bind:
        eab2 = json.loads(ca.ok("acme", "eab", "new", "--allow", "mail.example.org", "--allow", "*.mx.example.org",
                                "--json").stdout)
        r = c.register(eab=(eab2["kid"], eab2["hmac"]))
        assert r.status == 201, r.body
    return c


def _index(ca):
    return json.loads((ca.dir / "index.json").read_text())["certs"]


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_full_order_http01(env, alg):
    ca, srv, responder, _ = env
    c = _client(env, alg)
    order = c.new_order("mail.example.org", "a.mx.example.org")
    assert order.status == 201, order.body
    for r in c.authorize_http01(order, responder):
        assert r.status == 200 and r.json["status"] == "valid", r.body
    o = c.post(order.headers["Location"], None)
    assert o.json["status"] == "ready"
    csr, key = make_csr(["mail.example.org", "a.mx.example.org"])
    f = c.finalize(order, csr)
    assert f.status == 200 and f.json["status"] == "valid", f.body
    cert = c.post(f.json["certificate"], None)
    assert cert.headers["Content-Type"] == "application/pem-certificate-chain"
    assert cert.body.count(b"BEGIN CERTIFICATE") == 2
    leaf = cert.body.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    chain = cert.body[len(leaf):]
    tmp = ca.dir.parent
    (tmp / "leaf.pem").write_bytes(leaf)
    (tmp / "chain.pem").write_bytes(chain)
    v = subprocess.run(["openssl", "verify", "-x509_strict", "-verify_hostname", "a.mx.example.org", "-CAfile",
                        str(ca.root), "-untrusted", str(tmp / "chain.pem"), str(tmp / "leaf.pem")],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    acme = [e for e in _index(ca) if e.get("source") == "acme"]
    assert any(set(e["names"]) == {"mail.example.org", "a.mx.example.org"} for e in acme)
