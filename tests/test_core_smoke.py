"""Fast CLI round trip of the core: init, issue, sign, --json fields, the live symlink
swap and the index.  Runs the real `mailca` in a subprocess and checks the results
with openssl (fingerprints, SPKI digests, key/cert pairs)."""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
import re
from pathlib import Path

from conftest import PASSPHRASE, require, run, tool

HEX64 = re.compile(r"^[0-9a-f]{64}$")
FPR = re.compile(r"^([0-9A-F]{2}:){31}[0-9A-F]{2}$")


def iso(s: str) -> _dt.datetime:
    return _dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)


def openssl_fpr(path) -> str:
    out = tool("openssl", "x509", "-in", path, "-noout", "-fingerprint", "-sha256").stdout
    return out.strip().split("=", 1)[1]


def openssl_spki_sha256(path) -> str:
    pub = tool("openssl", "x509", "-in", path, "-noout", "-pubkey").stdout
    der = base64.b64decode("".join(l for l in pub.splitlines() if not l.startswith("-----")))
    return hashlib.sha256(der).hexdigest()


def index(ca) -> list[dict]:
    return json.loads((ca.dir / "index.json").read_text())["certs"]


def test_init_json_fields(tmp_path):
    require("openssl")
    store = tmp_path / "store"
    r = run(["--dir", store, "init", "--domain", "Example.ORG", "--domain", "bücher.de", "--org", "Smoke Mail", "--json"])
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert set(info) >= {"dir", "domains", "root", "intermediate", "profile"}
    assert info["dir"] == str(store)
    assert info["domains"] == ["example.org", "xn--bcher-kva.de"]  # normalised, A-labels
    assert info["profile"] == "default"
    root, inter = info["root"], info["intermediate"]
    assert root["key_encrypted"] is True
    assert root["path"] == str(store / "ca" / "root.crt") and root["key"] == str(store / "ca" / "root.key")
    assert inter["path"] == str(store / "ca" / "intermediate.crt")
    assert root["sha256_fingerprint"] == openssl_fpr(root["path"])
    assert inter["sha256_fingerprint"] == openssl_fpr(inter["path"])
    now = _dt.datetime.now(_dt.timezone.utc)
    assert abs((iso(root["not_after"]) - now).days - 3650) <= 1  # 10 years
    assert abs((iso(inter["not_after"]) - now).days - 1825) <= 1  # 5 years
    # the certificates say what the JSON says: CA, pathlen, constraints, subject
    text = tool("openssl", "x509", "-in", inter["path"], "-noout", "-text").stdout
    assert "CA:TRUE, pathlen:0" in text
    assert "DNS:example.org" in text and "DNS:xn--bcher-kva.de" in text
    assert "O = Smoke Mail" in text
    # human output of the same command on another store
    r = run(["--dir", tmp_path / "other", "init", "--domain", "example.org"])
    assert r.returncode == 0, r.stderr
    assert "Created a CA in" in r.stdout and "root SHA-256:" in r.stdout and "mailca issue" in r.stdout


def test_issue_json_fields_match_the_files(ca):
    require("openssl")
    r = ca.ok("issue", "mail.example.org", "--san", "smtp.example.org", "--san", "bücher.example.org", "--json")
    [c] = json.loads(r.stdout)["certificates"]
    assert set(c) >= {"name", "names", "ips", "key_type", "serial", "not_before", "not_after", "sha256_fingerprint",
                      "spki_sha256", "tlsa_3_1_1", "version", "live_dir", "paths", "archive_dir"}
    assert c["name"] == "mail.example.org"
    assert c["names"] == ["mail.example.org", "smtp.example.org", "xn--bcher-kva.example.org"]
    assert c["ips"] == [] and c["key_type"] == "ecdsa-p256" and c["version"] == 1
    live = ca.live("mail.example.org")
    assert c["live_dir"] == str(live)
    assert c["paths"] == {k: str(live / f"{k}.pem") for k in ("cert", "chain", "fullchain", "key", "keyfullchain")}
    assert c["archive_dir"] == str(ca.dir / "certs" / "mail.example.org" / "ecdsa-p256" / "archive" / "0001")
    # fingerprint, SPKI digest, TLSA and serial agree with openssl's view of cert.pem
    assert FPR.match(c["sha256_fingerprint"]) and c["sha256_fingerprint"] == openssl_fpr(c["paths"]["cert"])
    assert HEX64.match(c["spki_sha256"]) and c["spki_sha256"] == openssl_spki_sha256(c["paths"]["cert"])
    assert c["tlsa_3_1_1"] == f"3 1 1 {c['spki_sha256']}"
    serial = tool("openssl", "x509", "-in", c["paths"]["cert"], "-noout", "-serial").stdout.strip().split("=")[1]
    assert int(serial, 16) == int(c["serial"], 16)
    assert 64 <= int(c["serial"], 16).bit_length() <= 159
    days = (iso(c["not_after"]) - iso(c["not_before"])).total_seconds() / 86400
    assert 365 <= days <= 365.01  # profile days + backdate
    # file contents: fullchain = cert + chain, key matches cert, keyfullchain = key + fullchain
    files = {k: Path(v).read_bytes() for k, v in c["paths"].items()}
    assert files["fullchain"] == files["cert"] + files["chain"]
    assert files["chain"] == ca.intermediate.read_bytes()
    assert files["keyfullchain"] == files["key"] + files["fullchain"]
    assert (live / "fullchain-root.pem").read_bytes() == files["fullchain"] + ca.root.read_bytes()
    k = tool("openssl", "pkey", "-in", c["paths"]["key"], "-pubout").stdout
    assert k and k == tool("openssl", "x509", "-in", c["paths"]["cert"], "-noout", "-pubkey").stdout
    assert b"ENCRYPTED" not in files["key"]  # the mail server reads it unattended


def test_issue_human_output(ca):
    r = ca.ok("issue", "mail.example.org")
    out = r.stdout
    [e] = index(ca)
    assert "Issued ecdsa-p256 certificate for mail.example.org" in out
    assert e["not_after"] in out
    assert ":".join(re.findall("..", e["cert_sha256"].upper())) in out
    assert str(ca.live("mail.example.org") / "fullchain.pem") in out
    assert str(ca.live("mail.example.org") / "key.pem") in out
    assert "BEGIN" not in out and "PRIVATE" not in out  # never print key material


def test_live_symlink_swap_and_index(ca):
    first = ca.issue("mail.example.org")[0]
    live = ca.live("mail.example.org")
    assert live.is_symlink() and os.readlink(live) == "archive/0001"
    old_cert = (live / "cert.pem").read_bytes()
    old_archive = Path(first["archive_dir"])

    second = ca.issue("mail.example.org", "--san", "smtp.example.org", "--replace")[0]
    assert second["version"] == 2
    assert os.readlink(live) == "archive/0002"  # relative link, swapped in place
    assert Path(second["archive_dir"]) == old_archive.parent / "0002"
    new_cert = (live / "cert.pem").read_bytes()
    assert new_cert != old_cert
    assert (old_archive / "cert.pem").read_bytes() == old_cert  # the old version is kept intact
    assert second["serial"] != first["serial"] and second["spki_sha256"] != first["spki_sha256"]
    # no temp files or links left behind
    leftovers = [p for p in ca.dir.rglob(".tmp-*")]
    assert not leftovers, leftovers

    entries = index(ca)
    assert [e["version"] for e in entries] == [1, 2]
    for e, c in zip(entries, (first, second)):
        assert e["serial"] == c["serial"] and e["name"] == "mail.example.org" and e["key_type"] == "ecdsa-p256"
        assert e["names"] == c["names"] and e["ips"] == [] and e["status"] == "active"
        assert e["not_before"] == c["not_before"] and e["not_after"] == c["not_after"]
        assert e["spki_sha256"] == c["spki_sha256"]
        assert e["cert_sha256"] == c["sha256_fingerprint"].replace(":", "").lower()
        assert (ca.dir / e["path"] / "cert.pem").is_file()
        assert e["source"] == "issue"
    assert entries[1]["path"] == "certs/mail.example.org/ecdsa-p256/archive/0002"


def test_dual_pair_two_lineages(ca):
    certs = ca.issue("mail.example.org", "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")
    assert [c["key_type"] for c in certs] == ["ecdsa-p256", "rsa-2048"]
    assert os.readlink(ca.live("mail.example.org", "rsa-2048")) == "archive/0001"
    assert os.readlink(ca.live("mail.example.org", "ecdsa-p256")) == "archive/0001"
    assert {e["key_type"] for e in index(ca)} == {"ecdsa-p256", "rsa-2048"}
    text = tool("openssl", "x509", "-in", certs[1]["paths"]["cert"], "-noout", "-text").stdout
    assert "Public-Key: (2048 bit)" in text and "Key Encipherment" in text


def test_sign_csr_round_trip(ca, tmp_path):
    require("openssl")
    key, csr = tmp_path / "k.pem", tmp_path / "r.csr"
    r = tool("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes",
             "-keyout", key, "-subj", "/CN=MX.example.org", "-out", csr)
    assert r.returncode == 0, r.stderr
    r = ca.ok("sign", csr, "--san", "smtp.example.net", "--json")
    [c] = json.loads(r.stdout)["certificates"]
    assert c["names"] == ["mx.example.org", "smtp.example.net"] and c["key_type"] == "ecdsa-p384"
    assert "key" not in c["paths"] and "keyfullchain" not in c["paths"]
    live = Path(c["live_dir"])
    assert not (live / "key.pem").exists()
    assert c["spki_sha256"] == openssl_spki_sha256(c["paths"]["cert"])
    k = tool("openssl", "pkey", "-in", key, "-pubout").stdout
    assert k == tool("openssl", "x509", "-in", c["paths"]["cert"], "-noout", "-pubkey").stdout
    [e] = index(ca)
    assert e["source"] == "csr" and e["serial"] == c["serial"]
    # DER CSR as well
    der = tmp_path / "r.der"
    assert tool("openssl", "req", "-in", csr, "-outform", "DER", "-out", der).returncode == 0
    r = ca.ok("sign", der, "--json")
    assert json.loads(r.stdout)["certificates"][0]["version"] == 2


def test_store_dir_from_environment(tmp_path):
    from conftest import base_env

    env = base_env(MAILCA_DIR=str(tmp_path / "envstore"))
    assert run(["init", "--domain", "example.org"], env=env).returncode == 0
    r = run(["issue", "mail.example.org", "--json"], env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["certificates"][0]["live_dir"].startswith(str(tmp_path / "envstore"))


def test_help_teaches():
    r = run(["--help"])
    assert r.returncode == 0
    for cmd in ("init", "issue", "sign"):
        assert re.search(rf"^\s+{cmd}\s", r.stdout, re.M), r.stdout
    r = run(["issue", "--help"])
    assert r.returncode == 0 and "mailca issue mail.example.org" in r.stdout and "--key-type" in r.stdout
    r = run(["sign", "--help"])
    assert r.returncode == 0 and "openssl req" in r.stdout


def test_root_key_passphrase_from_file(tmp_path):
    """--passphrase-file encrypts the root key with that passphrase (not the env one)."""
    from conftest import base_env

    pf = tmp_path / "pass"
    pf.write_text("another passphrase\n")
    store = tmp_path / "s"
    r = run(["--dir", store, "init", "--domain", "example.org", "--passphrase-file", pf],
            env=base_env(MAILCA_PASSPHRASE=None))
    assert r.returncode == 0, r.stderr
    key = store / "ca" / "root.key"
    assert tool("openssl", "pkey", "-in", key, "-passin", "pass:another passphrase", "-noout").returncode == 0
    assert tool("openssl", "pkey", "-in", key, "-passin", f"pass:{PASSPHRASE}", "-noout").returncode != 0


def test_long_and_blank_org_names(tmp_path):
    """A 60-character --org fits O (<= 64); the CA common names are shortened to stay within
    64 characters.  A blank --org falls back to the first domain."""
    long_org = "Mail Cooperative of the Example Organisation e.V. Berlin"  # 56 characters
    r = run(["--dir", tmp_path / "a", "init", "--domain", "example.org", "--org", long_org])
    assert r.returncode == 0, r.stderr
    subj = tool("openssl", "x509", "-in", tmp_path / "a" / "ca" / "intermediate.crt", "-noout", "-subject",
                "-nameopt", "multiline").stdout
    cn = [l.split("=", 1)[1].strip() for l in subj.splitlines() if l.strip().startswith("commonName")][0]
    assert len(cn) <= 64 and cn.endswith("Mail Intermediate CA")
    assert f"organizationName          = {long_org}" in subj
    r = run(["--dir", tmp_path / "b", "init", "--domain", "example.org", "--org", "   "])
    assert r.returncode == 0, r.stderr
    subj = tool("openssl", "x509", "-in", tmp_path / "b" / "ca" / "root.crt", "-noout", "-subject").stdout
    assert "O = example.org, CN = example.org Root CA" in subj


def test_very_long_names(tmp_path):
    """Names near the 253-octet limit: init (whose self-test name would not fit below such a
    domain) and a wildcard certificate (verified through a one-label stand-in) both work."""
    domain = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 48]) + ".org"  # 244 octets
    assert len(domain) == 244
    store = tmp_path / "s"
    r = run(["--dir", store, "init", "--domain", domain, "--org", "Long"])
    assert r.returncode == 0, r.stderr
    r = run(["--dir", store, "issue", "*." + domain, "--profile", "wildcard", "--json"])
    assert r.returncode == 0, r.stderr
    r = run(["--dir", store, "issue", "x" * 8 + "." + domain, "--json"])  # 253 octets exactly
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["certificates"][0]["name"]) == 253


def test_reissue_of_a_live_host_is_refused_without_replace(ca):
    """A second 'issue' for a host with a live certificate would change its key (breaking
    TLSA 3 1 1) and could drop names: refused, store unchanged, unless --replace."""
    from conftest import snapshot

    first = ca.issue("mail.example.org", "--san", "smtp.example.org")[0]
    before = snapshot(ca.dir)
    r = ca.run("issue", "mail.example.org")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "already has a live certificate" in r.stderr
    assert "renew mail.example.org --force" in r.stderr and "--replace" in r.stderr
    assert snapshot(ca.dir) == before
    # batch lines follow the same rule
    batch = ca.dir.parent / "batch.txt"
    batch.write_text("mail.example.org\nnew.example.org\n")
    r = ca.run("issue", "--batch", batch, "--json")
    assert r.returncode == 2 and "1 batch line(s) failed" in r.stderr
    assert [c["name"] for c in json.loads(r.stdout)["certificates"]] == ["new.example.org"]
    # a CSR for the host would leave live/ without key.pem: refused too
    csr = ca.dir.parent / "m.csr"
    tool("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", ca.dir.parent / "m.key", "-subj", "/CN=mail.example.org", "-out", csr, check=True)
    r = ca.run("sign", csr)
    assert r.returncode == 2 and "already has a live certificate" in r.stderr, r.stderr
    assert (ca.live("mail.example.org") / "key.pem").exists()
    # with --replace: a new version with a new key
    second = ca.issue("mail.example.org", "--replace")[0]
    assert second["version"] == 2 and second["spki_sha256"] != first["spki_sha256"]
    # after revocation, issuing again needs no --replace
    ca.ok("revoke", "mail.example.org")
    assert ca.issue("mail.example.org")[0]["version"] == 3
