"""mailca renew / ca renew-intermediate / schedule / issue --batch, driven through the real CLI
with an injected clock (MAILCA_NOW) and once with the real `faketime`; results are checked
with real `openssl` and `systemd-analyze`."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess

import pytest

from conftest import T0, base_env, mailca_argv, require, run, snapshot, tool


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(s: str) -> dt.datetime:
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ")


def at(t: dt.datetime, **extra) -> dict:
    return base_env(MAILCA_NOW=iso(t), **extra)


def status(ca, *args, env=None) -> list[dict]:
    r = ca.ok("status", "--json", *args, env=env)
    return json.loads(r.stdout)["certificates"]


def due_moment(cert: dict) -> dt.datetime:
    nb, na = parse(cert["not_before"]), parse(cert["not_after"])
    return nb + (na - nb) * 0.6667  # default profile renew.fraction


def openssl_verify(ca, cert_path, untrusted=None, extra=()):
    openssl = require("openssl")
    args = [openssl, "verify", "-CAfile", ca.root, "-untrusted", untrusted or ca.intermediate, *extra, cert_path]
    return tool(*args)


def test_renews_exactly_when_due_keeping_the_key(ca):
    first = ca.issue("mail.example.org", "--san", "smtp.example.org")[0]
    live = ca.live("mail.example.org")
    key_before = (live / "key.pem").read_bytes()
    due = dt.datetime.strptime(first["not_before"], "%Y-%m-%dT%H:%M:%SZ")
    due = due_moment(first)

    # one second... a minute before the renewal point: nothing happens, and quietly
    before = snapshot(ca.dir)
    r = ca.ok("renew", env=at(due - dt.timedelta(minutes=1)))
    assert r.stdout == "" and r.stderr == ""
    assert snapshot(ca.dir) == before
    assert status(ca, env=at(due - dt.timedelta(minutes=1)))[0]["state"] == "valid"
    assert status(ca, env=at(due + dt.timedelta(minutes=1)))[0]["state"] == "due"

    # just after it: renewed, one line, same key bytes, new serial, live switched
    r = ca.ok("renew", env=at(due + dt.timedelta(minutes=1)))
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("renewed mail.example.org (ecdsa-p256, same key)")
    assert os.readlink(live) == "archive/0002"
    assert (live / "key.pem").read_bytes() == key_before
    assert stat.S_IMODE((live / "key.pem").stat().st_mode) == 0o600
    rows = status(ca, "--all-versions", env=at(due + dt.timedelta(minutes=2)))
    cur = [x for x in rows if x["state"] != "superseded"]
    old = [x for x in rows if x["state"] == "superseded"]
    assert len(cur) == 1 and len(old) == 1
    assert cur[0]["serial"] != first["serial"]
    assert cur[0]["spki_sha256"] == first["spki_sha256"]  # TLSA 3 1 1 unchanged
    assert set(cur[0]["names"]) == {"mail.example.org", "smtp.example.org"}
    assert parse(cur[0]["not_after"]) > parse(first["not_after"])
    # the renewed certificate verifies with real openssl at the injected time
    when = int((due + dt.timedelta(minutes=2)).replace(tzinfo=dt.timezone.utc).timestamp())
    v = openssl_verify(ca, live / "cert.pem", extra=["-attime", str(when), "-verify_hostname", "smtp.example.org"])
    assert v.returncode == 0, v.stdout + v.stderr
    # and is not due again right away
    r = ca.ok("renew", env=at(due + dt.timedelta(minutes=3)))
    assert r.stdout == ""


def test_expired_renews_and_days_before(ca):
    c = ca.issue("mx.example.org")[0]
    na = parse(c["not_after"])
    # --days-before 30: not due 31 days before expiry, due 29 days before
    r = ca.ok("renew", "--days-before", "30", "--dry-run", env=at(na - dt.timedelta(days=31)))
    assert r.stdout == ""
    r = ca.ok("renew", "--days-before", "30", "--dry-run", env=at(na - dt.timedelta(days=29)))
    assert "would renew mx.example.org" in r.stdout
    # expired: renews
    later = na + dt.timedelta(days=10)
    assert status(ca, env=at(later))[0]["state"] == "expired"
    r = ca.ok("renew", "--json", env=at(later))
    out = json.loads(r.stdout)
    assert len(out["renewed"]) == 1 and out["failed"] == []
    assert parse(out["renewed"][0]["not_after"]) > later + dt.timedelta(days=300)


def test_dry_run_writes_nothing(ca):
    c = ca.issue("mail.example.org")[0]
    before = snapshot(ca.dir)
    r = ca.ok("renew", "--dry-run", "--deploy-hook", "touch " + str(ca.dir.parent / "hook-ran"),
              env=at(parse(c["not_after"]) - dt.timedelta(days=5)))
    assert "would renew mail.example.org" in r.stdout and "would run 1 deploy hook" in r.stdout
    assert snapshot(ca.dir) == before
    assert not (ca.dir.parent / "hook-ran").exists()


def test_new_key_changes_key_and_keeps_old_archive(ca):
    c = ca.issue("mail.example.org")[0]
    live = ca.live("mail.example.org")
    old_key = (live / "key.pem").read_bytes()
    ca.ok("renew", "--new-key", "--force")
    rows = status(ca)
    assert rows[0]["spki_sha256"] != c["spki_sha256"]
    assert (live / "key.pem").read_bytes() != old_key
    assert (live.parent / "archive" / "0001" / "key.pem").read_bytes() == old_key
    v = openssl_verify(ca, live / "cert.pem")
    assert v.returncode == 0, v.stderr
    # the live key matches the live cert (openssl: same public key)
    pub_c = tool("openssl", "x509", "-in", live / "cert.pem", "-noout", "-pubkey").stdout
    pub_k = tool("openssl", "pkey", "-in", live / "key.pem", "-pubout").stdout
    assert pub_c == pub_k and pub_c.startswith("-----BEGIN PUBLIC KEY")


def test_revoked_is_not_renewed(ca):
    c = ca.issue("old.example.org")[0]
    ca.issue("keep.example.org")
    rv = ca.run("revoke", "--help")
    if rv.returncode == 0:
        ca.ok("revoke", "old.example.org", "--reason", "keyCompromise")
    else:  # revoke not merged yet: mark the entry as 'mailca revoke' does
        idx = json.loads((ca.dir / "index.json").read_text())
        for e in idx["certs"]:
            if e["serial"] == c["serial"]:
                e.update(status="revoked", revoked_at=iso(T0 - dt.timedelta(days=1)), revocation_reason="keyCompromise")
        (ca.dir / "index.json").write_text(json.dumps(idx))
    later = parse(c["not_after"]) + dt.timedelta(days=1)
    states = {r["name"]: r["state"] for r in status(ca, env=at(later))}
    assert states == {"old.example.org": "revoked", "keep.example.org": "expired"}
    r = ca.ok("renew", "--json", env=at(later))
    out = json.loads(r.stdout)
    assert [x["name"] for x in out["renewed"]] == ["keep.example.org"]
    assert [x["name"] for x in out["skipped"]] == ["old.example.org"]
    # naming it explicitly is an error that says why
    r = ca.run("renew", "old.example.org", env=at(later))
    assert r.returncode == 2 and "revoked" in r.stderr and "mailca issue old.example.org" in r.stderr


def test_deploy_hooks_once_with_env(ca, tmp_path):
    ca.issue("mail.example.org")
    ca.issue("imap.example.org", "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")
    log = tmp_path / "hook.log"
    script = tmp_path / "hook.sh"
    script.write_text('#!/bin/sh\necho "run $1 names=$MAILCA_RENEWED_NAMES lineages=$MAILCA_RENEWED_LINEAGES" >> "$2"\n'
                      'for d in $MAILCA_RENEWED_LIVE_DIRS; do test -f "$d/fullchain.pem" && echo "ok $d" >> "$2"; done\n')
    script.chmod(0o755)
    r = ca.ok("renew", "--force", "--deploy-hook", f"{script} 'first arg' {log}", "--deploy-hook", f"{script} second {log}")
    text = log.read_text().splitlines()
    runs = [x for x in text if x.startswith("run ")]
    assert len(runs) == 2  # each hook exactly once per run, not once per certificate
    assert runs[0].startswith("run first arg names=")  # argv from shlex, no shell word-splitting of the quoted arg
    assert set(runs[0].split("names=")[1].split(" lineages=")[0].split()) == {"mail.example.org", "imap.example.org"}
    assert "imap.example.org/rsa-2048" in runs[0]
    assert sum(1 for x in text if x.startswith("ok ")) == 6
    assert r.stdout.count("renewed ") == 3


def test_failing_hook_exits_7_after_renewing(ca, tmp_path):
    ca.issue("mail.example.org")
    r = ca.run("renew", "--force", "--deploy-hook", "sh -c 'echo reload failed >&2; exit 3'")
    assert r.returncode == 7
    assert "reload failed" in r.stderr and "exited with status 3" in r.stderr
    assert os.readlink(ca.live("mail.example.org")) == "archive/0002"


def test_missing_hook_renews_nothing(ca):
    ca.issue("mail.example.org")
    before = snapshot(ca.dir)
    r = ca.run("renew", "--force", "--deploy-hook", "no-such-reload-command-xyz --now")
    assert r.returncode == 7
    assert "no-such-reload-command-xyz" in r.stderr and "not found" in r.stderr
    assert "Traceback" not in r.stderr
    assert snapshot(ca.dir) == before


def test_csr_lineage_cannot_be_renewed_says_why(ca, tmp_path):
    openssl = require("openssl")
    key, csr = tmp_path / "k.pem", tmp_path / "r.csr"
    p = tool(openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=csrhost.example.org")
    assert p.returncode == 0, p.stderr
    ca.ok("sign", csr)
    ca.issue("mail.example.org")
    r = ca.run("renew", "--force")
    assert r.returncode != 0
    assert "signed from a CSR" in r.stderr and "mailca sign" in r.stderr
    assert "renewed mail.example.org" in r.stdout  # the others still renew
    assert "Traceback" not in r.stderr


def test_faketime_renewal(ca):
    """The real `faketime` (libfaketime) moving the system clock, no MAILCA_NOW."""
    faketime = require("faketime")
    c = ca.issue("mail.example.org")[0]
    env = base_env(MAILCA_NOW=None)
    when = (due_moment(c) + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    early = (due_moment(c) - dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    cmd = [*mailca_argv(), "--dir", str(ca.dir), "renew"]

    p = subprocess.run([faketime, "-f", f"@{early}", *cmd], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "", p.stderr
    p = subprocess.run([faketime, "-f", f"@{when}", *cmd], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "renewed mail.example.org" in p.stdout
    new = status(ca, env=at(parse(when.replace(" ", "T") + "Z")))[0]
    assert parse(new["not_before"]) > parse(when.replace(" ", "T") + "Z") - dt.timedelta(minutes=10)


def test_renew_intermediate_keeps_key_constraints_and_chains(ca, tmp_path):
    openssl = require("openssl")
    ca.issue("mail.example.org")
    old_int = ca.intermediate.read_bytes()
    old_leaf = ca.live("mail.example.org") / "cert.pem"
    old_leaf_copy = tmp_path / "old-leaf.pem"
    old_leaf_copy.write_bytes(old_leaf.read_bytes())

    def pub(path):
        return tool(openssl, "x509", "-in", path, "-noout", "-pubkey").stdout

    def nc(path):
        t = tool(openssl, "x509", "-in", path, "-noout", "-ext", "nameConstraints,subjectKeyIdentifier").stdout
        return t

    old_copy = tmp_path / "old-int.pem"
    old_copy.write_bytes(old_int)
    later = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0) + dt.timedelta(days=30)
    r = ca.ok("ca", "renew-intermediate", env=at(later))
    assert "1 current certificate(s) verified" in r.stdout
    assert "publish FIRST:    2 0 1 " in r.stdout and "unchanged:        2 1 1 " in r.stdout
    new_int = ca.intermediate.read_bytes()
    assert new_int != old_int
    assert pub(ca.intermediate) == pub(old_copy)  # same key: DANE 2 1 1 stays valid
    assert nc(ca.intermediate) == nc(old_copy) and "example.org" in nc(old_copy)
    assert tool(openssl, "x509", "-in", ca.intermediate, "-noout", "-subject").stdout == \
        tool(openssl, "x509", "-in", old_copy, "-noout", "-subject").stdout
    # the existing leaf verifies through the NEW intermediate (openssl)
    attime = str(int((later + dt.timedelta(days=1)).replace(tzinfo=dt.timezone.utc).timestamp()))
    v = tool(openssl, "verify", "-attime", attime, "-CAfile", ca.root, "-untrusted", ca.intermediate, old_leaf_copy)
    assert v.returncode == 0, v.stdout + v.stderr
    # the new intermediate outlives the old one; old one archived
    end = lambda p: tool(openssl, "x509", "-in", p, "-noout", "-enddate").stdout  # noqa: E731
    assert end(ca.intermediate) != end(old_copy)
    archived = list((ca.dir / "ca" / "archive").glob("intermediate-*.crt"))
    assert len(archived) == 1 and archived[0].read_bytes() == old_int
    # wrong passphrase: refused, nothing changed
    before = snapshot(ca.dir)
    r = ca.run("ca", "renew-intermediate", env=base_env(MAILCA_PASSPHRASE="wrong passphrase!"))
    assert r.returncode == 2 and "wrong passphrase" in r.stderr
    assert snapshot(ca.dir) == before


def test_renew_warns_and_caps_before_intermediate_expiry(ca):
    openssl = require("openssl")
    ca.issue("mail.example.org")
    end = tool(openssl, "x509", "-in", ca.intermediate, "-noout", "-enddate").stdout.strip().split("=", 1)[1]
    int_end = dt.datetime.strptime(end, "%b %d %H:%M:%S %Y GMT")
    when = int_end - dt.timedelta(days=40)
    r = ca.ok("renew", "--json", env=at(when))
    out = json.loads(r.stdout)
    assert any("intermediate CA expires in 39 days" in w or "intermediate CA expires in 40 days" in w for w in out["warnings"])
    assert len(out["renewed"]) == 1  # expired leaf renewed ...
    assert parse(out["renewed"][0]["not_after"]) <= int_end  # ... but not beyond the intermediate
    r = ca.ok("renew", "--dry-run", env=at(when))
    assert "renew-intermediate" in r.stderr


def test_schedule_systemd_units_verify(tmp_path, ca):
    r = ca.ok("schedule", "--systemd", "--deploy-hook", "postfix reload", "--write", tmp_path)
    svc, tim = tmp_path / "mailca-renew.service", tmp_path / "mailca-renew.timer"
    assert svc.exists() and tim.exists()
    from mailca.lifecycle.schedule import parse_unit

    t = parse_unit(tim.read_text())
    assert t["Timer"]["Persistent"] == "true" and t["Timer"]["RandomizedDelaySec"]
    assert "00,12" in t["Timer"]["OnCalendar"] and t["Install"]["WantedBy"] == "timers.target"
    s = parse_unit(svc.read_text())
    assert s["Service"]["Type"] == "oneshot"
    assert '--deploy-hook "postfix reload"' in s["Service"]["ExecStart"] and "auto --quiet" in s["Service"]["ExecStart"]
    analyze = require("systemd-analyze")
    p = tool(analyze, "verify", svc, tim, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "mailca-renew" not in p.stderr  # no warnings about our units
    # the ExecStart command line really works
    import shlex

    argv = shlex.split(s["Service"]["ExecStart"])
    p = subprocess.run(argv[:-2], env=base_env(), capture_output=True, text=True, timeout=60)  # without the hook
    assert p.returncode == 0 and p.stdout == "", p.stderr


def test_schedule_cron_line(tmp_path, ca):
    ca.ok("schedule", "--cron", "--write", tmp_path, "--deploy-hook", "doveadm reload")
    text = (tmp_path / "mailca-renew").read_text()
    lines = [x for x in text.splitlines() if x and not x.startswith("#") and "=" not in x.split()[0]]
    assert len(lines) == 1
    f = lines[0].split()
    assert 0 <= int(f[0]) < 60 and len(f[1].split(",")) == 2 and f[2:5] == ["*", "*", "*"] and f[5] == "root"
    import shlex

    argv = shlex.split(" ".join(f[6:]))
    assert argv[-4:] == ["auto", "--quiet", "--deploy-hook", "doveadm reload"]


def test_batch_issue_partial_failure(ca, tmp_path):
    openssl = require("openssl")
    batch = tmp_path / "hosts.txt"
    batch.write_text("# fleet\nmx1.example.org smtp1.example.org\n\nmx2.example.net\nevil.example.com\n"
                     "mx3.example.org  # comment\n")
    r = ca.run("issue", "--batch", batch)
    assert r.returncode == 2
    assert "Issued 3 certificates (1 lines failed)" in r.stdout
    assert "line 5:" in r.stderr and "evil.example.com" in r.stderr
    rows = status(ca)
    assert sorted(x["name"] for x in rows) == ["mx1.example.org", "mx2.example.net", "mx3.example.org"]
    v = tool(openssl, "verify", "-CAfile", ca.root, "-untrusted", ca.intermediate, "-verify_hostname", "smtp1.example.org",
             ca.live("mx1.example.org") / "cert.pem")
    assert v.returncode == 0, v.stderr
    r = ca.ok("doctor")
    assert "consistent" in r.stdout and "PENDING" not in r.stdout
    # stdin
    r = ca.run("issue", "--batch", "-", "--json", input="mx4.example.org\n")
    assert r.returncode == 0 and json.loads(r.stdout)["issued"] == 1
