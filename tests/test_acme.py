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


def test_refusals_are_problem_documents_and_issue_nothing(env):
    ca, srv, responder, eab = env
    before = len(_index(ca))
    # no external account binding
    c0 = Client(srv.directory, str(ca.root))
    r = c0.register()
    assert r.status == 400 and r.problem_type == "externalAccountRequired"
    # a wrong HMAC
    r = c0.register(eab=(eab["kid"], "A" * 43))
    assert r.status == 401 and r.problem_type == "unauthorized"
    c = _client(env)
    # a name outside the binding, and outside the CA's domains
    r = c.new_order("other.example.org")
    assert r.problem_type == "rejectedIdentifier" and "external account binding" in r.json["detail"]
    r = c.new_order("mail.example.com")
    assert r.problem_type == "rejectedIdentifier" and "permitted domains" in r.json["detail"]
    # the pattern allows one label below mx.example.org, not two
    assert c.new_order("a.b.mx.example.org").problem_type == "rejectedIdentifier"
    # a replayed nonce
    n = c.nonce()
    assert c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "mail.example.org"}]},
                  nonce=n).status == 201
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "mail.example.org"}]}, nonce=n)
    assert r.status == 400 and r.problem_type == "badNonce"
    # a bad JWS signature (payload changed after signing)
    body = c.jws(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "mail.example.org"}]})
    body["payload"] = body["payload"][:-2] + ("AA" if body["payload"][-2:] != "AA" else "BB")
    r = c.post_raw(c.dir["newOrder"], body)
    assert r.status == 400 and r.problem_type == "malformed" and "signature" in r.json["detail"]
    # signed by another key than the account's
    other = Client(srv.directory, str(ca.root))
    other.kid = c.kid
    r = other.new_order("mail.example.org")
    assert r.problem_type == "malformed" and "signature" in r.json["detail"]
    # a CSR with an extra name
    order = c.new_order("mail.example.org")
    assert all(x.json["status"] == "valid" for x in c.authorize_http01(order, responder))
    csr, _ = make_csr(["mail.example.org", "a.mx.example.org"])
    r = c.finalize(order, csr)
    assert r.status == 400 and r.problem_type == "badCSR" and "exactly" in r.json["detail"]
    # a CSR that is not one
    assert c.finalize(order, b"\x30\x03\x02\x01\x00").problem_type == "badCSR"
    # http-01 answered with the wrong key authorization
    order = c.new_order("b.mx.example.org")
    (r,) = c.authorize_http01(order, responder, wrong=True)
    assert r.json["status"] == "invalid" and r.json["error"]["type"].endswith(":unauthorized"), r.body
    o = c.post(order.headers["Location"], None).json
    assert o["status"] == "invalid"
    assert c.finalize(order, make_csr(["b.mx.example.org"])[0]).problem_type == "orderNotReady"
    # another account cannot read this account's order
    c2 = _client(env)
    assert c2.post(order.headers["Location"], None).status == 403
    assert len(_index(ca)) == before


def test_account_lookup_key_change_and_restart(env, tmp_path):
    ca, srv, responder, eab = env
    c = _client(env)
    kid = c.kid
    # onlyReturnExisting finds the account by key; an unknown key gets accountDoesNotExist
    c.kid = None
    r = c.post(c.dir["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
    assert r.status == 200 and r.headers["Location"] == kid
    c.kid = kid
    stranger = Client(srv.directory, str(ca.root))
    r = stranger.post(stranger.dir["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
    assert r.problem_type == "accountDoesNotExist"
    # an order and a nonce taken before a restart are good after it
    order = c.new_order("mail.example.org")
    nonce = c.nonce()
    port = srv.port
    srv.stop()
    srv2 = AcmeProcess(ca, "--http01-port", str(responder.port), "--resolve-to", "127.0.0.1", port=port)
    try:
        r = c.post(order.headers["Location"], None, nonce=nonce)
        assert r.status == 200 and r.json["status"] == "pending", r.body
        # key change: the old key stops working, the new one works
        from cryptography.hazmat.primitives.asymmetric import ec
        import josepy as jose
        new_key = ec.generate_private_key(ec.SECP256R1())
        new_jwk = jose.JWKEC(key=new_key)
        url = c.dir["keyChange"]
        inner = c.jws(url, {"account": kid, "oldKey": c.jwk.public_key().to_json()}, use_jwk=True, key=new_key,
                      jwk=new_jwk, nonce="unused")
        r = c.post(url, inner)
        assert r.status == 200, r.body
        assert c.new_order("mail.example.org").problem_type == "malformed"
        c.key, c.jwk = new_key, new_jwk
        assert c.new_order("mail.example.org").status == 201
    finally:
        srv2.stop()
    # a week later (the order lifetime) the open order is cleanly invalid, not left pending
    import datetime as _dt
    from conftest import T0, base_env, iso
    srv3 = AcmeProcess(ca, "--http01-port", str(responder.port), "--resolve-to", "127.0.0.1", port=port,
                       env=base_env(MAILCA_NOW=iso(T0 + _dt.timedelta(days=8))))
    try:
        r = c.post(order.headers["Location"], None)
        assert r.status == 200 and r.json["status"] == "invalid" and "expired" in r.json["error"]["detail"], r.body
    finally:
        srv3.stop()
        env_list = list(env)
        env_list[1].__dict__.update(AcmeProcess(ca, "--http01-port", str(responder.port), "--resolve-to",
                                                "127.0.0.1", port=port).__dict__)


def test_cli_bad_input_and_eab_lifecycle(env):
    ca, srv, responder, eab = env
    for args, needle in [
        (["acme", "eab", "new", "--allow", "mail.example.com"], "outside this CA's permitted domains"),
        (["acme", "eab", "new"], "--allow"),
        (["acme", "eab", "revoke", "kid-nope"], "no external account binding 'kid-nope'"),
        (["acme", "serve", "--name", "acme.example.org", "--listen", "localhost:1"], "--listen 'localhost:1'"),
        (["acme", "serve", "--name", "acme.example.org", "--resolve-to", "192.0.2.1"], "only loopback"),
    ]:
        r = ca.run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("mailca: error: ") and needle in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    # list never shows HMAC keys; revoking a binding deactivates its account
    c = Client(srv.directory, str(ca.root))
    new = json.loads(ca.ok("acme", "eab", "new", "--allow", "mail.example.org", "--json").stdout)
    assert c.register(eab=(new["kid"], new["hmac"])).status == 201
    # the binding is used up: a second account cannot reuse it
    c2 = Client(srv.directory, str(ca.root))
    assert c2.register(eab=(new["kid"], new["hmac"])).problem_type == "unauthorized"
    listing = ca.ok("acme", "eab", "list", "--json").stdout
    assert new["hmac"] not in listing and new["kid"] in listing
    row = next(b for b in json.loads(listing)["bindings"] if b["kid"] == new["kid"])
    assert row["account"] and not row["revoked"]
    mode = (ca.dir / "acme" / "eab" / f"{new['kid']}.json").stat().st_mode & 0o777
    assert mode == 0o600
    ca.ok("acme", "eab", "revoke", new["kid"])
    r = c.new_order("mail.example.org")
    assert r.status == 401 and r.problem_type == "unauthorized"


def _issue(c, responder, name, key=None):
    order = c.new_order(name)
    assert order.status == 201, order.body
    for r in c.authorize_http01(order, responder):
        assert r.json["status"] == "valid", r.body
    csr, key = make_csr([name], key)
    return c.finalize(order, csr), key


def test_dane_published_name_refuses_a_new_key_until_its_record_is_gated(env):
    from conftest import T0, iso
    import datetime as _dt
    import os

    ca, srv, responder, eab = env
    c = _client(env)
    name = "dane.mx.example.org"
    f, k1 = _issue(c, responder, name)
    assert f.json["status"] == "valid", f.body
    spki1 = next(e for e in _index(ca) if e["name"] == name)["spki_sha256"]
    seen_p = ca.dir / "dane-seen.json"
    seen = {"version": 1, "seen": {f"_25._tcp.{name}. 3 1 1 {spki1}": {"first_seen": iso(T0), "ttl": 300}}}
    seen_p.write_text(json.dumps(seen))
    os.chmod(seen_p, 0o600)
    try:
        before = len(_index(ca))
        # a new key: refused, with what to do
        f, k2 = _issue(c, responder, name)
        assert f.status == 400 and f.problem_type == "badCSR", f.body
        d = f.json["detail"]
        assert "DANE" in d and "--reuse-key" in d and "stage the next key" in d
        assert len(_index(ca)) == before
        # the same key: fine
        f, _ = _issue(c, responder, name, key=k1)
        assert f.json["status"] == "valid", f.body
        # the new key's record seen for less than 2 x TTL: still refused; for longer: accepted
        from cryptography.hazmat.primitives import serialization
        import hashlib
        spki2 = hashlib.sha256(k2.public_key().public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
        seen["seen"][f"_25._tcp.{name}. 3 1 1 {spki2}"] = {"first_seen": iso(T0 - _dt.timedelta(seconds=500)), "ttl": 300}
        seen_p.write_text(json.dumps(seen))
        f, _ = _issue(c, responder, name, key=k2)
        assert f.problem_type == "badCSR"
        seen["seen"][f"_25._tcp.{name}. 3 1 1 {spki2}"]["first_seen"] = iso(T0 - _dt.timedelta(seconds=700))
        seen_p.write_text(json.dumps(seen))
        f, _ = _issue(c, responder, name, key=k2)
        assert f.json["status"] == "valid", f.body
    finally:
        seen_p.unlink()


def test_revoke_by_certificate_key_and_refusals(env):
    import josepy as jose
    from cryptography import x509 as _x509
    from cryptography.hazmat.primitives import serialization

    from acme_client import b64u

    ca, srv, responder, eab = env
    c = _client(env)
    f, key = _issue(c, responder, "rev.mx.example.org")
    pem = c.post(f.json["certificate"], None).body
    cert = _x509.load_pem_x509_certificate(pem)
    der = b64u(cert.public_bytes(serialization.Encoding.DER))
    url = c.dir["revokeCert"]
    # another account may not revoke it
    c2 = _client(env)
    assert c2.post(url, {"certificate": der}).problem_type == "unauthorized"
    # a JWS by the certificate's own key (jwk) may
    r = c.post(url, {"certificate": der, "reason": 1}, use_jwk=True, key=key, jwk=jose.JWKEC(key=key))
    assert r.status == 200, r.body
    e = next(e for e in _index(ca) if int(e["serial"], 16) == cert.serial_number)
    assert e["status"] == "revoked"
    assert c.post(url, {"certificate": der}).problem_type == "alreadyRevoked"


def test_rate_limit_per_account(tmp_path):
    ca = make_ca(tmp_path / "store", "example.org", extra=["--profile", str(_ip_profile(tmp_path))])
    srv = AcmeProcess(ca, "--orders-per-hour", "2", "--no-eab")
    try:
        c = Client(srv.directory, str(ca.root))
        assert c.register().status == 201  # --no-eab: no binding needed
        assert c.new_order("a.example.org").status == 201
        assert c.new_order("b.example.org").status == 201
        r = c.new_order("c.example.org")
        assert r.status == 429 and r.problem_type == "rateLimited" and "--orders-per-hour" in r.json["detail"]
        # without a binding, the CA's domains still rule
        assert c.new_order("mail.example.com").problem_type == "rejectedIdentifier"
    finally:
        srv.stop()


def _ip_profile(d):
    p = d / "ip.toml"
    p.write_text(IP_PROFILE)
    return p
