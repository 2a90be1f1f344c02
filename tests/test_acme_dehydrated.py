"""dehydrated (Debian) against `mailca acme serve` on loopback (issue #14): http-01 with the
challenge files served from WELLKNOWN, EAB, a deploy_cert hook, a forced renewal that keeps the
key (PRIVATE_KEY_RENEW="no", the DANE-safe setting)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from cryptography import x509

from acme_client import IP_PROFILE, AcmeProcess, Http01Responder
from conftest import make_ca, require

pytestmark = pytest.mark.slow


class _Files:
    """The WELLKNOWN directory as the responder's token map."""

    def __init__(self, d):
        self.d = d

    def __contains__(self, t):
        return "/" not in t and (self.d / t).is_file()

    def get(self, t, default=""):
        return (self.d / t).read_text() if t in self else default


def test_dehydrated_http01_hook_and_renewal(tmp_path):
    require("dehydrated")
    prof = tmp_path / "ip.toml"
    prof.write_text(IP_PROFILE)
    ca = make_ca(tmp_path / "store", "example.org", extra=["--profile", str(prof)])
    wk = tmp_path / "wellknown"
    wk.mkdir()
    resp = Http01Responder()
    resp.tokens = _Files(wk)
    srv = AcmeProcess(ca, "--http01-port", str(resp.port), "--resolve-to", "127.0.0.1")
    try:
        _run(tmp_path, ca, srv, wk, resp)
    finally:
        srv.stop()
        resp.close()


def _run(tmp_path, ca, srv, wk, resp):
    eab = json.loads(ca.ok("acme", "eab", "new", "--allow", "mail.example.org", "--json").stdout)
    hook = tmp_path / "hook.sh"
    hook.write_text('#!/bin/sh\n[ "$1" = deploy_cert ] && echo "$2 $4" >> "$(dirname "$0")/deployed.txt"\nexit 0\n')
    hook.chmod(0o755)
    (tmp_path / "dh").mkdir()
    cfg = tmp_path / "config"
    cfg.write_text(f'''CA="{srv.directory}"
CHALLENGETYPE="http-01"
WELLKNOWN="{wk}"
BASEDIR="{tmp_path / 'dh'}"
EAB_KID="{eab['kid']}"
EAB_HMAC_KEY="{eab['hmac']}"
CONTACT_EMAIL="a@example.org"
KEY_ALGO=prime256v1
PRIVATE_KEY_RENEW="no"
HOOK="{hook}"
''')
    env = dict(os.environ, CURL_CA_BUNDLE=str(ca.root))
    run = lambda *a: subprocess.run(["dehydrated", "-f", str(cfg), *a], env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=120)
    r = run("--register", "--accept-terms")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("-c", "-d", "mail.example.org")
    assert r.returncode == 0, r.stdout + r.stderr
    live = tmp_path / "dh" / "certs" / "mail.example.org"
    v = lambda: subprocess.run(["openssl", "verify", "-x509_strict", "-verify_hostname", "mail.example.org",  # noqa: E731
                                "-CAfile", str(ca.root), "-untrusted", str(live / "chain.pem"),
                                str(live / "cert.pem")], capture_output=True, text=True)
    assert v().returncode == 0, v().stdout + v().stderr
    first = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    r = run("-c", "-d", "mail.example.org", "-x")
    assert r.returncode == 0, r.stdout + r.stderr
    assert v().returncode == 0
    second = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    assert second.serial_number != first.serial_number
    assert second.public_key().public_numbers() == first.public_key().public_numbers()
    assert len((tmp_path / "deployed.txt").read_text().splitlines()) == 2
