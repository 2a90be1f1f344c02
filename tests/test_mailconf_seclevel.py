"""The TLS profile's optional ``security_level`` (issue #13 A): the strict profile puts
@SECLEVEL=2 on Postfix's cipher lists and Dovecot's ssl_cipher_list, so that neither signs a
TLS 1.2 key exchange with SHA-1 (internet.nl's "hash function for key exchange"; the live
effect is asserted in tests/interop/test_check_tlsfeatures.py::test_hardened_postfix_has_none)."""

from __future__ import annotations

from conftest import make_ca
from test_mailconf import HOST, params, render


def test_strict_sets_security_level_2_intermediate_does_not(tmp_path):
    ca = make_ca(tmp_path / "store", "example.org")
    ca.issue(HOST)
    strict = params(render(ca, HOST, "--profile", "strict", "--postfix-version", "3.7"))
    assert strict["tls_high_cipherlist"] == "aNULL:-aNULL:HIGH:@STRENGTH:@SECLEVEL=2"
    assert "tls_medium_cipherlist" not in strict  # strict uses the "high" grade only
    inter = params(render(ca, HOST, "--profile", "intermediate", "--postfix-version", "3.7"))
    assert "tls_high_cipherlist" not in inter and "tls_medium_cipherlist" not in inter
    # (A real Postfix starts with it: the strict fixtures of tests/interop use this output.)
    text = ca.ok("postfix", HOST, "--profile", "strict", "--postfix-version", "3.7", "--format", "snippet").stdout
    assert "@SECLEVEL=2" in text
    dove = ca.ok("dovecot", HOST, "--profile", "strict", "--dovecot-version", "2.3").stdout
    assert [ln for ln in dove.splitlines() if ln.startswith("ssl_cipher_list")][0].endswith(":@SECLEVEL=2")
    assert "@SECLEVEL" not in ca.ok("dovecot", HOST, "--profile", "intermediate", "--dovecot-version", "2.3").stdout


def test_security_level_from_a_profile_file(tmp_path):
    ca = make_ca(tmp_path / "store", "example.org")
    ca.issue(HOST)
    f = tmp_path / "p.toml"
    f.write_text('[tls]\nciphers_opportunistic = "medium"\nsecurity_level = 3\n')
    p = params(render(ca, HOST, "--profile", f, "--postfix-version", "3.7"))
    assert p["tls_medium_cipherlist"] == "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH:@SECLEVEL=3"
    assert p["tls_high_cipherlist"] == "aNULL:-aNULL:HIGH:@STRENGTH:@SECLEVEL=3"
    f.write_text('[tls]\nsecurity_level = 9\n')
    r = ca.run("postfix", HOST, "--profile", f)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "security_level" in err[0] and "1 to 5" in err[0], r.stderr
