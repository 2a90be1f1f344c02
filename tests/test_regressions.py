"""Regressions found by the second review (admin UX and safety), one test each.
Each would fail against the code before its fix."""

from __future__ import annotations

import json
import os
import stat
import sys

from conftest import base_env, make_ca, run, snapshot, mailca_argv


def test_explicit_dir_beats_MAILCA_DIR(tmp_path):
    a = make_ca(tmp_path / "a", "example.org")
    b = make_ca(tmp_path / "b", "example.net")
    env = base_env(MAILCA_DIR=str(a.dir))
    for argv in (["--dir", b.dir, "issue", "mail.example.net", "--json"],
                 ["issue", "--dir", b.dir, "smtp.example.net", "--json"]):
        r = run(argv, env=env)
        assert r.returncode == 0, r.stderr
    assert {c["name"] for c in json.loads(run(["--dir", b.dir, "status", "--json"]).stdout)["certificates"]} == \
        {"mail.example.net", "smtp.example.net"}
    assert json.loads(run(["--dir", a.dir, "status", "--json"]).stdout)["certificates"] == []
    # and without --dir, MAILCA_DIR is used
    assert run(["issue", "mx.example.org"], env=env).returncode == 0


def test_dane_owner_name_is_the_host_asked_for(ca):
    ca.issue("mail.example.org", "--san", "mx1.example.org")
    out = ca.ok("dane", "mx1.example.org", "--usage", "3").stdout
    owners = {line.split()[0] for line in out.splitlines() if " IN TLSA " in line and not line.startswith(";")}
    assert owners == {"_25._tcp.mx1.example.org."}, out


def test_init_refuses_to_write_over_a_ca_whose_ca_json_is_missing(ca):
    (ca.dir / "ca" / "ca.json").unlink()
    before = snapshot(ca.dir)
    r = ca.run("renew")
    assert r.returncode == 3 and "ca.json is missing" in r.stderr and "do not run 'mailca init'" in r.stderr, r.stderr
    r = ca.run("init", "--domain", "evil.org", "--no-root-passphrase")
    assert r.returncode == 3 and "refusing to create a CA over them" in r.stderr, r.stderr
    assert snapshot(ca.dir) == before


def test_missing_index_with_certificates_is_an_error_not_an_empty_store(ca):
    ca.issue("mail.example.org")
    (ca.dir / "index.json").rename(ca.dir / "index.moved")
    for argv in (["status"], ["renew", "--days-before", "3650"]):
        r = ca.run(*argv)
        assert r.returncode == 3 and "index.json is missing" in r.stderr and "doctor --fix" in r.stderr, r.stderr


def test_bare_mailca_prints_help_to_stdout():
    r = run([])
    assert r.returncode == 0 and "Usage: mailca" in r.stdout and "Commands:" in r.stdout and r.stderr == ""


def test_deploy_hooks_do_not_see_the_root_passphrase(ca, tmp_path):
    ca.issue("mail.example.org")
    dump = tmp_path / "env.txt"
    hook = f"{sys.executable} -c \"import os; open('{dump}', 'w').write(repr(sorted(os.environ)))\""
    r = ca.run("renew", "mail.example.org", "--force", "--deploy-hook", hook)
    assert r.returncode == 0, r.stderr
    seen = dump.read_text()
    assert "MAILCA_RENEWED_NAMES" in seen and "MAILCA_PASSPHRASE" not in seen


def test_schedule_refuses_control_characters(ca, tmp_path):
    out = tmp_path / "units"
    out.mkdir()
    for argv in (["schedule", "--cron", "--deploy-hook", "postfix reload\n* * * * * root touch /tmp/pwned #"],
                 ["schedule", "--systemd", "--deploy-hook", "postfix reload\nExecStartPost=/bin/false"]):
        r = ca.run(*argv, "--write", out)
        assert r.returncode == 2 and "control character" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert list(out.iterdir()) == []


def test_new_lineage_directories_are_0700_from_the_start(tmp_path):
    from mailca.storage.store import ensure_dir

    old = os.umask(0o022)
    try:
        ensure_dir(tmp_path / "a" / "b" / "c", durable=True)
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_bundle_with_a_wrong_dir_creates_nothing(tmp_path):
    r = run(["--dir", tmp_path / "nostore", "bundle", "--out", tmp_path / "b"])
    assert r.returncode == 3 and r.stderr.count("\n") == 1
    assert not (tmp_path / "nostore").exists()


def test_unreadable_store_is_one_line_not_a_traceback(tmp_path):
    import shutil
    import subprocess

    if not shutil.which("setpriv") or os.geteuid() != 0:
        import pytest

        pytest.skip("needs root and setpriv to run as another user")
    c = make_ca(tmp_path / "s", "example.org")
    os.chmod(tmp_path, 0o755)
    os.chmod(c.dir, 0o700)  # the store is root's: nobody cannot even look inside
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *mailca_argv(),
                        "--dir", str(c.dir), "issue", "zz.example.org"], capture_output=True, text=True,
                       env=base_env(), timeout=60)
    assert r.returncode in (2, 3) and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
