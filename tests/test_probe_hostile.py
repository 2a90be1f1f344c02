"""`mailca check` against servers that attack the auditor (issue #10, item 4).

Each server is a real socket on 127.0.0.1 (a small threaded server in this file).  After
STARTTLS it looks at the ClientHello: OpenSSL's own (the policy session's real handshake,
recognised by its encrypt_then_mac extension, which the hand-built probes never send) gets a
real TLS server (Python's ssl = OpenSSL) unless the test says otherwise; the hand-built
probes get whatever hostile answer the test wants.  Attacks: terminal escape sequences in
the banner and replies, a truncated ServerHello, a cipher or version that was not offered,
an endless handshake stream, a tarpit, probes that never get an answer, a brainpoolP320r1
certificate in the chain, and several ports of which one is hostile.
"""

from __future__ import annotations

import json
import resource  # noqa: F401  (used in the child)
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import base_env, make_ca, require, run, tool

ESCAPES = "\x1b]0;OK everything fine\x07\x1b[2J\x1b[1A\x1b[2K\x9b2J"
BAD_CHARS = ("\x1b", "\x07", "\x9b", "\x9d")


# --- a hostile SMTP server ------------------------------------------------------------------

def _peek_hello(sock: socket.socket, timeout: float = 5.0) -> dict | None:
    """The ClientHello waiting on ``sock`` (read with MSG_PEEK, so a real TLS server can
    still take over): legacy version, offered suites, extension types, asked version."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536, socket.MSG_PEEK)
        except OSError:
            return None
        if not data:
            return None
        if len(data) >= 5 and len(data) >= 5 + struct.unpack("!H", data[3:5])[0]:
            break
        time.sleep(0.01)
    body = data[9:]
    legacy = struct.unpack("!H", body[0:2])[0]
    pos = 34
    pos += 1 + body[pos]
    n = struct.unpack("!H", body[pos:pos + 2])[0]
    suites = [struct.unpack("!H", body[pos + 2 + i:pos + 4 + i])[0] for i in range(0, n, 2)]
    pos += 2 + n
    pos += 1 + body[pos]
    exts, asked = set(), legacy
    if pos + 2 <= len(body):
        end = pos + 2 + struct.unpack("!H", body[pos:pos + 2])[0]
        pos += 2
        while pos + 4 <= end:
            kind, ln = struct.unpack("!HH", body[pos:pos + 4])
            exts.add(kind)
            if kind == 43:
                asked = max(struct.unpack("!H", body[pos + 5 + i:pos + 7 + i])[0] for i in range(0, body[pos + 4], 2))
            pos += 4 + ln
    return {"legacy": legacy, "suites": [s for s in suites if s != 0x00FF], "exts": exts, "asked": asked}


def _server_hello(version: int, cipher: int) -> bytes:
    body = struct.pack("!H", min(version, 0x0303)) + b"\x11" * 32 + b"\x00" + struct.pack("!HB", cipher, 0)
    if version == 0x0304:
        body += struct.pack("!H", 6) + struct.pack("!HHH", 43, 2, 0x0304)
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return struct.pack("!BHH", 22, 0x0303, len(hs)) + hs


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def reply(self, text: str) -> None:
        time.sleep(self.server.delay)
        self.wfile.write(text.encode("utf-8") + b"\r\n")
        self.wfile.flush()

    def handle(self):
        srv = self.server
        self.reply(srv.banner)
        tls = False
        while True:
            try:
                line = self.rfile.readline(4096)
            except (OSError, ssl.SSLError):
                return
            if not line:
                return
            verb = line.decode(errors="replace").strip().split(" ")[0].upper()
            if verb == "EHLO":
                self.reply("250-hostile.example.org\r\n" + ("" if tls else "250-STARTTLS\r\n") + "250 8BITMIME")
            elif verb == "STARTTLS" and not tls:
                self.reply("220 2.0.0 Ready to start TLS")
                hello = _peek_hello(self.request)
                if hello is None:
                    return
                if 22 not in hello["exts"] and srv.on_probe is not None:  # a hand-built probe
                    if srv.on_probe(self.request, hello) is not True:
                        return
                try:
                    conn = srv.ctx.wrap_socket(self.request, server_side=True)
                except (OSError, ssl.SSLError):
                    return
                self.request, tls = conn, True
                self.rfile, self.wfile = conn.makefile("rb"), conn.makefile("wb")
            elif verb == "VRFY":
                self.reply(srv.vrfy)
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("250 2.0.0 Ok")


class Hostile(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, ctx, *, banner="220 hostile.example.org ESMTP", vrfy="502 5.5.1 VRFY disabled",
                 on_probe=None, delay=0.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ctx, self.banner, self.vrfy, self.on_probe, self.delay = ctx, banner, vrfy, on_probe, delay
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


# Hostile answers to the hand-built probes (return True to let the real TLS server answer).

def truncated_server_hello(sock, hello):
    sock.recv(65536)
    sock.sendall(struct.pack("!BHH", 22, 0x0303, 8) + b"\x02\x00\x00\x04\x03\x03\xab\xcd")


def unoffered_null_cipher(sock, hello):
    """Always 'accepts' with TLS_RSA_WITH_NULL_MD5, whatever was offered."""
    sock.recv(65536)
    sock.sendall(_server_hello(hello["asked"], 0x0001))
    time.sleep(0.2)


def unoffered_version(sock, hello):
    """Answers every probe with TLS 1.2 and the first offered suite, even an SSLv3-only hello."""
    sock.recv(65536)
    sock.sendall(_server_hello(0x0303, hello["suites"][0]))
    time.sleep(0.2)


def endless_handshake(sock, hello):
    """A valid ServerHello, then a Certificate message announced at 16 MB and an endless
    stream of handshake records."""
    sock.recv(65536)
    ver = min(hello["asked"], 0x0303)
    suite = next((s for s in hello["suites"] if s < 0x1300 or s > 0x13FF), hello["suites"][0])
    try:
        sock.sendall(_server_hello(ver, suite))
        sock.sendall(struct.pack("!BHH", 22, 0x0303, 4 + 16000) + b"\x0b\xff\xff\xff" + b"\x00" * 16000)
        chunk = struct.pack("!BHH", 22, 0x0303, 16000) + b"\x00" * 16000
        t_end = time.monotonic() + 20
        while time.monotonic() < t_end:
            sock.sendall(chunk)
    except OSError:
        pass


def stall_old_versions(sock, hello):
    """Probes for TLS 1.2/1.3 get the real server; SSLv3/TLS 1.0/1.1 probes never get an answer."""
    if hello["asked"] >= 0x0303:
        return True
    time.sleep(8)


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def leaf(tmp_path_factory):
    """A mailca CA of this module's own (the session's shared CA has mail.example.org already)."""
    ca = make_ca(tmp_path_factory.mktemp("hostile") / "store", "example.org")
    ca.issue("mail.example.org")
    return {"dir": ca.live("mail.example.org"), "root": ca.root}


def _ctx(leaf) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(leaf["dir"] / "fullchain.pem", leaf["dir"] / "key.pem")
    return ctx


def check(*args, timeout=120):
    t0 = time.monotonic()
    r = run(["check", *map(str, args)], timeout=timeout)
    return r, time.monotonic() - t0


def check_with_rss(*args):
    """Run the check in a child and return (CompletedProcess, peak RSS of the check in MB)."""
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")
    r = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "mailca", "check", *map(str, args)],
                       capture_output=True, text=True, env=base_env(), timeout=120)
    *rest, peak = r.stderr.strip().splitlines()
    r.stderr = "\n".join(rest) + ("\n" if rest else "")
    return r, int(peak) / 1024


def _no_escapes(text: str) -> None:
    for c in BAD_CHARS:
        assert c not in text, f"{c!r} reached the terminal: {text!r}"


# --- escape sequences -----------------------------------------------------------------------

def test_escape_sequences_in_banner_and_vrfy_are_stripped(leaf):
    with Hostile(_ctx(leaf), banner="220 hostile.example.org " + ESCAPES + " ESMTP",
                 vrfy="252 2.0.0 " + ESCAPES + "OK everything fine") as srv:
        r, _ = check("127.0.0.1", "--port", srv.port, "--name", "mail.example.org", "--ca", leaf["root"],
                     "--timeout", "5", "-v")
        j, _ = check("127.0.0.1", "--port", srv.port, "--name", "mail.example.org", "--ca", leaf["root"],
                     "--timeout", "5", "--json")
    assert r.returncode == 0, r.stdout + r.stderr  # VRFY is LOW
    _no_escapes(r.stdout)
    _no_escapes(r.stderr)
    assert "VRFY postmaster answered 252 2.0.0 OK everything fine" in r.stdout  # the text, without the sequences
    # JSON keeps the original, escaped by the JSON encoder (no raw control byte in the output).
    _no_escapes(j.stdout)
    port = json.loads(j.stdout)["ports"][0]
    assert port["banner"] == "hostile.example.org " + ESCAPES + " ESMTP"
    assert "\\u001b]0;OK everything fine\\u0007" in j.stdout


def test_escape_sequences_in_an_error_reply_are_stripped(leaf):
    with Hostile(_ctx(leaf), banner="554 5.7.1 " + ESCAPES + "go away") as srv:
        r, _ = check("127.0.0.1", "--port", srv.port, "--timeout", "5")
    assert r.returncode == 6
    _no_escapes(r.stdout)
    _no_escapes(r.stderr)
    assert "server refused the session (554 5.7.1 go away)" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


# --- protocol errors --------------------------------------------------------------------------

@pytest.mark.parametrize("attack, message", [
    (truncated_server_hello, "truncated ServerHello"),
    (unoffered_null_cipher, "which the ClientHello did not offer"),
    (unoffered_version, "ServerHello for TLSv1.2 to a ClientHello that offered at most SSLv3"),
    (endless_handshake, "handshake message of 16777215 bytes announced"),
])
def test_protocol_errors_are_errors_not_findings(leaf, attack, message):
    with Hostile(_ctx(leaf), on_probe=attack) as srv:
        r, peak_mb = check_with_rss("127.0.0.1", "--port", srv.port, "--name", "mail.example.org",
                                    "--ca", leaf["root"], "--timeout", "5", "--json")
    assert r.returncode == 6, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    rep = json.loads(r.stdout)  # a complete document
    (port,) = rep["ports"]
    assert "protocol error" in port["error"] and message in port["error"], port["error"]
    ids = {f["id"] for f in port["findings"]}
    # What the hostile answers claim is not reported as the server's configuration.
    assert not ids & {"cipher.null", "protocol.sslv3", "protocol.tls1_0", "protocol.tls1_1", "cipher.no_fs"}
    # What the real handshake showed is still there: the chain as sent.
    assert port["certificate"]["trusted"] is True and "cert.ok" in ids
    assert peak_mb < 150, f"peak RSS {peak_mb:.0f} MB"


# --- time bounds -----------------------------------------------------------------------------

@pytest.mark.parametrize("delay", [1.5, 0.4])
def test_tarpit_is_bounded_by_the_port_deadline(leaf, delay):
    """Every SMTP reply comes ``delay`` s late, inside --timeout 2, on every one of the ~20
    connections of an audit: without a port deadline that adds up to 20+ s (1.5) or ~7 s
    (0.4).  Now the port ends at --port-deadline 5, in the policy session (1.5) or among the
    probes (0.4); 12 s of margin for a busy shared machine (interpreter start, TLS)."""
    with Hostile(_ctx(leaf), delay=delay) as srv:
        r, took = check("127.0.0.1", "--port", srv.port, "--name", "mail.example.org", "--ca", leaf["root"],
                        "--timeout", "2", "--port-deadline", "5", "--json")
    assert took < 5 + 12, took
    assert r.returncode == 6, r.stdout + r.stderr
    (port,) = json.loads(r.stdout)["ports"]
    problem = port["error"] or port["incomplete"][0]
    assert "port deadline of 5 s" in problem
    assert "port deadline of 5 s" in r.stderr and "Traceback" not in r.stderr
    # Nothing that did not answer is counted as accepted.
    for v in ("SSLv3", "TLSv1.0", "TLSv1.1"):
        assert port.get("protocols", {}).get(v) is not True


def test_stalled_probes_are_no_answer_not_accepted(leaf):
    with Hostile(_ctx(leaf), on_probe=stall_old_versions) as srv:
        r, took = check("127.0.0.1", "--port", srv.port, "--name", "mail.example.org", "--ca", leaf["root"],
                        "--timeout", "2", "--json")
    assert r.returncode == 6, r.stdout + r.stderr
    (port,) = json.loads(r.stdout)["ports"]
    assert port["error"] is None
    assert port["protocols"] == {"SSLv3": None, "TLSv1.0": None, "TLSv1.1": None, "TLSv1.2": True, "TLSv1.3": True}
    assert "got no answer" in port["incomplete"][0]
    ids = {f["id"] for f in port["findings"]}
    assert not ids & {"protocol.sslv3", "protocol.tls1_0", "protocol.tls1_1"}
    assert "audit incomplete" in r.stderr
    assert took < 2 * 2 + 20  # two probe rounds of --timeout 2, generous margin for a busy machine


# --- certificates cryptography cannot load -----------------------------------------------------

@pytest.fixture(scope="module")
def brainpool_chain(tmp_path_factory):
    """A P-256 leaf for mail.example.org issued by a brainpoolP320r1 root (openssl CLI)."""
    openssl = require("openssl")
    d = tmp_path_factory.mktemp("brainpool")
    tool(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:brainpoolP320r1", "-nodes",
         "-keyout", d / "root.key", "-out", d / "root.crt", "-days", "30", "-subj", "/CN=Brainpool Root",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         check=True)
    tool(openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", d / "leaf.key", "-out", d / "leaf.csr", "-subj", "/CN=mail.example.org", check=True)
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=DNS:mail.example.org\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    tool(openssl, "x509", "-req", "-in", d / "leaf.csr", "-CA", d / "root.crt", "-CAkey", d / "root.key",
         "-CAcreateserial", "-days", "20", "-extfile", ext, "-out", d / "leaf.crt", check=True)
    (d / "chain.pem").write_bytes((d / "leaf.crt").read_bytes() + (d / "root.crt").read_bytes())
    assert "brainpoolP320r1" in tool(openssl, "x509", "-in", d / "root.crt", "-noout", "-text").stdout
    return d


def test_brainpool_chain_does_not_crash(brainpool_chain):
    d = brainpool_chain
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "chain.pem", d / "leaf.key")
    with Hostile(ctx) as srv:
        r, _ = check("127.0.0.1", "--port", srv.port, "--name", "mail.example.org", "--ca", d / "root.crt",
                     "--timeout", "5", "--json")
    assert "Traceback" not in r.stderr and r.returncode in (0, 5), r.stderr
    (port,) = json.loads(r.stdout)["ports"]
    assert port["error"] is None
    chain = port["certificate"]["chain"]
    assert [c["key"] for c in chain] == ["ECDSA secp256r1", "ECDSA brainpoolP320r1"]
    assert chain[1]["key_bits"] == 320 and chain[1]["self_signed"] is True
    assert port["certificate"]["trusted"] is True  # OpenSSL verifies brainpool signatures
    assert not {f["id"] for f in port["findings"]} & {"cert.weak_key", "cert.untrusted"}


# --- several ports ----------------------------------------------------------------------------

def test_one_hostile_port_among_good_ones(leaf, brainpool_chain):
    d = brainpool_chain
    bp = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    bp.load_cert_chain(d / "chain.pem", d / "leaf.key")
    with Hostile(_ctx(leaf)) as good, Hostile(_ctx(leaf), on_probe=truncated_server_hello) as bad, \
            Hostile(bp, banner="220 " + ESCAPES) as odd:
        r, _ = check("127.0.0.1", "--port", good.port, "--port", bad.port, "--port", odd.port,
                     "--name", "mail.example.org", "--ca", leaf["root"], "--timeout", "5", "--json")
        t, _ = check("127.0.0.1", "--port", good.port, "--port", bad.port, "--port", odd.port,
                     "--name", "mail.example.org", "--ca", leaf["root"], "--timeout", "5")
    assert r.returncode == 6 and t.returncode == 6
    rep = json.loads(r.stdout)
    assert rep["exit_code"] == 6 and [p["port"] for p in rep["ports"]] == [good.port, bad.port, odd.port]
    g, b, o = rep["ports"]
    assert g["error"] is None and g["protocols"]["TLSv1.3"] is True and g["certificate"]["trusted"] is True
    assert "protocol error" in b["error"] and "truncated ServerHello" in b["error"]
    assert o["error"] is None and o["certificate"]["chain"][1]["key"] == "ECDSA brainpoolP320r1"
    assert o["certificate"]["trusted"] is False  # the brainpool root is not the --ca root
    # The text report has all three ports, the healthy ones in full.
    _no_escapes(t.stdout)
    heads = [ln for ln in t.stdout.splitlines() if ln.startswith("127.0.0.1 port ")]
    assert heads == [f"127.0.0.1 port {p} (smtp, STARTTLS)" for p in (good.port, bad.port, odd.port)]
    assert "certificate chain: trusted by --ca, matches mail.example.org" in t.stdout
    assert "truncated ServerHello" in t.stderr and "more port(s)" not in t.stderr and "Traceback" not in t.stderr
