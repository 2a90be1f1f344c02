"""File modes in the store, and the root key's encryption at rest.

Keys 0600 and directories 0700 whatever the caller's umask; the root key is PKCS#8
encrypted (PBES2) and cannot be loaded without its passphrase, by openssl, by
cryptography or by mailca itself, while the right passphrase loads it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PASSPHRASE, base_env, make_ca, require, tool, mailca_argv

KEY_FILES = {"key.pem", "keyfullchain.pem", "keyfullchain-root.pem", "root.key", "intermediate.key"}


def run_with_umask(args, umask: int):
    return subprocess.run([*mailca_argv(), *map(str, args)], env=base_env(), capture_output=True,
                          text=True, timeout=120, preexec_fn=lambda: os.umask(umask))


def modes(store: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(store.lstat().st_mode)}
    for p in store.rglob("*"):
        if not p.is_symlink():
            out[str(p.relative_to(store))] = stat.S_IMODE(p.lstat().st_mode)
    return out


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_modes_whatever_the_umask(tmp_path, umask):
    store = tmp_path / "store"
    r = run_with_umask(["--dir", store, "init", "--domain", "example.org"], umask)
    assert r.returncode == 0, r.stderr
    r = run_with_umask(["--dir", store, "issue", "mail.example.org", "--key-type", "ecdsa-p256",
                        "--key-type", "rsa-2048"], umask)
    assert r.returncode == 0, r.stderr
    req = tmp_path / "r.csr"
    assert tool("openssl", "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-keyout", tmp_path / "k", "-subj", "/CN=csr.example.org", "-out", req).returncode == 0
    r = run_with_umask(["--dir", store, "sign", req], umask)
    assert r.returncode == 0, r.stderr
    m = modes(store)
    problems = []
    seen_keys = set()
    for rel, mode in m.items():
        p = store / rel
        name = p.name
        if p.is_dir():
            if mode != 0o700:
                problems.append(f"dir {rel} is {mode:o}, want 700")
        elif name in KEY_FILES:
            seen_keys.add(name)
            if mode != 0o600:
                problems.append(f"key {rel} is {mode:o}, want 600")
        else:
            if mode & 0o022:
                problems.append(f"{rel} is {mode:o}: group/world writable")
            if name in ("index.json", ".lock") and mode & 0o077:
                problems.append(f"{rel} is {mode:o}: want 600")
    assert seen_keys == KEY_FILES
    assert not problems, "\n".join(problems)
    # a dual pair has two key files, the CSR-signed lineage none
    assert len(list(store.glob("certs/*/*/archive/*/key.pem"))) == 2
    assert not list(store.glob("certs/csr.example.org/*/archive/*/key.pem"))


def test_no_private_key_readable_by_others(tmp_path):
    """Every file that contains 'PRIVATE KEY' is 0600 (a content check, not a name list)."""
    ca = make_ca(tmp_path / "store", "example.org")
    ca.issue("mail.example.org", "--key-type", "rsa-2048")
    found = 0
    for p in ca.dir.rglob("*"):
        if p.is_file() and not p.is_symlink() and b"PRIVATE KEY" in p.read_bytes():
            found += 1
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert found >= 5


@pytest.fixture(scope="module")
def root_key(tmp_path_factory) -> Path:
    require("openssl")
    ca = make_ca(tmp_path_factory.mktemp("perm") / "store", "example.org")
    return ca.dir / "ca" / "root.key"


def test_root_key_is_encrypted_pkcs8(root_key):
    pem = root_key.read_text()
    assert pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    parsed = tool("openssl", "asn1parse", "-in", root_key).stdout
    assert "PBES2" in parsed and "aes-256-cbc" in parsed.lower()


@pytest.mark.parametrize("passin", ["pass:", "pass:wrong passphrase", f"pass:{PASSPHRASE[:-1]}"],
                         ids=["empty", "wrong", "almost"])
def test_openssl_cannot_load_root_key_without_passphrase(root_key, passin):
    r = tool("openssl", "pkey", "-in", root_key, "-passin", passin, "-noout")
    assert r.returncode != 0
    assert "PRIVATE KEY" not in r.stdout


def test_openssl_loads_root_key_with_passphrase(root_key):
    r = tool("openssl", "pkey", "-in", root_key, "-passin", f"pass:{PASSPHRASE}", "-pubout")
    assert r.returncode == 0, r.stderr
    # ... and it is the root certificate's key
    cert = root_key.parent / "root.crt"
    assert r.stdout == tool("openssl", "x509", "-in", cert, "-noout", "-pubkey").stdout


def test_cryptography_and_mailca_refuse_without_passphrase(root_key):
    from cryptography.hazmat.primitives import serialization

    from mailca.core import keys
    from mailca.errors import UsageError

    data = root_key.read_bytes()
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(data, None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(data, b"wrong passphrase")
    with pytest.raises(UsageError, match="is encrypted and no passphrase was given"):
        keys.load_private(str(root_key), None)
    with pytest.raises(UsageError, match="wrong passphrase for"):
        keys.load_private(str(root_key), b"wrong passphrase")
    with pytest.raises(UsageError, match="is encrypted and no passphrase was given"):
        keys.load_private(str(root_key), b"")  # an empty passphrase counts as none
    assert keys.load_private(str(root_key), PASSPHRASE.encode()) is not None


def test_intermediate_key_unencrypted_but_private(root_key):
    inter = root_key.parent / "intermediate.key"
    assert inter.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # unattended renewal
    assert stat.S_IMODE(inter.stat().st_mode) == 0o600
    assert tool("openssl", "pkey", "-in", inter, "-noout", "-passin", "pass:").returncode == 0


def test_no_root_passphrase_is_explicit(tmp_path):
    """Only --no-root-passphrase stores the root key in the clear, and init says so."""
    store = tmp_path / "store"
    from conftest import run

    r = run(["--dir", store, "init", "--domain", "example.org", "--no-root-passphrase"])
    assert r.returncode == 0, r.stderr
    assert "NOT encrypted" in r.stdout
    key = store / "ca" / "root.key"
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_passphrase_never_printed(tmp_path):
    from conftest import run

    r = run(["--dir", tmp_path / "s", "init", "--domain", "example.org", "--json"])
    assert r.returncode == 0
    assert PASSPHRASE not in r.stdout + r.stderr
    for p in (tmp_path / "s").rglob("*"):
        if p.is_file():
            assert PASSPHRASE.encode() not in p.read_bytes(), p
