"""testssl.sh --add-ca on 25, 587 and 465 of the Debian-like server after 'mailca deploy' (issue
#11): zero MEDIUM+ findings, cert_revocation included.  Its own file so that the two pytest
workers run it beside the rest of tests/test_deploy.py (it is the longest test of the suite)."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import tool
from postfix_harness import PostfixServer
from test_deploy import DEBIAN_MASTER_CF, HOST, USERS, debian_main_cf, deploy, mailca, snakeoil

pytestmark = pytest.mark.slow


@pytest.fixture
def crl_http(tmp_path):
    """A plain-HTTP server on 127.0.0.1 publishing a directory (where 'mailca crl --out' writes)."""
    import functools
    import http.server
    import threading

    from postfix_harness import free_port

    pub = tmp_path / "www"
    pub.mkdir()
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(pub))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield pub, f"http://127.0.0.1:{port}/ca.crl"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_testssl_rates_the_deployed_server_clean(tmp_path, crl_http):
    """testssl.sh --add-ca on 25, 587 and 465 of a Debian-like server after 'mailca deploy':
    zero MEDIUM+ findings, cert_revocation included (the leaf names the CRL, served over HTTP)."""
    import urllib.request

    testssl = "testssl"
    pub, url = crl_http
    store = tmp_path / "store"
    mailca(store, "init", "--org", "Test Mail", "--domain", "example.org", "--crl-url", url)
    mailca(store, "issue", HOST)
    mailca(store, "crl", "--out", pub / "ca.crl")
    with urllib.request.urlopen(url, timeout=10) as resp:  # the CRL really is served there
        der = resp.read()
    v = subprocess.run(["openssl", "crl", "-inform", "DER", "-noout", "-verify", "-CAfile",
                        str(store / "ca" / "intermediate.crt")], input=der, capture_output=True, timeout=30)
    assert v.returncode == 0 and b"verify OK" in v.stderr + v.stdout, v.stderr
    snake = snakeoil(tmp_path / "snakeoil")
    with PostfixServer(tmp_path / "pf", main_cf=debian_main_cf(snake), master_cf=DEBIAN_MASTER_CF,
                       users=USERS, keep_chroot=True, imap_cert=snake) as srv:
        deploy(store, srv)
        leaf = (store / "certs" / HOST / "ecdsa-p256" / "live" / "cert.pem")
        assert url in tool("openssl", "x509", "-in", leaf, "-noout", "-ext", "crlDistributionPoints").stdout
        # the three audits side by side (each testssl.sh run mostly waits on its openssl children)
        runs = {}
        for svc, starttls in (("smtp", "smtp"), ("submission", "smtp"), ("submissions", None)):
            out = tmp_path / f"testssl-{svc}.json"
            args = [testssl, "--quiet", "--warnings", "off", "--color", "0", "--nodns", "none", "--ip", "127.0.0.1",
                    "--connect-timeout", "5", "--openssl-timeout", "5", "--add-ca", str(store / "ca" / "root.crt"),
                    "--jsonfile", str(out)]
            args += ["--starttls", starttls] if starttls else []
            runs[svc] = (out, subprocess.Popen([*args, f"{HOST}:{srv.ports[svc]}"], stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True))
        for svc, (out, proc) in runs.items():
            try:
                log, _ = proc.communicate(timeout=900)
            finally:
                proc.kill()
            assert out.exists(), log[-3000:]
            found = json.loads(out.read_text())
            ids = {f["id"]: f for f in found}
            # testssl.sh lists the CRL URI it found (cert_revocation only appears when there is none)
            cdp = [f for i, f in ids.items() if i.startswith("cert_crlDistributionPoints")]
            assert cdp and url in cdp[0]["finding"], (svc, sorted(i for i in ids if i.startswith("cert")))
            trust = [f for i, f in ids.items() if i.startswith("cert_chain_of_trust")]
            assert trust and all(f["severity"] == "OK" for f in trust), trust
            bad = {f["id"]: (f["severity"], f["finding"]) for f in found
                   if f.get("severity") in ("MEDIUM", "HIGH", "CRITICAL")}
            assert bad == {}, f"{svc}: {bad}"
