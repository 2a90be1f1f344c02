"""dns-01 through a validating resolver (issue #14): Knot serves the signed example.org and the
unsigned example.net, unbound validates (tests/dns_harness.py).  The ACME server accepts the
TXT record only from a DNSSEC-validated answer."""

from __future__ import annotations

import hashlib
import json

from acme_client import IP_PROFILE, AcmeProcess, Client, b64u, make_csr
from conftest import make_ca, require
from dns_harness import DnsHarness



def test_dns01_validated_answer_only(tmp_path):
    for t in ("knotd", "knotc", "kdig", "unbound"):
        require(t)
    prof = tmp_path / "ip.toml"
    prof.write_text(IP_PROFILE)
    ca = make_ca(tmp_path / "store", "example.org", "example.net", extra=["--profile", str(prof)])
    with DnsHarness(tmp_path / "dns", "example.org") as h:
        addr, port = h.resolver.split("@")
        srv = AcmeProcess(ca, "--resolver", f"{addr}:{port}")
        try:
            eab = json.loads(ca.ok("acme", "eab", "new", "--allow", "d1.example.org", "--allow", "d2.example.org",
                                   "--allow", "d1.example.net", "--json").stdout)
            c = Client(srv.directory, str(ca.root))
            assert c.register(eab=(eab["kid"], eab["hmac"])).status == 201

            def dns01(name, publish_value=None):
                order = c.new_order(name)
                a = c.post(order.json["authorizations"][0], None).json
                ch = next(x for x in a["challenges"] if x["type"] == "dns-01")
                digest = b64u(hashlib.sha256(c.key_authorization(ch["token"]).encode()).digest())
                zone = name.split(".", 1)[1]
                h.update_direct([f"_acme-challenge.{name}. 15 TXT {publish_value or digest}"]) if zone == "example.org" \
                    else _net(h, name, publish_value or digest)
                return order, c.post(ch["url"], {})

            # a wrong digest: invalid
            _, r = dns01("d2.example.org", publish_value="wrongdigest")
            assert r.json["status"] == "invalid" and r.json["error"]["type"].endswith(":unauthorized"), r.body
            # the right one in the signed zone: valid, and the order is issued
            order, r = dns01("d1.example.org")
            assert r.json["status"] == "valid", r.body
            f = c.finalize(order, make_csr(["d1.example.org"])[0])
            assert f.json["status"] == "valid", f.body
            # the right digest in the unsigned zone: no AD bit, refused
            _, r = dns01("d1.example.net")
            assert r.json["status"] == "invalid", r.body
            assert r.json["error"]["type"].endswith(":dns") and "DNSSEC" in r.json["error"]["detail"], r.body
            assert "ANSWER: 1" in h.kdig("TXT", "_acme-challenge.d1.example.net").stdout  # it is published
        finally:
            srv.stop()


def _net(h, name, value):
    r = h.knotc("primary", "zone-begin", "example.net")
    assert r.returncode == 0, r.stdout + r.stderr
    h.knotc("primary", "zone-set", "example.net", f"_acme-challenge.{name}.", "15", "TXT", value)
    h.knotc("primary", "zone-commit", "example.net")


def test_dane_guard_reads_the_dns(tmp_path):
    """No store state at all: the TLSA records are only in the DNS.  The current key's 3 1 1
    makes a new key refused; the new key's 3 1 1 served everywhere for 2 x TTL lets it pass."""
    import datetime as _dt

    from conftest import T0, base_env, iso

    for t in ("knotd", "knotc", "kdig", "unbound"):
        require(t)
    prof = tmp_path / "ip.toml"
    prof.write_text(IP_PROFILE)
    ca = make_ca(tmp_path / "store", "example.org", extra=["--profile", str(prof)])
    name = "dane.example.org"
    with DnsHarness(tmp_path / "dns", "example.org", unsigned_zone=None) as h:
        addr, port = h.resolver.split("@")
        args = ("--resolver", f"{addr}:{port}", "--ns-port", str(h.port))
        srv = AcmeProcess(ca, *args)
        try:
            eab = json.loads(ca.ok("acme", "eab", "new", "--allow", name, "--json").stdout)
            c = Client(srv.directory, str(ca.root))
            assert c.register(eab=(eab["kid"], eab["hmac"])).status == 201

            def order_with(key):
                order = c.new_order(name)
                a = c.post(order.json["authorizations"][0], None).json
                if a["status"] != "valid":
                    ch = next(x for x in a["challenges"] if x["type"] == "dns-01")
                    digest = b64u(hashlib.sha256(c.key_authorization(ch["token"]).encode()).digest())
                    h.update_direct([f"_acme-challenge.{name}. 15 TXT {digest}"])
                    assert c.post(ch["url"], {}).json["status"] == "valid"
                csr, key = make_csr([name], key)
                return c.finalize(order, csr), key

            f, k1 = order_with(None)
            assert f.json["status"] == "valid", f.body
            # a new key before any TLSA record: fine (nothing published)
            f, k2 = order_with(None)
            assert f.json["status"] == "valid", f.body
            cur = [e for e in json.loads((ca.dir / "index.json").read_text())["certs"] if e["name"] == name][-1]
            h.update_direct([f"_25._tcp.{name}. 15 TLSA 3 1 1 {cur['spki_sha256']}"])
            h.flush_resolver()
            f, k3 = order_with(None)
            assert f.status == 400 and f.problem_type == "badCSR" and "DANE" in f.json["detail"], f.body
            # the same key: fine
            f, _ = order_with(k2)
            assert f.json["status"] == "valid", f.body
            # stage k3's record in the DNS: just published -> still refused; 2 x TTL later -> accepted
            from cryptography.hazmat.primitives import serialization
            spki3 = hashlib.sha256(k3.public_key().public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
            h.update_direct([f"_25._tcp.{name}. 15 TLSA 3 1 1 {spki3}"])
            h.flush_resolver()
            f, _ = order_with(k3)
            assert f.problem_type == "badCSR", f.body
            assert (ca.dir / "dane-seen.json").exists()
            port_ = srv.port
            srv.stop()
            srv = AcmeProcess(ca, *args, port=port_, env=base_env(MAILCA_NOW=iso(T0 + _dt.timedelta(seconds=60))))
            f, _ = order_with(k3)
            assert f.json["status"] == "valid", f.body
        finally:
            srv.stop()
