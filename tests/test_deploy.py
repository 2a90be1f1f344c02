"""`mailca deploy` against a Postfix + Dovecot built the way Debian builds one (issue #11).

Everything is real: an isolated Postfix (stock Debian main.cf with a snakeoil pair, postscreen
on 25 with its companions, chroot y, submission/submissions with -o lines) plus a Dovecot with
IMAP, LMTP and SASL, all on 127.0.0.1 high ports (tests/postfix_harness.py).  The clients are
openssl s_client, swaks and Python's imaplib, each given only the mailca root.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import imaplib
import json
import os
import re
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from conftest import base_env, tool
from postfix_harness import PostfixServer

HOST = "mail.example.org"
USERS = {"alice": "wonderland-42"}
# one injected clock for the CA and every operation on it, taken once
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
ENV = base_env(MAILCA_NOW=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"))

pytestmark = pytest.mark.slow


def debian_main_cf(snake: tuple[Path, Path], *, sasl: str | None = "dovecot") -> str:
    """Debian 12's stock main.cf (postfix 3.7 'Internet Site'), snakeoil pair included."""
    cert, key = snake
    text = f"""\
smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
biff = no
append_dot_mydomain = no
readme_directory = no
compatibility_level = 3.6
smtpd_tls_cert_file={cert}
smtpd_tls_key_file={key}
smtpd_tls_security_level=may
smtp_tls_CApath=/etc/ssl/certs
smtp_tls_security_level=may
smtp_tls_session_cache_database = btree:${{data_directory}}/smtp_scache
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination
myhostname = {HOST}
relayhost =
mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128
mailbox_size_limit = 0
recipient_delimiter = +
"""
    if sasl == "dovecot":
        text += "smtpd_sasl_type = dovecot\nsmtpd_sasl_path = private/auth\n"
    elif sasl == "cyrus":
        text += "smtpd_sasl_type = cyrus\n"
    return text


# postscreen on 25 with its companions, chroot y, submission/submissions with -o lines
DEBIAN_MASTER_CF = """\
smtp      inet  n       -       y       -       1       postscreen
smtpd     pass  -       -       y       -       -       smtpd
dnsblog   unix  -       -       y       -       0       dnsblog
tlsproxy  unix  -       -       y       -       0       tlsproxy
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_reject_unlisted_recipient=no
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
submissions inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
"""


def snakeoil(d: Path) -> tuple[Path, Path]:
    """A self-signed pair like Debian's ssl-cert-snakeoil (CN = the host, not from the mailca CA)."""
    d.mkdir(parents=True, exist_ok=True)
    cert, key = d / "ssl-cert-snakeoil.pem", d / "ssl-cert-snakeoil.key"
    r = tool("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
             "-days", "30", "-subj", f"/CN={HOST}")
    assert r.returncode == 0, r.stderr
    os.chmod(key, 0o600)
    return cert, key


def mailca(store: Path, *args, ok=True, timeout=180):
    from conftest import run

    r = run(["--dir", store, *args], env=ENV, timeout=timeout)
    if ok:
        assert r.returncode == 0, f"mailca {' '.join(map(str, args))} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def configs(srv: PostfixServer) -> dict[str, str]:
    out = {}
    for p in (srv.config_dir / "main.cf", srv.config_dir / "master.cf", srv.dovecot_conf):
        out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None
    dropin = srv.config_dir / "conf.d" / "99-mailca.conf"
    out["dropin"] = hashlib.sha256(dropin.read_bytes()).hexdigest() if dropin.exists() else None
    return out


def served_serial(port: int, *, starttls: str | None, root: Path | None = None) -> tuple[int, bool]:
    """(serial, verified) of the certificate openssl s_client gets on PORT, verified against
    ROOT only (-CAfile plus -no-CApath/-no-CAstore: no system trust) with the host name checked."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST, "-verify_hostname", HOST,
            "-verify_return_error", "-no-CApath", "-no-CAstore", "-showcerts"]
    if starttls:
        args += ["-starttls", starttls]
    args += ["-CAfile", str(root)] if root else []
    r = subprocess.run(args, input="", capture_output=True, text=True, timeout=60)
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.stdout, re.S)
    assert m, f"no certificate from port {port}: {r.stdout[-400:]} {r.stderr[-400:]}"
    x = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=m.group(0), capture_output=True, text=True)
    serial = int(x.stdout.strip().split("=", 1)[1], 16)
    return serial, ("Verify return code: 0 (ok)" in r.stdout and r.returncode == 0)


def current_serial(store: Path) -> int:
    idx = json.loads((store / "index.json").read_text())["certs"]
    mine = [e for e in idx if e["name"] == HOST]
    return int(max(mine, key=lambda e: e["version"])["serial"], 16)


def all_ports(srv: PostfixServer) -> dict[str, tuple[int, str | None]]:
    return {"25": (srv.ports["smtp"], "smtp"), "587": (srv.ports["submission"], "smtp"),
            "465": (srv.ports["submissions"], None), "143": (srv.ports["imap"], "imap"),
            "993": (srv.ports["imaps"], None)}


@pytest.fixture
def debian(tmp_path):
    """CA + certificate for mail.example.org and a running Debian-like Postfix + Dovecot."""
    store = tmp_path / "store"
    mailca(store, "init", "--org", "Test Mail", "--domain", "example.org")
    mailca(store, "issue", HOST)
    snake = snakeoil(tmp_path / "snakeoil")
    srv = PostfixServer(tmp_path / "pf", main_cf=debian_main_cf(snake), master_cf=DEBIAN_MASTER_CF,
                        users=USERS, keep_chroot=True, imap_cert=snake)
    with srv:
        yield store, srv, snake


def deploy(store, srv, *args, ok=True):
    return mailca(store, "deploy", HOST, "--postfix-config", srv.config_dir, "--dovecot-config", srv.dovecot_conf,
                  *args, ok=ok)


def swaks_auth(port: int, root: Path, *, implicit: bool) -> subprocess.CompletedProcess:
    args = ["swaks", "--server", "127.0.0.1", "--port", str(port), "--to", "postmaster@localhost",
            "--from", "alice@example.org", "--auth", "PLAIN", "--auth-user", "alice",
            "--auth-password", USERS["alice"], "--tls-verify", "--tls-ca-path", str(root),
            "--tls-sni", HOST, "--timeout", "30"]
    args += ["--tlsc"] if implicit else ["--tls"]
    return subprocess.run(args, capture_output=True, text=True, timeout=90)


# --------------------------------------------------------------------------- the tests
def test_dry_run_shows_diff_and_changes_nothing(debian):
    store, srv, _ = debian
    before = configs(srv)
    r = deploy(store, srv, "--dry-run")
    out = r.stdout
    # the snakeoil pair goes, the chain file comes, each with a reason
    assert re.search(r"^- smtpd_tls_cert_file = .*snakeoil", out, re.M), out
    assert re.search(r"^\+ smtpd_tls_chain_files = .*keyfullchain\.pem", out, re.M), out
    assert "# will then be probed: smtp" in out
    # never the smtp inet line (postscreen), never the SASL backend the admin has
    assert "postscreen" not in out and "smtpd_sasl_type" not in out, out
    # -o lines mailca already agrees with are not repeated; submissions lacks auth_only
    assert re.search(r"^\+ 127\.0\.0\.1:\d+/inet/smtpd_tls_auth_only = yes", out, re.M), out
    assert "smtpd_relay_restrictions" not in out  # the admin's own -o value stays
    assert configs(srv) == before
    j = json.loads(deploy(store, srv, "--dry-run", "--json").stdout)
    assert j["sasl"] == "dovecot"
    assert {ls["proto"] for ls in j["listeners"]} == {"smtp", "submission", "submissions", "imap", "imaps"}


def test_debian_like_deploy_then_every_client_verifies(debian):
    store, srv, snake = debian
    root = store / "ca" / "root.crt"
    # before: the snakeoil certificate does not verify against the mailca root
    _, verified = served_serial(srv.ports["submission"], starttls="smtp", root=root)
    assert not verified
    master_before = srv.postconf("-M")
    log_size = srv.log_file.stat().st_size

    r = deploy(store, srv)
    serial = current_serial(store)
    assert f"serves serial {serial:x}" in r.stdout, r.stdout
    assert len(re.findall(r"^ok ", r.stdout, re.M)) == 5, r.stdout

    # postscreen and chroot y untouched; postconf -n without warnings
    master_after = srv.postconf("-M")
    smtp_line = [ln for ln in master_after.splitlines() if ln.split()[-1] == "postscreen"]
    assert smtp_line and smtp_line[0].split()[4] == "y", master_after
    assert [ln for ln in master_before.splitlines() if "postscreen" in ln] == smtp_line
    for svc in ("smtpd", "dnsblog", "tlsproxy"):
        assert any(ln.split()[0] == svc for ln in master_after.splitlines()), svc
    pn = subprocess.run(["postconf", "-c", str(srv.config_dir), "-n"], capture_output=True, text=True, timeout=60)
    assert pn.returncode == 0 and pn.stderr == "", pn.stderr

    # openssl on 25/587/465/143/993 with only the mailca root: the new serial, verified
    for label, (port, starttls) in all_ports(srv).items():
        got, ok = served_serial(port, starttls=starttls, root=root)
        assert (got, ok) == (serial, True), f"port {label}"

    # postscreen still in the path: a CONNECT line after the deploy
    log = srv.log_file.read_text(errors="replace")[log_size:]
    assert re.search(r"postfix/postscreen\[\d+\]: CONNECT from \[127\.0\.0\.1\]", log), log[-2000:]

    # swaks AUTH on 587 (STARTTLS) and 465 (implicit), verified against the root
    for port, implicit in ((srv.ports["submission"], False), (srv.ports["submissions"], True)):
        s = swaks_auth(port, root, implicit=implicit)
        assert s.returncode == 0, s.stdout[-1500:] + s.stderr[-500:]
        assert re.search(r"<~  235 2\.7\.0 Authentication successful", s.stdout), s.stdout[-800:]
        assert re.search(r"<~  250 2\.0\.0 Ok: queued", s.stdout), s.stdout[-800:]

    # imaplib over 993 and STARTTLS 143, chain and host name checked against the root
    ctx = ssl.create_default_context(cafile=str(root))
    ctx.load_verify_locations(cafile=str(root))

    class _IMAP4_SSL(imaplib.IMAP4_SSL):
        def _create_socket(self, timeout):  # verify the host name, connect to the loopback address
            import socket
            sock = socket.create_connection(("127.0.0.1", self.port), timeout)
            return self.ssl_context.wrap_socket(sock, server_hostname=HOST)

    with _IMAP4_SSL(HOST, srv.ports["imaps"], ssl_context=ctx, timeout=30) as m:
        assert m.login("alice", USERS["alice"])[0] == "OK"

    class _IMAP4(imaplib.IMAP4):
        def _create_socket(self, timeout):
            import socket
            return socket.create_connection(("127.0.0.1", self.port), timeout)

    with _IMAP4(HOST, srv.ports["imap"], timeout=30) as m:
        assert m.starttls(ssl_context=ctx)[0] == "OK"  # server_hostname = HOST: checked
        assert m.login("alice", USERS["alice"])[0] == "OK"

    # a second deploy has nothing to change and still proves the ports
    r2 = deploy(store, srv)
    assert "0 change(s)" in r2.stdout and "nothing to change" in r2.stdout, r2.stdout


def test_rollback_on_unreadable_key_leaves_files_byte_identical(debian):
    store, srv, snake = debian
    before = configs(srv)
    old_serial, _ = served_serial(srv.ports["submissions"], starttls=None)
    # the key file Postfix would read is damaged: Postfix cannot load it after the reload
    kf = store / "certs" / HOST / "ecdsa-p256" / "live" / "keyfullchain.pem"
    kf.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n" +
                  kf.read_text().split("-----END PRIVATE KEY-----\n", 1)[1])
    r = deploy(store, srv, "--wait", "5", ok=False)
    assert r.returncode == 4, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mailca: error: deploy failed: "), r.stderr
    assert "rolled back" in err[0] and str(srv.log_file.name) in err[0] and "Traceback" not in r.stderr
    assert configs(srv) == before
    # the server answers again, with the old (snakeoil) certificate
    time.sleep(1)
    for label, (port, starttls) in all_ports(srv).items():
        got, _ = served_serial(port, starttls=starttls)
        assert got == old_serial, f"port {label} after rollback"


def test_rollback_by_hand_restores_previous_files(debian):
    store, srv, _ = debian
    before = configs(srv)
    deploy(store, srv)
    assert configs(srv) != before
    r = mailca(store, "deploy", "--rollback")
    assert "restored" in r.stdout
    assert configs(srv) == before
    got, verified = served_serial(srv.ports["submission"], starttls="smtp", root=store / "ca" / "root.crt")
    assert not verified  # the snakeoil certificate again


@pytest.mark.parametrize("sasl", ["absent", "cyrus-without-config"])
def test_no_working_sasl_backend_refuses_with_nothing_changed(tmp_path, sasl):
    store = tmp_path / "store"
    mailca(store, "init", "--org", "Test Mail", "--domain", "example.org")
    mailca(store, "issue", HOST)
    snake = snakeoil(tmp_path / "snakeoil")
    main = debian_main_cf(snake, sasl=None if sasl == "absent" else "cyrus")
    if sasl != "absent":  # a config path and application name no system file can match
        main += f"cyrus_sasl_config_path = {tmp_path / 'sasl'}\nsmtpd_sasl_path = mailca-test-smtpd\n"
    with PostfixServer(tmp_path / "pf", main_cf=main, master_cf=DEBIAN_MASTER_CF, keep_chroot=True) as srv:
        files = {p: p.read_bytes() for p in (srv.config_dir / "main.cf", srv.config_dir / "master.cf")}
        r = mailca(store, "deploy", HOST, "--postfix-config", srv.config_dir, "--no-dovecot", ok=False)
        assert r.returncode == 2, r.stderr
        assert "587/465 need AUTH" in r.stderr and "nothing changed" in r.stderr, r.stderr
        assert {p: p.read_bytes() for p in files} == files
        assert not (store / "deploy").exists()
        # port 25 alone needs no SASL: that deploy goes through and is proven
        r = mailca(store, "deploy", HOST, "--postfix-config", srv.config_dir, "--no-dovecot", "--ports", "25")
        assert len(re.findall(r"^ok ", r.stdout, re.M)) == 1, r.stdout
        got, ok = served_serial(srv.ports["smtp"], starttls="smtp", root=store / "ca" / "root.crt")
        assert ok and got == current_serial(store)


def test_renew_and_rekey_after_deploy_reload_and_prove_new_serial(debian):
    store, srv, _ = debian
    root = store / "ca" / "root.crt"
    deploy(store, srv)
    for step in (("renew", HOST, "--force"), ("rekey", HOST, "--commit", "--force")):
        if step[0] == "rekey":
            mailca(store, "rekey", HOST, "--stage")
        old = current_serial(store)
        r = mailca(store, *step)  # no deploy hook, no manual reload
        new = current_serial(store)
        assert new != old
        # the command itself reloaded and probed all five ports
        assert len(re.findall(rf"^verified on the wire: .* serves serial {new:x}$", r.stdout, re.M)) == 5, r.stdout
        for label, (port, starttls) in all_ports(srv).items():
            got, ok = served_serial(port, starttls=starttls, root=root)
            assert (got, ok) == (new, True), f"{step[0]}: port {label}"


def test_renew_fails_when_a_port_keeps_the_old_certificate(debian):
    store, srv, _ = debian
    deploy(store, srv, "--wait", "5")  # renew waits as long as the deploy was told to
    old = current_serial(store)
    # the classic: Dovecot is not reloaded after the renewal, so it keeps serving the old
    # certificate (its config process holds the file contents).  Here mailca is made to skip
    # Dovecot's reload by editing the deploy record; the probe must catch it.
    rec = json.loads((store / "deploy" / "deployed.json").read_text())
    rec[HOST]["dovecot_conf"] = None
    (store / "deploy" / "deployed.json").write_text(json.dumps(rec))
    r = mailca(store, "renew", HOST, "--force", ok=False)
    assert r.returncode == 4, r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert re.match(rf"mailca: error: {re.escape(HOST)} was renewed but imaps? 127\.0\.0\.1:\d+: serves serial "
                    rf"{old:x}, not the current {current_serial(store):x} \(and 1 more port\(s\)\); run 'postfix", err), err
    got, _ = served_serial(srv.ports["imaps"], starttls=None)
    assert got == old  # really still the old one: the error told the truth


def test_cyrus_saslauthd_backend_is_kept_and_auth_works(tmp_path):
    """A real Cyrus SASL set-up as Debian documents it: saslauthd (here -a rimap, checking the
    passwords against the Dovecot IMAP server, so no system account is needed) with its socket
    inside the chroot, smtpd_sasl_type = cyrus, and smtpd.conf (pwcheck_method: saslauthd) in
    $config_directory/sasl - where Debian's Postfix reads it (its patch 07_sasl_config ignores
    cyrus_sasl_config_path: strace shows smtpd opening <config_directory>/sasl/smtpd.conf, then
    /usr/lib/sasl/smtpd.conf, nothing else).  The deploy keeps the backend (smtpd_sasl_type/path
    untouched) and afterwards swaks AUTH PLAIN on 587 and 465, verified against the root,
    succeeds through saslauthd."""
    import signal

    store = tmp_path / "store"
    mailca(store, "init", "--org", "Test Mail", "--domain", "example.org")
    mailca(store, "issue", HOST)
    snake = snakeoil(tmp_path / "snakeoil")
    srv = PostfixServer(tmp_path / "pf", main_cf="", master_cf=DEBIAN_MASTER_CF, users=USERS, keep_chroot=True,
                        imap_cert=snake)
    sasl_dir = srv.config_dir / "sasl"
    sasl_dir.mkdir(parents=True)
    # smtpd (chroot y) connects to saslauthd after entering the queue directory: a path inside it
    (sasl_dir / "smtpd.conf").write_text("pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\n"
                                         "saslauthd_path: /saslauthd/mux\n")
    srv.main_cf_text = debian_main_cf(snake, sasl="cyrus")  # smtpd_sasl_path: the default, 'smtpd'
    with srv:
        mux = srv.queue_dir / "saslauthd"
        mux.mkdir()
        os.chmod(mux, 0o755)
        with open(srv.run_dir / "saslauthd.log", "w") as log:
            sa = subprocess.Popen(["saslauthd", "-d", "-a", "rimap", "-O", f"127.0.0.1/{srv.ports['imap']}",
                                   "-m", str(mux), "-n", "1"], stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 20
            while not (mux / "mux").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            t = subprocess.run(["testsaslauthd", "-u", "alice", "-p", USERS["alice"], "-f", str(mux / "mux")],
                               capture_output=True, text=True, timeout=30)
            assert t.returncode == 0 and "OK" in t.stdout, t.stdout + t.stderr
            dry = deploy(store, srv, "--dry-run", "--json")
            plan = json.loads(dry.stdout)
            assert plan["sasl"] == "cyrus" and str(sasl_dir / "smtpd.conf") in plan["sasl_detail"], plan["sasl_detail"]
            assert not {c["key"] for c in plan["changes"]} & {"smtpd_sasl_type", "smtpd_sasl_path"}, plan["changes"]
            r = deploy(store, srv)
            assert len(re.findall(r"^ok ", r.stdout, re.M)) == 5, r.stdout
            n = srv.postconf("-n")
            assert "smtpd_sasl_type = cyrus" in n and "smtpd_sasl_path" not in n, n
            root = store / "ca" / "root.crt"
            for port, implicit in ((srv.ports["submission"], False), (srv.ports["submissions"], True)):
                s = swaks_auth(port, root, implicit=implicit)
                assert s.returncode == 0, s.stdout[-1500:] + s.stderr[-500:]
                assert re.search(r"<~  250-AUTH PLAIN LOGIN$", s.stdout, re.M), s.stdout[-1500:]  # smtpd.conf was read
                assert re.search(r"<~  235 2\.7\.0 Authentication successful", s.stdout), s.stdout[-800:]
            maillog = srv.log_file.read_text(errors="replace")
            assert len(re.findall(r"sasl_method=PLAIN, sasl_username=alice", maillog)) == 2, maillog[-2000:]
            assert "no SASL authentication mechanisms" not in maillog
        finally:
            os.killpg(sa.pid, signal.SIGTERM)  # our own saslauthd's session (start_new_session)
            sa.wait(timeout=30)


def test_rollback_when_a_port_does_not_come_back(debian):
    """A deploy whose reload leaves 587 dead: the admin's submission entry points smtpd at a SASL
    socket nobody serves (-o smtpd_sasl_path), harmless while AUTH is off there; the deploy turns
    AUTH on (smtpd_sasl_auth_enable=yes, which it owns), and after the reload every connection to
    587 is dropped by a fatal smtpd.  The probe sees the port not answering -> rollback: the files
    byte-identical, the old certificate served again, one line naming the port and the log."""
    store, srv, _ = debian
    key = f"127.0.0.1:{srv.ports['submission']}/inet"
    srv.postconf("-P", f"{key}/smtpd_sasl_auth_enable=no", f"{key}/smtpd_sasl_path=private/no-such-auth")
    srv._postfix("reload")
    time.sleep(1)
    old_serial, _ = served_serial(srv.ports["submission"], starttls="smtp")  # answers before the deploy
    before = configs(srv)
    r = deploy(store, srv, "--wait", "5", ok=False)
    assert r.returncode == 4, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert re.match(rf"mailca: error: deploy failed: submission 127\.0\.0\.1:{srv.ports['submission']}: ", err[0]), err[0]
    assert "rolled back" in err[0] and str(srv.log_file) in err[0], err[0]
    # master(8) throttles the dead service for 60 s, reload or not: mailca restarted Postfix
    assert "Postfix restarted (submission" in err[0], err[0]
    assert configs(srv) == before
    log = srv.log_file.read_text(errors="replace")
    assert "private/no-such-auth" in log, log[-1500:]  # really the port that died, and why
    time.sleep(1)
    for label, (port, starttls) in all_ports(srv).items():
        got, _ = served_serial(port, starttls=starttls)
        assert got == old_serial, f"port {label} after rollback"


# ------------------------------------------------ other MTAs and clients, only the mailca root
EXIM_ROOT = Path(os.environ.get("MAILCA_EXIM_ROOT", "/var/cache/mailca-test/exim/root"))  # dpkg -x (scripts/test.sh)
SENDER_MASTER_CF = "smtp inet n - n - - smtpd\n"


def wait_log(path: Path, pattern: str, start: int, timeout: float = 60) -> str:
    """The log text after byte START once PATTERN appears in it (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace")[start:] if path.exists() else ""
        if re.search(pattern, text, re.M) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def postfix_sends(sender: PostfixServer, main: str, rcpt: str) -> str:
    """Reconfigure SENDER with MAIN (on top of its base text), send one message to RCPT, return
    the log from the message's delivery attempt."""
    sender.main_cf_text = main
    sender.reload()
    start = sender.log_file.stat().st_size
    msg = f"From: bob@sender.example.net\nTo: {rcpt}\nSubject: mailca deploy interop\n\nhello\n"
    r = subprocess.run(["sendmail", "-C", str(sender.config_dir), "-f", "bob@sender.example.net", rcpt],
                       input=msg, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return wait_log(sender.log_file, r"status=(sent|deferred|bounced)", start)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """One Debian-like server (as the 'debian' fixture) with HOST deployed and the root copy
    written, shared by the interop test and the renew-intermediate test (the latter comes last
    in this file: it changes the chain)."""
    tmp = tmp_path_factory.mktemp("deployed")
    store = tmp / "store"
    mailca(store, "init", "--org", "Test Mail", "--domain", "example.org")
    mailca(store, "issue", HOST)
    snake = snakeoil(tmp / "snakeoil")
    srv = PostfixServer(tmp / "pf", main_cf=debian_main_cf(snake), master_cf=DEBIAN_MASTER_CF,
                        users=USERS, keep_chroot=True, imap_cert=snake)
    with srv:
        root = srv.run_dir / "mailca" / "root.crt"  # traversable for postfix / Debian-exim / nobody
        r = deploy(store, srv, "--root-copy", root)
        yield store, srv, root, r


def test_sending_mtas_and_fetchmail_verify_with_only_the_mailca_root(deployed):
    """After the deploy, with nothing but the world-readable root copy (--root-copy), each as
    the user it runs as in production: a second Postfix with smtp_tls_security_level = secure
    (and, second route, mailca's --secure-domain policy table with tafile=) delivers to port 25
    through postscreen, log 'Verified TLS connection established' + status=sent; Exim with
    tls_verify_certificates logs CV=yes; fetchmail with sslcertck fetches over 993 and STARTTLS
    143; a non-root user can 'openssl verify' with the copy."""
    from postfix_harness import hosts_file, with_hosts

    store, srv, root, r = deployed
    run = srv.run_dir  # traversable by the postfix / Debian-exim / nobody users (pytest's tmp is not)
    assert f"wrote the mailca root (0644, for local services) to {root}" in r.stdout, r.stdout
    assert root.read_bytes() == (store / "ca" / "root.crt").read_bytes()
    assert root.stat().st_mode & 0o777 == 0o644 and (run / "mailca").stat().st_mode & 0o777 == 0o755
    leaf = run / "fullchain.pem"  # what the server sends (public), where nobody can read it
    leaf.write_bytes((store / "certs" / HOST / "ecdsa-p256" / "live" / "fullchain.pem").read_bytes())
    os.chmod(leaf, 0o644)
    v = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "openssl", "verify",
                        "-CAfile", str(root), "-untrusted", str(leaf), str(leaf)],
                       capture_output=True, text=True, timeout=30)
    assert v.returncode == 0 and ": OK" in v.stdout, v.stdout + v.stderr
    hosts = {HOST: "127.0.0.1", "example.org": "127.0.0.1"}
    # the deployed server accepts (and discards) mail for root@example.org
    srv.postconf("-e", "mydestination = localhost, example.org")
    srv._postfix("reload")

    # --- a second Postfix: level secure, CAfile = the mailca root only (no CApath)
    base = (f"myhostname = sender.example.net\nsmtp_tls_loglevel = 1\nsmtp_dns_support_level = disabled\n"
            f"smtp_host_lookup = native\nsmtp_tcp_port = {srv.ports['smtp']}\n")
    tdir = run / "sender-maps"
    tdir.mkdir()
    (tdir / "transport-secure").write_text(f"example.org smtp:[{HOST}]\n")
    (tdir / "transport-domain").write_text("example.org smtp:\n")  # next hop = the recipient domain
    sender = PostfixServer(run / "sender", main_cf=base, master_cf=SENDER_MASTER_CF, hosts=hosts)
    with sender:
        log = postfix_sends(sender, base + f"transport_maps = texthash:{tdir / 'transport-secure'}\n"
                            f"smtp_tls_security_level = secure\nsmtp_tls_CAfile = {root}\nsmtp_tls_CApath =\n",
                            "root@example.org")
        assert re.search(rf"Verified TLS connection established to {re.escape(HOST)}\[127\.0\.0\.1\]:{srv.ports['smtp']}",
                         log), log[-2000:]
        assert re.search(r"status=sent \(250 ", log), log[-2000:]
        # --- the --secure-domain route: mailca's policy table, tafile = the root copy, Debian's CApath kept
        w = run / "secure-domain"
        mailca(store, "postfix", HOST, "--secure-domain", "example.org", "--root-file", root, "--write", w)
        policy = (w / "mailca-tls-policy").read_text()
        assert f"tafile={root}" in policy, policy
        log = postfix_sends(sender, base + f"transport_maps = texthash:{tdir / 'transport-domain'}\n"
                            "smtp_tls_security_level = may\nsmtp_tls_CApath = /etc/ssl/certs\n"
                            f"smtp_tls_policy_maps = texthash:{w / 'mailca-tls-policy'}\n", "root@example.org")
        assert re.search(rf"Verified TLS connection established to example\.org\[127\.0\.0\.1\]:{srv.ports['smtp']}",
                         log), log[-2000:]
        assert re.search(r"status=sent \(250 ", log), log[-2000:]
        # negative control: the same table naming the store's root (0700 store, like /etc/mailca):
        # the smtp client runs as 'postfix' and cannot load it - the message is deferred
        w2 = run / "secure-domain-store-root"
        r = mailca(store, "postfix", HOST, "--secure-domain", "example.org", "--write", w2)
        assert "mailca: warning: tafile= names" in r.stderr and "--root-file" in r.stderr, r.stderr
        assert f"tafile={store / 'ca' / 'root.crt'}" in (w2 / "mailca-tls-policy").read_text()
        log = postfix_sends(sender, base + f"transport_maps = texthash:{tdir / 'transport-domain'}\n"
                            "smtp_tls_security_level = may\nsmtp_tls_CApath = /etc/ssl/certs\n"
                            f"smtp_tls_policy_maps = texthash:{w2 / 'mailca-tls-policy'}\n", "root@example.org")
        assert "Verified TLS" not in log and "status=deferred" in log, log[-2000:]
        assert re.search(rf"{re.escape(str(store / 'ca' / 'root.crt'))}.*(Permission denied|permission denied)", log), \
            log[-2000:]

    # --- Exim 4 (dpkg -x of the Debian package) as a sending MTA: CV=yes
    exim = EXIM_ROOT / "usr" / "sbin" / "exim4"
    if not exim.exists():
        pytest.fail(f"{exim} missing: scripts/test.sh unpacks exim4-daemon-light there")
    ed = run / "exim"
    (ed / "spool").mkdir(parents=True)
    (ed / "log").mkdir()
    uid, gid = int(subprocess.check_output(["id", "-u", "Debian-exim"])), int(subprocess.check_output(["id", "-g", "Debian-exim"]))
    for d in (ed, ed / "spool", ed / "log"):
        os.chown(d, uid, gid)
    conf = ed / "exim.conf"
    conf.write_text(f"""\
primary_hostname = exim.example.net
exim_path = {exim}
log_selector = +outgoing_port
exim_user = Debian-exim
exim_group = Debian-exim
spool_directory = {ed / 'spool'}
log_file_path = {ed / 'log'}/%slog
keep_environment =
begin routers
to_mailca:
  driver = manualroute
  route_list = * {HOST}::{srv.ports['smtp']} byname
  self = send
  transport = verified_tls
begin transports
verified_tls:
  driver = smtp
  hosts_require_tls = *
  tls_verify_certificates = {root}
  tls_verify_hosts = *
  tls_verify_cert_hostnames = *
  tls_sni = {HOST}
begin retry
*  *  F,1m,1m
""")
    hf = hosts_file(ed / "hosts", hosts)
    r = subprocess.run(with_hosts(hf, [exim, "-C", conf, "-odi", "-f", "bob@exim.example.net", "root@example.org"]),
                       input="Subject: exim via mailca\n\nhello\n", capture_output=True, text=True, timeout=90)
    mainlog = (ed / "log" / "mainlog").read_text(errors="replace") if (ed / "log" / "mainlog").exists() else ""
    assert r.returncode == 0, r.stdout + r.stderr + mainlog
    assert re.search(rf"=> root@example\.org R=to_mailca T=verified_tls H={re.escape(HOST)} \[127\.0\.0\.1\]:"
                     rf"{srv.ports['smtp']} .*CV=yes", mainlog), mainlog
    assert "Completed" in mainlog, mainlog

    # --- fetchmail over 993 and STARTTLS 143: a message delivered to Dovecot's mailbox (LMTP)
    import smtplib

    with smtplib.LMTP(str(srv.queue_dir / "private" / "dovecot-lmtp"), timeout=30) as lmtp:
        lmtp.sendmail("bob@sender.example.net", ["alice"],
                      "From: bob@sender.example.net\r\nSubject: for fetchmail\r\nMessage-ID: <fm-1@mailca.test>\r\n\r\nhi\r\n")
    fm = run / "fetchmail"
    fm.mkdir()
    for label, port, tls in (("993", srv.ports["imaps"], "ssl"), ("143", srv.ports["imap"], "sslproto tls1.2+")):
        out = fm / f"got-{label}"
        rc = fm / f"rc-{label}"
        rc.write_text(f'set no syslog\npoll {HOST} proto imap port {port}\n'
                      f'  user "alice" password "{USERS["alice"]}" {tls} sslcertck sslcertfile "{root}"\n'
                      f'  keep fetchall mda "/bin/sh -c \'cat >> {out}\'"\n')
        os.chmod(rc, 0o600)
        f = subprocess.run(with_hosts(hf, ["fetchmail", "-f", rc, "-v", "--nodetach"]), capture_output=True, text=True,
                           timeout=90, env={**os.environ, "FETCHMAILHOME": str(fm), "HOME": str(fm)})
        assert f.returncode == 0, f"fetchmail {label}: {f.returncode}\n{f.stdout[-2500:]}\n{f.stderr[-1500:]}"
        assert "<fm-1@mailca.test>" in out.read_text(), label
        if label == "143":
            assert "STARTTLS" in f.stdout + f.stderr, f.stdout[-2000:]


@pytest.mark.parametrize("given, expect", [
    ("relative/root.crt", "is not an absolute file path"),
    ("{store}/ca/copy.crt", "is inside the store"),
    ("{tmp}", "is a directory"),
])
def test_root_copy_bad_path_is_refused_before_anything(tmp_path, given, expect):
    store = tmp_path / "store"
    mailca(store, "init", "--org", "Test Mail", "--domain", "example.org")
    mailca(store, "issue", HOST)
    path = given.format(store=store, tmp=tmp_path)
    r = mailca(store, "deploy", HOST, "--postfix-config", tmp_path / "no-such-instance", "--no-dovecot",
               "--root-copy", path, ok=False)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mailca: error: --root-copy {path!r} {expect}"), r.stderr
    assert not (store / "deploy").exists() and not (store / "ca" / "copy.crt").exists()


def served_chain(port: int, *, starttls: str | None) -> list[str]:
    """The PEM certificates PORT sends, in order."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST, "-showcerts"]
    args += ["-starttls", starttls] if starttls else []
    r = subprocess.run(args, input="", capture_output=True, text=True, timeout=60)
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.stdout, re.S)


def test_renew_intermediate_then_renew_all_serves_the_new_chain(deployed):
    """'ca renew-intermediate' (same key, new certificate), then 'renew --all --force' switches
    the leaves onto it: the renewal reloads what was deployed and probes every port, and every
    port then sends the new intermediate (byte for byte) behind the new leaf."""
    store, srv, _, _ = deployed
    old_inter = (store / "ca" / "intermediate.crt").read_text().strip()
    mailca(store, "ca", "renew-intermediate")
    new_inter = (store / "ca" / "intermediate.crt").read_text().strip()
    assert new_inter != old_inter
    assert served_chain(srv.ports["submissions"], starttls=None)[1] == old_inter  # nothing reloaded yet
    r = mailca(store, "renew", "--all", "--force")
    new = current_serial(store)
    assert len(re.findall(rf"^verified on the wire: .* serves serial {new:x}$", r.stdout, re.M)) == 5, r.stdout
    root = store / "ca" / "root.crt"
    for label, (port, starttls) in all_ports(srv).items():
        assert served_serial(port, starttls=starttls, root=root) == (new, True), f"port {label}"
        chain = served_chain(port, starttls=starttls)
        assert chain[1:] == [new_inter], f"port {label} sends {len(chain)} certificate(s), not leaf + new intermediate"


def test_postfix_root_file_bad_values(tmp_path):
    """--root-file (the tafile= of the --secure-domain table) must be absolute, readable and hold
    this CA's root; each bad value is one line naming it, nothing written."""
    store = tmp_path / "store"
    mailca(store, "init", "--org", "Test Mail", "--domain", "example.org")
    mailca(store, "issue", HOST)
    other, _ = snakeoil(tmp_path / "other")
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    for given, expect in (("root.crt", "is not an absolute path"), (str(tmp_path / "nope.crt"), "cannot be read"),
                          (str(junk), "holds no PEM certificate"), (str(other), "does not hold this CA's root")):
        w = tmp_path / "w"
        r = mailca(store, "postfix", HOST, "--secure-domain", "example.org", "--root-file", given, "--write", w, ok=False)
        assert r.returncode == 2, r.stderr
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"mailca: error: --root-file {given!r} {expect}"), r.stderr
        assert not w.exists()
    good = tmp_path / "copy.crt"
    good.write_bytes((store / "ca" / "root.crt").read_bytes())
    out = mailca(store, "postfix", HOST, "--secure-domain", "example.org", "--root-file", good).stdout
    assert f"tafile={good}" in out and "ca/root.crt" not in out, out
