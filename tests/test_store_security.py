"""The store is a trust boundary (issue #10 item 1, and the store/JSON part of item 5).

Each test replays an attack from the security review against the real CLI: the ownership
attack is prepared by a REAL unprivileged uid (``setpriv --reuid=nobody``), then root's
mailca must refuse with one line (exit 3), write nothing, and leave foreign files alone.
Corrupt store JSON of every shape gives one-line errors, never a traceback, and doctor
never calls consistent a store that other commands refuse.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import base_env, make_ca, require, run, snapshot

# One injected clock for the whole module: the CA is made at NOW and every operation on it
# runs at NOW (or NOW + an offset), never at the machine's "today".
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
NOBODY = 65534


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


ENV = base_env(MAILCA_NOW=iso(NOW))
HOSTS = ("mail.example.org", "imap.example.org", "smtp.example.org")


def mailca(store, *args, env=None):
    return run(["--dir", store, *args], env=env or ENV)


def assert_refused(r, *needles, code=3):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("mailca: error: "), r.stderr
    errs = [ln for ln in lines if ln.startswith("mailca: error")]
    assert len(errs) == 1, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


@pytest.fixture
def base():
    """A directory under /tmp that the unprivileged uid can traverse (pytest's tmp_path
    lives below a 0700 root directory)."""
    d = Path(tempfile.mkdtemp(prefix="mailca-sec-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def new_store(base: Path) -> Path:
    store = base / "store"
    r = run(["--dir", store, "init", "--org", "Test Mail", "--domain", "example.org", "--no-root-passphrase"], env=ENV)
    assert r.returncode == 0, r.stderr
    r = mailca(store, "issue", *HOSTS)
    assert r.returncode == 0, r.stderr
    return store


def lineage(store: Path, name="mail.example.org") -> Path:
    return store / "certs" / name / "ecdsa-p256"


def as_nobody(*argv, check=True):
    require("setpriv")
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *map(str, argv)],
                       capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/"})
    if check:
        assert r.returncode == 0, (argv, r.stdout, r.stderr)
    return r


ATTACKER = textwrap.dedent("""
    # Runs as uid nobody, who owns the store directory: it swaps certs/ for its own tree with
    # its own key and rewrites index.json so that the certificate looks due.
    import hashlib, json, os, subprocess, sys
    store, evil, not_before, not_after = sys.argv[1:5]
    lin = os.path.join(evil, "mail.example.org", "ecdsa-p256")
    vdir = os.path.join(lin, "archive", "0001")
    os.makedirs(vdir)
    key = os.path.join(vdir, "key.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key],
                   check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    spki = hashlib.sha256(der).hexdigest()
    os.symlink("archive/0001", os.path.join(lin, "live"))
    os.rename(os.path.join(store, "certs"), os.path.join(store, "certs.root"))
    os.symlink(evil, os.path.join(store, "certs"))
    entry = {"serial": "1a2b", "name": "mail.example.org", "names": ["mail.example.org", "imap.example.org",
             "smtp.example.org"], "ips": [], "key_type": "ecdsa-p256", "not_before": not_before,
             "not_after": not_after, "spki_sha256": spki, "status": "active", "version": 1,
             "path": "certs/mail.example.org/ecdsa-p256/archive/0001", "profile": "default", "source": "issue"}
    tmp = os.path.join(store, "index.json.new")
    with open(tmp, "w") as fh:
        json.dump({"version": 1, "certs": [entry]}, fh)
    os.replace(tmp, os.path.join(store, "index.json"))
    print(spki)
""")


def test_store_owned_by_unprivileged_user_cannot_steer_root_renew(base):
    """The HIGH finding: a store directory owned by 'nobody'; nobody swaps certs/ for a link to
    their own tree and index.json for one that says their key is due.  Root's unattended
    'renew' (and 'issue') must refuse: no certificate for the attacker's key, nothing written
    into the attacker's tree, nothing chmodded."""
    store = new_store(base)
    os.chown(store, NOBODY, NOBODY)  # the misconfiguration
    evil = base / "evil"
    evil.mkdir(mode=0o755)
    os.chown(evil, NOBODY, NOBODY)
    script = base / "attack.py"
    script.write_text(ATTACKER)
    os.chmod(script, 0o644)
    past = NOW - dt.timedelta(days=400)
    spki = as_nobody("/usr/bin/python3", script, store, evil, iso(past), iso(NOW - dt.timedelta(days=1))).stdout.strip()
    assert len(spki) == 64 and os.path.islink(store / "certs")
    evil_before = snapshot(evil)
    root_before = snapshot(store / "certs.root")

    for args in (("renew",), ("renew", "--force"), ("issue", "mx.example.org"), ("status",)):
        r = mailca(store, *args)
        assert_refused(r, f"owned by uid {NOBODY}", str(store))
    # the attacker's tree is exactly as they left it: no archive/0002, no root-owned file, no chmod
    assert snapshot(evil) == evil_before
    assert not any(p.stat().st_uid == 0 for p in evil.rglob("*") if not p.is_symlink())
    assert snapshot(store / "certs.root") == root_before
    # no certificate anywhere carries the attacker's key
    for p in list(evil.rglob("*.pem")) + list((store / "certs.root").rglob("cert.pem")):
        if p.name == "cert.pem":
            der = subprocess.run(["openssl", "x509", "-in", p, "-noout", "-pubkey"], capture_output=True).stdout
            assert spki not in hashlib.sha256(der).hexdigest()
    assert not list(evil.rglob("cert.pem"))
    # doctor says why, and --fix does not "repair" ownership on its own
    r = mailca(store, "doctor", "--json")
    assert r.returncode == 5 and "Traceback" not in r.stderr
    problems = [f["problem"] for f in json.loads(r.stdout)["findings"]]
    assert any(f"owned by uid {NOBODY}" in p for p in problems), problems
    r = mailca(store, "doctor", "--fix")
    assert_refused(r, "owned by another user")
    assert snapshot(evil) == evil_before


@pytest.mark.parametrize("rel,mode", [("", 0o770), ("", 0o707), ("certs", 0o777), ("ca", 0o720),
                                      ("certs/mail.example.org", 0o777)])
def test_group_or_world_writable_store_dirs_refused(base, rel, mode):
    store = new_store(base)
    target = store / rel
    os.chmod(target, mode)
    before = snapshot(store)
    # a lineage directory is checked when that lineage is read or written (no walk of the
    # whole store on every command); the store's own directories on every command
    args = ("issue", "mail.example.org", "--replace") if rel.startswith("certs/") else ("issue", "mx.example.org")
    assert_refused(mailca(store, *args), "writable by group or others", f"{mode:o}")
    assert_refused(mailca(store, "renew", "--force"), "writable by group or others", f"{mode:o}")
    # read-only commands too: what they print (configs, TLSA records, status) would come from
    # files someone else could have planted ('status' reads only index.json, not the lineage)
    read_only = [("postfix", "mail.example.org"), ("dovecot", "mail.example.org"), ("dane", "mail.example.org")]
    if not rel.startswith("certs/"):
        read_only += [("status",), ("bundle", "--out", str(base / "bundle-out"))]
    for ro in read_only:
        assert_refused(mailca(store, *ro), "writable by group or others", f"{mode:o}")
    assert not (base / "bundle-out").exists()
    assert snapshot(store) == before
    # doctor names it; --fix narrows it (through an O_NOFOLLOW descriptor) and converges
    r = mailca(store, "doctor", "--json")
    assert r.returncode == 5
    assert any("group/others can write" in f["problem"] and f["path"] == str(target)
               for f in json.loads(r.stdout)["findings"])
    r = mailca(store, "doctor", "--fix")
    assert r.returncode == 0, r.stdout + r.stderr
    assert stat.S_IMODE(os.lstat(target).st_mode) == 0o700
    assert mailca(store, "doctor").returncode == 0
    assert mailca(store, "issue", "mx.example.org").returncode == 0


def test_subdirectory_owned_by_other_user_refused(base):
    store = new_store(base)
    os.chown(lineage(store).parent, NOBODY, NOBODY)
    before = snapshot(store)
    for args in (("renew", "--force"), ("issue", "mail.example.org", "--replace")):
        assert_refused(mailca(store, *args), f"owned by uid {NOBODY}")
    assert snapshot(store) == before


def test_world_writable_parent_without_sticky_bit_refused(base):
    (base / "shared").mkdir()
    os.chmod(base / "shared", 0o777)
    r = run(["--dir", base / "shared" / "store", "init", "--domain", "example.org", "--no-root-passphrase"], env=ENV)
    assert_refused(r, "writable by group or others", str(base / "shared"))
    assert not (base / "shared" / "store").exists()
    # the sticky bit (as on /tmp) makes it fine
    os.chmod(base / "shared", 0o1777)
    r = run(["--dir", base / "shared" / "store", "init", "--domain", "example.org", "--no-root-passphrase"], env=ENV)
    assert r.returncode == 0, r.stderr


def test_lock_symlink_creates_nothing_elsewhere(base):
    """A '.lock' symlink made O_CREAT create an empty root-owned 0600 file anywhere."""
    store = new_store(base)
    victim = base / "victim-file"
    os.unlink(store / ".lock")
    os.symlink(victim, store / ".lock")
    before = snapshot(store)
    for args in (("issue", "mx.example.org"), ("renew", "--force"), ("revoke", "mail.example.org")):
        assert_refused(mailca(store, *args), ".lock", "symlink")
        assert not os.path.lexists(victim)
    assert snapshot(store) == before


def test_certs_symlink_no_chmod_no_keys_written(base):
    """A 'certs' symlink made 'issue' chmod a foreign directory to 0700 and write keys into it."""
    store = new_store(base)
    foreign = base / "foreign"
    foreign.mkdir()
    os.chmod(foreign, 0o755)
    (foreign / "keep.txt").write_text("someone else's\n")
    os.rename(store / "certs", base / "certs.real")
    os.symlink(foreign, store / "certs")
    before = snapshot(foreign)
    assert_refused(mailca(store, "issue", "mx.example.org"), "certs", "symlink")
    assert_refused(mailca(store, "renew", "--force"), "symlink")
    assert stat.S_IMODE(os.stat(foreign).st_mode) == 0o755
    assert snapshot(foreign) == before
    assert not list(foreign.rglob("*.pem"))


def test_lineage_name_dir_symlink_refused(base):
    """One level deeper: certs/<name> a link to a foreign directory."""
    store = new_store(base)
    foreign = base / "foreign"
    shutil.copytree(store / "certs" / "mail.example.org", foreign, symlinks=True)
    os.chmod(foreign, 0o755)
    shutil.rmtree(store / "certs" / "mail.example.org")
    os.symlink(foreign, store / "certs" / "mail.example.org")
    before = snapshot(foreign)
    assert_refused(mailca(store, "renew", "--force"), "symlink")
    assert_refused(mailca(store, "issue", "mail.example.org", "--replace"), "symlink")
    assert snapshot(foreign) == before and stat.S_IMODE(os.stat(foreign).st_mode) == 0o755


def test_live_link_pointing_outside_its_lineage(base):
    """Only live -> archive/NNNN is followed; renew must not reuse a key found elsewhere."""
    store = new_store(base)
    lin = lineage(store)
    elsewhere = base / "elsewhere"
    shutil.copytree(lin / "archive" / "0001", elsewhere)
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", elsewhere / "key.pem"], check=True, capture_output=True)
    os.unlink(lin / "live")
    os.symlink(elsewhere, lin / "live")
    before = snapshot(elsewhere)
    r = mailca(store, "renew", "--force", "mail.example.org", env=base_env(MAILCA_NOW=iso(NOW + dt.timedelta(days=1))))
    assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
    assert "not at archive/NNNN" in r.stderr or "outside" in r.stderr, r.stderr
    assert snapshot(elsewhere) == before
    r = mailca(store, "doctor", "--json")
    assert r.returncode == 5
    assert any("outside its lineage" in f["problem"] for f in json.loads(r.stdout)["findings"])
    r = mailca(store, "doctor", "--fix")
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.readlink(lin / "live") == "archive/0001"
    assert mailca(store, "doctor").returncode == 0


@pytest.mark.parametrize("entries", [
    "ABS",                       # an absolute path: every .tmp-* under it was deleted
    ["certs/../../OUTSIDE"],     # '..' out of the store
    ["certs/x/../../../OUTSIDE"],
])
def test_intent_outside_store_never_acted_upon(base, entries):
    store = new_store(base)
    outside = base / "OUTSIDE"
    outside.mkdir()
    (outside / ".tmp-precious").write_text("not mailca's\n")
    (outside / ".tmp-dir").mkdir()
    (outside / ".tmp-dir" / "data").write_text("x\n")
    if entries == "ABS":
        entries = [str(outside)]
    (store / ".intent").write_text(json.dumps(entries))
    os.chmod(store / ".intent", 0o600)
    before = snapshot(outside)
    r = mailca(store, "issue", "mx.example.org")
    assert r.returncode == 0, r.stderr
    assert "ignored journal entries" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(outside) == before
    assert not (store / ".intent").exists()


@pytest.mark.parametrize("content", [b"5", b'"certs/mail.example.org/ecdsa-p256"', b'{"a": 1}', b"[1, null]",
                                     b"[" * 100000, b"\xff\xfe", b"[1e999]"])
def test_corrupt_intent_does_not_block_locking_commands(base, content):
    """An '.intent' of '5' blocked every locking command with a traceback."""
    store = new_store(base)
    # leave a real temp file in a lineage: the whole-store recovery must still clean it
    junk = lineage(store) / "archive" / ".tmp-123-abc"
    junk.write_text("half-written")
    (store / ".intent").write_bytes(content)
    r = mailca(store, "issue", "mx.example.org")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "ignored journal entries" in r.stderr
    assert not junk.exists() and not (store / ".intent").exists()
    assert mailca(store, "doctor").returncode == 0


@pytest.fixture
def suid_file(base):
    p = base / "suid-binary"
    shutil.copy("/bin/true", p)
    os.chmod(p, 0o4755)
    return p


def test_doctor_fix_never_chmods_through_a_link(base, suid_file):
    """A keyfullchain-root.pem symlink to a setuid file: doctor --fix made the file 0600 and
    the finding never converged (exit 5 forever)."""
    store = new_store(base)
    vdir = lineage(store) / "archive" / "0001"
    os.unlink(vdir / "keyfullchain-root.pem")
    os.symlink(suid_file, vdir / "keyfullchain-root.pem")
    r = mailca(store, "doctor", "--json")
    assert r.returncode == 5
    found = [f for f in json.loads(r.stdout)["findings"] if f["path"] == str(vdir / "keyfullchain-root.pem")]
    assert found and "symlink to" in found[0]["problem"], found
    r = mailca(store, "doctor", "--fix", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert stat.S_IMODE(os.stat(suid_file).st_mode) == 0o4755  # the target was not touched
    assert not os.path.lexists(vdir / "keyfullchain-root.pem")
    assert any("removed the symlink" in a for a in json.loads(r.stdout)["fixed"])
    r = mailca(store, "doctor")
    assert r.returncode == 0, r.stdout  # converged
    # other commands ignore nothing silently: with a foreign link back in place they refuse to read it
    os.symlink(suid_file, vdir / "key.pem.link")
    r = mailca(store, "doctor", "--json")
    assert r.returncode == 5 and stat.S_IMODE(os.stat(suid_file).st_mode) == 0o4755


def test_doctor_fix_private_mode_through_link_into_ca(base, suid_file):
    """ca/intermediate.key replaced by a link: every command refuses, doctor reports, and
    the target's mode survives --fix."""
    store = new_store(base)
    os.rename(store / "ca" / "intermediate.key", base / "intermediate.key")
    os.symlink(suid_file, store / "ca" / "intermediate.key")
    assert_refused(mailca(store, "issue", "mx.example.org"), "intermediate.key", "symlink")
    r = mailca(store, "doctor", "--fix")
    assert stat.S_IMODE(os.stat(suid_file).st_mode) == 0o4755
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------- corrupt JSON
def _entry(store) -> dict:
    return json.loads((store / "index.json").read_text())["certs"][0]


INDEX_CASES = {
    "not-json": b"{not json",
    "number": b"5",
    "list": b"[]",
    "certs-number": b'{"certs": 5}',
    "entry-number": b'{"certs": [5]}',
    "entry-empty": b'{"certs": [{}]}',
    "deep": b'{"certs": ' + b"[" * 100000 + b"]" * 100000 + b"}",
    "bad-utf8": b'{"certs": ["\xff"]}',
    "nan": b'{"certs": [NaN]}',
    "huge-int": b'{"certs": [' + b"9" * 5000 + b"]}",
}
ENTRY_CASES = {
    "version-inf": ("version", 1e999),
    "version-huge": ("version", 10 ** 30),
    "version-str": ("version", "1"),
    "version-bool": ("version", True),
    "path-absolute": ("path", "/etc"),
    "path-dotdot": ("path", "certs/../../../tmp/archive/0001"),
    "not-after-garbage": ("not_after", "tomorrow"),
    "not-after-year0": ("not_after", "0000-01-01T00:00:00Z"),
    "not-after-int": ("not_after", 5),
    "names-str": ("names", "mail.example.org"),
    "serial-list": ("serial", ["1"]),
    "status-weird": ("status", {"revoked": True}),
    "name-missing": ("name", None),
}


def _write_index(store, raw: bytes):
    p = store / "index.json"
    p.write_bytes(raw)
    os.chmod(p, 0o600)


def _corrupt_entry(store, field, value):
    data = json.loads((store / "index.json").read_text())
    if value is None:
        del data["certs"][0][field]
    else:
        data["certs"][0][field] = value
    raw = json.dumps(data).encode().replace(b"Infinity", b"1e999")
    _write_index(store, raw)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    d = tmp_path_factory.mktemp("pristine")
    return new_store(d)


def copy_store(pristine, tmp_path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(pristine, dst, symlinks=True)
    return dst


@pytest.mark.parametrize("case", sorted(INDEX_CASES) + sorted(ENTRY_CASES))
def test_corrupt_index_one_line_errors_and_doctor_agrees(pristine, tmp_path, case):
    """Every shape of a corrupt index.json: status/renew/issue/revoke give one line (exit 3),
    doctor calls the store inconsistent (never 'consistent' while status fails), and
    doctor --fix rebuilds it without a traceback, after which status works."""
    store = copy_store(pristine, tmp_path)
    if case in INDEX_CASES:
        _write_index(store, INDEX_CASES[case])
    else:
        _corrupt_entry(store, *ENTRY_CASES[case])
    for args in (("status",), ("status", "--json"), ("renew", "--force"), ("issue", "mx.example.org"),
                 ("revoke", "mail.example.org"), ("dane", "mail.example.org")):
        r = mailca(store, *args)
        assert_refused(r, "index.json", "corrupt")
    r = mailca(store, "doctor", "--json")
    assert r.returncode == 5 and "Traceback" not in r.stderr, r.stderr
    d = json.loads(r.stdout)
    assert not d["consistent"] and any("corrupt" in f["problem"] for f in d["findings"])
    r = mailca(store, "doctor", "--fix")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    r = mailca(store, "status", "--json")
    assert r.returncode == 0, r.stderr
    assert "mail.example.org" in {c["name"] for c in json.loads(r.stdout)["certificates"]}


CA_CASES = {
    "number": b"5",
    "list": b'["example.org"]',
    "domains-number": b'{"domains": 5}',
    "domains-ints": b'{"domains": [1, 2]}',
    "profile-data-number": b'{"domains": ["example.org"], "profile_data": 5}',
    "profile-list": b'{"domains": ["example.org"], "profile": ["x"]}',
    "deep": b"[" * 100000,
    "bad-utf8": b'{"domains": ["\xff"]}',
}


@pytest.mark.parametrize("case", sorted(CA_CASES))
def test_corrupt_ca_json_one_line_errors(pristine, tmp_path, case):
    store = copy_store(pristine, tmp_path)
    (store / "ca" / "ca.json").write_bytes(CA_CASES[case])
    before = snapshot(store)
    for args in (("status",), ("renew", "--force"), ("issue", "mx.example.org"), ("crl",),
                 ("ca", "renew-intermediate", "--dry-run")):
        assert_refused(mailca(store, *args), "ca.json", "corrupt")
    r = mailca(store, "doctor", "--json")
    assert r.returncode == 5 and "Traceback" not in r.stderr, r.stderr
    assert not json.loads(r.stdout)["consistent"]
    r = mailca(store, "doctor", "--fix")
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 5  # nothing to rebuild it from: still reported, not "fixed"
    assert (store / "ca" / "ca.json").read_bytes() == CA_CASES[case]
    assert snapshot(store / "certs") == {k[len("certs/"):]: v for k, v in before.items() if k.startswith("certs/")}


@pytest.mark.parametrize("content", [b"5", b"[" * 100000, b'{"crl_number": 1e999}', b'{"crl_number": "1"}'])
def test_corrupt_crl_state_one_line_error(pristine, tmp_path, content):
    store = copy_store(pristine, tmp_path)
    assert mailca(store, "crl").returncode == 0
    (store / "crl" / "state.json").write_bytes(content)
    assert_refused(mailca(store, "crl"), "state.json", "corrupt")


@pytest.mark.parametrize("content", [b"5", b"[" * 100000, b'{"source": 5}', b"\xff"])
def test_corrupt_meta_json_rebuild_does_not_crash(pristine, tmp_path, content):
    """meta.json is read when the index is rebuilt from the archive: a corrupt one makes that
    version 'incomplete' (a warning), never a traceback."""
    store = copy_store(pristine, tmp_path)
    (lineage(store) / "archive" / "0001" / "meta.json").write_bytes(content)
    os.unlink(store / "index.json")
    r = mailca(store, "status")
    assert_refused(r, "index.json", "doctor --fix")
    r = mailca(store, "doctor", "--fix", "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    names = {c["name"] for c in json.loads(mailca(store, "status", "--json").stdout)["certificates"]}
    assert "mail.example.org" not in names  # the corrupt version was left out, not guessed


@pytest.mark.parametrize("content", [b"5", b"[" * 100000, b'{"spki_sha256": "ab", "ttl": 1e999}',
                                     b'{"spki_sha256": "ab", "first_published": "never"}'])
def test_corrupt_dane_state_one_line_error(pristine, tmp_path, content):
    store = copy_store(pristine, tmp_path)
    r = mailca(store, "rekey", "mail.example.org", "--stage")
    assert r.returncode == 0, r.stderr
    (lineage(store) / "next.json").write_bytes(content)
    assert_refused(mailca(store, "dane", "mail.example.org"), "next.json", "corrupt")


@pytest.mark.parametrize("content", [b"\xff\xfe", b"[" * 1000, b"zz\tx\n", b"f" * 5000 + b"\t2026-01-01T00:00:00Z\t"])
def test_corrupt_revocation_journal_one_line_error(pristine, tmp_path, content):
    store = copy_store(pristine, tmp_path)
    assert mailca(store, "issue", "mx.example.org").returncode == 0
    assert mailca(store, "revoke", "mail.example.org").returncode == 0
    (store / "crl" / "revocations.tsv").write_bytes(content)
    before = snapshot(store)
    for args in (("crl",), ("revoke", "mx.example.org")):
        assert_refused(mailca(store, *args), "revocations.tsv")
    assert snapshot(store) == before


def test_doctor_prints_no_control_characters_from_file_names(base):
    """A file name chosen by whoever could write the store must not drive the terminal."""
    store = new_store(base)
    evil = lineage(store) / "\x1b]0;pwned\x07\x1b[2J"
    os.symlink("/etc/passwd", evil)
    r = mailca(store, "doctor")
    assert r.returncode == 5
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "\\x1b]0;pwned\\x07" in r.stdout
    j = json.loads(mailca(store, "doctor", "--json").stdout)
    assert any(f["path"] == str(evil) for f in j["findings"])  # JSON keeps the original
