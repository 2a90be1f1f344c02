"""The smaller items of issue #11: the documented routes no longer hurt a Debian set-up.

Real tools only: postconf/postmap on a scratch Postfix config directory, doveconf, openssl.
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from conftest import base_env, make_ca, run, tool

HOST = "mail.example.org"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    c = make_ca(tmp_path_factory.mktemp("route") / "store", "example.org", "example.net")
    c.issue(HOST)
    return c


def scratch_postfix(d, main="", master=""):
    d.mkdir(parents=True, exist_ok=True)
    (d / "main.cf").write_text(f"compatibility_level = 3.6\nqueue_directory = {d / 'spool'}\n" + main)
    (d / "master.cf").write_text(master)
    return d


def test_write_never_emits_an_smtp_inet_line(ca, tmp_path):
    out = tmp_path / "w"
    r = ca.ok("postfix", HOST, "--write", out)
    master = (out / "master.cf.mailca").read_text()
    entries = [ln for ln in master.splitlines() if ln and not ln.startswith(("#", " "))]
    assert entries and not any(re.match(r"smtp\s+inet\b", ln) for ln in entries), master
    assert any(ln.startswith("submission ") for ln in entries)
    assert "postscreen" in master  # the comment says why the line is absent
    # the hint names the one clean route, not "merge"
    assert f"mailca deploy {HOST} --dry-run" in r.stdout and "Merge" not in r.stdout, r.stdout


def test_own_domain_secure_policy_is_opt_in_and_trusts_only_the_root(ca, tmp_path):
    default = ca.ok("postfix", HOST).stdout
    assert "smtp_tls_policy_maps" not in default and "smtp_tls_CAfile" not in default
    assert " secure " not in default
    out = tmp_path / "w"
    ca.ok("postfix", HOST, "--write", out, "--secure-domain", "example.org")
    main = (out / "main.cf.mailca").read_text()
    assert f"smtp_tls_policy_maps = texthash:{out}/mailca-tls-policy" in main
    assert "smtp_tls_CAfile" not in main  # an existing CA file is left alone
    # Postfix's own table reader: secure for example.org and below, only the mailca root trusted
    for key in ("example.org", ".example.org"):
        r = tool("postmap", "-q", key, f"texthash:{out / 'mailca-tls-policy'}")
        assert r.returncode == 0 and r.stdout.strip() == f"secure match=nexthop:dot-nexthop tafile={ca.root}", r
    assert tool("postmap", "-q", "example.net", f"texthash:{out / 'mailca-tls-policy'}").returncode == 1
    bad = ca.run("postfix", HOST, "--secure-domain", "example.com")
    assert bad.returncode == 2 and "example.com" in bad.stderr and "example.org" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_postconf_format_honours_mail_config_for_every_path(ca, tmp_path):
    d = scratch_postfix(tmp_path / "pfx", master="submission inet n - y - - smtpd\n")
    env = base_env(MAIL_CONFIG=str(d))
    r = run(["--dir", ca.dir, "postfix", HOST, "--format", "postconf", "--secure-domain", "example.org"], env=env)
    assert r.returncode == 0, r.stderr
    assert "/etc/postfix" not in r.stdout, r.stdout
    assert f"> {shlex.quote(str(d / 'mailca-tls-policy'))}" in r.stdout
    # run it as the hint says (sh); postconf and the table land in MAIL_CONFIG's directory
    s = subprocess.run(["sh", "-c", r.stdout.replace("postfix reload", "true")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert s.returncode == 0, s.stderr
    assert (d / "mailca-tls-policy").is_file()
    n = tool("postconf", "-c", d, "-n")
    assert n.returncode == 0 and n.stderr == "", n.stderr
    assert f"smtp_tls_policy_maps = texthash:{d}/mailca-tls-policy" in n.stdout


def test_dovecot_sasl_listener_follows_queue_directory(ca, tmp_path):
    d = scratch_postfix(tmp_path / "pfx")
    r = run(["--dir", ca.dir, "dovecot", HOST, "--dovecot-version", "2.3"], env=base_env(MAIL_CONFIG=str(d)))
    assert r.returncode == 0, r.stderr
    assert f"unix_listener {d / 'spool'}/private/auth {{" in r.stdout, r.stdout
    assert "/var/spool/postfix" not in r.stdout


@pytest.mark.parametrize("org,cn", [("Example Mail", "Example Mail Intermediate CA"),
                                    ("Example Org", "Example Org Mail Intermediate CA")])
def test_intermediate_name_does_not_double_mail(tmp_path, org, cn):
    r = run(["--dir", tmp_path / "s", "init", "--domain", "example.org", "--org", org])
    assert r.returncode == 0, r.stderr
    subj = tool("openssl", "x509", "-in", tmp_path / "s" / "ca" / "intermediate.crt", "-noout", "-subject",
                "-nameopt", "multiline").stdout
    assert re.search(rf"commonName\s+= {cn}$", subj, re.M), subj
