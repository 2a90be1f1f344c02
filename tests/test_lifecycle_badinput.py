"""Bad input across renew / status / doctor / schedule / ca renew-intermediate / issue --batch:
each case gives ONE clear error line naming the bad value, a non-zero exit, no traceback,
and leaves the store byte-for-byte unchanged (snapshot before == after)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import at, base_env, make_ca, mailca_argv, run, snapshot

NOW = at(days=320)  # every certificate of the template store (issued at T0) is due then


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    store = tmp_path_factory.mktemp("badinput") / "store"
    make_ca(store, "example.org", "example.net")
    for args in (["mail.example.org", "--san", "smtp.example.org"], ["mx.example.org"], ["gone.example.org"]):
        r = run(["--dir", store, "issue", *args])
        assert r.returncode == 0, r.stderr
    # mark gone.example.org revoked, as 'mailca revoke' does (index status)
    idx = json.loads((store / "index.json").read_text())
    for e in idx["certs"]:
        if e["name"] == "gone.example.org":
            e.update(status="revoked", revoked_at=at(days=-1), revocation_reason="keyCompromise")
    (store / "index.json").write_text(json.dumps(idx, indent=1, sort_keys=True) + "\n")
    return store


@pytest.fixture
def store(template, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(template, dst, symlinks=True)
    return dst


def _plain_file(s: Path):
    (s.parent / "reload.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(s.parent / "reload.sh", 0o644)


def _corrupt_index(s: Path):
    (s / "index.json").write_text("{ not json")


def _bad_entry_index(s: Path):
    (s / "index.json").write_text(json.dumps({"certs": "nope"}))


def _corrupt_ca_json(s: Path):
    (s / "ca" / "ca.json").write_text("[]")


def _pass_file(content: str):
    def setup(s: Path):
        (s.parent / "pass.txt").write_text(content)
    return setup


def _empty_batch(s: Path):
    (s.parent / "empty.txt").write_text("# nothing here\n\n")


def _bad_batch(s: Path):
    (s.parent / "bad.txt").write_text("evil.example.com\n-bad-.example.org\n")


def _good_batch(s: Path):
    (s.parent / "good.txt").write_text("new.example.org\n")


def _remove_root_key(s: Path):
    (s / "ca" / "root.key").unlink()


P = "{parent}"  # replaced by the store's parent directory
CASES = [
    # id, args, env overrides, setup, expected exit, text the error line must contain
    ("renew-unknown-name", ["renew", "nosuch.example.org"], {}, None, 2, "'nosuch.example.org'"),
    ("renew-unknown-among-known", ["renew", "mail.example.org", "typo.example.org"], {}, None, 2, "typo.example.org"),
    ("renew-names-and-all", ["renew", "mail.example.org", "--all"], {}, None, 2, "--all"),
    ("renew-days-before-negative", ["renew", "--days-before", "-1"], {}, None, 2, "--days-before -1"),
    ("renew-days-before-huge", ["renew", "--days-before", "99999"], {}, None, 2, "--days-before 99999"),
    ("renew-days-before-text", ["renew", "--days-before", "soon"], {}, None, 2, "soon"),
    ("renew-hook-missing", ["renew", "--deploy-hook", "no-such-reload-xyz"], {}, None, 7, "no-such-reload-xyz"),
    ("renew-hook-missing-path", ["renew", "--deploy-hook", "/nonexistent/bin/reload now"], {}, None, 7, "/nonexistent/bin/reload"),
    ("renew-hook-not-executable", ["renew", "--deploy-hook", "{parent}/reload.sh"], {}, _plain_file, 7, "reload.sh"),
    ("renew-hook-empty", ["renew", "--deploy-hook", ""], {}, None, 2, "--deploy-hook ''"),
    ("renew-hook-unbalanced-quote", ["renew", "--deploy-hook", "postfix 'reload"], {}, None, 2, "postfix 'reload"),
    ("renew-second-hook-missing", ["renew", "--deploy-hook", "true", "--deploy-hook", "nope-nope-reload"], {}, None, 7, "nope-nope-reload"),
    ("renew-revoked-by-name", ["renew", "gone.example.org"], {}, None, 2, "revoked"),
    ("renew-bad-clock", ["renew"], {"MAILCA_NOW": "tomorrow"}, None, 2, "'tomorrow'"),
    ("renew-corrupt-index", ["renew"], {}, _corrupt_index, 3, "index.json is corrupt"),
    ("renew-malformed-index", ["renew"], {}, _bad_entry_index, 3, "index"),
    ("renew-corrupt-ca-json", ["renew"], {}, _corrupt_ca_json, 3, "ca.json"),
    ("renew-no-store", ["--dir", "{parent}/missing", "renew"], {}, None, 3, "missing"),
    ("renew-store-under-file", ["--dir", "/etc/hostname/store", "renew"], {}, None, 3, "/etc/hostname/store"),
    ("renew-dry-run-unknown", ["renew", "--dry-run", "nosuch.example.org"], {}, None, 2, "nosuch.example.org"),
    ("renew-dry-run-corrupt-index", ["renew", "--dry-run"], {}, _corrupt_index, 3, "mailca doctor"),
    ("status-unknown-name", ["status", "nosuch.example.net"], {}, None, 2, "nosuch.example.net"),
    ("status-days-before-negative", ["status", "--days-before", "-3"], {}, None, 2, "--days-before -3"),
    ("status-corrupt-index", ["status"], {}, _corrupt_index, 3, "corrupt"),
    ("status-no-store", ["--dir", "{parent}/missing", "status"], {}, None, 3, "missing"),
    ("status-bad-clock", ["status"], {"MAILCA_NOW": "2027-13-45"}, None, 2, "2027-13-45"),
    ("doctor-no-store", ["--dir", "{parent}/missing", "doctor"], {}, None, 3, "missing"),
    ("doctor-corrupt-index", ["doctor"], {}, _corrupt_index, 5, "1 problem"),
    ("schedule-no-kind", ["schedule"], {}, None, 2, "--systemd or --cron"),
    ("schedule-write-missing-dir", ["schedule", "--systemd", "--write", "{parent}/nodir"], {}, None, 2, "nodir"),
    ("schedule-write-to-file", ["schedule", "--cron", "--write", "/etc/hostname"], {}, None, 2, "/etc/hostname"),
    ("schedule-bad-hook", ["schedule", "--systemd", "--deploy-hook", 'postfix "reload'], {}, None, 2, 'postfix "reload'),
    ("schedule-bad-user", ["schedule", "--cron", "--user", "mail man"], {}, None, 2, "'mail man'"),
    ("schedule-bad-rekey-every", ["schedule", "--systemd", "--rekey-every", "5x"], {}, None, 2, "'5x'"),
    ("schedule-missing-passphrase-file", ["schedule", "--systemd", "--passphrase-file", "{parent}/nope.txt"], {}, None, 2,
     "nope.txt"),
    ("schedule-days-before-huge", ["schedule", "--cron", "--days-before", "5000"], {}, None, 2, "5000"),
    ("auto-bad-rekey-every", ["auto", "--rekey-every", "0d"], {}, None, 2, "'0d'"),
    ("auto-days-before-huge", ["auto", "--days-before", "5000"], {}, None, 2, "--days-before 5000"),
    ("auto-crl-out-in-store", ["auto", "--crl-out", "{parent}/store/ca/x.crl"], {}, None, 2, "x.crl"),
    ("auto-bad-hook", ["auto", "--deploy-hook", 'postfix "reload'], {}, None, 2, 'postfix "reload'),
    ("auto-corrupt-dane-settings", ["auto"], {}, lambda s: (s / "dane-publish.json").write_text('{"version": 1, "hosts": []}'),
     3, "dane-publish.json is corrupt"),
    ("int-wrong-passphrase", ["ca", "renew-intermediate"], {"MAILCA_PASSPHRASE": "not the passphrase"}, None, 2, "wrong passphrase"),
    ("int-empty-passphrase-env", ["ca", "renew-intermediate"], {"MAILCA_PASSPHRASE": ""}, None, 2, "MAILCA_PASSPHRASE"),
    ("int-no-passphrase", ["ca", "renew-intermediate"], {"MAILCA_PASSPHRASE": None}, None, 2, "passphrase"),
    ("int-empty-passphrase-file", ["ca", "renew-intermediate", "--passphrase-file", "{parent}/pass.txt"],
     {"MAILCA_PASSPHRASE": None}, _pass_file("\n"), 2, "pass.txt"),
    ("int-missing-passphrase-file", ["ca", "renew-intermediate", "--passphrase-file", "{parent}/nope.txt"],
     {"MAILCA_PASSPHRASE": None}, None, 2, "nope.txt"),
    ("int-wrong-passphrase-file", ["ca", "renew-intermediate", "--passphrase-file", "{parent}/pass.txt"],
     {"MAILCA_PASSPHRASE": None}, _pass_file("wrong wrong wrong\n"), 2, "wrong passphrase"),
    ("int-days-too-short", ["ca", "renew-intermediate", "--days", "5"], {}, None, 2, "--days 5"),
    ("int-days-too-long", ["ca", "renew-intermediate", "--days", "99999"], {}, None, 2, "--days 99999"),
    ("int-root-key-missing", ["ca", "renew-intermediate"], {}, _remove_root_key, 3, "root.key"),
    ("batch-missing-file", ["issue", "--batch", "{parent}/nofile.txt"], {}, None, 2, "nofile.txt"),
    ("batch-directory", ["issue", "--batch", "{parent}"], {}, None, 2, "is a directory"),
    ("batch-empty", ["issue", "--batch", "{parent}/empty.txt"], {}, _empty_batch, 2, "names no certificates"),
    ("batch-all-lines-bad", ["issue", "--batch", "{parent}/bad.txt"], {}, _bad_batch, 2, "2 batch line(s) failed"),
    ("batch-ed25519", ["issue", "--batch", "{parent}/good.txt", "--key-type", "ed25519"], {}, _good_batch, 2, "ed25519"),
    ("batch-days-zero", ["issue", "--batch", "{parent}/good.txt", "--days", "0"], {}, _good_batch, 2, "--days 0"),
    ("batch-with-host", ["issue", "mail.example.org", "--batch", "{parent}/good.txt"], {}, _good_batch, 2, "--batch"),
    ("batch-unknown-profile", ["issue", "--batch", "{parent}/good.txt", "--profile", "nosuchprofile"], {}, _good_batch, 2,
     "nosuchprofile"),
]


@pytest.mark.parametrize("case_id,args,env,setup,code,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input(store, case_id, args, env, setup, code, needle):
    if setup:
        setup(store)
    parent = str(store.parent)
    args = [a.replace("{parent}", parent) for a in args]
    if not args or args[0] != "--dir":
        args = ["--dir", str(store), *args]
    extra = {"MAILCA_NOW": NOW, **env}
    before = snapshot(store)
    parent_before = sorted(os.listdir(store.parent))
    r = run(args, env=base_env(**extra))
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    err_lines = [x for x in r.stderr.splitlines() if x.startswith(("mailca: error:", "Error:"))]
    assert len(err_lines) == 1, r.stderr
    assert needle in err_lines[0] or (case_id.startswith("batch-all") and needle in r.stderr), r.stderr
    if case_id == "batch-all-lines-bad":
        assert "line 1:" in r.stderr and "line 2:" in r.stderr  # each bad line named
    assert snapshot(store) == before, "the store changed"
    assert sorted(os.listdir(store.parent)) == parent_before


def test_unwritable_store_as_other_user(template):
    """A user who may read but not write the store: renew refuses before touching anything."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is missing")
    base = Path(tempfile.mkdtemp(prefix="mailca-ro-"))
    try:
        os.chmod(base, 0o755)
        s = base / "store"
        shutil.copytree(template, s, symlinks=True)
        for p in [s, *s.rglob("*")]:
            if not p.is_symlink():
                os.chmod(p, 0o755 if p.is_dir() else 0o644)
        before = snapshot(s)
        env = base_env(MAILCA_NOW=NOW, HOME=str(base))
        r = subprocess.run([setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *mailca_argv(),
                            "--dir", str(s), "renew"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 3, r.stderr
        assert "not writable" in r.stderr and str(s) in r.stderr and "Traceback" not in r.stderr
        assert snapshot(s) == before
        # reading still works for that user
        r = subprocess.run([setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *mailca_argv(),
                            "--dir", str(s), "renew", "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "would renew mail.example.org" in r.stdout, r.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)
