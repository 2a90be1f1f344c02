"""lego 4.9 (Debian) against `mailca acme serve` on loopback (issue #14): http-01 (--http) and
tls-alpn-01 (--tls), with EAB, then a renewal; every certificate verifies with the mailca root."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from cryptography import x509

from acme_client import IP_PROFILE, AcmeProcess, free_port
from conftest import make_ca, require



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    require("lego")
    d = tmp_path_factory.mktemp("lego")
    prof = d / "ip.toml"
    prof.write_text(IP_PROFILE)
    ca = make_ca(d / "store", "example.org", extra=["--profile", str(prof)])
    http_port, tls_port = free_port(), free_port()
    srv = AcmeProcess(ca, "--http01-port", str(http_port), "--tlsalpn01-port", str(tls_port), "--resolve-to", "127.0.0.1")
    eab = json.loads(ca.ok("acme", "eab", "new", "--allow", "*.mx.example.org", "--json").stdout)
    yield ca, srv, eab, http_port, tls_port, d
    srv.stop()


def lego(setup, name, *args):
    ca, srv, eab, http_port, tls_port, d = setup
    env = dict(os.environ, LEGO_CA_CERTIFICATES=str(ca.root))
    argv = ["lego", "--server", srv.directory, "--email", "a@example.org", "--accept-tos", "--eab", "--kid", eab["kid"],
            f"--hmac={eab['hmac']}", "--domains", name, "--path", str(d / "lego"), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def check(setup, name):
    ca, d = setup[0], setup[-1]
    crt = d / "lego" / "certificates" / f"{name}.crt"
    r = subprocess.run(["openssl", "verify", "-x509_strict", "-verify_hostname", name, "-CAfile", str(ca.root),
                        "-untrusted", str(crt), str(crt)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return x509.load_pem_x509_certificate(crt.read_bytes())


@pytest.mark.parametrize("mode", ["http", "tls"])
def test_lego_run_and_renew(setup, mode):
    http_port, tls_port = setup[3], setup[4]
    name = f"{mode}.mx.example.org"
    ch = ["--http", "--http.port", f"127.0.0.1:{http_port}"] if mode == "http" else \
        ["--tls", "--tls.port", f"127.0.0.1:{tls_port}"]
    r = lego(setup, name, *ch, "run")
    assert r.returncode == 0, r.stdout + r.stderr
    first = check(setup, name)
    r = lego(setup, name, *ch, "renew", "--days", "100000", "--reuse-key", "--no-random-sleep")
    assert r.returncode == 0, r.stdout + r.stderr
    second = check(setup, name)
    assert second.serial_number != first.serial_number
    assert second.public_key().public_numbers() == first.public_key().public_numbers()
    # outside the binding: lego fails with the server's problem document
    r = lego(setup, "mail.example.org", *ch, "run")
    assert r.returncode != 0 and "rejectedIdentifier" in r.stdout + r.stderr
