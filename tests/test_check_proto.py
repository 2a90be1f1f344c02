"""mailca check on IMAP and POP3 (issue #13 part B) against a real Dovecot (tests/postfix_harness.py
with a conf.d drop-in adding POP3), hardened and with plaintext passwords allowed before TLS; a
differential against testssl.sh on one port; --nagios, --warn-days, --baseline; a rate-limiting
server."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time

import pytest

from conftest import T0, base_env, make_ca, require, run, tool
from postfix_harness import PLAIN_MASTER_CF, PostfixServer, free_port

HOST = "mail.example.org"
# Dovecot counts a connection whose source address equals its local address as secured (no
# LOGINDISABLED then): it listens on 127.0.0.3, we connect from 127.0.0.1.
ADDR = "127.0.0.3"

# After conf.d/mailca.conf (the hardened settings 'mailca dovecot' prints): the listeners, and
# for the weak server the two settings that let a password travel in clear.
DROPIN = """\
protocols = imap pop3 lmtp
listen = 127.0.0.1, {addr}
{weak}service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
"""


@pytest.fixture(scope="module")
def dove(tmp_path_factory):
    for t in ("postfix", "dovecot"):
        require(t)
    d = tmp_path_factory.mktemp("checkproto")
    ca = make_ca(d / "store", "example.org")
    ca.issue(HOST)
    live = ca.live(HOST)
    srv = PostfixServer(d / "pf", main_cf="", master_cf=PLAIN_MASTER_CF, users={"alice": "pw"},
                        imap_cert=(live / "fullchain.pem", live / "key.pem"))
    ports = dict(srv.ports, pop3=free_port(), pop3s=free_port())
    srv.ca, srv.all_ports = ca, ports
    (srv.config_dir / "conf.d").mkdir(parents=True, exist_ok=True)
    hardened = ca.ok("dovecot", HOST, "--no-sasl-listener", "--dovecot-version", "2.3").stdout
    assert "ssl = required" in hardened and "disable_plaintext_auth = yes" in hardened, hardened
    (srv.config_dir / "conf.d" / "mailca.conf").write_text(hardened)
    set_mode(srv, weak=False, reload=False)
    with srv:
        set_mode(srv, weak=False)
        yield srv


def set_mode(srv, *, weak: bool, reload: bool = True) -> None:
    text = DROPIN.format(addr=ADDR, weak="ssl = yes\ndisable_plaintext_auth = no\n" if weak else "",
                         pop3=srv.all_ports["pop3"], pop3s=srv.all_ports["pop3s"])
    f = srv.config_dir / "conf.d" / "proto.conf"
    if f.exists() and f.read_text() == text:
        return
    f.write_text(text)
    if reload:
        srv.dovecot_reload()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the new login processes must be listening
            try:
                socket.create_connection((ADDR, srv.all_ports["pop3"]), timeout=1).close()
                socket.create_connection((ADDR, srv.all_ports["imap"]), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5)


def check(srv, *args):
    ports = srv.all_ports
    argv = ["check", ADDR, "--name", HOST, "--ca", str(srv.ca.root), "--timeout", "5", "--port-deadline", "30",
            "--port", f"{ports['imap']}:imap", "--port", f"{ports['imaps']}:imaps",
            "--port", f"{ports['pop3']}:pop3", "--port", f"{ports['pop3s']}:pop3s", *args]
    return run(argv, env=base_env())


def ids(port_json) -> set[str]:
    return {f["id"] for f in port_json["findings"]}


def test_hardened_dovecot_has_no_policy_finding(dove):
    set_mode(dove, weak=False)
    r = check(dove, "--json")
    doc = json.loads(r.stdout)
    if os.environ.get("CP2_DUMP"):
        open(os.environ["CP2_DUMP"], "w").write(r.stdout)
    assert [p["error"] for p in doc["ports"]] == [None] * 4, r.stdout
    by_role = {p["role"]: p for p in doc["ports"]}
    imap, pop3 = by_role["imap"], by_role["pop3"]
    assert "LOGINDISABLED" in imap["capabilities_before_tls"] and "STARTTLS" in imap["capabilities_before_tls"]
    assert imap["plaintext_auth_before_tls"] == [] and pop3["plaintext_auth_before_tls"] == []
    assert "STLS" in pop3["capabilities_before_tls"]
    for p in doc["ports"]:
        assert not ids(p) & {"imap.plaintext_auth", "pop3.plaintext_auth", "imap.no_starttls", "pop3.no_stls"}
        # the same TLS audit through IMAP/POP3: protocols probed, chain verified against our root
        assert p["protocols"]["TLSv1.2"] is True, p
        assert "cert.ok" in ids(p) and "cert.untrusted" not in ids(p)
        assert p["vulnerabilities"]["heartbleed"]["status"] == "not_vulnerable", p["vulnerabilities"]
        if p["role"] in ("imap", "pop3"):
            assert p["vulnerabilities"]["starttls_injection"]["status"] == "not_vulnerable", p["vulnerabilities"]
    assert all(p["tls"]["version"] in ("TLSv1.2", "TLSv1.3") for p in doc["ports"])  # the real handshake
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr


def test_plaintext_dovecot_is_high_with_the_dovecot_fix(dove):
    set_mode(dove, weak=True)
    try:
        r = check(dove, "--json")
        doc = json.loads(r.stdout)
        by_role = {p["role"]: p for p in doc["ports"]}
        f = {x["id"]: x for x in by_role["imap"]["findings"]}["imap.plaintext_auth"]
        assert f["severity"] == "HIGH" and "LOGINDISABLED" in f["detail"] and "AUTH=PLAIN" in f["detail"]
        assert "disable_plaintext_auth = yes" in f["fix"] and "ssl = required" in f["fix"]
        assert "auth_allow_cleartext = no" in f["fix"]
        g = {x["id"]: x for x in by_role["pop3"]["findings"]}["pop3.plaintext_auth"]
        assert g["severity"] == "HIGH" and "USER/PASS" in g["detail"] and "SASL=PLAIN" in g["detail"]
        # the implicit-TLS ports are not affected
        assert not ids(by_role["imaps"]) & {"imap.plaintext_auth"} and not ids(by_role["pop3s"]) & {"pop3.plaintext_auth"}
        assert r.returncode == 5, r.stderr
        # text form names the fix; --nagios: CRITICAL, exit 2
        t = check(dove)
        assert "IMAP allows a password in clear" in t.stdout and "disable_plaintext_auth" in t.stdout
        n = check(dove, "--nagios")
        assert n.returncode == 2, n.stdout + n.stderr
        assert re.match(r"MAILCA CHECK CRITICAL - .*\| .*high=2", n.stdout), n.stdout
        assert len(n.stdout.strip().splitlines()) == 1
    finally:
        set_mode(dove, weak=False)


class RateLimitedSMTP:
    """A tiny SMTP + STARTTLS server on 127.0.0.1 that serves the first ``n`` connections and
    then closes every new one straight after accept (what a connection-rate limit does)."""

    def __init__(self, cert, key, n: int, addr: str = "127.0.0.1", port: int = 0):
        import ssl

        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.n, self.served, self.refused = n, 0, 0
        self.accepted_at: list[float] = []
        self.sock = socket.create_server((addr, port))
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            if self.served >= self.n:
                self.refused += 1
                c.close()
                continue
            self.served += 1
            self.accepted_at.append(time.monotonic())
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, c):
        c.settimeout(5)
        f = c.makefile("rb")
        try:
            c.sendall(b"220 rl.example.org ESMTP\r\n")
            while True:
                line = f.readline(1024)
                if not line:
                    return
                cmd = line.strip().upper()
                if cmd.startswith(b"EHLO"):
                    c.sendall(b"250-rl.example.org\r\n250 STARTTLS\r\n")
                elif cmd == b"STARTTLS":
                    c.sendall(b"220 go ahead\r\n")
                    s = self.ctx.wrap_socket(c, server_side=True)
                    f = s.makefile("rb")
                    c = s
                elif cmd == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    return
                else:
                    c.sendall(b"502 no\r\n")
        except (OSError, ValueError):
            pass
        finally:
            c.close()

    def close(self):
        self.stop = True
        self.t.join(2)
        self.sock.close()


@pytest.mark.parametrize("n", [1, 4])
def test_rate_limited_port_is_incomplete_not_clean_nor_refusing(tmp_path, n):
    """n = 1: only the policy session is served, every probe is refused (not "refuses every
    protocol"); n = 4: a few probes are answered, then refused."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    r = tool("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=rl.example.org")
    assert r.returncode == 0, r.stderr
    srv = RateLimitedSMTP(cert, key, n=n)
    try:
        t0 = time.monotonic()
        r = run(["check", "127.0.0.1", "--port", str(srv.port), "--timeout", "3", "--port-deadline", "12",
                 "--json"], env=base_env())
        took = time.monotonic() - t0
    finally:
        srv.close()
    doc = json.loads(r.stdout)
    p = doc["ports"][0]
    assert p["error"] is None, p["error"]
    assert p["status"] == "incomplete: rate limited"
    assert p["incomplete"][0].startswith("rate limited"), p["incomplete"]
    f = [x for x in p["findings"] if x["id"] == "check.rate_limited"]
    assert f and f[0]["severity"] == "MEDIUM", p["findings"]
    assert "refus" not in (p["error"] or "") and "no TLS version accepted" not in r.stderr
    assert r.returncode == 6, r.stderr  # incomplete, not clean (0)
    assert srv.refused > 10  # it really was retried after being refused
    assert took < 40
    n = run(["check", "127.0.0.1", "--port", str(srv.port), "--nagios"], env=base_env())
    assert n.returncode == 3 and n.stdout.startswith("MAILCA CHECK UNKNOWN"), n.stdout  # server gone now


def test_warn_days_uses_the_injected_clock(dove):
    import datetime as dt

    set_mode(dove, weak=False)
    later = (T0 + dt.timedelta(days=300)).strftime("%Y-%m-%dT%H:%M:%SZ")  # ~65 days left
    argv = ["check", ADDR, "--name", HOST, "--ca", str(dove.ca.root), "--port", f"{dove.all_ports['imaps']}:imaps"]
    r = run([*argv, "--warn-days", "90", "--json"], env=base_env(MAILCA_NOW=later))
    p = json.loads(r.stdout)["ports"][0]
    w = [f for f in p["findings"] if f["id"] == "cert.expiry_warning"]
    assert w and w[0]["severity"] == "MEDIUM" and "--warn-days 90" in w[0]["detail"], p["findings"]
    assert 60 <= p["certificate"]["days_left"] <= 66
    assert r.returncode == 5
    n = run([*argv, "--warn-days", "90", "--nagios"], env=base_env(MAILCA_NOW=later))
    assert n.returncode == 1 and n.stdout.startswith("MAILCA CHECK WARNING - "), n.stdout
    assert "cert_days_left=" in n.stdout.split("|")[1]
    r = run([*argv, "--warn-days", "30", "--json"], env=base_env(MAILCA_NOW=later))
    assert r.returncode == 0 and "cert.expiry_warning" not in r.stdout
    n = run([*argv, "--warn-days", "30", "--nagios"], env=base_env(MAILCA_NOW=later))
    assert n.returncode == 0 and n.stdout.startswith("MAILCA CHECK OK - "), n.stdout


def test_baseline_reports_only_new_and_resolved(dove, tmp_path):
    base = tmp_path / "baseline.json"
    argv = ["check", ADDR, "--name", HOST, "--ca", str(dove.ca.root),
            "--port", f"{dove.all_ports['imap']}:imap", "--port", f"{dove.all_ports['pop3']}:pop3",
            "--baseline", str(base)]
    set_mode(dove, weak=False)
    try:
        r = run(argv, env=base_env())
        assert r.returncode == 0 and "first run: baseline written" in r.stdout, r.stdout + r.stderr
        first = base.read_bytes()
        assert oct(base.stat().st_mode & 0o777) == "0o644"
        set_mode(dove, weak=True)
        r = run([*argv, "--json"], env=base_env())
        b = json.loads(r.stdout)["baseline"]
        assert sorted(e["id"] for e in b["new"]) == ["imap.plaintext_auth", "pop3.plaintext_auth"], b
        assert b["resolved"] == [] and b["first_run"] is False
        assert r.returncode == 5
        r = run(argv, env=base_env())  # nothing changed since the last run
        assert r.returncode == 0 and "0 new, 0 resolved" in r.stdout, r.stdout
        set_mode(dove, weak=False)
        r = run([*argv, "--nagios"], env=base_env())
        assert r.returncode == 0 and "0 new, 2 resolved since baseline" in r.stdout, r.stdout
        # a damaged baseline is refused, nothing written
        base.write_text("{not json")
        r = run(argv, env=base_env())
        assert r.returncode == 2 and r.stderr.startswith("mailca: error: --baseline") and base.read_text() == "{not json"
    finally:
        set_mode(dove, weak=False)


def _testssl_protocols(port: int, starttls: str | None, tmp_path) -> dict[str, bool]:
    out = tmp_path / f"testssl-{port}.json"
    argv = ["testssl", "--quiet", "--warnings", "off", "--color", "0", "--openssl-timeout", "5", "-p",
            "--jsonfile", str(out)]
    if starttls:
        argv += ["-t", starttls]
    r = tool(*argv, f"{ADDR}:{port}", timeout=240)
    assert out.exists(), r.stdout[-2000:] + r.stderr[-2000:]
    names = {"SSLv3": "SSLv3", "TLS1": "TLSv1.0", "TLS1_1": "TLSv1.1", "TLS1_2": "TLSv1.2", "TLS1_3": "TLSv1.3"}
    got = {}
    for e in json.loads(out.read_text()):
        if e.get("id") in names:
            got[names[e["id"]]] = not e["finding"].startswith("not offered")
    return got


@pytest.mark.interop
def test_protocols_through_imap_starttls_agree_with_testssl(dove, tmp_path):
    """Differential, one port: the TLS audit through IMAP STARTTLS (143 role) says the same about
    the protocols as testssl.sh -t imap.  (testssl.sh does not test LOGINDISABLED: that finding is
    ours alone, covered by test_plaintext_dovecot_is_high_with_the_dovecot_fix.)"""
    require("testssl")
    set_mode(dove, weak=False)
    port = dove.all_ports["imap"]
    theirs = _testssl_protocols(port, "imap", tmp_path)
    r = run(["check", ADDR, "--name", HOST, "--ca", str(dove.ca.root), "--port", f"{port}:imap", "--json"],
            env=base_env())
    ours = json.loads(r.stdout)["ports"][0]["protocols"]
    assert set(theirs) == {"SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"}, theirs
    assert {k: ours[k] for k in theirs} == theirs
    assert theirs["TLSv1.2"] and not theirs["SSLv3"]
 

def test_mx_every_host_and_address_in_priority_order(tmp_path):
    for t in ("knotd", "unbound"):
        require(t)
    from dns_harness import DnsHarness

    n = os.getpid() % 200 + 2
    a1, a2, a3 = f"127.0.79.{n}", f"127.0.80.{n}", f"127.0.81.{n}"
    ca = make_ca(tmp_path / "store", "example.org")
    ca.issue("mail.example.org")
    ca.issue("mx2.example.org")
    servers = []
    try:
        for addr, host in ((a1, "mail.example.org"), (a2, "mail.example.org"), (a3, "mx2.example.org")):
            live = ca.live(host)
            servers.append(RateLimitedSMTP(live / "fullchain.pem", live / "key.pem", n=10**6, addr=addr, port=25))
        with DnsHarness(tmp_path / "dns", "example.org", mx_addr=a1) as dnsz:
            # MX 10 mail (two addresses), MX 20 mx2 (one)
            dnsz.update_direct(["example.org. 15 MX 20 mx2.example.org.", f"mx2.example.org. 15 A {a3}",
                                f"mail.example.org. 15 A {a2}"])
            dnsz.flush_resolver()
            r = run(["check", "--mx", "example.org", "--resolver", dnsz.resolver, "--ca", str(ca.root),
                     "--timeout", "5", "--json"], env=base_env())
            assert r.stdout, r.stderr
            doc = json.loads(r.stdout)
            assert doc["schema"] == "mailca-check-mx/1"
            mx = doc["mx"]
            assert mx["mx_status"] == "secure", mx
            assert [(h["preference"], h["name"]) for h in mx["hosts"]] == [(10, "mail.example.org"), (20, "mx2.example.org")]
            assert mx["hosts"][0]["addresses"] == sorted([a1, a2]) and mx["hosts"][1]["addresses"] == [a3]
            assert mx["hosts"][0]["address_status"]["A"] == "secure"
            got = [(x["mx"], x["address"]) for x in doc["reports"]]
            assert got == [("mail.example.org", a) for a in sorted([a1, a2])] + [("mx2.example.org", a3)]
            for x in doc["reports"]:
                assert x["host"] == x["address"] and x["name"] == x["mx"]
                p = x["ports"][0]
                assert p["port"] == 25 and p["error"] is None, p
                ids_ = {f["id"] for f in p["findings"]}
                assert "cert.ok" in ids_ and "cert.hostname" not in ids_, p["findings"]
            # audited in parallel: every server got its first connection before any got its last
            assert max(s.accepted_at[0] for s in servers) < min(s.accepted_at[-1] for s in servers)
            # text form: one section per address, in order; --nagios: one line
            t = run(["check", "--mx", "example.org", "--resolver", dnsz.resolver, "--ca", str(ca.root)], env=base_env())
            order = [t.stdout.index(f"== MX {h} at {a}") for h, a in got]
            assert order == sorted(order), t.stdout
            nrun = run(["check", "--mx", "example.org", "--resolver", dnsz.resolver, "--ca", str(ca.root), "--nagios"],
                       env=base_env())
            assert nrun.stdout.startswith("MAILCA CHECK ") and "3 MX address(es)" in nrun.stdout
            assert len(nrun.stdout.strip().splitlines()) == 1
            bad = run(["check", "mail.example.org", "--mx", "example.org"], env=base_env())
            assert bad.returncode == 2 and "give no HOST" in bad.stderr
    finally:
        for s in servers:
            s.close()


class ScriptedServer:
    """Accepts connections on 127.0.0.1 and plays ``script(conn)`` on each (a hostile or odd
    IMAP/POP3 server)."""

    def __init__(self, script):
        self.script = script
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        c.settimeout(10)
        try:
            self.script(c)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stop = True
        self.t.join(2)
        self.sock.close()


def _imap_no_starttls(c):
    f = c.makefile("rb")
    c.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] \x1b[31mevil\x1b[0m ready\r\n")
    while True:
        line = f.readline(1024)
        if not line:
            return
        tag = line.split()[0]
        if b"CAPABILITY" in line.upper():
            c.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
        elif b"LOGOUT" in line.upper():
            c.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
            return
        else:
            c.sendall(tag + b" BAD no\r\n")


def _imap_flood(c):
    c.sendall(b"* OK hi\r\n")
    c.recv(100)
    for _ in range(100000):  # untagged lines for ever: bounded by the 200-line limit
        c.sendall(b"* CAPABILITY X\r\n")


def _imap_long_line(c):
    c.sendall(b"* OK " + b"A" * 100000)  # no newline
    time.sleep(3)


@pytest.mark.parametrize("script, role, expect", [
    (_imap_no_starttls, "imap", "no_starttls"),
    (_imap_flood, "imap", "IMAP reply longer than 200 lines"),
    (_imap_long_line, "imap", "line too long"),
])
def test_odd_and_hostile_imap_servers(script, role, expect):
    srv = ScriptedServer(script)
    try:
        t0 = time.monotonic()
        r = run(["check", "127.0.0.1", "--port", f"{srv.port}:{role}", "--timeout", "3", "--json"], env=base_env())
        took = time.monotonic() - t0
    finally:
        srv.close()
    doc = json.loads(r.stdout)
    p = doc["ports"][0]
    assert "\x1b" not in r.stdout and "\\u001b" not in r.stdout and "\x1b" not in r.stderr
    assert took < 20
    if expect == "no_starttls":
        got = {f["id"]: f for f in p["findings"]}
        assert got["imap.no_starttls"]["severity"] == "HIGH" and "ssl = required" in got["imap.no_starttls"]["fix"]
        assert "LOGIN (no LOGINDISABLED)" in got["imap.plaintext_auth"]["detail"]
        assert "evil" in p["banner"]
        assert r.returncode == 5
    else:
        assert expect in (p["error"] or ""), p
        assert r.returncode == 6


class InjectableMail:
    """A Python-ssl IMAP or POP3 server on 127.0.0.1 with STARTTLS/STLS; ``vulnerable``: it keeps
    what was pipelined after STARTTLS in its buffer and answers it inside TLS (CVE-2011-0411)."""

    def __init__(self, cert, key, *, pop3: bool, vulnerable: bool):
        import ssl

        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.pop3, self.vulnerable = pop3, vulnerable
        self.srv = ScriptedServer(self._session)
        self.port = self.srv.port

    def _session(self, c):
        buf = b""
        c.sendall(b"+OK ready\r\n" if self.pop3 else b"* OK ready\r\n")
        while True:
            while b"\n" not in buf:
                data = c.recv(4096)
                if not data:
                    return
                buf += data
            line, buf = buf.split(b"\n", 1)
            words = line.strip().split()
            if not words:
                continue
            tag, cmd = (b"", words[0].upper()) if self.pop3 else (words[0] + b" ", words[1].upper() if len(words) > 1 else b"")
            if cmd in (b"STARTTLS", b"STLS"):
                c.sendall(tag + (b"OK Begin TLS\r\n" if tag else b"+OK Begin TLS\r\n"))
                if not self.vulnerable:
                    buf = b""
                c = self.ctx.wrap_socket(c, server_side=True)
            elif cmd == b"CAPA":
                c.sendall(b"+OK\r\nSTLS\r\n.\r\n")
            elif cmd == b"CAPABILITY":
                c.sendall(b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n" + tag + b"OK done\r\n")
            elif cmd in (b"LOGOUT", b"QUIT"):
                c.sendall(b"* BYE\r\n" + tag + b"OK bye\r\n" if tag else b"+OK bye\r\n")
                return
            else:
                c.sendall(tag + b"OK noop\r\n" if tag else b"+OK noop\r\n")

    def close(self):
        self.srv.close()


@pytest.mark.parametrize("pop3", [False, True], ids=["imap", "pop3"])
def test_starttls_injection_on_imap_and_pop3(tmp_path, pop3):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    r = tool("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=inj.example.org")
    assert r.returncode == 0, r.stderr
    role = "pop3" if pop3 else "imap"
    got = {}
    for vulnerable in (True, False):
        srv = InjectableMail(cert, key, pop3=pop3, vulnerable=vulnerable)
        try:
            r = run(["check", "127.0.0.1", "--port", f"{srv.port}:{role}", "--timeout", "3", "--json"], env=base_env())
        finally:
            srv.close()
        p = json.loads(r.stdout)["ports"][0]
        got[vulnerable] = (p["vulnerabilities"]["starttls_injection"], {f["id"]: f for f in p["findings"]})
    v, fs = got[True]
    assert v["status"] == "vulnerable" and "answered inside TLS" in v["detail"], v
    assert fs["vuln.starttls_injection"]["severity"] == "HIGH" and "IMAP/POP3" in fs["vuln.starttls_injection"]["fix"]
    v, fs = got[False]
    assert v["status"] == "not_vulnerable", v
    assert "vuln.starttls_injection" not in fs
