"""Issue #10 (keys, passphrases, profiles, inputs): each attack of the security review,
reproduced as described, now harmless.

Root key: a new root key is PKCS#8 PBES2 / PBKDF2-HMAC-SHA256 with >= 600,000 rounds
(was 2,048), readable by `openssl pkey` and by cryptography; old stores keep working and
`mailca ca rewrap-key` upgrades them in place; weak new passphrases are refused.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import pytest

from conftest import PASSPHRASE, base_env, make_ca, require, run, snapshot, tool

MIN_ROUNDS = 600_000


def pbkdf2_rounds(key_path: Path) -> tuple[str, int]:
    """(asn1parse text, PBKDF2 iteration count) of an encrypted PKCS#8 file, read by openssl."""
    require("openssl")
    r = tool("openssl", "asn1parse", "-in", key_path)
    assert r.returncode == 0, r.stderr
    assert ":PBES2" in r.stdout and ":PBKDF2" in r.stdout, r.stdout
    # salt OCTET STRING, then the iteration count: the first INTEGER of the structure
    m = re.search(r"prim: INTEGER\s+:([0-9A-F]+)", r.stdout)
    assert m, r.stdout
    return r.stdout, int(m.group(1), 16)


def downgrade_to_2048_rounds(store: Path, passphrase: str = PASSPHRASE) -> bytes:
    """Make the store look like one made by mailca before this change (cryptography's
    BestAvailableEncryption: PBKDF2-SHA256, 2,048 rounds) - same key, same passphrase."""
    from cryptography.hazmat.primitives import serialization as s

    p = store / "ca" / "root.key"
    key = s.load_pem_private_key(p.read_bytes(), passphrase.encode())
    old = key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.BestAvailableEncryption(passphrase.encode()))
    p.write_bytes(old)
    os.chmod(p, 0o600)
    return old


# ------------------------------------------------------------------ root key KDF
def test_new_root_key_uses_600k_pbkdf2_rounds_and_both_openssl_and_cryptography_open_it(tmp_path):
    from cryptography.hazmat.primitives import serialization as s
    from cryptography import x509

    ca = make_ca(tmp_path / "store")
    key_path = ca.dir / "ca" / "root.key"
    text, rounds = pbkdf2_rounds(key_path)
    assert rounds >= MIN_ROUNDS, f"PBKDF2 rounds {rounds}"
    assert ":hmacWithSHA256" in text and ":aes-256-cbc" in text
    assert "INTEGER           :0800" not in text  # the review's 2,048
    # openssl opens it with the passphrase, and its public key is the root certificate's
    r = tool("openssl", "pkey", "-in", key_path, "-passin", f"pass:{PASSPHRASE}", "-pubout")
    assert r.returncode == 0, r.stderr
    root = x509.load_pem_x509_certificate(ca.root.read_bytes())
    root_pub = root.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode()
    assert r.stdout.strip() == root_pub.strip()
    # ... and refuses without the right one
    assert tool("openssl", "pkey", "-in", key_path, "-passin", "pass:wrong passphrase", "-noout").returncode != 0
    # cryptography opens it too
    key = s.load_pem_private_key(key_path.read_bytes(), PASSPHRASE.encode())
    assert key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode() == root_pub
    with pytest.raises(ValueError):
        s.load_pem_private_key(key_path.read_bytes(), b"wrong passphrase")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    # the intermediate stays unencrypted (unattended renewal) and 0600
    assert b"ENCRYPTED" not in ca.intermediate_key.read_bytes()


def test_old_2048_round_store_keeps_working_and_rewrap_key_upgrades_it(tmp_path):
    ca = make_ca(tmp_path / "store")
    key_path = ca.dir / "ca" / "root.key"
    old = downgrade_to_2048_rounds(ca.dir)
    assert pbkdf2_rounds(key_path)[1] == 2048
    # an old store still works: the root key loads for renew-intermediate, with a hint
    r = ca.run("ca", "renew-intermediate")
    assert r.returncode == 0, r.stderr
    assert "2,048 iterations" in r.stderr and "mailca ca rewrap-key" in r.stderr
    # rewrap in place, same passphrase
    r = ca.run("ca", "rewrap-key", "--json")
    assert r.returncode == 0, r.stderr
    import json

    info = json.loads(r.stdout)
    assert info["iterations"] >= MIN_ROUNDS and "2,048" in info["before"] and info["passphrase_changed"] is False
    new = key_path.read_bytes()
    assert new != old
    assert pbkdf2_rounds(key_path)[1] >= MIN_ROUNDS
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    leftovers = [p.name for p in (ca.dir / "ca").iterdir() if "pre-rewrap" in p.name or p.name.startswith(".tmp-")]
    assert leftovers == []  # the backup is removed once the new key is verified
    assert tool("openssl", "pkey", "-in", key_path, "-passin", f"pass:{PASSPHRASE}", "-noout").returncode == 0
    # the upgraded key is used as before, and no longer triggers the hint
    r = ca.run("ca", "renew-intermediate")
    assert r.returncode == 0, r.stderr
    assert "rewrap-key" not in r.stderr


def test_rewrap_key_with_wrong_passphrase_changes_nothing(tmp_path):
    ca = make_ca(tmp_path / "store")
    downgrade_to_2048_rounds(ca.dir)
    before = snapshot(ca.dir)
    r = ca.run("ca", "rewrap-key", env=base_env(MAILCA_PASSPHRASE="not the passphrase at all"))
    assert r.returncode == 2 and "wrong passphrase" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(ca.dir) == before


def test_rewrap_key_to_a_new_passphrase(tmp_path):
    ca = make_ca(tmp_path / "store")
    downgrade_to_2048_rounds(ca.dir)
    key_path = ca.dir / "ca" / "root.key"
    new_pw = tmp_path / "new-pw"
    new_pw.write_text("plum-rocket-tundra-7-velvet\n")
    r = ca.run("ca", "rewrap-key", "--new-passphrase-file", new_pw)
    assert r.returncode == 0, r.stderr
    assert tool("openssl", "pkey", "-in", key_path, "-passin", f"file:{new_pw}", "-noout").returncode == 0
    assert tool("openssl", "pkey", "-in", key_path, "-passin", f"pass:{PASSPHRASE}", "-noout").returncode != 0
    assert pbkdf2_rounds(key_path)[1] >= MIN_ROUNDS
    r = ca.run("ca", "renew-intermediate", "--passphrase-file", new_pw, env=base_env(MAILCA_PASSPHRASE=None))
    assert r.returncode == 0, r.stderr


def test_rewrap_key_refuses_a_weak_new_passphrase_and_keeping_a_weak_old_one(tmp_path):
    ca = make_ca(tmp_path / "store")
    weak = tmp_path / "weak"
    weak.write_text("12345678\n")
    before = snapshot(ca.dir)
    r = ca.run("ca", "rewrap-key", "--new-passphrase-file", weak)
    assert r.returncode == 2 and "new passphrase is refused" in r.stderr and "12345678" not in r.stderr
    assert snapshot(ca.dir) == before
    # a store whose (old, pre-policy) passphrase is weak: rewrapping under it is refused
    downgrade_to_2048_rounds(ca.dir)
    from cryptography.hazmat.primitives import serialization as s

    p = ca.dir / "ca" / "root.key"
    key = s.load_pem_private_key(p.read_bytes(), PASSPHRASE.encode())
    p.write_bytes(key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.BestAvailableEncryption(b"12345678")))
    before = snapshot(ca.dir)
    r = ca.run("ca", "rewrap-key", env=base_env(MAILCA_PASSPHRASE="12345678"))
    assert r.returncode == 2 and "--new-passphrase-file" in r.stderr
    assert snapshot(ca.dir) == before


def test_rewrap_key_on_an_unencrypted_root_says_so(tmp_path):
    ca = make_ca(tmp_path / "store", extra=["--no-root-passphrase"])
    r = ca.run("ca", "rewrap-key")
    assert r.returncode == 2 and "not encrypted" in r.stderr


# ------------------------------------------------------------ passphrase policy
WEAK = {
    "8 spaces": " " * 8,
    "8 digits": "12345678",
    "12 spaces": " " * 12,
    "all digits": "839201748362",
    "all same": "zzzzzzzzzzzzzz",
    "alphabet run": "abcdefghijklmn",
    "digit run": "1234567890123",
    "keyboard row": "qwertyuiopasdf",
    "reverse run": "zyxwvutsrqponm",
    "repeated pattern": "abc1abc1abc1abc1",
    "top word + digits": "Password2024!",
    "top word repeated": "iloveyouiloveyou",
    "few characters": "abababababbbaa",
}


@pytest.mark.parametrize("label", sorted(WEAK))
def test_init_refuses_weak_passphrases(tmp_path, label):
    store = tmp_path / "store"
    r = run(["--dir", store, "init", "--domain", "example.org"], env=base_env(MAILCA_PASSPHRASE=WEAK[label]))
    assert r.returncode == 2, (label, r.stderr)
    assert r.stderr.startswith("mailca: error: the new passphrase is refused") and r.stderr.count("\n") == 1
    assert "at least 12 characters" in r.stderr  # says what would pass
    if WEAK[label].strip():
        assert WEAK[label] not in r.stderr  # never echoes the passphrase
    assert not (store / "ca").exists()


def test_init_weak_passphrase_from_file_refused_too(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("letmein12345\n")
    r = run(["--dir", tmp_path / "s", "init", "--domain", "example.org", "--passphrase-file", pw],
            env=base_env(MAILCA_PASSPHRASE=None))
    assert r.returncode == 2 and "most common passwords" in r.stderr


@pytest.mark.parametrize("good", [PASSPHRASE, "Tr0ub4dor&3-xyzzy", "demo"])
def test_policy_accepts_the_passphrases_tests_and_demo_use(tmp_path, good):
    if good == "demo":  # scripts/demo.sh: head -c 24 /dev/urandom | base64
        good = base64.b64encode(os.urandom(24)).decode()
    r = run(["--dir", tmp_path / "s", "init", "--domain", "example.org"], env=base_env(MAILCA_PASSPHRASE=good))
    assert r.returncode == 0, r.stderr
