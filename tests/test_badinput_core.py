"""Bad input to init / issue / sign: a one-line error naming the value, no traceback,
the right exit code (2 bad input, 3 store/state), nothing on stdout, and the store
byte-for-byte unchanged (``snapshot()``: every path, mode, symlink target and content hash).

Every case runs against its own copy of a template store that already holds a CA and
one issued certificate, so a case that wrongly writes cannot spoil the next one.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import base_env, make_ca, require, run, snapshot, tool

USAGE, STORE = 2, 3


@dataclass
class Case:
    id: str
    argv: list  # after "--dir STORE"; "{tmp}" is replaced by the case's scratch dir
    code: int
    message: str  # a fragment the one-line error must contain
    setup: Callable[[Path, Path], None] | None = None  # (store, tmp) -> None
    env: dict = field(default_factory=dict)
    store: str = "copy"  # "copy" of the template, "none" (path that does not exist)


# ------------------------------------------------------------------ setups
def write(rel: str, data: bytes | str):
    def setup(store: Path, tmp: Path):
        p = store / rel
        p.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def remove(rel: str):
    def setup(store: Path, tmp: Path):
        (store / rel).unlink()

    return setup


def profile_file(name: str, text: str | bytes):
    def setup(store: Path, tmp: Path):
        p = tmp / name
        p.write_bytes(text.encode() if isinstance(text, str) else text)

    return setup


def make_dir(name: str):
    def setup(store: Path, tmp: Path):
        (tmp / name).mkdir()

    return setup


def csr(name: str, *req_args: str, tamper: bool = False):
    def setup(store: Path, tmp: Path):
        out = tmp / name
        r = tool("openssl", "req", "-new", "-nodes", "-keyout", tmp / f"{name}.key", "-out", out, *req_args)
        assert r.returncode == 0, r.stderr
        if tamper:  # change one character of the signed subject: the signature no longer fits
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import Encoding

            der = x509.load_pem_x509_csr(out.read_bytes()).public_bytes(Encoding.DER)
            i = der.index(b"mail.example.org")
            der = der[:i] + b"mbil" + der[i + 4:]
            out.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(der)
                            + b"-----END CERTIFICATE REQUEST-----\n")

    return setup


def swap_intermediate_key(store: Path, tmp: Path):
    other = make_ca(tmp / "other", "example.org")
    shutil.copyfile(other.intermediate_key, store / "ca" / "intermediate.key")


EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
LONG_LABEL = "a" * 64 + ".example.org"
LONG_NAME = ".".join(["a" * 63] * 3 + ["b" * 58]) + ".org"  # 254 octets

CASES = [
    # ---- names (issue) -------------------------------------------------------------
    Case("empty-name", ["issue", ""], USAGE, "empty name"),
    Case("label-over-63", ["issue", LONG_LABEL], USAGE, "at most 63"),
    Case("name-over-253", ["issue", LONG_NAME], USAGE, "a DNS name has at most 253"),
    Case("underscore", ["issue", "_smtp.example.org"], USAGE, "underscores are not valid"),
    Case("leading-hyphen", ["issue", "--", "-mail.example.org"], USAGE, "starts or ends with a hyphen"),
    Case("trailing-hyphen", ["issue", "mail-.example.org"], USAGE, "starts or ends with a hyphen"),
    Case("hyphen-in-san", ["issue", "mail.example.org", "--san", "smtp.-example.org"], USAGE, "hyphen"),
    Case("wildcard-not-allowed", ["issue", "*.example.org"], USAGE, "wildcards are not allowed by this profile"),
    Case("wildcard-inner", ["issue", "mail.*.example.org", "--profile", "wildcard"], USAGE, "whole left-most label"),
    Case("wildcard-partial", ["issue", "mail*.example.org", "--profile", "wildcard"], USAGE, "whole left-most label"),
    Case("wildcard-tld", ["issue", "*.org", "--profile", "wildcard"], USAGE, "at least two labels"),
    Case("ip-as-dns-name", ["issue", "192.0.2.25"], USAGE, "is an IP address, not a DNS name; pass it with --ip"),
    Case("ipv6-as-dns-name", ["issue", "mail.example.org", "--san", "2001:db8::25"], USAGE, "is an IP address"),
    Case("mixed-script-idn", ["issue", "pаypal.example.org"], USAGE, "mixes scripts (CYRILLIC, LATIN)"),
    Case("mixed-script-alabel", ["issue", "xn--pypal-4ve.example.org"], USAGE, "mixes scripts"),
    Case("invalid-alabel", ["issue", "xn--zzzz.example.org"], USAGE, "not a valid A-label"),
    Case("outside-constraints", ["issue", "mail.evil.com"], USAGE, "outside this CA's permitted domains"),
    Case("lookalike-suffix", ["issue", "example.org.evil.com"], USAGE, "outside this CA's permitted domains"),
    Case("no-label-boundary", ["issue", "mail.evilexample.org"], USAGE, "outside this CA's permitted domains"),
    Case("one-bad-san", ["issue", "mail.example.org", "--san", "mail.evil.com"], USAGE, "'mail.evil.com' is outside"),
    Case("path-escape-dotdot", ["issue", "../x"], USAGE, "contains '/', '\\' or '..'"),
    Case("path-escape-slash", ["issue", "a/b"], USAGE, "contains '/', '\\' or '..'"),
    Case("path-escape-san", ["issue", "mail.example.org", "--san", "../../etc/passwd"], USAGE, "'..'"),
    Case("path-escape-absolute", ["issue", "/etc/mailca.example.org"], USAGE, "'/'"),
    Case("no-host", ["issue"], USAGE, "no host name given"),
    # ---- key types, days, IPs (issue) ---------------------------------------------
    Case("unknown-key-type", ["issue", "mail.example.org", "--key-type", "dsa-1024"], USAGE, "unknown key type 'dsa-1024'"),
    Case("ed25519-refused", ["issue", "mail.example.org", "--key-type", "ed25519"], USAGE,
         "mail clients and most MTAs do not accept ed25519"),
    Case("same-key-type-twice", ["issue", "mail.example.org", "--key-type", "rsa-2048", "--key-type", "rsa-2048"],
         USAGE, "given twice"),
    Case("two-ecdsa-types", ["issue", "mail.example.org", "--key-type", "ecdsa-p256", "--key-type", "ecdsa-p384"],
         USAGE, "at most one ECDSA and one RSA"),
    Case("days-zero", ["issue", "mail.example.org", "--days", "0"], USAGE, "--days 0 is outside 1..365"),
    Case("days-too-many", ["issue", "mail.example.org", "--days", "10000"], USAGE, "--days 10000 is outside"),
    Case("ip-not-allowed", ["issue", "mail.example.org", "--ip", "192.0.2.25"], USAGE, "does not allow IP addresses"),
    Case("ip-garbage", ["issue", "mail.example.org", "--ip", "999.1.1.1"], USAGE, "'999.1.1.1' is not an IPv4 or IPv6"),
    Case("bad-clock", ["issue", "mail.example.org"], USAGE, "MAILCA_NOW='yesterday'", env={"MAILCA_NOW": "yesterday"}),
    # ---- profiles ------------------------------------------------------------------
    Case("unknown-profile", ["issue", "mail.example.org", "--profile", "nosuch"], USAGE, "unknown certificate profile 'nosuch'"),
    Case("missing-profile-file", ["issue", "mail.example.org", "--profile", "{tmp}/gone.toml"], USAGE, "does not exist"),
    Case("profile-is-a-directory", ["issue", "mail.example.org", "--profile", "{tmp}/dir.toml"], USAGE,
         "is a directory, not a TOML file", setup=make_dir("dir.toml")),
    Case("profile-not-utf8", ["issue", "mail.example.org", "--profile", "{tmp}/latin1.toml"], USAGE,
         "not", setup=profile_file("latin1.toml", b'[subject]\norganization = "M\xfcller"\n')),
    Case("profile-not-toml", ["issue", "mail.example.org", "--profile", "{tmp}/broken.toml"], USAGE,
         "is not valid TOML", setup=profile_file("broken.toml", "[leaf\ndays = 3\n")),
    Case("profile-unknown-key", ["issue", "mail.example.org", "--profile", "{tmp}/p.toml"], USAGE,
         "unknown key 'leaf.lifetime'", setup=profile_file("p.toml", "[leaf]\nlifetime = 30\n")),
    Case("profile-unknown-section", ["issue", "mail.example.org", "--profile", "{tmp}/p.toml"], USAGE,
         "unknown section [server]", setup=profile_file("p.toml", "[server]\ndays = 30\n")),
    Case("profile-wrong-type", ["issue", "mail.example.org", "--profile", "{tmp}/p.toml"], USAGE,
         "'leaf.days' = '90' is invalid; expected an integer", setup=profile_file("p.toml", '[leaf]\ndays = "90"\n')),
    Case("profile-bad-key-type", ["issue", "mail.example.org", "--profile", "{tmp}/p.toml"], USAGE,
         "'leaf.key_types'", setup=profile_file("p.toml", '[leaf]\nkey_types = ["ed25519"]\n')),
    # ---- CSRs (sign) ---------------------------------------------------------------
    Case("csr-bad-signature", ["sign", "{tmp}/bad.csr"], USAGE, "has a bad signature",
         setup=csr("bad.csr", *EC, "-subj", "/CN=mail.example.org", tamper=True)),
    Case("csr-not-a-csr", ["sign", "{tmp}/junk.csr"], USAGE, "is not a PEM or DER certificate signing request",
         setup=profile_file("junk.csr", "hello\n")),
    Case("csr-missing", ["sign", "{tmp}/nope.csr"], USAGE, "cannot read CSR"),
    Case("csr-ed25519", ["sign", "{tmp}/ed.csr"], USAGE, "not accepted by mail clients",
         setup=csr("ed.csr", "-newkey", "ed25519", "-subj", "/CN=mail.example.org")),
    Case("csr-rsa-1024", ["sign", "{tmp}/r.csr"], USAGE, "RSA key size 1024 is not supported",
         setup=csr("r.csr", "-newkey", "rsa:1024", "-subj", "/CN=mail.example.org")),
    Case("csr-outside-constraints", ["sign", "{tmp}/evil.csr"], USAGE, "'mail.evil.com' is outside",
         setup=csr("evil.csr", *EC, "-subj", "/CN=mail.evil.com")),
    Case("csr-underscore-san", ["sign", "{tmp}/u.csr"], USAGE, "underscores",
         setup=csr("u.csr", *EC, "-subj", "/CN=mail.example.org", "-addext", "subjectAltName=DNS:_x.example.org")),
    Case("csr-no-names", ["sign", "{tmp}/n.csr"], USAGE, "no host name given",
         setup=csr("n.csr", *EC, "-subj", "/O=No Names")),
    # ---- store state ---------------------------------------------------------------
    Case("issue-before-init", ["issue", "mail.example.org"], STORE, "no mailca store", store="none"),
    Case("sign-before-init", ["sign", "{tmp}/ok.csr"], STORE, "no mailca store", store="none",
         setup=csr("ok.csr", *EC, "-subj", "/CN=mail.example.org")),
    Case("missing-intermediate-key", ["issue", "mail.example.org"], STORE, "intermediate.key is missing",
         setup=remove("ca/intermediate.key")),
    Case("missing-root-cert", ["issue", "mail.example.org"], STORE, "root.crt is missing", setup=remove("ca/root.crt")),
    Case("corrupt-intermediate-cert", ["issue", "mail.example.org"], STORE, "intermediate.crt is not a valid PEM",
         setup=write("ca/intermediate.crt", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")),
    Case("corrupt-intermediate-key", ["issue", "mail.example.org"], STORE, "is not a readable private key",
         setup=write("ca/intermediate.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")),
    Case("mismatched-intermediate-key", ["issue", "mail.example.org"], STORE, "does not match intermediate.crt",
         setup=swap_intermediate_key),
    Case("corrupt-ca-json", ["issue", "mail.example.org"], STORE, "ca.json is corrupt", setup=write("ca/ca.json", "{")),
    Case("corrupt-index", ["issue", "mail.example.org"], STORE, "index.json is corrupt", setup=write("index.json", "[]")),
    Case("corrupt-index-new-name", ["issue", "new.example.org"], STORE, "index.json is corrupt",
         setup=write("index.json", "{not json")),
    Case("corrupt-index-sign", ["sign", "{tmp}/ok.csr"], STORE, "index.json is corrupt",
         setup=lambda store, tmp: (write("index.json", "{}")(store, tmp),
                                   csr("ok.csr", *EC, "-subj", "/CN=mail.example.org")(store, tmp))),
    Case("init-twice", ["init", "--domain", "example.org"], STORE, "a CA already exists"),
    # ---- the root key passphrase (the one command that loads the root key) ------------
    Case("wrong-root-passphrase", ["ca", "renew-intermediate"], USAGE, "wrong passphrase for",
         env={"MAILCA_PASSPHRASE": "not the passphrase"}),
    Case("empty-root-passphrase", ["ca", "renew-intermediate"], USAGE, "MAILCA_PASSPHRASE is set but empty",
         env={"MAILCA_PASSPHRASE": ""}),
    Case("wrong-root-passphrase-file", ["ca", "renew-intermediate", "--passphrase-file", "{tmp}/pw"], USAGE,
         "wrong passphrase for", env={"MAILCA_PASSPHRASE": None}, setup=profile_file("pw", "not the passphrase\n")),
    Case("no-root-passphrase", ["ca", "renew-intermediate"], USAGE, "no terminal to prompt on",
         env={"MAILCA_PASSPHRASE": None}),
    # ---- init ----------------------------------------------------------------------
    Case("init-org-too-long", ["init", "--domain", "example.org", "--org", "O" * 65], USAGE,
         "must be 1..64 printable characters", store="none"),
    Case("init-org-control-char", ["init", "--domain", "example.org", "--org", "Mail\nInc"], USAGE,
         "'Mail\\nInc' must be 1..64 printable", store="none"),
    Case("init-long-domain-needs-org", ["init", "--domain", "a" * 60 + ".example.org"], USAGE,
         "give --org NAME", store="none"),
    Case("init-ed25519", ["init", "--domain", "example.org", "--key-type", "ed25519"], USAGE, "ed25519", store="none"),
    Case("init-unknown-key-type", ["init", "--domain", "example.org", "--key-type", "rsa-1024"], USAGE,
         "unknown key type 'rsa-1024'", store="none"),
    Case("init-wildcard-domain", ["init", "--domain", "*.example.org"], USAGE, "wildcard", store="none"),
    Case("init-ip-domain", ["init", "--domain", "192.0.2.1"], USAGE, "is an IP address", store="none"),
    Case("init-bad-domain", ["init", "--domain", "exa_mple.org"], USAGE, "domain 'exa_mple.org'", store="none"),
    Case("init-empty-passphrase-env", ["init", "--domain", "example.org"], USAGE, "MAILCA_PASSPHRASE is set but empty",
         env={"MAILCA_PASSPHRASE": ""}, store="none"),
    Case("init-short-passphrase", ["init", "--domain", "example.org"], USAGE, "use at least 12",
         env={"MAILCA_PASSPHRASE": "short"}, store="none"),
    Case("init-no-passphrase-source", ["init", "--domain", "example.org"], USAGE, "no terminal to prompt on",
         env={"MAILCA_PASSPHRASE": None}, store="none"),
    Case("init-empty-passphrase-file", ["init", "--domain", "example.org", "--passphrase-file", "{tmp}/pw"], USAGE,
         "is empty", setup=profile_file("pw", "\n"), store="none"),
    Case("init-missing-passphrase-file", ["init", "--domain", "example.org", "--passphrase-file", "{tmp}/nopw"],
         USAGE, "cannot read --passphrase-file", store="none"),
    Case("init-contradicting-passphrase-options",
         ["init", "--domain", "example.org", "--no-root-passphrase", "--passphrase-file", "{tmp}/pw"], USAGE,
         "contradict", setup=profile_file("pw", "long enough passphrase\n"), store="none"),
    Case("init-bad-profile-country", ["init", "--domain", "example.org", "--profile", "{tmp}/c.toml"], USAGE,
         "'subject.country' = 'Germany'", setup=profile_file("c.toml", '[subject]\ncountry = "Germany"\n'), store="none"),
    Case("init-leaf-outlives-intermediate", ["init", "--domain", "example.org", "--profile", "{tmp}/d.toml"], USAGE,
         "exceeds 'ca.intermediate_days'", setup=profile_file("d.toml", "[ca]\nintermediate_days = 100\n[leaf]\ndays = 200\n"),
         store="none"),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    ca = make_ca(tmp_path_factory.mktemp("tmpl") / "store", "example.org")
    ca.ok("issue", "mail.example.org")
    return ca.dir


def assert_one_line_error(r, code: int, fragment: str):
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.stderr}"
    assert lines[0].startswith("mailca: error: "), lines[0]
    assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert r.returncode == code, f"exit {r.returncode}, expected {code}: {lines[0]}"
    assert r.stdout == "", r.stdout


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, template, tmp_path):
    require("openssl")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    store = tmp_path / "store"
    if case.store == "copy":
        shutil.copytree(template, store, symlinks=True)
    if case.setup:
        case.setup(store, scratch)
    before = snapshot(store)
    scratch_before = snapshot(scratch)
    argv = ["--dir", store] + [a.replace("{tmp}", str(scratch)) if isinstance(a, str) else a for a in case.argv]
    r = run(argv, env=base_env(**case.env))
    assert_one_line_error(r, case.code, case.message)
    assert snapshot(store) == before, "the store changed"
    if case.store == "none":
        assert not store.exists(), "a failed command created the store directory"
    assert snapshot(scratch) == scratch_before, "the command wrote next to its input files"


def test_at_least_thirty_cases():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------------------ unwritable stores
@contextlib.contextmanager
def read_only_dir(path: Path):
    """Make ``path`` unwritable even for root: the immutable attribute (chattr +i), else a
    read-only bind mount.  Root ignores permission bits, so chmod would prove nothing."""
    r = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if r.returncode == 0:
        try:
            yield "chattr +i"
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    r2 = subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)], capture_output=True, text=True)
    if r2.returncode != 0:
        pytest.skip(f"cannot make a directory read-only here (chattr: {r.stderr.strip()}; mount: {r2.stderr.strip()})")
    try:
        yield "read-only bind mount"
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_issue_into_unwritable_store(template, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(template, store, symlinks=True)
    before = snapshot(store)
    with read_only_dir(store):
        r = run(["--dir", store, "issue", "other.example.org"])
        assert_one_line_error(r, STORE, "is not writable")
        # and sign, which has the same path into the store
        req = tmp_path / "r.csr"
        assert tool("openssl", "req", "-new", "-nodes", *EC, "-keyout", tmp_path / "k", "-subj",
                    "/CN=other.example.org", "-out", req).returncode == 0
        r = run(["--dir", store, "sign", req])
        assert_one_line_error(r, STORE, "is not writable")
    assert snapshot(store) == before


def test_init_into_unwritable_parent(tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    with read_only_dir(parent):
        r = run(["--dir", parent / "store", "init", "--domain", "example.org"])
        assert_one_line_error(r, STORE, "permission denied")
    assert list(parent.iterdir()) == []


def test_store_path_below_a_regular_file(tmp_path):
    """A file where a directory is expected: nothing can be created below it."""
    f = tmp_path / "afile"
    f.write_text("not a directory\n")
    r = run(["--dir", f / "store", "init", "--domain", "example.org"])
    assert_one_line_error(r, STORE, "cannot create directory")
    assert f.read_text() == "not a directory\n"
    r = run(["--dir", f / "store", "issue", "mail.example.org"])
    assert r.returncode == STORE and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_store_dir_is_a_file(tmp_path):
    f = tmp_path / "store"
    f.write_text("x")
    r = run(["--dir", f, "init", "--domain", "example.org"])
    assert "Traceback" not in r.stderr
    assert r.returncode == USAGE and "is a file" in r.stderr, r.stderr
    assert f.read_text() == "x"


@pytest.mark.parametrize("argv", [["--dir", "{file}", "issue", "mail.example.org"],
                                  ["issue", "mail.example.org", "--days", "abc"],
                                  ["issue", "mail.example.org", "--bogus"]])
def test_click_usage_errors_are_one_line(tmp_path, argv):
    f = tmp_path / "file"
    f.write_text("x")
    r = run([a.replace("{file}", str(f)) for a in argv])
    assert r.returncode == USAGE and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
