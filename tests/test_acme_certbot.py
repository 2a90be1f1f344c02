"""certbot 2.1 (Debian) against `mailca acme serve` on loopback (issue #14): certonly with
http-01 and EAB, renewal, the DANE guard (a new-key renewal of a DANE-published name is
refused, --reuse-key passes), certbot revoke -> the next CRL lists the serial."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from cryptography import x509

from acme_client import IP_PROFILE, AcmeProcess, free_port
from conftest import T0, iso, make_ca, require

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    require("certbot")
    d = tmp_path_factory.mktemp("certbot")
    prof = d / "ip.toml"
    prof.write_text(IP_PROFILE)
    ca = make_ca(d / "store", "example.org", extra=["--profile", str(prof)])
    http_port = free_port()
    srv = AcmeProcess(ca, "--http01-port", str(http_port), "--resolve-to", "127.0.0.1")
    eab = json.loads(ca.ok("acme", "eab", "new", "--allow", "mail.example.org", "--json").stdout)
    yield ca, srv, eab, http_port, d
    srv.stop()


def certbot(setup, *args):
    ca, srv, eab, http_port, d = setup
    env = dict(os.environ, REQUESTS_CA_BUNDLE=str(ca.root))
    argv = ["certbot", *args, "--server", srv.directory, "--config-dir", str(d / "cfg"), "--work-dir", str(d / "work"),
            "--logs-dir", str(d / "logs"), "--non-interactive", "--no-random-sleep-on-renew"]
    if args[0] in ("certonly", "renew"):
        argv += ["--preferred-challenges", "http", "--http-01-port", str(http_port), "--http-01-address", "127.0.0.1"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def live(setup):
    d = setup[4] / "cfg" / "live" / "mail.example.org"
    return d, x509.load_pem_x509_certificate((d / "cert.pem").read_bytes())


def verify(setup):
    ca = setup[0]
    d, _ = live(setup)
    r = subprocess.run(["openssl", "verify", "-x509_strict", "-verify_hostname", "mail.example.org", "-CAfile",
                        str(ca.root), "-untrusted", str(d / "chain.pem"), str(d / "cert.pem")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_certbot_certonly_renew_dane_revoke(setup):
    ca, srv, eab, http_port, d = setup
    # no EAB: refused by the server, certbot says why
    r = certbot(setup, "register", "--agree-tos", "-m", "a@example.org")
    assert r.returncode != 0
    assert "external account" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    r = certbot(setup, "certonly", "--standalone", "-d", "mail.example.org", "--agree-tos", "-m", "a@example.org",
                "--eab-kid", eab["kid"], f"--eab-hmac-key={eab['hmac']}")
    assert r.returncode == 0, r.stdout + r.stderr
    verify(setup)
    _, first = live(setup)
    # renewal (a new key: certbot's default)
    r = certbot(setup, "renew", "--force-renewal")
    assert r.returncode == 0, r.stdout + r.stderr
    verify(setup)
    _, second = live(setup)
    assert second.serial_number != first.serial_number
    st = json.loads(ca.ok("status", "--json").stdout)
    row = next(r for r in st["certificates"] if r["name"] == "mail.example.org")
    assert int(row["serial"].replace(":", ""), 16) == second.serial_number and row["source"] == "acme"
    assert "issued over ACME" in ca.ok("status").stdout
    # 'mailca renew' leaves it to certbot
    assert "mail.example.org" not in json.dumps(json.loads(ca.ok("renew", "--force", "--json").stdout).get("renewed"))
    # DANE: the gate has seen the current key's TLSA 3 1 1 at _25._tcp.mail.example.org
    idx = json.loads((ca.dir / "index.json").read_text())["certs"]
    cur = next(e for e in idx if int(e["serial"], 16) == second.serial_number)
    assert cur["source"] == "acme"
    seen = {"version": 1, "seen": {f"_25._tcp.mail.example.org. 3 1 1 {cur['spki_sha256']}":
                                   {"first_seen": iso(T0), "ttl": 300}}}
    p = ca.dir / "dane-seen.json"
    p.write_text(json.dumps(seen))
    os.chmod(p, 0o600)
    before = len(idx)
    r = certbot(setup, "renew", "--force-renewal")
    assert r.returncode != 0
    out = r.stdout + r.stderr + _log(d)
    assert "badCSR" in out and "DANE" in out and "--reuse-key" in out, out[-3000:]
    assert len(json.loads((ca.dir / "index.json").read_text())["certs"]) == before
    r = certbot(setup, "renew", "--force-renewal", "--reuse-key")
    assert r.returncode == 0, r.stdout + r.stderr
    verify(setup)
    _, third = live(setup)
    assert third.public_key().public_numbers() == second.public_key().public_numbers()
    # certbot revoke -> the next CRL lists the serial
    r = certbot(setup, "revoke", "--cert-name", "mail.example.org", "--no-delete-after-revoke", "--reason",
                "superseded")
    assert r.returncode == 0, r.stdout + r.stderr
    ca.ok("crl", "--out", str(d / "ca.crl"), "--format", "pem")
    crl = x509.load_pem_x509_crl((d / "ca.crl").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(third.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(second.serial_number) is None


def _log(d) -> str:
    p = d / "logs" / "letsencrypt.log"
    return p.read_text(errors="replace") if p.exists() else ""
