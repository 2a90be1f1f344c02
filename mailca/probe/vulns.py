"""Vulnerability probes of ``mailca check``: Heartbleed, OpenSSL CCS injection, ROBOT, SSLv2
and STARTTLS command injection.

Each probe is a hand-built exchange on its own connection (after STARTTLS, or straight away
on an implicit-TLS port), in the style of testssl.sh's socket mode; no handshake is ever
completed and nothing the server sends is trusted further than its length fields:

* **Heartbleed** (CVE-2014-0160): a TLS <= 1.2 ClientHello offering the heartbeat extension,
  then, right after ServerHelloDone, a heartbeat request that *claims* 16384 payload bytes
  and carries none.  A correct server drops it or sends an alert; a vulnerable one echoes
  16 KiB of its memory.  The leaked bytes are counted, never kept or printed.
* **CCS injection** (CVE-2014-0224): after ServerHelloDone, two ChangeCipherSpec records
  before any key exchange.  A correct server answers the first with unexpected_message; a
  vulnerable one takes it and then fails to decrypt the second (decryption_failed or
  bad_record_mac) -- the alerts testssl.sh rates CRITICAL.
* **ROBOT** (Bleichenbacher's oracle): five handshakes with RSA key exchange only, each with a
  ClientKeyExchange whose PKCS#1 v1.5 block (padded by hand, encrypted with pow()) is right or
  wrong in one of the four ways of the ROBOT paper, followed by ChangeCipherSpec and a bogus
  Finished.  A server that answers them differently is an oracle; when the three
  malformed-padding variants already differ it is a strong one.  Differing answers are
  confirmed by a second round.  A server without RSA key exchange is "not applicable".
* **SSLv2**: an SSLv2 CLIENT-HELLO (2-byte record header, the seven SSLv2 cipher specs); an
  SSLv2 SERVER-HELLO back means SSLv2 is offered (DROWN).
* **STARTTLS injection** (CVE-2011-0411 class): ``STARTTLS\\r\\nNOOP\\r\\n`` in one packet; after
  the TLS handshake ``QUIT``.  If the first answer inside TLS is the NOOP's 250 and not the
  QUIT's 221, the server executed plaintext that was sent before TLS.

Every wait is bounded by the port's budget (``Endpoint.budget``) and every read by a byte
limit, so a hostile server can neither hang nor flood a probe.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

from ..errors import ConnectError
from . import hello as H
from .report import Finding, finding
from .smtp import Endpoint, SMTPClient, TLSFailure, open_for_tls

__all__ = ["VulnResult", "VULN_IDS", "heartbleed", "ccs_injection", "robot_variant", "robot_verdict",
           "sslv2", "starttls_injection", "Jobs", "start", "collect"]

# What each probe found: "vulnerable", "not_vulnerable", "not_applicable" or "unknown"
# (no answer in time, or the connection failed).
VULNERABLE, NOT_VULNERABLE, NOT_APPLICABLE, UNKNOWN = "vulnerable", "not_vulnerable", "not_applicable", "unknown"

_LABELS = {"heartbleed": "Heartbleed", "ccs_injection": "CCS injection", "robot": "ROBOT", "sslv2": "SSLv2",
           "starttls_injection": "STARTTLS injection"}
VULN_IDS = {"heartbleed": "vuln.heartbleed", "ccs_injection": "vuln.ccs_injection", "robot": "vuln.robot",
            "sslv2": "vuln.sslv2", "starttls_injection": "vuln.starttls_injection"}

# How long a probe waits for an answer that a correct server may never send (a dropped
# heartbeat): the per-step timeout, at most this.
QUIET_WAIT = 5.0
MAX_READ = 64 * 1024
_ALERTS = {**H.ALERT_NAMES, 21: "decryption_failed", 41: "no_certificate", 43: "unsupported_certificate",
           44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown", 48: "unknown_ca",
           49: "access_denied", 60: "export_restriction", 100: "no_renegotiation"}

SSL2_CIPHERS = {
    b"\x01\x00\x80": "SSL_CK_RC4_128_WITH_MD5",
    b"\x02\x00\x80": "SSL_CK_RC4_128_EXPORT40_WITH_MD5",
    b"\x03\x00\x80": "SSL_CK_RC2_128_CBC_WITH_MD5",
    b"\x04\x00\x80": "SSL_CK_RC2_128_CBC_EXPORT40_WITH_MD5",
    b"\x05\x00\x80": "SSL_CK_IDEA_128_CBC_WITH_MD5",
    b"\x06\x00\x40": "SSL_CK_DES_64_CBC_WITH_MD5",
    b"\x07\x00\xc0": "SSL_CK_DES_192_EDE3_CBC_WITH_MD5",
}

# RSA key transport suites (no export, no NULL): the ROBOT probes offer only these.
RSA_SUITES: tuple[int, ...] = tuple(c for c in H.ALL_SUITES
                                    if H.suite(c).kx == "RSA" and not H.suite(c).export and H.suite(c).enc != "NULL")


@dataclass(frozen=True)
class VulnResult:
    status: str
    detail: str = ""
    signature: str = ""        # ROBOT: what the server answered to one variant
    strong: bool | None = None  # ROBOT: strong oracle

    def to_json(self) -> dict:
        out = {"status": self.status, "detail": self.detail}
        if self.strong is not None:
            out["strong_oracle"] = self.strong
        return out


# --- low-level helpers -------------------------------------------------------------

def _with_extension(record: bytes, kind: int, data: bytes) -> bytes:
    """Add one extension to a ClientHello record built by hello.client_hello."""
    body = record[9:]
    pos = 2 + 32
    pos += 1 + body[pos]
    pos += 2 + struct.unpack("!H", body[pos:pos + 2])[0]
    pos += 1 + body[pos]
    ext = struct.pack("!HH", kind, len(data)) + data
    if pos + 2 <= len(body):
        n = struct.unpack("!H", body[pos:pos + 2])[0]
        body = body[:pos] + struct.pack("!H", n + len(ext)) + body[pos + 2:] + ext
    else:
        body = body + struct.pack("!H", len(ext)) + ext
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return record[:3] + struct.pack("!H", len(hs)) + hs


def _read_records(sock: socket.socket, wait: float, *, stop) -> list[tuple[int, bytes]] | str:
    """TLS records until ``stop(records)`` says enough, the peer closes ("closed" if nothing
    came), ``wait`` seconds pass ("timeout" if nothing came) or MAX_READ bytes arrived."""
    deadline = time.monotonic() + wait
    buf = b""
    out: list[tuple[int, bytes]] = []
    total = 0
    while True:
        while len(buf) >= 5:
            ctype, _, ln = struct.unpack("!BHH", buf[:5])
            if ctype not in (20, 21, 22, 23, 24) or ln > 18432:
                out.append((-1, buf[:16]))
                return out
            if len(buf) < 5 + ln:
                break
            out.append((ctype, buf[5:5 + ln]))
            buf = buf[5 + ln:]
            if stop(out):
                return out
        left = deadline - time.monotonic()
        if left <= 0 or total > MAX_READ:
            return out or "timeout"
        sock.settimeout(left)
        try:
            chunk = sock.recv(16384)
        except socket.timeout:
            return out or "timeout"
        except OSError:
            chunk = b""
        if not chunk:
            return out or "closed"
        total += len(chunk)
        buf += chunk


def _first_alert(records) -> str:
    if isinstance(records, str):
        return records
    for ctype, payload in records:
        if ctype == 21:
            desc = payload[1] if len(payload) > 1 else -1
            return f"alert {_ALERTS.get(desc, desc)}"
        if ctype == -1:
            return "garbage"
    return "records " + ",".join(str(c) for c, _ in records)


def _left(end: float) -> float:
    """What is left of a probe's time (the first step's budget covers the whole probe), at
    most QUIET_WAIT, so a server that stays silent costs one bounded wait."""
    return max(0.0, min(QUIET_WAIT, end - time.monotonic()))


def _hello(sock: socket.socket, record: bytes, suites, timeout: float) -> H.HelloResult:
    sock.settimeout(timeout)
    sock.sendall(record)
    return H.check_choice(H.read_answer(sock, timeout=timeout, full=True), H.TLS1_2, suites)


def _legacy_refusal(r: H.HelloResult) -> VulnResult:
    why = r.detail or r.outcome
    if r.outcome in ("timeout", "noconnect", "protocol_error", "garbage"):
        return VulnResult(UNKNOWN, f"no usable answer to the ClientHello ({why})")
    return VulnResult(NOT_APPLICABLE, f"no TLS <= 1.2 handshake ({why})")


# --- the probes (each on a socket that is ready for TLS) -------------------------------

def heartbleed(sock: socket.socket, *, sni: str | None, timeout: float) -> VulnResult:
    end = time.monotonic() + timeout
    record = _with_extension(H.client_hello(H.TLS1_2, H.ALL_SUITES, sni=sni), 15, b"\x01")
    r = _hello(sock, record, H.ALL_SUITES, timeout)
    if not r.accepted:
        return _legacy_refusal(r)
    try:
        sock.sendall(struct.pack("!BHHBH", 24, r.version, 3, 1, 0x4000))
    except OSError:
        return VulnResult(NOT_VULNERABLE, "the server closed the connection on the heartbeat request")
    got = _read_records(sock, _left(end),
                        stop=lambda rs: rs[-1][0] != 24 or sum(len(p) for c, p in rs if c == 24) > 19)
    if isinstance(got, str):
        what = "dropped" if got == "timeout" else "ended the connection"
        return VulnResult(NOT_VULNERABLE, f"heartbeat request {what}")
    echoed = sum(len(p) for c, p in got if c == 24)
    first = next((p for c, p in got if c == 24), b"")
    # An echo of our request: a heartbeat_response (2) carrying the length we claimed, and
    # more than type, length and 16 bytes of padding -- anything more is memory we never sent.
    if first[:3] == b"\x02\x40\x00" and echoed > 3 + 16:
        return VulnResult(VULNERABLE, f"a heartbeat request claiming 16384 bytes and carrying none was answered "
                                      f"with {echoed} bytes ({H.VERSION_NAMES.get(r.version, '?')})")
    if echoed:
        return VulnResult(NOT_VULNERABLE, f"heartbeat records that do not echo our request ({echoed} bytes)")
    return VulnResult(NOT_VULNERABLE, f"heartbeat request answered with {_first_alert(got)}")


def ccs_injection(sock: socket.socket, *, sni: str | None, timeout: float) -> VulnResult:
    end = time.monotonic() + timeout
    r = _hello(sock, H.client_hello(H.TLS1_2, H.ALL_SUITES, sni=sni), H.ALL_SUITES, timeout)
    if not r.accepted:
        return _legacy_refusal(r)
    ccs = struct.pack("!BHHB", 20, r.version, 1, 1)
    try:
        sock.sendall(ccs)
        sock.sendall(ccs)
    except OSError:
        return VulnResult(NOT_VULNERABLE, "the server closed the connection on the early ChangeCipherSpec")
    got = _read_records(sock, _left(end), stop=lambda rs: rs[-1][0] == 21)
    answer = _first_alert(got)
    if answer in ("alert bad_record_mac", "alert decryption_failed"):
        return VulnResult(VULNERABLE, f"an early ChangeCipherSpec was accepted: the next record got {answer} "
                                      f"instead of unexpected_message")
    return VulnResult(NOT_VULNERABLE, f"early ChangeCipherSpec answered with {answer}")


def _rsa_key(der: bytes):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        return None
    return key.public_numbers() if isinstance(key, rsa.RSAPublicKey) else None


def _nonzero(n: int) -> bytes:
    out = b""
    while len(out) < n:
        out += bytes(b for b in os.urandom(n - len(out) + 8) if b)
    return out[:n]


ROBOT_VARIANTS = ("correct padding", "wrong first two bytes", "0x00 on a wrong position", "no 0x00 separator",
                  "wrong TLS version in the premaster secret")


def _robot_block(variant: int, k: int, version: int) -> bytes:
    pms = _nonzero(46)
    v = struct.pack("!H", version)
    pad = _nonzero(k - 3 - 48)
    if variant == 0:
        em = b"\x00\x02" + pad + b"\x00" + v + pms
    elif variant == 1:
        em = b"\x41\x17" + pad + b"\x00" + v + pms
    elif variant == 2:
        em = b"\x00\x02" + pad + b"\x11" + pms + b"\x00\x11"
    elif variant == 3:
        em = b"\x00\x02" + pad + b"\x11\x11\x11" + pms
    else:
        em = b"\x00\x02" + pad + b"\x00\x02\x02" + pms
    assert len(em) == k
    return em


def robot_variant(sock: socket.socket, variant: int, *, sni: str | None, timeout: float) -> VulnResult:
    """One ROBOT handshake; ``signature`` is what the server answered."""
    end = time.monotonic() + timeout
    r = _hello(sock, H.client_hello(H.TLS1_2, RSA_SUITES, sni=sni), RSA_SUITES, timeout)
    if not r.accepted:
        return _legacy_refusal(r)
    if not r.certs:
        return VulnResult(UNKNOWN, "no certificate in the RSA key exchange handshake")
    pub = _rsa_key(r.certs[0])
    if pub is None:
        return VulnResult(NOT_APPLICABLE, "the certificate's key is not RSA")
    k = (pub.n.bit_length() + 7) // 8
    if k < 64:
        return VulnResult(UNKNOWN, f"RSA key of {pub.n.bit_length()} bits is too small to probe")
    em = _robot_block(variant, k, H.TLS1_2)
    c = pow(int.from_bytes(em, "big"), pub.e, pub.n).to_bytes(k, "big")
    cke = b"\x10" + (k + 2).to_bytes(3, "big") + struct.pack("!H", k) + c
    ver = r.version
    flight = (struct.pack("!BHH", 22, ver, len(cke)) + cke + struct.pack("!BHHB", 20, ver, 1, 1)
              + struct.pack("!BHH", 22, ver, 48) + os.urandom(48))
    try:
        sock.sendall(flight)
    except OSError:
        return VulnResult(NOT_VULNERABLE, "", signature="send failed")
    got = _read_records(sock, _left(end), stop=lambda rs: rs[-1][0] == 21)
    return VulnResult(NOT_VULNERABLE, H.suite_name(r.cipher) or "", signature=_first_alert(got))


def robot_verdict(rounds: list[list[VulnResult]]) -> VulnResult:
    """Judge one or two rounds of the five variants."""
    first = rounds[0]
    for res in first:
        if res.status in (NOT_APPLICABLE, UNKNOWN):
            return VulnResult(res.status, res.detail)
    sigs = [x.signature for x in first]
    if len(set(sigs)) == 1:
        return VulnResult(NOT_VULNERABLE, f"the same answer to all five ClientKeyExchange variants ({sigs[0]})",
                          strong=None)
    if len(rounds) > 1:
        again = rounds[1]
        if any(x.status in (NOT_APPLICABLE, UNKNOWN) for x in again) or [x.signature for x in again] != sigs:
            return VulnResult(UNKNOWN, "answers differ between variants but not the same way twice: "
                                       + "; ".join(f"{ROBOT_VARIANTS[i]}: {s}" for i, s in enumerate(sigs)))
    strong = len(set(sigs[1:4])) > 1
    kex = first[0].detail or "RSA key exchange"
    answers = "; ".join(f"{ROBOT_VARIANTS[i]}: {s}" for i, s in enumerate(sigs))
    return VulnResult(VULNERABLE, f"{'strong' if strong else 'weak'} oracle with {kex}: {answers}", strong=strong)


def _client_hello_v2() -> bytes:
    specs = b"".join(SSL2_CIPHERS)
    body = b"\x01" + struct.pack("!HHHH", 0x0002, len(specs), 0, 16) + specs + os.urandom(16)
    return struct.pack("!H", 0x8000 | len(body)) + body


def sslv2(sock: socket.socket, *, timeout: float) -> VulnResult:
    sock.settimeout(timeout)
    sock.sendall(_client_hello_v2())
    deadline = time.monotonic() + timeout
    buf = b""
    need = 2
    while len(buf) < need:
        left = deadline - time.monotonic()
        if left <= 0:
            return VulnResult(NOT_VULNERABLE if not buf else UNKNOWN, "no answer to an SSLv2 CLIENT-HELLO"
                              if not buf else "truncated answer to an SSLv2 CLIENT-HELLO")
        sock.settimeout(left)
        try:
            chunk = sock.recv(16384)
        except socket.timeout:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        buf += chunk
        if len(buf) >= 2 and need == 2:
            if not buf[0] & 0x80:
                break  # a TLS record (an alert) or anything else: not SSLv2
            need = 2 + (((buf[0] & 0x7F) << 8) | buf[1])
    if len(buf) < 3 or not buf[0] & 0x80 or buf[2] != 4:
        what = "closed the connection" if not buf else (
            "sent a TLS alert" if buf[:1] == b"\x15" else "sent no SSLv2 SERVER-HELLO")
        return VulnResult(NOT_VULNERABLE, f"the server {what} on an SSLv2 CLIENT-HELLO")
    msg = buf[2:need]
    if len(msg) < 11:
        return VulnResult(UNKNOWN, "truncated SSLv2 SERVER-HELLO")
    version, cert_len, spec_len, _ = struct.unpack("!HHHH", msg[3:11])
    specs = msg[11 + cert_len:11 + cert_len + spec_len]
    names = [SSL2_CIPHERS.get(specs[i:i + 3], "0x" + specs[i:i + 3].hex()) for i in range(0, len(specs) - 2, 3)]
    return VulnResult(VULNERABLE, f"SSLv2 SERVER-HELLO (version 0x{version:04X}) with "
                                  + (", ".join(names) if names else "no cipher spec"))


def starttls_injection(ep: Endpoint, *, sni: str | None) -> VulnResult:
    """Only for STARTTLS ports (the caller checks)."""
    with SMTPClient(ep) as c:
        c.connect()
        c.banner()
        _, ext = c.ehlo()
        if "STARTTLS" not in ext:
            return VulnResult(NOT_APPLICABLE, "STARTTLS not offered")
        c.send("STARTTLS\r\nNOOP")  # one write: "STARTTLS\r\nNOOP\r\n"
        r = c.read_reply("the STARTTLS reply")
        if r.code != 220:
            return VulnResult(NOT_APPLICABLE, f"STARTTLS answered {r.code}")
        try:
            c.start_tls(sni=sni)
        except TLSFailure as exc:
            return VulnResult(UNKNOWN, f"no TLS handshake after STARTTLS: {exc.message}")
        c.send("QUIT")
        first = c.read_reply("the first reply inside TLS")
    if first.code == 221:
        return VulnResult(NOT_VULNERABLE, "the NOOP sent with STARTTLS was discarded")
    return VulnResult(VULNERABLE, f"the NOOP sent in plaintext with STARTTLS was answered inside TLS "
                                  f"({first.code} {first.text[:80]})")


# --- running them beside the other probes of a port -------------------------------------

def _on_socket(ep: Endpoint, fn, **kw) -> VulnResult:
    try:
        sock = open_for_tls(ep)
    except ConnectError as exc:
        return VulnResult(UNKNOWN, exc.message)
    try:
        return fn(sock, timeout=ep.budget(), **kw)
    except ConnectError as exc:
        return VulnResult(UNKNOWN, exc.message)
    except socket.timeout:
        return VulnResult(UNKNOWN, "no answer in time")
    except OSError as exc:
        return VulnResult(UNKNOWN, f"connection failed ({exc.strerror or exc})")
    except Exception as exc:  # a server nobody foresaw: this probe only, not the whole port
        return VulnResult(UNKNOWN, f"internal error ({type(exc).__name__}: {exc}); please report this")
    finally:
        sock.close()


def _guard(fn, *a, **kw) -> VulnResult:
    try:
        return fn(*a, **kw)
    except ConnectError as exc:
        return VulnResult(UNKNOWN, exc.message)
    except (socket.timeout, OSError) as exc:
        return VulnResult(UNKNOWN, f"connection failed ({exc})")
    except Exception as exc:
        return VulnResult(UNKNOWN, f"internal error ({type(exc).__name__}: {exc}); please report this")


@dataclass
class Jobs:
    ep: Endpoint
    sni: str | None
    pool: object
    futs: dict

    @property
    def connections(self) -> int:
        return len(self.futs)


def start(ep: Endpoint, sni: str | None, pool) -> Jobs:
    """Submit every vulnerability probe of one port to ``pool`` (each on its own connection)."""
    jobs = {
        "heartbleed": (_on_socket, ep, heartbleed, {"sni": sni}),
        "ccs_injection": (_on_socket, ep, ccs_injection, {"sni": sni}),
        "sslv2": (_on_socket, ep, sslv2, {}),
    }
    for i in range(len(ROBOT_VARIANTS)):
        jobs[("robot", 0, i)] = (_on_socket, ep, robot_variant, {"variant": i, "sni": sni})
    if not ep.implicit_tls and ep.role in ("smtp", "submission"):
        jobs["starttls_injection"] = (_guard, starttls_injection, ep, {"sni": sni})
    elif not ep.implicit_tls:  # IMAP / POP3
        from .imap import starttls_injection as mail_injection

        jobs["starttls_injection"] = (_guard, mail_injection, ep, {"sni": sni})
    futs = {k: pool.submit(fn, a, b, **kw) for k, (fn, a, b, kw) in jobs.items()}
    return Jobs(ep, sni, pool, futs)


def collect(j: Jobs) -> tuple[dict, list[Finding], list[str]]:
    """Wait for the probes of ``start`` and turn them into facts, findings and the reasons the
    port's audit is incomplete (a vulnerability probe without a usable answer)."""
    res = {k: f.result() for k, f in j.futs.items()}
    rounds = [[res[("robot", 0, i)] for i in range(len(ROBOT_VARIANTS))]]
    verdict = robot_verdict(rounds)
    if verdict.status == VULNERABLE:  # confirm: the same answers once more
        again = [j.pool.submit(_on_socket, j.ep, robot_variant, variant=i, sni=j.sni)
                 for i in range(len(ROBOT_VARIANTS))]
        rounds.append([f.result() for f in again])
        verdict = robot_verdict(rounds)
    results = {"heartbleed": res["heartbleed"], "ccs_injection": res["ccs_injection"], "robot": verdict,
               "sslv2": res["sslv2"]}
    if "starttls_injection" in res:
        results["starttls_injection"] = res["starttls_injection"]
    facts = {"vulnerabilities": {k: v.to_json() for k, v in results.items()}}
    fs: list[Finding] = []
    for k, v in results.items():
        if v.status != VULNERABLE:
            continue
        sev = None
        if k == "robot" and not v.strong:
            sev = "HIGH"
        fs.append(finding(VULN_IDS[k], v.detail, port=j.ep.port, severity=sev))
    words = {VULNERABLE: "VULNERABLE", NOT_VULNERABLE: "no", NOT_APPLICABLE: "not applicable", UNKNOWN: "unknown"}
    fs.append(finding("vuln.checked", ", ".join(f"{_LABELS[k]}: {words[v.status]}" for k, v in results.items()),
                      port=j.ep.port))
    unknown = [f"{k}: {v.detail}" for k, v in results.items() if v.status == UNKNOWN]
    notes = [f"{len(unknown)} vulnerability probe(s) without a usable answer, unknown (first: {unknown[0]})"] \
        if unknown else []
    return facts, fs, notes
