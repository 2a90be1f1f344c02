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


# ----------------------------------------------------- profiles are data, not a search path
def _cert(path: Path):
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes())


def _cdp(cert) -> list[str]:
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [n.value for dp in ext for n in dp.full_name]


PLANTED = """[ca]
root_days = 36500
permitted_ip_ranges = ["0.0.0.0/0", "::/0"]
[crl]
distribution_point = "http://attacker.invalid/x.crl"
"""


def test_a_file_in_the_current_directory_does_not_replace_a_packaged_profile(tmp_path):
    from cryptography import x509

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "dual").write_text(PLANTED)
    (cwd / "default").write_text(PLANTED)
    store = tmp_path / "store"
    r = run(["--dir", store, "init", "--domain", "example.org", "--profile", "dual"], cwd=cwd)
    assert r.returncode == 0, r.stderr
    root = _cert(store / "ca" / "root.crt")
    nc = root.extensions.get_extension_for_class(x509.NameConstraints).value
    assert not [g for g in nc.permitted_subtrees if isinstance(g, x509.IPAddress)]  # nothing widened
    assert {str(g.value) for g in nc.excluded_subtrees} == {"0.0.0.0/0", "::/0"}
    days = (root.not_valid_after_utc - root.not_valid_before_utc).days
    assert days <= 3651, days  # packaged 10 years, not 100
    # the packaged dual profile (ECDSA + RSA) is what was used
    r = run(["--dir", store, "issue", "mail.example.org", "--json"], cwd=cwd)
    assert r.returncode == 0, r.stderr
    import json

    certs = json.loads(r.stdout)["certificates"]
    assert sorted(c["key_type"] for c in certs) == ["ecdsa-p256", "rsa-2048"]
    for c in certs:
        assert _cdp(_cert(Path(c["paths"]["cert"]))) == []  # no attacker CRL URL
    # the default CA, too, ignores ./default
    r = run(["--dir", tmp_path / "s2", "init", "--domain", "example.org"], cwd=cwd)
    assert r.returncode == 0 and "attacker" not in (tmp_path / "s2" / "ca" / "ca.json").read_text()


def test_a_bare_name_that_is_not_packaged_is_refused_even_if_a_file_exists(tmp_path):
    (tmp_path / "mine").write_text("[leaf]\ndays = 30\n")
    r = run(["--dir", tmp_path / "s", "init", "--domain", "example.org", "--profile", "mine"], cwd=tmp_path)
    assert r.returncode == 2 and "unknown certificate profile 'mine'" in r.stderr and "path" in r.stderr
    assert not (tmp_path / "s" / "ca").exists()
    # as a path it is accepted
    r = run(["--dir", tmp_path / "s", "init", "--domain", "example.org", "--profile", "./mine"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_renewal_uses_the_profile_snapshot_not_the_edited_file(tmp_path):
    import json

    ca = make_ca(tmp_path / "store")
    prof = tmp_path / "site.toml"
    prof.write_text("[leaf]\ndays = 30\n")
    r = ca.run("issue", "mail.example.org", "--profile", prof, "--json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)["certificates"][0]
    c1 = _cert(Path(first["paths"]["cert"]))
    assert (c1.not_valid_after_utc - c1.not_valid_before_utc).days == 30
    snaps = list((ca.dir / "ca" / "profiles").glob("*.json"))
    assert len(snaps) == 1 and stat.S_IMODE(snaps[0].stat().st_mode) == 0o644
    # the file is edited after approval: longer life, an attacker's CRL URL, wildcards
    prof.write_text('[leaf]\ndays = 365\nallow_wildcard = true\n[crl]\ndistribution_point = "http://attacker.invalid/c"\n')
    r = ca.run("renew", "mail.example.org", "--force", "--json")
    assert r.returncode == 0, r.stderr
    c2 = _cert(ca.live("mail.example.org") / "cert.pem")
    assert c2.serial_number != c1.serial_number
    assert (c2.not_valid_after_utc - c2.not_valid_before_utc).days == 30
    assert _cdp(c2) == []
    # and with the file gone, renewal still works from the snapshot
    prof.unlink()
    r = ca.run("renew", "mail.example.org", "--force")
    assert r.returncode == 0, r.stderr
    c3 = _cert(ca.live("mail.example.org") / "cert.pem")
    assert (c3.not_valid_after_utc - c3.not_valid_before_utc).days == 30


BAD_PROFILES = {
    "state-newline": ('[subject]\nstate = "Bavaria\\nCN=evil"\n', "'subject.state'"),
    "locality-nul": ('[subject]\nlocality = "Munich\\u0000x"\n', "'subject.locality'"),
    "org-65": ('[subject]\norganization = "' + "O" * 65 + '"\n', "X.520 allows at most 64"),
    "ou-65": ('[subject]\norganizational_unit = "' + "U" * 65 + '"\n', "X.520 allows at most 64"),
    "state-129": ('[subject]\nstate = "' + "S" * 129 + '"\n', "X.520 allows at most 128"),
    "country-3": ('[subject]\ncountry = "DEU"\n', "two-letter"),
    "country-non-ascii": ('[subject]\ncountry = "DÉ"\n', "two-letter"),
    "cdp-non-ascii-host": ('[crl]\ndistribution_point = "http://bücher.example.org/ca.crl"\n', "A-labels"),
    "cdp-space": ('[crl]\ndistribution_point = "http://mail.example.org/ca crl"\n', "' '"),
    "cdp-newline": ('[crl]\ndistribution_point = "http://mail.example.org/\\nx"\n', "'\\n'"),
    "cdp-nul": ('[crl]\ndistribution_point = "http://mail.example.org/\\u0000"\n', "'\\x00'"),
    "cdp-relative": ('[crl]\ndistribution_point = "/ca.crl"\n', "not an http:// URL"),
    "cdp-ftp": ('[crl]\ndistribution_point = "ftp://mail.example.org/ca.crl"\n', "not an http:// URL"),
    "cdp-no-host": ('[crl]\ndistribution_point = "http:///ca.crl"\n', "has no host"),
    "cdp-userinfo": ('[crl]\ndistribution_point = "http://u:p@mail.example.org/c"\n', "user name"),
    "cdp-bad-host": ('[crl]\ndistribution_point = "http://exa_mple..org/c"\n', "invalid host"),
    "ip-everything": ('[ca]\npermitted_ip_ranges = ["0.0.0.0/0"]\n[leaf]\nallow_ip = true\n', "permits every address"),
    "max-sans-0": ('[leaf]\nmax_sans = 0\n', "'leaf.max_sans'"),
}


@pytest.mark.parametrize("label", sorted(BAD_PROFILES))
def test_every_profile_field_is_validated_on_load(tmp_path, label):
    text, fragment = BAD_PROFILES[label]
    p = tmp_path / "p.toml"
    p.write_text(text, encoding="utf-8")
    store = tmp_path / "store"
    r = run(["--dir", store, "init", "--domain", "example.org", "--profile", p])
    assert r.returncode == 2, (label, r.stderr)
    assert r.stderr.startswith("mailca: error: profile ") and r.stderr.count("\n") == 1, r.stderr
    assert fragment in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (store / "ca").exists()


def test_a_good_cdp_url_still_reaches_the_leaf(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('[subject]\nstate = "Baden-Württemberg"\nlocality = "Zürich"\ncountry = "DE"\n'
                 '[crl]\ndistribution_point = "http://xn--bcher-kva.example.org/ca.crl"\n')
    ca = make_ca(tmp_path / "store", extra=["--profile", p])
    c = ca.issue("mail.example.org")[0]
    assert _cdp(_cert(Path(c["paths"]["cert"]))) == ["http://xn--bcher-kva.example.org/ca.crl"]


# ------------------------------------------------------------------ hostile CSRs
def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    ln = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + ln + content


OID_ECDSA_SHA256 = bytes.fromhex("06082a8648ce3d040302")
OID_ECDSA_SHA1 = bytes.fromhex("06072a8648ce3d0401")


def hostile_csr(patch=None, *, sha1: bool = False) -> bytes:
    """A CSR (CN zzzz.example.org, SAN yyyy.example.org) whose CertificationRequestInfo is
    byte-patched by ``patch`` and then properly re-signed with its own key, so the hostile
    encoding is what the signer sees (not a bad signature)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zzzz.example.org")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("yyyy.example.org")]), critical=False)
           .sign(key, hashes.SHA256()))
    tbs = csr.tbs_certrequest_bytes
    if patch:
        new = patch(tbs)
        assert new != tbs and len(new) == len(tbs)
        tbs = new
    sig = key.sign(tbs, ec.ECDSA(hashes.SHA1() if sha1 else hashes.SHA256()))
    alg = _der(0x30, OID_ECDSA_SHA1 if sha1 else OID_ECDSA_SHA256)
    der = _der(0x30, tbs + alg + _der(0x03, b"\x00" + sig))
    b64 = base64.b64encode(der).decode()
    return ("-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
            + "\n-----END CERTIFICATE REQUEST-----\n").encode()




HOSTILE = {
    "cn-bad-utf8": (lambda t: t.replace(b"zzzz.example.org", b"\xff\xfezz.example.org"), "malformed"),
    "san-8bit-ia5": (lambda t: t.replace(b"yyyy.example.org", b"\xe9yyy.example.org"), "malformed"),
    "cn-integer": (lambda t: t.replace(b"\x0c\x10zzzz", b"\x02\x10zzzz"), "malformed subject"),
    "cn-bitstring": (lambda t: t.replace(b"\x0c\x10zzzz", b"\x03\x10\x00zzz"), "malformed subject"),
    "version-5": (lambda t: t[:t.index(b"\x02\x01\x00")] + b"\x02\x01\x04" + t[t.index(b"\x02\x01\x00") + 3:],
                  "version 5"),
}


@pytest.mark.parametrize("label", sorted(HOSTILE))
def test_hostile_csrs_give_one_line_errors_and_sign_nothing(tmp_path, shared_ca, label):
    patch, fragment = HOSTILE[label]
    req = tmp_path / "h.csr"
    req.write_bytes(hostile_csr(patch))
    before = snapshot(shared_ca.dir)
    r = shared_ca.run("sign", req)
    assert r.returncode == 2, (label, r.returncode, r.stderr)
    assert r.stderr.startswith("mailca: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and fragment in r.stderr, r.stderr
    assert r.stdout == ""
    assert snapshot(shared_ca.dir) == before


def test_the_hostile_csr_helper_makes_valid_csrs_when_unpatched(tmp_path, ca):
    req = tmp_path / "ok.csr"
    req.write_bytes(hostile_csr())
    assert tool("openssl", "req", "-in", req, "-verify", "-noout").returncode == 0
    r = ca.run("sign", req, "--json")
    assert r.returncode == 0, r.stderr


def test_sha1_csr_is_refused_by_name(tmp_path, shared_ca):
    req = tmp_path / "sha1.csr"
    req.write_bytes(hostile_csr(sha1=True))
    v = tool("openssl", "req", "-in", req, "-verify", "-noout")
    assert v.returncode == 0, v.stderr  # the signature itself verifies: the refusal is about SHA-1
    before = snapshot(shared_ca.dir)
    r = shared_ca.run("sign", req)
    assert r.returncode == 2 and "signed with SHA-1; make a new CSR with SHA-256" in r.stderr, r.stderr
    assert "altered" not in r.stderr
    assert snapshot(shared_ca.dir) == before


def test_a_trailing_pem_block_is_refused(tmp_path, shared_ca):
    good, other = hostile_csr(), hostile_csr()
    before = snapshot(shared_ca.dir)
    for i, data in enumerate([good + other, good + b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"]):
        req = tmp_path / f"two{i}.csr"
        req.write_bytes(data)
        r = shared_ca.run("sign", req)
        assert r.returncode == 2 and "holds 2 PEM blocks" in r.stderr, r.stderr
    assert snapshot(shared_ca.dir) == before


# ------------------------------------------------------------------ SAN cap, linear time
def _many_sans_csr(n: int) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(f"h{i}.example.org") for i in range(n)]
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName(names), critical=False).sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def test_san_cap_per_csr_and_issue_and_profile_settable(tmp_path):
    ca = make_ca(tmp_path / "store")
    req = tmp_path / "many.csr"
    req.write_bytes(_many_sans_csr(101))
    before = snapshot(ca.dir)
    r = ca.run("sign", req)
    assert r.returncode == 2 and "101 names requested" in r.stderr and "at most 100" in r.stderr, r.stderr
    sans = []
    for i in range(101):
        sans += ["--san", f"s{i}.example.org"]
    r = ca.run("issue", "mail.example.org", *sans)
    assert r.returncode == 2 and "at most 100" in r.stderr, r.stderr
    assert snapshot(ca.dir) == before
    # 100 is fine; a profile may raise or lower the cap
    req.write_bytes(_many_sans_csr(100))
    assert ca.run("sign", req).returncode == 0
    p = tmp_path / "cap.toml"
    p.write_text("[leaf]\nmax_sans = 3\n")
    r = ca.run("issue", "a.example.org", "--san", "b.example.org", "--san", "c.example.org", "--san", "d.example.org",
               "--profile", p)
    assert r.returncode == 2 and "at most 3" in r.stderr


def _sign_many(store_dir: Path, n: int, tag: str) -> float:
    import time

    from mailca.core import certinfo, keys
    from mailca.issuance import ca as camod
    from mailca.storage.store import open_store

    ca = camod.load_ca(open_store(str(store_dir)))
    prof = ca.profile._replace(max_sans=n)  # the in-process way past the CLI cap, to measure growth
    names = [f"{tag}{i}.example.org" for i in range(n)]
    key = keys.generate("ecdsa-p256")
    t = time.perf_counter()
    dns, ips = camod.normalize_request(ca, prof, names, [], [])
    cert = camod.sign_leaf(ca, key.public_key(), dns=dns, ips=ips, days=30, profile=prof, now=certinfo.utcnow())
    elapsed = time.perf_counter() - t
    assert len(cert.extensions.get_extension_for_oid(
        __import__("cryptography").x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value) == n
    return elapsed


def test_signing_time_grows_linearly_with_sans(tmp_path):
    """The review measured 47 s for 8,000 SANs (one full path validation per name, each
    linear in the SANs, plus a list-membership dedupe).  A ratio of two sizes measured in
    the same process, best of three, is independent of the machine's speed: linear growth
    gives ~4 for 4x the names, quadratic ~16; the bound 10 leaves room for a busy machine."""
    ca = make_ca(tmp_path / "store")
    small = min(_sign_many(ca.dir, 1000, f"s{i}-") for i in range(3))
    large = min(_sign_many(ca.dir, 4000, f"l{i}-") for i in range(3))
    assert large / small < 10, (small, large)


def test_one_validation_still_enforces_name_constraints_on_every_san(tmp_path):
    """verify_server_chain validates the path once per kind of name; the name constraints
    are still checked for every SAN: an outside name in the middle of the list is caught."""
    import datetime as dt

    from mailca.core import builders, keys, verify
    from mailca.errors import VerificationError
    from mailca.issuance import ca as camod
    from mailca.storage.store import open_store

    ca = make_ca(tmp_path / "store")
    loaded = camod.load_ca(open_store(str(ca.dir)))
    now = dt.datetime.now(dt.timezone.utc)
    names = ["a.example.org", "b.example.org", "evil.example.com", "c.example.org"]
    leaf = builders.build_leaf(keys.generate("ecdsa-p256").public_key(), issuer_cert=loaded.intermediate,
                               issuer_key=loaded.intermediate_key, dns_names=names, ip_addresses=[],
                               not_before=now - dt.timedelta(minutes=1), not_after=now + dt.timedelta(days=1),
                               serial=2**100 + 1)
    with pytest.raises(VerificationError):
        verify.verify_server_chain(leaf, [loaded.intermediate], loaded.root, names, now=now)
    # and a name the leaf does not carry is refused, even after the first one validated
    ok = builders.build_leaf(keys.generate("ecdsa-p256").public_key(), issuer_cert=loaded.intermediate,
                             issuer_key=loaded.intermediate_key, dns_names=["a.example.org", "b.example.org"],
                             ip_addresses=[], not_before=now - dt.timedelta(minutes=1),
                             not_after=now + dt.timedelta(days=1), serial=2**100 + 3)
    verify.verify_server_chain(ok, [loaded.intermediate], loaded.root, ["a.example.org", "b.example.org"], now=now)
    with pytest.raises(VerificationError, match="does not carry"):
        verify.verify_server_chain(ok, [loaded.intermediate], loaded.root, ["a.example.org", "x.example.org"], now=now)


# ------------------------------------------------------------------ --out/--write outside the store
def test_crl_out_cannot_overwrite_the_stores_private_keys(tmp_path, ca):
    key = ca.dir / "ca" / "intermediate.key"
    link = tmp_path / "innocent.crl"
    link.symlink_to(key)  # a path outside that resolves into the store
    before = snapshot(ca.dir)
    for target in (key, ca.dir / "ca" / "new.crl", link, ca.dir / "index.json"):
        r = ca.run("crl", "--out", target)
        assert r.returncode == 2 and "is inside the store" in r.stderr, (target, r.stderr)
    assert snapshot(ca.dir) == before
    # the next issue still works: the key was not replaced by a CRL
    assert ca.run("issue", "mail.example.org").returncode == 0
    r = ca.run("crl", "--out", tmp_path / "ok.crl")
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def issued_ca(tmp_path_factory):
    """A CA with mail.example.org issued (read-only for the tests using it)."""
    c = make_ca(tmp_path_factory.mktemp("issued") / "store")
    c.ok("issue", "mail.example.org")
    return c


@pytest.mark.parametrize("argv", [
    ["schedule", "--systemd", "--write", "{store}"],
    ["schedule", "--cron", "--write", "{store}/ca"],
    ["postfix", "mail.example.org", "--write", "{store}/certs"],
    ["postfix", "mail.example.org", "--write", "{store}/new/dir"],
    ["bundle", "--out", "{store}/ca"],
], ids=["schedule-store", "schedule-ca", "postfix-certs", "postfix-new-subdir", "bundle-ca"])
def test_every_write_option_refuses_the_store(tmp_path, issued_ca, argv):
    argv = [a.replace("{store}", str(issued_ca.dir)) for a in argv]
    before = snapshot(issued_ca.dir)
    r = issued_ca.run(*argv)
    assert r.returncode == 2, r.stderr
    assert ("inside the store" in r.stderr or "overlaps the store" in r.stderr) and r.stderr.count("\n") == 1
    assert snapshot(issued_ca.dir) == before


def test_bundle_out_parents_are_0755_under_umask_000(tmp_path, shared_ca):
    import subprocess
    import sys

    out = tmp_path / "a" / "b" / "c"
    r = subprocess.run([sys.executable, "-m", "mailca", "--dir", str(shared_ca.dir), "bundle", "--out", str(out)],
                       env=base_env(), capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0))
    assert r.returncode == 0, r.stderr
    for d in (tmp_path / "a", tmp_path / "a" / "b", out):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755, (d, oct(d.stat().st_mode))
    assert all(not (stat.S_IMODE(f.stat().st_mode) & 0o002) for f in out.iterdir())


# ------------------------------------------------------------------ trust install scope
def _self_signed_root(tmp_path: Path, *, constrained: bool) -> Path:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Any Site Root")])
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if constrained:  # DNS-only constraints: any IP address stays possible
        b = b.add_extension(x509.NameConstraints([x509.DNSName("example.org")], None), critical=True)
    p = tmp_path / ("dns-only.crt" if constrained else "unconstrained.crt")
    p.write_bytes(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return p


def _nss_db(tmp_path: Path) -> Path:
    db = tmp_path / "nssdb"
    db.mkdir()
    tool(require("certutil"), "-N", "--empty-password", "-d", f"sql:{db}", check=True)
    return db


def _nss_list(db: Path) -> str:
    return tool("certutil", "-L", "-d", f"sql:{db}").stdout


@pytest.mark.parametrize("constrained", [False, True], ids=["no-constraints", "dns-only"])
def test_trust_install_refuses_an_unconstrained_root_unless_allowed(tmp_path, constrained):
    db = _nss_db(tmp_path)
    cert = _self_signed_root(tmp_path, constrained=constrained)
    env = base_env(MAILCA_NSS_DBS=str(db), HOME=str(tmp_path / "home"))
    before = _nss_list(db)
    r = run(["trust", "install", "--cert", cert, "--nss", "--no-system"], env=env)
    assert r.returncode == 2 and "refusing to trust 'Any Site Root'" in r.stderr and "--allow-unconstrained" in r.stderr
    assert ("ANY host name" if not constrained else "ANY IP address") in r.stderr
    assert _nss_list(db) == before and "Any Site Root" not in _nss_list(db)
    r = run(["trust", "install", "--cert", cert, "--nss", "--no-system", "--allow-unconstrained"], env=env)
    assert r.returncode == 0, r.stderr
    assert "trusted without limits" in r.stderr
    assert "mailca-" in _nss_list(db)


def test_trust_install_shows_the_scope_of_a_mailca_root(tmp_path, shared_ca):
    db = _nss_db(tmp_path)
    env = base_env(MAILCA_NSS_DBS=str(db), HOME=str(tmp_path / "home"))
    r = run(["trust", "install", "--cert", shared_ca.root, "--nss", "--no-system"], env=env)
    assert r.returncode == 0, r.stderr
    assert "scope: This root can only vouch for example.org, example.net" in r.stdout
    assert "for no IP address" in r.stdout
    import json

    r = run(["trust", "install", "--cert", shared_ca.root, "--nss", "--no-system", "--json"], env=env)
    assert json.loads(r.stdout)["scope"]["permitted_dns"] == ["example.org", "example.net"]


# ------------------------------------------------------------------ MAILCA_PASSPHRASE in children
def _spy(bin_dir: Path, name: str, log: Path) -> None:
    """A wrapper on PATH that records its environment, then runs the real program."""
    import shutil

    real = shutil.which(name)
    assert real, name
    bin_dir.mkdir(exist_ok=True)
    w = bin_dir / name
    w.write_text(f"#!/bin/sh\nenv >> '{log}'\necho '--' >> '{log}'\nexec '{real}' \"$@\"\n")
    w.chmod(0o755)


def test_children_never_see_the_passphrase(tmp_path, issued_ca):
    require("postconf")
    require("certutil")
    log = tmp_path / "env.log"
    bin_dir = tmp_path / "bin"
    for name in ("postconf", "certutil", "dovecot"):
        _spy(bin_dir, name, log)
    db = _nss_db(tmp_path)
    env = base_env(PATH=f"{bin_dir}:{os.environ['PATH']}", MAILCA_NSS_DBS=str(db), HOME=str(tmp_path / "home"),
                   MAILCA_SPY_MARKER="visible")
    assert env["MAILCA_PASSPHRASE"] == PASSPHRASE
    r = run(["--dir", issued_ca.dir, "postfix", "mail.example.org"], env=env)
    assert r.returncode == 0, r.stderr
    r = run(["trust", "install", "--cert", issued_ca.root, "--nss", "--no-system"], env=env)
    assert r.returncode == 0, r.stderr
    r = run(["--dir", issued_ca.dir, "dovecot", "mail.example.org"], env=env)
    assert r.returncode == 0, r.stderr
    text = log.read_text()
    assert text.count("--\n") >= 2  # postconf and certutil (at least) ran through the spies
    assert "MAILCA_SPY_MARKER=visible" in text  # the spies do see the environment
    assert "MAILCA_PASSPHRASE" not in text and PASSPHRASE not in text


def _edit_ca_json(store: Path, section: str, key: str, value) -> None:
    """Simulate a store written by an older mailca (before a check existed)."""
    import json

    p = store / "ca" / "ca.json"
    meta = json.loads(p.read_text())
    meta["profile_data"].setdefault(section, {})[key] = value
    p.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def test_renewal_is_not_blocked_by_the_san_cap(tmp_path):
    ca = make_ca(tmp_path / "store")
    ca.ok("issue", "mail.example.org", "--san", "a.example.org", "--san", "b.example.org", "--san", "c.example.org")
    _edit_ca_json(ca.dir, "leaf", "max_sans", 2)  # a cap lower than what an older version issued
    assert "at most 2" in ca.run("issue", "x.example.org", "--san", "y.example.org", "--san", "z.example.org").stderr
    r = ca.run("renew", "mail.example.org", "--force")
    assert r.returncode == 0, r.stderr
    from cryptography import x509

    c = _cert(ca.live("mail.example.org") / "cert.pem")
    assert len(c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == 4


def test_an_old_store_with_a_non_ascii_cdp_gives_one_line_errors(tmp_path):
    """The review: init accepted http://bücher.example.org/..., then every issue crashed with
    'URI values should be passed as an A-label string'.  init now refuses it (see
    test_every_profile_field_is_validated_on_load); a store made before still fails cleanly."""
    ca = make_ca(tmp_path / "store")
    _edit_ca_json(ca.dir, "crl", "distribution_point", "http://bücher.example.org/ca.crl")
    before = snapshot(ca.dir)
    r = ca.run("issue", "mail.example.org")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "A-labels" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert snapshot(ca.dir) == before
