"""Bad input for mailca revoke / mailca crl: each case gives ONE clear error line naming the
bad value, a non-zero exit, no traceback, and leaves the store byte-for-byte unchanged
(snapshot before == after); an --out FILE that was refused is not created either."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import base_env, make_ca, run, snapshot


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """mail.example.org (ECDSA + RSA pair), smtp.example.org (+ SAN imap.example.org),
    gone.example.org revoked for keyCompromise by the real command."""
    store = tmp_path_factory.mktemp("revoke-bad") / "store"
    make_ca(store, "example.org", extra=["--no-root-passphrase"])
    for args in (["mail.example.org", "--key-type", "ecdsa-p256", "--key-type", "rsa-2048"],
                 ["smtp.example.org", "--san", "imap.example.org"], ["gone.example.org"]):
        r = run(["--dir", store, "issue", *args])
        assert r.returncode == 0, r.stderr
    r = run(["--dir", store, "revoke", "gone.example.org", "--reason", "keyCompromise"])
    assert r.returncode == 0, r.stderr
    return store


@pytest.fixture
def store(template, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(template, dst, symlinks=True)
    return dst


def serials(store: Path) -> dict:
    from cryptography import x509

    out = {e["name"] + "/" + e["key_type"]: e["serial"] for e in json.loads((store / "index.json").read_text())["certs"]}
    for which in ("root", "intermediate"):
        cert = x509.load_pem_x509_certificate((store / "ca" / f"{which}.crt").read_bytes())
        out[which] = format(cert.serial_number, "x")
    return out


# -------------------------------------------------------------- damage helpers
def corrupt_index(s: Path):
    (s / "index.json").write_text("{ not json")


def corrupt_index_no_journal(s: Path):
    corrupt_index(s)
    (s / "crl" / "revocations.tsv").unlink()


def journal_garbage_line(s: Path):
    with open(s / "crl" / "revocations.tsv", "a") as fh:
        fh.write("this is not a journal line\n")


def journal_bad_reason(s: Path):
    with open(s / "crl" / "revocations.tsv", "a") as fh:
        fh.write("1234abcd\t2026-11-01T00:00:00Z\tbogusReason\tx.example.org\tecdsa-p256\t1\n")


def journal_bad_time(s: Path):
    with open(s / "crl" / "revocations.tsv", "a") as fh:
        fh.write("1234abcd\t2026-13-01T00:00:00Z\tsuperseded\tx.example.org\tecdsa-p256\t1\n")


def journal_duplicate(s: Path):
    p = s / "crl" / "revocations.tsv"
    last = p.read_text().splitlines()[-1]
    with open(p, "a") as fh:
        fh.write(last + "\n")


def corrupt_state(s: Path):
    (s / "crl" / "state.json").write_text('{"crl_number": "seven"}')


def missing_intermediate_key(s: Path):
    (s / "ca" / "intermediate.key").unlink()


def foreign_intermediate_key(s: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    k = ec.generate_private_key(ec.SECP256R1())
    p = s / "ca" / "intermediate.key"
    p.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(p, 0o600)


def corrupt_ca_json(s: Path):
    (s / "ca" / "ca.json").write_text("[]")


# (id, args, damage, exit code, words in the one error line).  {serial keys} and {tmp} are
# filled in per case; OUT is a file path that must not appear.
CASES = [
    # --- what to revoke
    ("unknown-name", ["revoke", "nosuch.example.org"], None, 2, "no certificate named nosuch.example.org"),
    ("foreign-name", ["revoke", "www.other.test"], None, 2, "no certificate named www.other.test"),
    ("ambiguous-dual-pair", ["revoke", "mail.example.org"], None, 2, "2 current certificates"),
    ("san-not-a-name", ["revoke", "imap.example.org"], None, 2, "a SAN of smtp.example.org"),
    ("unknown-serial", ["revoke", "abcdef0123456789"], None, 2, "no certificate with serial abcdef0123456789"),
    ("malformed-serial", ["revoke", "xyz:12!"], None, 2, "neither a host name"),
    ("serial-too-long", ["revoke", "1" * 41], None, 2, "longer than 20 octets"),
    ("serial-zero", ["revoke", "00:00"], None, 2, "is zero"),
    ("bad-host-name", ["revoke", "mail..example.org"], None, 2, "'..'"),
    ("ip-address", ["revoke", "192.0.2.25"], None, 2, "'192.0.2.25' is an IP address"),
    ("ipv6-address", ["revoke", "2001:db8::25"], None, 2, "is an IP address"),
    ("no-target", ["revoke"], None, 2, "name what to revoke"),
    ("blank-target", ["revoke", "   "], None, 2, "name what to revoke"),
    ("intermediate-serial", ["revoke", "{intermediate}"], None, 2, "intermediate CA certificate"),
    ("root-serial", ["revoke", "{root}"], None, 2, "root CA certificate"),
    ("unknown-name-dry-run", ["revoke", "nosuch.example.org", "--dry-run"], None, 2, "no certificate named"),
    # --- reasons
    ("unknown-reason", ["revoke", "smtp.example.org", "--reason", "bogus"], None, 2, "unknown revocation reason 'bogus'"),
    ("misspelt-reason", ["revoke", "smtp.example.org", "--reason", "keycompromize"], None, 2, "did you mean keyCompromise"),
    ("numeric-reason", ["revoke", "smtp.example.org", "--reason", "1"], None, 2, "unknown revocation reason '1'"),
    ("ca-compromise", ["revoke", "smtp.example.org", "--reason", "cACompromise"], None, 2, "compromised CA key"),
    ("aa-compromise", ["revoke", "smtp.example.org", "--reason", "aacompromise"], None, 2, "attribute authorities"),
    ("certificate-hold", ["revoke", "smtp.example.org", "--reason", "certificateHold"], None, 2, "permanent"),
    ("remove-from-crl", ["revoke", "smtp.example.org", "--reason", "removeFromCRL"], None, 2, "delta CRL"),
    ("already-revoked-other-reason", ["revoke", "gone.example.org", "--reason", "superseded"], None, 2,
     "already revoked as keyCompromise"),
    ("already-revoked-other-reason-serial", ["revoke", "{gone.example.org/ecdsa-p256}", "--reason", "superseded"], None, 2,
     "already revoked as keyCompromise"),
    # --- key type selection
    ("key-type-with-serial", ["revoke", "{smtp.example.org/ecdsa-p256}", "--key-type", "ecdsa-p256"], None, 2,
     "only apply to a NAME"),
    ("absent-key-type", ["revoke", "smtp.example.org", "--key-type", "rsa-2048"], None, 2, "has no rsa-2048 certificate"),
    ("unknown-key-type", ["revoke", "mail.example.org", "--key-type", "dsa"], None, 2, "unknown key type 'dsa'"),
    ("ed25519-key-type", ["revoke", "mail.example.org", "--key-type", "ed25519"], None, 2, "ed25519"),
    ("key-type-and-all", ["revoke", "mail.example.org", "--key-type", "rsa-2048", "--all-key-types"], None, 2,
     "contradict"),
    # --- damaged store
    ("revoke-corrupt-index", ["revoke", "smtp.example.org"], corrupt_index, 3, "is corrupt"),
    ("crl-corrupt-index-no-journal", ["crl"], corrupt_index_no_journal, 3, "is corrupt"),
    ("crl-journal-garbage", ["crl"], journal_garbage_line, 3, "is malformed"),
    ("revoke-journal-garbage", ["revoke", "smtp.example.org"], journal_garbage_line, 3, "is malformed"),
    ("crl-journal-bad-reason", ["crl"], journal_bad_reason, 3, "unknown reason 'bogusReason'"),
    ("crl-journal-bad-time", ["crl"], journal_bad_time, 3, "is malformed"),
    ("crl-journal-duplicate", ["crl"], journal_duplicate, 3, "both list serial"),
    ("crl-corrupt-state", ["crl"], corrupt_state, 3, "state.json is corrupt"),
    ("revoke-corrupt-state", ["revoke", "smtp.example.org"], corrupt_state, 3, "state.json is corrupt"),
    ("crl-missing-intermediate-key", ["crl"], missing_intermediate_key, 3, "intermediate.key is missing"),
    ("revoke-foreign-intermediate-key", ["revoke", "smtp.example.org"], foreign_intermediate_key, 3, "does not match"),
    ("crl-corrupt-ca-json", ["crl"], corrupt_ca_json, 3, "ca.json is corrupt"),
    # --- crl --out / --format
    ("out-dir-missing", ["crl", "--out", "{tmp}/no/such/dir/ca.crl"], None, 2, "does not exist"),
    ("out-is-directory", ["crl", "--out", "{tmp}"], None, 2, "is a directory"),
    ("out-parent-is-file", ["crl", "--out", "{tmp}/afile/ca.crl"], None, 2, "is not a directory"),
    ("out-unwritable", ["crl", "--out", "{unwritable}/ca.crl"], None, 2, "cannot write"),
    ("out-empty", ["crl", "--out", ""], None, 2, "--out is empty"),
    ("bad-format", ["crl", "--out", "{tmp}/x.crl", "--format", "xml"], None, 2, "'xml' is not a CRL format"),
    ("format-without-out", ["crl", "--format", "der"], None, 2, "only applies to --out"),
]


@pytest.mark.parametrize("cid,args,damage,code,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(store, tmp_path, cid, args, damage, code, words):
    if damage:
        damage(store)
    (tmp_path / "afile").write_text("a file, not a directory\n")
    unwritable = "/sys" if os.geteuid() == 0 else str(tmp_path / "ro")
    if os.geteuid() != 0:
        os.mkdir(unwritable, 0o500)
    subst = {"tmp": str(tmp_path), "unwritable": unwritable}
    if any("{" in a for a in args):
        subst.update(serials(store) if not damage else {})
    argv = []
    for a in args:
        for k, v in subst.items():
            a = a.replace("{" + k + "}", v)
        assert "{" not in a, a
        argv.append(a)
    before = snapshot(store)
    outside_before = sorted(os.listdir(tmp_path))
    r = run(["--dir", store, *argv])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, f"{cid}: exit {r.returncode}, wanted {code}: {r.stderr}"
    assert len(lines) == 1 and lines[0].startswith("mailca: error: "), f"{cid}: not one error line: {r.stderr!r}"
    assert words.lower() in lines[0].lower(), f"{cid}: {words!r} not in {lines[0]!r}"
    assert "Traceback" not in r.stderr + r.stdout
    assert snapshot(store) == before, f"{cid}: the store changed"
    assert sorted(os.listdir(tmp_path)) == outside_before, f"{cid}: something was written next to the store"


@pytest.mark.parametrize("cmd", [["revoke", "mail.example.org"], ["crl"]], ids=["revoke", "crl"])
def test_no_store_and_no_ca(tmp_path, cmd):
    missing = tmp_path / "nothing"
    r = run(["--dir", missing, *cmd])
    assert r.returncode == 3 and "no mailca store" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run(["--dir", empty, *cmd])
    assert r.returncode == 3 and "no CA in" in r.stderr, r.stderr
    assert list(empty.iterdir()) == []


def test_bad_clock(store):
    before = snapshot(store)
    r = run(["--dir", store, "crl"], env=base_env(MAILCA_NOW="yesterday"))
    assert r.returncode == 2 and "MAILCA_NOW='yesterday'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert snapshot(store) == before
