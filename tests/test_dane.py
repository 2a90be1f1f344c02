"""`mailca dane` digests against openssl and hash-slinger, and the rekey rollover rules
(2 x TTL since the next record was first printed; MAILCA_NOW is the clock)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat

import pytest

import datetime as dt

from conftest import T0 as CLOCK0, base_env, iso, make_ca, require, run, snapshot, tool

HOST = "mail.example.org"
BASE = CLOCK0 + dt.timedelta(days=10)  # ten days after the CA and its certificates were made
T0 = iso(BASE)


def t(**delta) -> str:
    """BASE plus an offset (the rekey clock of these tests)."""
    return iso(BASE + dt.timedelta(**delta))


def at(ts: str) -> dict:
    return base_env(MAILCA_NOW=ts)


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    ca = make_ca(tmp_path_factory.mktemp("dane") / "store", "example.org")
    ca.issue(HOST, "--san", "smtp.example.org", "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")
    return ca


def records(ca, *args, env=None) -> list[dict]:
    r = ca.run("dane", HOST, "--json", *args, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["records"]


def openssl_spki_sha256(cert_path) -> str:
    """openssl x509 -pubkey | openssl pkey -pubin -outform DER | sha256sum"""
    pub = tool("openssl", "x509", "-in", cert_path, "-noout", "-pubkey", check=True).stdout
    import subprocess

    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub.encode(), capture_output=True,
                         check=True).stdout
    out = subprocess.run(["sha256sum"], input=der, capture_output=True, check=True).stdout.decode()
    return out.split()[0]


def openssl_cert_sha256(cert_path) -> str:
    import subprocess

    der = subprocess.run(["openssl", "x509", "-in", str(cert_path), "-outform", "DER"], capture_output=True, check=True).stdout
    return hashlib.sha256(der).hexdigest()


def test_3_1_1_matches_openssl_and_hash_slinger(dual):
    require("openssl")
    require("tlsa")
    recs = [r for r in records(dual, "--usage", "3") if r["role"] == "current"]
    assert sorted(r["key_type"] for r in recs) == ["ecdsa-p256", "rsa-2048"]
    for rec in recs:
        cert = dual.live(HOST, rec["key_type"]) / "cert.pem"
        assert rec["data"] == openssl_spki_sha256(cert)
        # hash-slinger, offline: --certificate FILE makes it skip the network
        r = tool("tlsa", "--create", "--certificate", cert, "--usage", "3", "--selector", "1", "--mtype", "1",
                 "--port", "25", HOST, timeout=30)
        assert r.returncode == 0, r.stderr
        assert f"_25._tcp.{HOST}. IN TLSA 3 1 1 {rec['data']}" in r.stdout


def test_ta_records_match_openssl(dual):
    inter = dual.dir / "ca" / "intermediate.crt"
    recs = records(dual, "--usage", "2", "--ta-selector", "both")
    got = {r["rdata"][:5]: r["data"] for r in recs}
    assert got == {"2 0 1": openssl_cert_sha256(inter), "2 1 1": openssl_spki_sha256(inter)}
    root = records(dual, "--usage", "2", "--ta", "root")
    assert [r["data"] for r in root] == [openssl_cert_sha256(dual.root)]


def test_zone_lines_ports_and_san_lookup(dual):
    r = dual.ok("dane", "smtp.example.org", "--port", "25", "--port", "465", "--ttl", "300")
    lines = [ln for ln in r.stdout.splitlines() if not ln.startswith(";")]
    # a SAN finds the lineage (mail.example.org); the owner name is the host asked for, since
    # senders look up _25._tcp.<MX host>
    rx = re.compile(r"^_(25|465)\._tcp\.smtp\.example\.org\. 300 IN TLSA ([23]) ([01]) 1 [0-9a-f]{64}$")
    assert lines and all(rx.match(ln) for ln in lines), lines
    assert {rx.match(ln).group(1) for ln in lines} == {"25", "465"}
    assert len(lines) == 2 * 3  # per port: two 3 1 1 (dual) + one 2 0 1
    assert "DNSSEC" in r.stdout


def test_rollover_rules(tmp_path):
    ca = make_ca(tmp_path / "store", "example.org")
    ca.issue(HOST)
    lineage = ca.dir / "certs" / HOST / "ecdsa-p256"
    old = records(ca, "--usage", "3")[0]["data"]

    st = ca.run("rekey", HOST, "--stage", "--json", env=at(T0))
    assert st.returncode == 0, st.stderr
    staged = json.loads(st.stdout)["staged"][0]
    assert stat.S_IMODE(os.stat(lineage / "next-key.pem").st_mode) == 0o600
    assert json.loads((lineage / "next.json").read_text())["first_published"] is None
    # staging twice is refused
    r = ca.run("rekey", HOST, "--stage", env=at(T0))
    assert r.returncode == 3 and "already staged" in r.stderr
    # never printed: commit refused, nothing written
    before = snapshot(ca.dir)
    r = ca.run("rekey", HOST, "--commit", env=at(t(days=1)))
    assert r.returncode == 3 and "never been printed" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert snapshot(ca.dir) == before
    # dane prints current + next; the next digest comes from the key alone
    recs = records(ca, "--usage", "3", "--ttl", "3600", env=at(T0))
    assert [(r["role"], r["data"]) for r in recs] == [("current", old), ("next", staged["spki_sha256"])]
    meta = json.loads((lineage / "next.json").read_text())
    assert meta["first_published"] == T0 and meta["ttl"] == 3600
    # printing again later does not move first_published
    records(ca, "--usage", "3", env=at(t(minutes=30)))
    assert json.loads((lineage / "next.json").read_text())["first_published"] == T0
    # 1 s before 2 x TTL: refused
    before = snapshot(ca.dir)
    r = ca.run("rekey", HOST, "--commit", env=at(t(hours=1, minutes=59, seconds=59)))
    assert r.returncode == 3 and t(hours=2) in r.stderr, r.stderr
    assert snapshot(ca.dir) == before
    # at 2 x TTL: allowed; the new certificate carries the staged key
    r = ca.run("rekey", HOST, "--commit", "--json", env=at(t(hours=2)))
    assert r.returncode == 0, r.stderr
    new = json.loads(r.stdout)["certificates"][0]
    assert new["spki_sha256"] == staged["spki_sha256"] != old
    assert openssl_spki_sha256(ca.live(HOST) / "cert.pem") == staged["spki_sha256"]
    assert not (lineage / "next-key.pem").exists() and not (lineage / "next.json").exists()
    assert [r["data"] for r in records(ca, "--usage", "3")] == [staged["spki_sha256"]]


def test_force_abort_and_ttl_growth(tmp_path):
    ca = make_ca(tmp_path / "store", "example.org")
    ca.issue(HOST)
    lineage = ca.dir / "certs" / HOST / "ecdsa-p256"
    ca.ok("rekey", HOST, "--stage", env=at(T0))
    records(ca, "--ttl", "600", env=at(T0))
    records(ca, "--ttl", "7200", env=at(t(minutes=5)))  # a larger TTL printed later counts
    r = ca.run("rekey", HOST, "--commit", env=at(t(minutes=30)))
    assert r.returncode == 3 and "7200" in r.stderr and t(hours=4) in r.stderr, r.stderr
    ca.ok("rekey", HOST, "--abort")
    assert not (lineage / "next-key.pem").exists()
    assert [r["role"] for r in records(ca, "--usage", "3")] == ["current"]
    # --force commits early, with a warning
    ca.ok("rekey", HOST, "--stage", env=at(T0))
    r = ca.run("rekey", HOST, "--commit", "--force", env=at(t(seconds=1)))
    assert r.returncode == 0 and "warning" in r.stderr and "--force" in r.stderr, r.stderr


def test_dual_rollover_stages_both(tmp_path):
    ca = make_ca(tmp_path / "store", "example.org")
    ca.issue(HOST, "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")
    ca.ok("rekey", HOST, "--stage", "--key-type", "rsa-2048", env=at(T0))
    recs = records(ca, "--usage", "3", env=at(T0))
    assert sorted((r["key_type"], r["role"]) for r in recs) == [
        ("ecdsa-p256", "current"), ("rsa-2048", "current"), ("rsa-2048", "next")]


@pytest.mark.parametrize("args,needle", [
    (["dane", "nocert.example.org"], "nocert.example.org"),
    (["dane", HOST, "--port", "70000"], "70000"),
    (["dane", HOST, "--port", "smtp"], "smtp"),
    (["dane", HOST, "--usage", "1"], "--usage"),
    (["dane", HOST, "--ta", "leaf"], "--ta"),
    (["dane", HOST, "--ta-selector", "2"], "--ta-selector"),
    (["dane", HOST, "--ttl", "0"], "--ttl"),
    (["rekey", HOST], "--stage"),
    (["rekey", HOST, "--commit"], "--stage"),
    (["rekey", HOST, "--stage", "--force"], "--force"),
    (["rekey", HOST, "--stage", "--key-type", "rsa-4096"], "rsa-4096"),
    (["rekey", "nocert.example.org", "--stage"], "nocert.example.org"),
])
def test_bad_input(dual, args, needle):
    before = snapshot(dual.dir)
    r = dual.run(*args)
    err = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(err) == 1 and err[0].startswith("mailca: error:") and needle in err[0], r.stderr
    assert snapshot(dual.dir) == before


def test_interrupted_commit_is_recognised(tmp_path):
    """A crash after the new version went live but before the staged files were removed
    leaves next-key.pem == the live key: dane must not print it as 'next', rekey drops it."""
    ca = make_ca(tmp_path / "store", "example.org")
    ca.issue(HOST)
    lineage = ca.dir / "certs" / HOST / "ecdsa-p256"
    cur = records(ca, "--usage", "3")[0]["data"]
    (lineage / "next-key.pem").write_bytes((ca.live(HOST) / "key.pem").read_bytes())
    os.chmod(lineage / "next-key.pem", 0o600)
    (lineage / "next.json").write_text(json.dumps({"spki_sha256": cur, "key_type": "ecdsa-p256",
                                                   "first_published": T0, "ttl": 3600}))
    assert [r["role"] for r in records(ca, "--usage", "3")] == ["current"]
    r = ca.run("rekey", HOST, "--commit")
    assert r.returncode == 3 and "no next key is staged" in r.stderr, r.stderr
    assert not (lineage / "next-key.pem").exists() and not (lineage / "next.json").exists()


def test_ta_after_renew_intermediate_is_the_live_chain_plus_the_coming_one(tmp_path):
    """Issue #12: after 'ca renew-intermediate' the server still sends the old intermediate
    until its leaves are renewed: dane must print that one (and the coming one), and the
    dry run must not print a digest that the real run will never produce."""
    ca = make_ca(tmp_path / "store", "example.org")
    ca.issue(HOST)
    old = openssl_cert_sha256(ca.intermediate)
    dry = ca.ok("ca", "renew-intermediate", "--dry-run", "--json")
    assert json.loads(dry.stdout)["new"]["tlsa_2_0_1"] is None
    dry_text = ca.ok("ca", "renew-intermediate", "--dry-run").stdout
    assert re.findall(r"2 0 1 ([0-9a-f]{64})", dry_text) == [old]  # only "remove later": the old one
    real = json.loads(ca.ok("ca", "renew-intermediate", "--json").stdout)
    new = openssl_cert_sha256(ca.intermediate)
    assert new != old and real["new"]["tlsa_2_0_1"] == f"2 0 1 {new}"
    live_chain_ta = openssl_cert_sha256(ca.live(HOST) / "chain.pem")
    assert live_chain_ta == old  # the server still sends the old intermediate
    recs = records(ca, "--usage", "2")
    assert [(r["role"], r["data"]) for r in recs] == [("ta", old), ("ta-next", new)]
    # 2 1 1: same key, one record
    assert len(records(ca, "--usage", "2", "--ta-selector", "1")) == 1
    ca.ok("renew", "--all", "--force")
    assert [(r["role"], r["data"]) for r in records(ca, "--usage", "2")] == [("ta", new)]


def test_ttl_is_remembered_for_the_staged_key(tmp_path):
    """Issue #12: a later 'dane' without --ttl must not move the wait to the 3600 s default."""
    ca = make_ca(tmp_path / "store", "example.org")
    ca.issue(HOST)
    ca.ok("rekey", HOST, "--stage", env=at(T0))
    recs = records(ca, "--ttl", "300", env=at(T0))
    assert {r["ttl"] for r in recs} == {300}
    later = ca.run("dane", HOST, "--json", env=at(t(minutes=1)))
    assert later.returncode == 0, later.stderr
    out = json.loads(later.stdout)
    assert out["ttl"] == 300 and {r["ttl"] for r in out["records"]} == {300}
    assert out["rollover"][0]["commit_after"] == t(minutes=10)
    r = ca.run("rekey", HOST, "--commit", env=at(t(minutes=10)))
    assert r.returncode == 0, r.stderr
    assert "DNS not asked" in r.stderr  # the printed-time rule says so
    # no staged key: the default is 3600 again
    assert {r["ttl"] for r in records(ca)} == {3600}


def test_profile_rekey_every_is_validated(tmp_path):
    prof = tmp_path / "p.toml"
    prof.write_text('[rekey]\nevery = "soon"\n')
    r = run(["--dir", tmp_path / "store", "init", "--org", "T", "--domain", "example.org", "--profile", prof])
    assert r.returncode == 2 and "rekey.every" in r.stderr and '"1y"' in r.stderr, r.stderr
    assert not (tmp_path / "store" / "ca").exists()
    ca = make_ca(tmp_path / "store2", "example.org")
    ca.issue(HOST)
    r = ca.run("dane", "rotate", HOST, "--server", "127.0.0.1", "--tsig-key-file", prof, "--resolver", "127.0.0.1")
    assert r.returncode == 2 and "rekey.every" in r.stderr, r.stderr


@pytest.mark.parametrize("args,needle", [
    (["dane", "publish", HOST, "--server", "127.0.0.1@5353", "--tsig-key-file", "{tmp}/missing.key"], "missing.key"),
    (["dane", "publish", HOST, "--server", "127.0.0.1@5353", "--tsig-key-file", "{tmp}/garbage.key"], "has no TSIG key"),
    (["dane", "publish", HOST, "--server", "127.0.0.1@5353", "--tsig-key-file", "{tmp}/md4.key"], "hmac-md4"),
    (["dane", "rotate", HOST, "--every", "soon", "--server", "127.0.0.1", "--tsig-key-file", "{tmp}/garbage.key",
      "--resolver", "127.0.0.1"], "--every 'soon'"),
    (["dane", HOST, "--relative"], "--relative needs --zone"),
    (["check", "--dane", "example.org", "--resolver", "127.0.0.1@9", "--at", "next week"], "--at 'next week'"),
    (["check", "--dane", "exa mple.org", "--resolver", "127.0.0.1@9"], "exa mple.org"),
    (["check", "--dane", "example.org", "--resolver", "dns.example"], "not an IP address"),
    (["rekey", HOST, "--commit", "--resolver", "resolver.example"], "not an IP address"),
])
def test_dns_bad_input_is_one_line_exit_2_nothing_written(dual, tmp_path, args, needle):
    (tmp_path / "garbage.key").write_text("this is not a key\n")
    (tmp_path / "md4.key").write_text('key "k" { algorithm hmac-md4; secret "AAAA"; };\n')
    if args[0] == "rekey":
        dual.ok("rekey", HOST, "--stage")
    before = snapshot(dual.dir)
    try:
        r = dual.run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        assert r.stderr.startswith("mailca: error: ") and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert snapshot(dual.dir) == before
    finally:
        if args[0] == "rekey":
            dual.ok("rekey", HOST, "--abort")
