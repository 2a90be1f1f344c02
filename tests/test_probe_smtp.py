"""`mailca check` against small SMTP servers of our own (threads on 127.0.0.1): SMTP policy
findings over a real STARTTLS + TLS stack (Python's ssl = OpenSSL), and robustness --
closed port, a port that speaks HTTP, a silent port, a server that stalls after STARTTLS,
one that drops the connection mid-handshake: each a clear error (exit 6) within the timeout."""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import threading
import time

import pytest

from conftest import run


class _Handler(socketserver.StreamRequestHandler):
    timeout = 10

    def reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        mode = self.server.mode
        if mode == "http":
            self.reply("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n")
            return
        if mode == "silent":
            time.sleep(self.server.stall)
            return
        if mode == "dribble":  # a greeting one byte every 0.3 s: never complete within the timeout
            for ch in "220-" + "x" * 100:
                self.wfile.write(ch.encode())
                self.wfile.flush()
                time.sleep(0.3)
            return
        self.reply("220 tiny.example.org ESMTP test")
        tls = False
        while True:
            try:
                line = self.rfile.readline()
            except (OSError, ssl.SSLError):
                return
            if not line:
                return
            cmd = line.decode(errors="replace").strip()
            verb = cmd.split(" ")[0].upper()
            if verb == "EHLO":
                ext = ["250-tiny.example.org", "250-PIPELINING", "250-SIZE 10240000"]
                if not tls and mode != "nostarttls":
                    ext.append("250-STARTTLS")
                if self.server.auth_before_tls or tls:
                    ext.append("250-AUTH=PLAIN LOGIN" if self.server.mode == "legacy-auth" else "250-AUTH PLAIN LOGIN")
                ext.append("250 8BITMIME")
                self.reply("\r\n".join(ext))
            elif verb == "STARTTLS" and not tls:
                self.reply("220 2.0.0 Ready to start TLS")
                if mode == "stall":
                    time.sleep(self.server.stall)
                    return
                if mode == "drop":
                    self.request.recv(4096)  # the ClientHello
                    return
                try:
                    conn = self.server.ctx.wrap_socket(self.request, server_side=True)
                except (OSError, ssl.SSLError):
                    return
                self.request = conn
                self.rfile = conn.makefile("rb")
                self.wfile = conn.makefile("wb")
                tls = True
            elif verb == "VRFY":
                self.reply("252 2.0.0 postmaster" if self.server.vrfy else "502 5.5.1 VRFY command is disabled")
            elif verb == "MAIL":
                self.reply("250 2.1.0 Ok" if self.server.mail_before_tls or tls else
                           "530 5.7.0 Must issue a STARTTLS command first")
            elif verb == "RSET":
                self.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 Error: command not recognized")


class TinySMTP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode="smtp", *, ctx=None, stall=30.0, auth_before_tls=False, vrfy=False,
                 mail_before_tls=False, host="127.0.0.1"):
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, 0), _Handler)
        self.mode, self.ctx, self.stall = mode, ctx, stall
        self.auth_before_tls, self.vrfy, self.mail_before_tls = auth_before_tls, vrfy, mail_before_tls
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def leaf(shared_ca):
    """A mailca-issued certificate for mail.example.org (key + fullchain) and its TLSA 3 1 1."""
    certs = shared_ca.issue("mail.example.org")
    live = shared_ca.live("mail.example.org")
    return {"dir": live, "spki": certs[0]["spki_sha256"], "root": shared_ca.root}


def _ctx(leaf) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(leaf["dir"] / "fullchain.pem", leaf["dir"] / "key.pem")
    return ctx


# The timeout tests are hang detectors, not speed tests: the hostile server stalls for 30 s,
# while --timeout bounds each wait to 2-3 s.  A check that waited for the server would take
# >= 30 s; one that honours --timeout takes the timeout plus process start-up.  The allowance
# for start-up is generous (a busy 2-core CI machine can take several seconds to start Python
# and import cryptography), and still far below the stall, so the assertion cannot be tripped
# by load, only by a wait that is not bounded.
STARTUP_ALLOWANCE = 10.0
STALL = 30.0


def bounded(took: float, timeout: float) -> bool:
    return took < timeout + STARTUP_ALLOWANCE < STALL


def check(*args, timeout=60):
    t0 = time.monotonic()
    r = run(["check", *map(str, args)], timeout=timeout)
    return r, time.monotonic() - t0


def test_policy_findings_over_real_starttls(leaf):
    with TinySMTP(ctx=_ctx(leaf), auth_before_tls=True, vrfy=True, mail_before_tls=True) as srv:
        r, took = check("127.0.0.1", "--port", f"{srv.port}:submission", "--name", "mail.example.org",
                        "--ca", leaf["root"], "--tlsa", f"3 1 1 {leaf['spki']}", "--json", "--timeout", "5")
    assert r.returncode == 5, r.stderr
    rep = json.loads(r.stdout)
    assert rep["schema"] == "mailca-check/1" and rep["exit_code"] == 5
    # The documented schema (docs/check.md): these keys exist and keep their names.
    assert set(rep) == {"schema", "host", "name", "started", "elapsed_seconds", "worst", "exit_code",
                        "findings", "ports"}
    (port,) = rep["ports"]
    assert {"port", "role", "tls", "error", "elapsed_seconds", "banner", "ehlo_before_tls", "ehlo_after_tls",
            "auth_before_tls", "auth_after_tls", "mail_before_tls", "vrfy", "starttls", "protocols",
            "cipher_classes", "preferred_cipher", "server_cipher_order", "forward_secrecy", "dh_bits",
            "ecdh_group", "probes", "certificate", "findings"} <= set(port)
    assert set(port["findings"][0]) == {"id", "severity", "title", "detail", "fix", "port"}
    assert {"chain", "trusted", "trust_error", "trust_store", "hostname_checked", "hostname_ok", "dane", "days_left"} \
        == set(port["certificate"])
    got = {f["id"]: f for f in port["findings"]}
    assert got["smtp.auth_before_tls"]["severity"] == "HIGH"
    assert "smtpd_tls_auth_only = yes" in got["smtp.auth_before_tls"]["fix"]
    assert got["smtp.mail_before_tls"]["severity"] == "MEDIUM"
    assert got["smtp.vrfy"]["severity"] == "LOW" and "disable_vrfy_command = yes" in got["smtp.vrfy"]["fix"]
    # The TLS side is Python's default server context: modern and clean.
    assert got["cert.ok"]["severity"] == "OK"
    assert got["dane.match"]["detail"].startswith("3 1 1 ")
    assert port["protocols"] == {"SSLv3": False, "TLSv1.0": False, "TLSv1.1": False, "TLSv1.2": True, "TLSv1.3": True}
    for bad in ("cipher.null", "cipher.anull", "cipher.export", "cipher.rc4", "cert.untrusted", "cert.hostname"):
        assert bad not in got
    assert port["auth_before_tls"] == ["PLAIN", "LOGIN"] and port["auth_after_tls"] == ["PLAIN", "LOGIN"]
    assert port["certificate"]["chain"][0]["names"] == ["mail.example.org"]
    assert len(port["certificate"]["chain"]) == 2  # leaf + intermediate, as sent


def test_clean_policy_exit_zero(leaf):
    with TinySMTP(ctx=_ctx(leaf)) as srv:
        r, _ = check("127.0.0.1", "--port", srv.port, "--name", "mail.example.org", "--ca", leaf["root"],
                     "--timeout", "5", "--parallel", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Worst: LOW" in r.stdout or "Worst: OK" in r.stdout
    assert "certificate chain" in r.stdout


def test_wrong_tlsa_and_untrusted_without_ca(leaf):
    with TinySMTP(ctx=_ctx(leaf)) as srv:
        r, _ = check("127.0.0.1", "--port", srv.port, "--name", "mail.example.org", "--json",
                     "--tlsa", "3 1 1 " + "00" * 32, "--timeout", "5")
    assert r.returncode == 5
    got = {f["id"]: f for f in json.loads(r.stdout)["findings"]}
    assert got["dane.mismatch"]["severity"] == "HIGH" and leaf["spki"] in got["dane.mismatch"]["detail"]
    # No --ca: the system store (whatever SSL_CERT_FILE says) does not know the private root.
    assert got["cert.untrusted"]["severity"] == "HIGH"
    assert "system trust store" in got["cert.untrusted"]["detail"]


def test_no_starttls_is_a_finding_not_an_error():
    with TinySMTP(mode="nostarttls") as srv:
        r, _ = check("127.0.0.1", "--port", f"{srv.port}:submission", "--json", "--timeout", "5")
    assert r.returncode == 5, r.stderr
    got = {f["id"]: f for f in json.loads(r.stdout)["findings"]}
    assert got["smtp.no_starttls"]["severity"] == "HIGH"


# --- robustness ---------------------------------------------------------------------

def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_closed_port():
    r, took = check("127.0.0.1", "--port", _closed_port(), "--timeout", "3")
    assert r.returncode == 6
    assert "connection refused" in r.stderr and "Traceback" not in r.stderr
    assert bounded(took, 3), f"check took {took:.1f} s with --timeout 3"


def test_http_port():
    with TinySMTP(mode="http") as srv:
        r, took = check("127.0.0.1", "--port", srv.port, "--timeout", "3")
    assert r.returncode == 6
    assert "does not speak SMTP" in r.stderr and "HTTP/1.1 400" in r.stderr
    assert bounded(took, 3), f"check took {took:.1f} s with --timeout 3"


def test_silent_port_times_out():
    with TinySMTP(mode="silent", stall=STALL) as srv:
        r, took = check("127.0.0.1", "--port", srv.port, "--timeout", "2")
    assert r.returncode == 6
    assert "timed out after 2 s waiting for the SMTP greeting" in r.stderr
    assert bounded(took, 2), f"check took {took:.1f} s with --timeout 2"


def test_dribbling_greeting_cannot_stretch_the_timeout():
    with TinySMTP(mode="dribble") as srv:
        r, took = check("127.0.0.1", "--port", srv.port, "--timeout", "2")
    assert r.returncode == 6 and "timed out after 2 s waiting for the SMTP greeting" in r.stderr
    assert bounded(took, 2), f"check took {took:.1f} s with --timeout 2"


def test_stall_after_starttls(leaf):
    with TinySMTP(mode="stall", stall=STALL) as srv:
        r, took = check("127.0.0.1", "--port", srv.port, "--timeout", "2")
    assert r.returncode == 6
    assert "TLS handshake stalled" in r.stderr
    assert bounded(took, 2), f"check took {took:.1f} s with --timeout 2"


def test_drop_mid_handshake():
    with TinySMTP(mode="drop") as srv:
        r, took = check("127.0.0.1", "--port", srv.port, "--timeout", "3", "--json")
    assert r.returncode == 6
    assert "closed the connection during the TLS handshake" in r.stderr
    rep = json.loads(r.stdout)  # the JSON report still comes out, with the error in it
    assert rep["exit_code"] == 6 and "TLS handshake" in rep["ports"][0]["error"]
    assert bounded(took, 3), f"check took {took:.1f} s with --timeout 3"


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "not a port number"),
    (["--port", "25:ldap"], "unknown role 'ldap'"),
    (["--tlsa", "1 1 1 " + "00" * 32], "usage 1 (PKIX-TA/EE) is not used for SMTP"),
    (["--tlsa", "3 1 1 abcd"], "needs 32 bytes"),
    (["--tlsa", "3 1 x y"], "is not a TLSA record"),
    (["--name", "bad..name"], "--name"),
])
def test_bad_input(args, message, tmp_path):
    r, _ = check("127.0.0.1", *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and r.stderr.count("\n") == 1


def test_bad_ca_file(tmp_path):
    f = tmp_path / "notpem.txt"
    f.write_text("hello")
    r, _ = check("127.0.0.1", "--ca", f)
    assert r.returncode == 2 and "no PEM or DER certificate" in r.stderr


def test_one_bad_port_among_good_ones(leaf):
    """A refused port makes the run exit 6, but the other port is still audited and reported."""
    closed = _closed_port()
    with TinySMTP(ctx=_ctx(leaf)) as srv:
        r, _ = check("127.0.0.1", "--port", srv.port, "--port", closed, "--name", "mail.example.org",
                     "--ca", leaf["root"], "--json", "--timeout", "3")
    assert r.returncode == 6
    rep = json.loads(r.stdout)
    good, bad = rep["ports"]
    assert good["error"] is None and good["protocols"]["TLSv1.3"] is True
    assert "connection refused" in bad["error"] and bad["findings"] == []
    # how each port speaks TLS, and what its real handshake gave (none for the refused port)
    assert good["tls_mode"] == bad["tls_mode"] == "starttls"
    assert good["tls"]["version"] in ("TLSv1.2", "TLSv1.3") and bad["tls"] is None
    assert f"port {closed}: connection refused" in r.stderr


def test_ipv6_loopback(leaf):
    try:
        srv = TinySMTP(ctx=_ctx(leaf), host="::1", vrfy=True)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with srv:
        r, _ = check("::1", "--port", srv.port, "--name", "mail.example.org", "--ca", leaf["root"], "--json",
                     "--timeout", "5")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["host"] == "::1" and rep["ports"][0]["vrfy"]["enabled"] is True
    assert rep["ports"][0]["certificate"]["hostname_ok"] is True


def test_legacy_auth_equals_form_is_seen(leaf):
    """'250-AUTH=PLAIN LOGIN' (the pre-RFC 2554 form) before STARTTLS is AUTH before TLS too."""
    with TinySMTP(mode="legacy-auth", ctx=_ctx(leaf), auth_before_tls=True) as srv:
        r, _ = check("127.0.0.1", "--port", srv.port, "--name", "mail.example.org", "--ca", leaf["root"],
                     "--json", "--timeout", "5")
    assert r.returncode == 5, r.stderr
    port = json.loads(r.stdout)["ports"][0]
    assert port["auth_before_tls"] == ["PLAIN", "LOGIN"]
    assert {f["id"]: f for f in port["findings"]}["smtp.auth_before_tls"]["severity"] == "HIGH"
