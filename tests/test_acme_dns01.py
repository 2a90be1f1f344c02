"""dns-01 through a validating resolver (issue #14): Knot serves the signed example.org and the
unsigned example.net, unbound validates (tests/dns_harness.py).  The ACME server accepts the
TXT record only from a DNSSEC-validated answer."""

from __future__ import annotations

import hashlib
import json

import pytest

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
