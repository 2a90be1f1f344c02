"""mailca status (read from the index) and mailca doctor (finds each kind of damage, says how to
fix it; --fix repairs what needs no backup).  Damage is done to a real store on disk."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat

import pytest

from conftest import base_env, require, snapshot, tool


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def doctor(ca, *args):
    r = ca.run("doctor", "--json", *args)
    assert "Traceback" not in r.stderr
    return r, json.loads(r.stdout)


def test_status_fields_and_states(ca):
    a = ca.issue("mail.example.org", "--san", "smtp.example.org")[0]
    ca.issue("imap.example.org", "--key-type", "rsa-2048")
    ca.ok("renew", "imap.example.org", "--force")
    r = ca.ok("status", "--json")
    data = json.loads(r.stdout)
    rows = {(x["name"], x["key_type"]): x for x in data["certificates"]}
    assert set(rows) == {("mail.example.org", "ecdsa-p256"), ("imap.example.org", "rsa-2048")}
    m = rows[("mail.example.org", "ecdsa-p256")]
    assert m["serial"] == a["serial"] and m["names"] == ["mail.example.org", "smtp.example.org"]
    assert m["state"] == "valid" and 364 <= m["days_left"] <= 365
    assert m["tlsa_3_1_1"] == f"3 1 1 {a['spki_sha256']}"
    assert m["sha256_fingerprint"].replace(":", "").lower() == a["sha256_fingerprint"].replace(":", "").lower()
    # the key fingerprint equals openssl's SPKI SHA-256
    openssl = require("openssl")
    der = tool(openssl, "x509", "-in", ca.live("mail.example.org") / "cert.pem", "-noout", "-pubkey").stdout
    import hashlib
    import base64

    body = "".join(x for x in der.splitlines() if not x.startswith("-----"))
    assert hashlib.sha256(base64.b64decode(body)).hexdigest() == m["spki_sha256"]
    assert data["counts"] == {"valid": 2}
    # states over time
    na = dt.datetime.strptime(m["not_after"], "%Y-%m-%dT%H:%M:%SZ")
    st = lambda t: {x["name"]: x["state"] for x in json.loads(  # noqa: E731
        ca.ok("status", "--json", env=base_env(MAILCA_NOW=iso(t))).stdout)["certificates"]}
    assert st(na - dt.timedelta(days=60))["mail.example.org"] == "due"
    assert st(na + dt.timedelta(seconds=1))["mail.example.org"] == "expired"
    allv = json.loads(ca.ok("status", "--json", "--all-versions").stdout)["certificates"]
    assert sorted(x["state"] for x in allv) == ["superseded", "valid", "valid"]
    # text output: one row per cert, names, counts
    text = ca.ok("status").stdout
    assert "mail.example.org" in text and "also: smtp.example.org" in text and "2 valid" in text
    # a name filter (U-label or A-label, any case)
    only = json.loads(ca.ok("status", "MAIL.example.org", "--json").stdout)["certificates"]
    assert [x["name"] for x in only] == ["mail.example.org"]


def test_status_reads_index_only(ca):
    """status must not parse certificates: it works with every cert.pem unreadable."""
    ca.issue("mail.example.org")
    for p in ca.dir.glob("certs/*/*/archive/*/cert.pem"):
        p.write_text("garbage")
    r = ca.ok("status", "--json")
    assert json.loads(r.stdout)["certificates"][0]["state"] == "valid"
    # ... which doctor does notice
    r, d = doctor(ca)
    assert r.returncode == 5 and not d["consistent"]
    assert any("cert.pem" in f["path"] and "corrupt" in f["problem"] for f in d["findings"])


def test_doctor_clean_store(ca):
    ca.issue("mail.example.org", "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")
    r = ca.ok("doctor")
    assert "is consistent." in r.stdout and "ERROR" not in r.stdout and "PENDING" not in r.stdout


def _one(d, level, needle):
    hits = [f for f in d["findings"] if f["level"] == level and needle in f["problem"]]
    assert hits, d["findings"]
    return hits[0]


def test_doctor_missing_key(ca):
    ca.issue("mail.example.org")
    (ca.live("mail.example.org") / "key.pem").unlink()
    r, d = doctor(ca)
    assert r.returncode == 5
    f = _one(d, "error", "private key of mail.example.org (ecdsa-p256) v1 is missing")
    assert f["path"].endswith("archive/0001/key.pem") and "--new-key" in f["fix"]
    # text form says the same in one place
    t = ca.run("doctor")
    assert "ERROR" in t.stdout and "fix:" in t.stdout and "1 problem(s)" in t.stderr


def test_doctor_missing_cert(ca):
    ca.issue("mail.example.org")
    (ca.live("mail.example.org") / "cert.pem").unlink()
    r, d = doctor(ca)
    assert r.returncode == 5
    _one(d, "error", "certificate of mail.example.org (ecdsa-p256) v1 is missing")


def test_doctor_key_mismatch(ca, tmp_path):
    ca.issue("mail.example.org")
    ca.issue("other.example.org")
    os.chmod(ca.live("mail.example.org") / "key.pem", 0o600)
    (ca.live("mail.example.org") / "key.pem").write_bytes((ca.live("other.example.org") / "key.pem").read_bytes())
    r, d = doctor(ca)
    assert r.returncode == 5
    f = _one(d, "error", "does not match the certificate of mail.example.org")
    assert f["path"].endswith("key.pem")


def test_doctor_permissions_and_fix(ca):
    ca.issue("mail.example.org")
    key = ca.live("mail.example.org") / "key.pem"
    os.chmod(key.resolve(), 0o644)
    os.chmod(ca.intermediate_key, 0o640)
    r, d = doctor(ca)
    assert r.returncode == 5
    f = _one(d, "error", "private key file has mode 644")
    assert f["fix"].startswith("chmod 600")
    _one(d, "error", "private key file has mode 640")
    r, d = doctor(ca, "--fix")
    assert r.returncode == 0 and d["consistent"], d
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.intermediate_key.stat().st_mode) == 0o600
    assert any(a.startswith("chmod 600") for a in d["fixed"])


def test_doctor_dangling_live_and_fix(ca):
    ca.issue("mail.example.org")
    live = ca.live("mail.example.org")
    os.unlink(live)
    os.symlink("archive/0009", live)
    r, d = doctor(ca)
    assert r.returncode == 5
    f = _one(d, "error", "dangling: points at archive/0009")
    assert "archive/0001" in f["fix"]
    r, d = doctor(ca, "--fix")
    assert d["consistent"] and os.readlink(live) == "archive/0001"


def test_doctor_live_behind_is_pending_and_fixed(ca):
    ca.issue("mail.example.org")
    ca.ok("renew", "--force")
    live = ca.live("mail.example.org")
    os.unlink(live)
    os.symlink("archive/0001", live)  # what a crash between index and live leaves
    (live.parent / ".tmp-1234-abcd").write_text("half")
    r, d = doctor(ca)
    assert r.returncode == 0 and d["consistent"] and d["pending"] == 2
    _one(d, "pending", "points at archive/0001, the current version is archive/0002")
    _one(d, "pending", "unfinished temp file")
    t = ca.ok("doctor")
    assert "is consistent (2 leftover(s)" in t.stdout
    r, d = doctor(ca, "--fix")
    assert d["consistent"] and d["pending"] == 0
    assert os.readlink(live) == "archive/0002" and not (live.parent / ".tmp-1234-abcd").exists()


def test_doctor_corrupt_index_and_rebuild(ca):
    ca.issue("mail.example.org")
    ca.issue("mx.example.org")
    ca.ok("renew", "mx.example.org", "--force")
    good = json.loads((ca.dir / "index.json").read_text())
    (ca.dir / "index.json").write_text('{"certs": [ {"serial": "ab"')
    before = snapshot(ca.dir)
    r, d = doctor(ca)
    assert r.returncode == 5
    f = _one(d, "error", "corrupt")
    assert "doctor --fix" in f["fix"] and "revocation journal" in f["fix"]
    assert snapshot(ca.dir) == before  # plain doctor writes nothing
    # other commands refuse with a pointer to doctor
    r = ca.run("status")
    assert r.returncode == 3 and "mailca doctor" in r.stderr and "Traceback" not in r.stderr
    r, d = doctor(ca, "--fix")
    assert r.returncode == 0 and d["consistent"], d
    rebuilt = json.loads((ca.dir / "index.json").read_text())
    key = lambda e: (e["path"], e["serial"], e["cert_sha256"], e["spki_sha256"])  # noqa: E731
    assert sorted(map(key, rebuilt["certs"])) == sorted(map(key, good["certs"]))
    assert list(ca.dir.glob("index.json.corrupt-*"))
    # malformed entries count as corruption too
    (ca.dir / "index.json").write_text(json.dumps({"certs": [{"name": "x"}]}))
    r, d = doctor(ca)
    assert r.returncode == 5 and "lacks" in _one(d, "error", "corrupt")["problem"]


def test_doctor_intermediate_key_mismatch(ca, tmp_path):
    openssl = require("openssl")
    p = tool(openssl, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", tmp_path / "k.pem")
    assert p.returncode == 0
    os.chmod(ca.intermediate_key, 0o600)
    ca.intermediate_key.write_bytes((tmp_path / "k.pem").read_bytes())
    r, d = doctor(ca)
    assert r.returncode == 5
    assert any("intermediate.key does not match intermediate.crt" in f["problem"] for f in d["findings"])


def test_doctor_unindexed_version_is_pending(ca):
    ca.issue("mail.example.org")
    idx = json.loads((ca.dir / "index.json").read_text())
    ca.ok("renew", "--force")
    # roll the index back: as if the crash came right after the version dir was renamed
    (ca.dir / "index.json").write_text(json.dumps(idx))
    r, d = doctor(ca)
    assert d["consistent"]
    _one(d, "pending", "complete version not in the index")
    r, d = doctor(ca, "--fix")
    assert d["consistent"] and d["pending"] == 0
    assert len(json.loads((ca.dir / "index.json").read_text())["certs"]) == 2


def test_doctor_no_store(tmp_path):
    from conftest import run

    r = run(["--dir", tmp_path / "nope", "doctor"])
    assert r.returncode == 3 and "no mailca store" in r.stderr
