"""Purpose-built vulnerable servers for the vulnerability probes of ``mailca check``
(mailca/probe/vulns.py), each bound to 127.0.0.1 on a free port.

No stock server can be configured into these holes any more (OpenSSL dropped SSLv2 and
fixed Heartbleed and the CCS bug in 2014), so each is a small Python server that speaks just
enough TLS 1.2 -- ServerHello, Certificate, ServerHelloDone built by hand, RSA key exchange
only -- to show exactly one weakness:

* ``heartbleed``: acknowledges the heartbeat extension and answers a heartbeat request with
  as many bytes as the request *claims*, padding the echo with "memory" (CVE-2014-0160);
* ``ccs``:        accepts a ChangeCipherSpec before the key exchange and then fails to decrypt
  the next record (bad_record_mac), as OpenSSL < 1.0.1h did (CVE-2014-0224);
* ``robot``:      decrypts the ClientKeyExchange and answers a block that does not start with
  00 02 at once with a decrypt_error alert, any other only after the Finished
  (bad_record_mac): a strong Bleichenbacher oracle (ROBOT);
* ``sslv2``:      answers an SSLv2 CLIENT-HELLO with an SSLv2 SERVER-HELLO (certificate and
  cipher specs) -- DROWN territory;
* ``clean``:      the same server with none of the above (the negative control).

A client that does the handshake properly (TLS_RSA_WITH_AES_128_GCM_SHA256: the server checks
the client's Finished and sends its own, then speaks a little SMTP inside TLS) completes it, so
OpenSSL, ``mailca check``'s policy session and sslyze's connectivity test work as against any
server; with any other suite the server stops at the Finished (bad_record_mac).

``StartTLSInjectionServer`` is a real SMTP-with-STARTTLS server (Python's ssl module): with
``vulnerable=True`` it keeps plaintext that was pipelined after STARTTLS in its input buffer
and executes it inside the TLS session (CVE-2011-0411 class); with False it discards it, as
Postfix does.

Every server has ``starttls=True`` to put an SMTP banner / EHLO / STARTTLS in front.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import socket
import ssl
import struct
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

__all__ = ["KINDS", "VulnServer", "StartTLSInjectionServer", "test_identity"]

KINDS = ("heartbleed", "ccs", "robot", "sslv2", "clean")
# RSA key exchange suites only (AES-GCM and AES-CBC).
SUITES = (0x009C, 0x009D, 0x002F, 0x0035, 0x003C, 0x003D)
SSL2_SPECS = (b"\x01\x00\x80", b"\x07\x00\xc0", b"\x03\x00\x80")  # RC4-MD5, DES-CBC3-MD5, RC2-CBC-MD5
MEMORY = b"-----BEGIN PRIVATE KEY----- user=alice password=secret Cookie: session=0123456789abcdef "

_IDENT = None
_IDENT_LOCK = threading.Lock()


def test_identity():
    """(private key, certificate DER) for CN=vuln.test, RSA 2048: made once per process."""
    global _IDENT
    with _IDENT_LOCK:
        if _IDENT is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vuln.test")])
            now = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                    .public_key(key.public_key()).serial_number(1)
                    .not_valid_before(now).not_valid_after(now + dt.timedelta(days=36500))
                    .add_extension(x509.SubjectAlternativeName([x509.DNSName("vuln.test")]), critical=False)
                    .sign(key, hashes.SHA256()))
            _IDENT = (key, cert.public_bytes(serialization.Encoding.DER))
        return _IDENT


def _record(ctype: int, payload: bytes, version: int = 0x0303) -> bytes:
    out = b""
    for i in range(0, max(len(payload), 1), 16384):
        chunk = payload[i:i + 16384]
        out += struct.pack("!BHH", ctype, version, len(chunk)) + chunk
    return out


def _hs(mtype: int, body: bytes) -> bytes:
    return bytes([mtype]) + len(body).to_bytes(3, "big") + body


def _alert(desc: int) -> bytes:
    return _record(21, bytes([2, desc]))


class _Conn:
    """Bounded reading from one client socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        sock.settimeout(10)

    def fill(self, n: int) -> bool:
        while len(self.buf) < n:
            if n > 1 << 20:
                return False
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return False
            if not chunk:
                return False
            self.buf += chunk
        return True

    def take(self, n: int) -> bytes:
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def line(self) -> bytes | None:
        while b"\n" not in self.buf:
            if len(self.buf) > 4096 or not self.fill(len(self.buf) + 1):
                return None
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln.rstrip(b"\r")

    def record(self):
        if not self.fill(5):
            return None
        ctype, ver, ln = struct.unpack("!BHH", self.buf[:5])
        if ln > 18432 or not self.fill(5 + ln):
            return None
        self.take(5)
        return ctype, ver, self.take(ln)


class _Base:
    """Accept loop on 127.0.0.1, one thread per connection."""

    def __init__(self, *, starttls: bool = False):
        self.starttls = starttls
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        try:
            self.lsock.close()
        except OSError:
            pass

    def _accept(self):
        while not self._stop:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s: socket.socket):
        try:
            self.serve(s)
        except Exception:
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def smtp_front(self, c: _Conn) -> bool:
        """Banner, EHLO ..., STARTTLS -> True when the next bytes are TLS."""
        c.sock.sendall(b"220 vuln.test ESMTP purpose-built\r\n")
        while True:
            ln = c.line()
            if ln is None:
                return False
            verb = ln.split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"HELO"):
                c.sock.sendall(b"250-vuln.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            elif verb == b"STARTTLS":
                c.sock.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                c.buf = b""  # no plaintext injection here
                return True
            elif verb == b"QUIT":
                c.sock.sendall(b"221 2.0.0 Bye\r\n")
                return False
            elif verb in (b"NOOP", b"RSET"):
                c.sock.sendall(b"250 2.0.0 Ok\r\n")
            else:
                c.sock.sendall(b"530 5.7.0 Must issue a STARTTLS command first\r\n")


def _prf(secret: bytes, label: bytes, seed: bytes, n: int) -> bytes:
    """The TLS 1.2 PRF with SHA-256 (RFC 5246 section 5)."""
    seed = label + seed
    out, a = b"", seed
    while len(out) < n:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + seed, hashlib.sha256).digest()
    return out[:n]


class _GCM:
    """One direction of a TLS 1.2 AES-GCM record layer (RFC 5288)."""

    def __init__(self, key: bytes, salt: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.aead, self.salt, self.seq = AESGCM(key), salt, 0

    def _aad(self, ctype: int, n: int) -> bytes:
        return struct.pack("!QBHH", self.seq, ctype, 0x0303, n)

    def seal(self, ctype: int, plain: bytes) -> bytes:
        explicit = struct.pack("!Q", self.seq)
        body = explicit + self.aead.encrypt(self.salt + explicit, plain, self._aad(ctype, len(plain)))
        self.seq += 1
        return struct.pack("!BHH", ctype, 0x0303, len(body)) + body

    def open(self, ctype: int, body: bytes) -> bytes | None:
        from cryptography.exceptions import InvalidTag

        if len(body) < 24:
            return None
        try:
            plain = self.aead.decrypt(self.salt + body[:8], body[8:], self._aad(ctype, len(body) - 24))
        except InvalidTag:
            return None
        self.seq += 1
        return plain


class VulnServer(_Base):
    def __init__(self, kind: str, *, starttls: bool = False):
        if kind not in KINDS:
            raise ValueError(kind)
        super().__init__(starttls=starttls)
        self.kind = kind
        self.key, self.cert = test_identity()

    def serve(self, s: socket.socket):
        c = _Conn(s)
        if self.starttls and not self.smtp_front(c):
            return
        if not c.fill(2):
            return
        if c.buf[0] & 0x80 and c.buf[0] != 0x80 | 22:
            return self.sslv2(c)
        self.tls(c)

    # -- SSLv2 ----------------------------------------------------------------------------
    def sslv2(self, c: _Conn):
        ln = ((c.buf[0] & 0x7F) << 8) | c.buf[1]
        if self.kind != "sslv2" or not c.fill(2 + ln) or c.buf[2] != 1:
            return
        body = c.buf[2:2 + ln]
        spec_len, sid_len, ch_len = struct.unpack("!HHH", body[3:9])
        specs = body[9:9 + spec_len]
        offered = {specs[i:i + 3] for i in range(0, len(specs) - 2, 3)}
        ours = b"".join(x for x in SSL2_SPECS if x in offered)
        conn_id = os.urandom(16)
        msg = (bytes([4, 0, 1]) + struct.pack("!HHHH", 0x0002, len(self.cert), len(ours), len(conn_id))
               + self.cert + ours + conn_id)
        c.sock.sendall(struct.pack("!H", 0x8000 | len(msg)) + msg)

    # -- TLS 1.2 -----------------------------------------------------------------------
    def client_hello(self, c: _Conn):
        hs = b""
        while len(hs) < 4 or len(hs) < 4 + int.from_bytes(hs[1:4], "big"):
            r = c.record()
            if r is None or r[0] != 22 or len(hs) > 65536:
                return None
            hs += r[2]
        if hs[0] != 1:
            return None
        c.transcript = hs[:4 + int.from_bytes(hs[1:4], "big")]
        body = hs[4:4 + int.from_bytes(hs[1:4], "big")]
        c.client_random = body[2:34]
        version = struct.unpack("!H", body[0:2])[0]
        pos = 34
        pos += 1 + body[pos]
        n = struct.unpack("!H", body[pos:pos + 2])[0]
        suites = [struct.unpack("!H", body[pos + 2 + i:pos + 4 + i])[0] for i in range(0, n, 2)]
        pos += 2 + n
        pos += 1 + body[pos]
        exts = {}
        if pos + 2 <= len(body):
            end = pos + 2 + struct.unpack("!H", body[pos:pos + 2])[0]
            pos += 2
            while pos + 4 <= end:
                kind, ln = struct.unpack("!HH", body[pos:pos + 4])
                exts[kind] = body[pos + 4:pos + 4 + ln]
                pos += 4 + ln
        return version, suites, exts

    def tls(self, c: _Conn):
        hello = self.client_hello(c)
        if hello is None:
            return
        version, suites, exts = hello
        if version < 0x0303:
            c.sock.sendall(_alert(70))
            return
        choice = next((s for s in SUITES if s in suites), None)  # our order: AES-128-GCM first
        if choice is None:
            c.sock.sendall(_alert(40))
            return
        sext = b""
        if 0xFF01 in exts or 0x00FF in suites:
            sext += struct.pack("!HH", 0xFF01, 1) + b"\x00"
        if 15 in exts and self.kind == "heartbleed":
            sext += struct.pack("!HH", 15, 1) + b"\x01"
        c.server_random = os.urandom(32)
        c.suite = choice
        sh = struct.pack("!H", 0x0303) + c.server_random + b"\x20" + os.urandom(32) + struct.pack("!HB", choice, 0)
        if sext:
            sh += struct.pack("!H", len(sext)) + sext
        cert = len(self.cert).to_bytes(3, "big") + self.cert
        flight = _hs(2, sh) + _hs(11, len(cert).to_bytes(3, "big") + cert) + _hs(14, b"")
        c.sock.sendall(_record(22, flight))
        c.transcript += flight
        self.after_hello(c)

    def after_hello(self, c: _Conn):
        cke_seen = False
        reading_encrypted = False
        padding_ok = None
        for _ in range(64):
            r = c.record()
            if r is None:
                return
            ctype, _, payload = r
            if reading_encrypted:
                if not cke_seen:  # the early CCS was taken: keys from an empty master secret
                    c.sock.sendall(_alert(20))  # bad_record_mac, as OpenSSL 1.0.1 < h did
                    return
                return self.finish(c, ctype, payload)
            if ctype == 24:
                if self.kind != "heartbleed" or len(payload) < 3 or payload[0] != 1:
                    c.sock.sendall(_alert(10))
                    return
                claimed = struct.unpack("!H", payload[1:3])[0]
                echo = payload[3:3 + claimed]
                leak = (echo + MEMORY * (claimed // len(MEMORY) + 1))[:claimed]
                c.sock.sendall(_record(24, b"\x02" + struct.pack("!H", claimed) + leak + os.urandom(16)))
                continue
            if ctype == 20:
                if not cke_seen and self.kind != "ccs":
                    c.sock.sendall(_alert(10))  # unexpected_message, as a fixed OpenSSL does
                    return
                reading_encrypted = True
                continue
            if ctype == 22 and payload[:1] == b"\x10":
                cke_seen = True
                c.transcript += payload
                padding_ok = self.check_pms(payload)
                c.pms = self.decrypt_pms(payload)
                if self.kind == "robot" and not padding_ok:
                    c.sock.sendall(_alert(51))  # decrypt_error: the oracle
                    return
                continue
            c.sock.sendall(_alert(10))
            return

    def decrypt_pms(self, payload: bytes) -> bytes:
        """The premaster secret; a random one when the padding is bad (RFC 5246 7.4.7.1)."""
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            pms = self.key.decrypt(payload[6:], padding.PKCS1v15())
        except ValueError:
            return os.urandom(48)
        return pms if len(pms) == 48 else os.urandom(48)

    def finish(self, c: _Conn, ctype: int, payload: bytes):
        """The client's encrypted Finished: check it and complete the handshake
        (TLS_RSA_WITH_AES_128_GCM_SHA256 only), then SMTP inside TLS; any failure is
        bad_record_mac (a wrong key) or decrypt_error (a wrong Finished)."""
        if c.suite != 0x009C or ctype != 22:
            c.sock.sendall(_alert(20))
            return
        ms = _prf(c.pms, b"master secret", c.client_random + c.server_random, 48)
        kb = _prf(ms, b"key expansion", c.server_random + c.client_random, 40)
        c.rd = _GCM(kb[0:16], kb[32:36])
        c.wr = _GCM(kb[16:32], kb[36:40])
        fin = c.rd.open(22, payload)
        if fin is None:
            c.sock.sendall(_alert(20))
            return
        want = _hs(20, _prf(ms, b"client finished", hashlib.sha256(c.transcript).digest(), 12))
        if fin != want:
            c.sock.sendall(_alert(51))
            return
        c.transcript += fin
        mine = _hs(20, _prf(ms, b"server finished", hashlib.sha256(c.transcript).digest(), 12))
        c.sock.sendall(_record(20, b"\x01") + c.wr.seal(22, mine))
        self.smtp_inside(c)

    def smtp_inside(self, c: _Conn):
        """A few SMTP commands over the finished TLS session (the policy session of
        ``mailca check``, the reference tools' connectivity tests)."""
        def say(text: bytes):
            c.sock.sendall(c.wr.seal(23, text))

        if not self.starttls:
            say(b"220 vuln.test ESMTP purpose-built\r\n")
        data = b""
        for _ in range(32):
            while b"\n" not in data:
                r = c.record()
                if r is None or r[0] != 23 or len(data) > 4096:
                    return
                plain = c.rd.open(23, r[2])
                if plain is None:
                    return
                data += plain
            line, data = data.split(b"\n", 1)
            verb = line.strip().split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"HELO"):
                say(b"250-vuln.test\r\n250 8BITMIME\r\n")
            elif verb == b"QUIT":
                say(b"221 2.0.0 Bye\r\n")
                return
            else:
                say(b"250 2.0.0 Ok\r\n")

    def check_pms(self, payload: bytes) -> bool:
        """The oracle: only the 00 02 prefix of the decrypted block is checked (the classic
        strong Bleichenbacher oracle of the ROBOT paper)."""
        body = payload[4:]
        ln = struct.unpack("!H", body[:2])[0]
        ct = int.from_bytes(body[2:2 + ln], "big")
        nums = self.key.private_numbers()
        k = (nums.public_numbers.n.bit_length() + 7) // 8
        em = pow(ct, nums.d, nums.public_numbers.n).to_bytes(k, "big")
        return em[:2] == b"\x00\x02"


class StartTLSInjectionServer(_Base):
    """SMTP with a real STARTTLS (Python ssl, TLS 1.2+): ``vulnerable`` keeps what the client
    pipelined after STARTTLS and runs it inside TLS."""

    def __init__(self, workdir: Path, *, vulnerable: bool):
        super().__init__(starttls=True)
        self.vulnerable = vulnerable
        key, cert = test_identity()
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        kf, cf = workdir / "key.pem", workdir / "cert.pem"
        kf.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        os.chmod(kf, 0o600)
        cf.write_bytes(x509.load_der_x509_certificate(cert).public_bytes(serialization.Encoding.PEM))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(str(cf), str(kf))

    def serve(self, s: socket.socket):
        c = _Conn(s)
        c.sock.sendall(b"220 inject.test ESMTP purpose-built\r\n")
        tls = False
        while True:
            ln = c.line()
            if ln is None:
                return
            verb = ln.split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"HELO"):
                last = b"250 8BITMIME\r\n" if tls else b"250 STARTTLS\r\n"
                c.sock.sendall(b"250-inject.test\r\n250-PIPELINING\r\n" + last)
            elif verb == b"STARTTLS" and not tls:
                c.sock.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                left = c.buf if self.vulnerable else b""
                c.sock.settimeout(10)
                c.sock = self.ctx.wrap_socket(c.sock, server_side=True)
                c.buf = left
                tls = True
            elif verb == b"QUIT":
                c.sock.sendall(b"221 2.0.0 Bye\r\n")
                return
            elif verb in (b"NOOP", b"RSET"):
                c.sock.sendall(b"250 2.0.0 Ok\r\n")
            else:
                c.sock.sendall(b"502 5.5.2 Error: command not recognized\r\n")
