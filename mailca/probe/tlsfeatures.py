"""The TLS-level test items of internet.nl's mail test and of sslyze's default scan that the
cipher-class probes in ``audit.py`` do not cover (issue #13, part A):

- NCSC-NL ratings of every offered cipher suite (TLS 1.3 and the highest legacy version),
  of every supported key-exchange group (one probe per group: a TLS 1.3 ClientHello that
  offers only that group and no key share, answered by a HelloRetryRequest naming it; TLS
  1.2 ECDHE on a TLS 1.2-only server), and of the finite-field DH group recognised by its
  prime (``ncsc.dh_group_name``);
- the hash in the TLS 1.2 ServerKeyExchange signature (offered SHA-1 only: accepted?);
- TLS compression (DEFLATE offered), secure renegotiation (renegotiation_info in the
  ServerHello), Extended Master Secret (extension 23 echoed), TLS_FALLBACK_SCSV;
- client-initiated renegotiation (a real TLS 1.2 handshake with pyOpenSSL, then
  SSL_renegotiate), session resumption by session ID and by ticket (two real handshakes
  each, stdlib ssl), 0-RTT (``openssl s_client``: a ticket, then a resumption that sends
  EHLO as early data), and the certificate served without SNI.

Every probe runs on its own connection (after STARTTLS, or straight away on an implicit-TLS
port), in a small thread pool of its own, while ``audit.tls_probes`` runs: ``start()``
returns at once and ``Running.finish()`` collects the result.  Nothing here raises into
the audit: a probe that fails or gets no answer leaves its fact ``None`` (unknown) and
never produces a finding.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..core.names import is_ip_literal
from ..errors import ConnectError
from . import hello as H
from . import ncsc
from .report import Finding, finding
from .smtp import Endpoint, open_for_tls

__all__ = ["Flight", "feature_hello", "read_flight", "Running", "start", "evaluate"]

_GROUPS_ALL = (29, 23, 30, 25, 24, 256, 257, 258)
_SIG_ALGS = (0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0807, 0x0808, 0x0401, 0x0501, 0x0601,
             0x0402, 0x0303, 0x0203, 0x0201, 0x0202)
_SIG_SHA1 = (0x0201, 0x0203, 0x0202)
SIG_NAMES = {0x0401: "rsa_pkcs1_sha256", 0x0501: "rsa_pkcs1_sha384", 0x0601: "rsa_pkcs1_sha512",
             0x0403: "ecdsa_secp256r1_sha256", 0x0503: "ecdsa_secp384r1_sha384", 0x0603: "ecdsa_secp521r1_sha512",
             0x0804: "rsa_pss_rsae_sha256", 0x0805: "rsa_pss_rsae_sha384", 0x0806: "rsa_pss_rsae_sha512",
             0x0807: "ed25519", 0x0808: "ed448", 0x0809: "rsa_pss_pss_sha256", 0x080A: "rsa_pss_pss_sha384",
             0x080B: "rsa_pss_pss_sha512", 0x0201: "rsa_pkcs1_sha1", 0x0203: "ecdsa_sha1", 0x0202: "dsa_sha1",
             0x0402: "dsa_sha256", 0x0303: "ecdsa_sha224", 0x0301: "rsa_pkcs1_sha224", 0x0302: "dsa_sha224"}
EXT_EMS, EXT_TICKET, EXT_RENEG, EXT_KEY_SHARE = 23, 35, 0xFF01, 51
SCSV_FALLBACK = 0x5600
# Group probes: every group of ncsc.GROUP_NAMES except the TLS 1.3-only brainpool aliases.
PROBE_GROUPS = tuple(g for g in ncsc.GROUP_NAMES if g not in (31, 32, 33))
_CHUNK = 12          # cipher-suite enumeration: suites per parallel chain
_WORKERS = 4
MAX_FLIGHT_BYTES = 256 * 1024

# --- ClientHello with every knob -------------------------------------------------------

def _u8(b: bytes) -> bytes:
    return struct.pack("!B", len(b)) + b


def _u16(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def _ext(kind: int, data: bytes) -> bytes:
    return struct.pack("!H", kind) + _u16(data)


def feature_hello(version: int, suites, *, sni: str | None = None, groups=_GROUPS_ALL, key_share: bool = True,
                  sig_algs=_SIG_ALGS, compression=(0,), fallback: bool = False, ems: bool = True) -> bytes:
    """One TLS record with a ClientHello for ``version`` (TLS 1.0-1.3) offering ``suites``.

    TLS <= 1.2 hellos carry the renegotiation SCSV (and TLS_FALLBACK_SCSV with ``fallback``);
    a TLS 1.3 hello carries an X25519 key share only if ``key_share`` and X25519 is among
    ``groups`` -- without one a server that supports a group answers HelloRetryRequest."""
    tls13 = version == H.TLS1_3
    codes = list(suites)
    if not tls13:
        codes.append(H.SCSV_RENEGOTIATION)
    if fallback:
        codes.append(SCSV_FALLBACK)
    exts = b""
    if sni and not is_ip_literal(sni):
        host = sni.encode("idna") if not sni.isascii() else sni.encode("ascii")
        exts += _ext(0, _u16(b"\x00" + _u16(host)))
    exts += _ext(10, _u16(b"".join(struct.pack("!H", g) for g in groups)))
    exts += _ext(11, _u8(b"\x00"))
    if version >= H.TLS1_2:
        exts += _ext(13, _u16(b"".join(struct.pack("!H", a) for a in sig_algs)))
    if ems:
        exts += _ext(EXT_EMS, b"")
    exts += _ext(EXT_TICKET, b"")
    if tls13:
        exts += _ext(43, _u8(struct.pack("!H", H.TLS1_3)))
        exts += _ext(45, _u8(b"\x01"))
        share = struct.pack("!HH", 29, 32) + os.urandom(32) if key_share and 29 in groups else b""
        exts += _ext(EXT_KEY_SHARE, _u16(share))
    body = struct.pack("!H", H.TLS1_2 if tls13 else version) + os.urandom(32)
    body += _u8(os.urandom(32) if tls13 else b"")
    body += _u16(b"".join(struct.pack("!H", c) for c in codes))
    body += _u8(bytes(compression))
    body += _u16(exts)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return struct.pack("!BHH", 22, H.TLS1_0, len(hs)) + hs


@dataclass(frozen=True)
class Flight:
    """The server's answer to one ClientHello, as far as it is in the clear."""

    outcome: str                      # accepted / alert / closed / timeout / noconnect / garbage / malformed
    version: int | None = None
    cipher: int | None = None
    compression: int | None = None
    hrr: bool = False
    extensions: dict = field(default_factory=dict)   # ServerHello extension type -> data
    certs: tuple = ()
    ske: bytes = b""
    alert: int | None = None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"

    @property
    def group(self) -> int | None:
        data = self.extensions.get(EXT_KEY_SHARE, b"")
        return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None


def _server_hello(body: bytes) -> Flight:
    if len(body) < 38 or body[34] > 32:
        raise ValueError("truncated ServerHello")
    version = struct.unpack("!H", body[0:2])[0]
    pos = 35 + body[34]
    if pos + 3 > len(body):
        raise ValueError("truncated ServerHello")
    cipher = struct.unpack("!H", body[pos:pos + 2])[0]
    comp = body[pos + 2]
    pos += 3
    exts: dict = {}
    if pos + 2 <= len(body):
        end = pos + 2 + struct.unpack("!H", body[pos:pos + 2])[0]
        if end > len(body):
            raise ValueError("ServerHello extensions overrun the message")
        pos += 2
        while pos + 4 <= end:
            kind, ln = struct.unpack("!HH", body[pos:pos + 4])
            if pos + 4 + ln > end:
                raise ValueError(f"ServerHello extension {kind} overruns the message")
            exts[kind] = body[pos + 4:pos + 4 + ln]
            pos += 4 + ln
    if 43 in exts and len(exts[43]) >= 2:
        version = struct.unpack("!H", exts[43][:2])[0]
    hrr = body[2:34] == bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
    return Flight("accepted", version=version, cipher=cipher, compression=comp, hrr=hrr, extensions=exts)


def read_flight(sock: socket.socket, *, timeout: float, full: bool = False) -> Flight:
    """Read the answer to a ClientHello: up to the ServerHello, or with ``full`` (TLS <= 1.2)
    to ServerHelloDone (Certificate and ServerKeyExchange kept).  Bounded in time and size."""
    from dataclasses import replace

    deadline = time.monotonic() + timeout
    buf = hs = b""
    hello: Flight | None = None
    certs: tuple = ()
    ske = b""
    total = 0

    def fill(n: int) -> bool:
        nonlocal buf
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            sock.settimeout(left)
            try:
                chunk = sock.recv(16384)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                return False
            buf += chunk
        return True

    try:
        while fill(5):
            ctype, rver, rlen = struct.unpack("!BHH", buf[:5])
            if ctype not in (20, 21, 22, 23) or rver >> 8 != 3 or rlen > 18432:
                if hello is None:
                    return Flight("garbage", detail="not a TLS record")
                break
            total += 5 + rlen
            if total > MAX_FLIGHT_BYTES or not fill(5 + rlen):
                break
            payload, buf = buf[5:5 + rlen], buf[5 + rlen:]
            if ctype == 21:
                if hello is not None:
                    break
                desc = (payload + b"\x00\x00")[1]
                return Flight("alert", alert=desc, detail=H.ALERT_NAMES.get(desc, f"alert {desc}"))
            if ctype != 22:
                if hello is not None:
                    break
                continue
            hs += payload
            while len(hs) >= 4:
                mtype, mlen = hs[0], int.from_bytes(hs[1:4], "big")
                if len(hs) < 4 + mlen:
                    break
                body, hs = hs[4:4 + mlen], hs[4 + mlen:]
                if mtype == 2 and hello is None:
                    hello = _server_hello(body)
                    if not full or hello.version >= H.TLS1_3 or hello.hrr:
                        return hello
                elif hello is None:
                    return Flight("malformed", detail=f"handshake message {mtype} before the ServerHello")
                elif mtype == 11:
                    certs = _certificates(body)
                elif mtype == 12:
                    ske = body
                elif mtype == 14:
                    return replace(hello, certs=certs, ske=ske)
    except socket.timeout:
        if hello is None:
            return Flight("timeout", detail=f"no answer within {timeout:g} s")
    except (ValueError, OSError) as exc:
        if hello is None:
            return Flight("malformed", detail=str(exc))
    if hello is not None:
        return replace(hello, certs=certs, ske=ske)
    return Flight("closed", detail="connection closed without an answer")


def _certificates(body: bytes) -> tuple:
    total = int.from_bytes(body[0:3], "big") if len(body) >= 3 else 0
    pos, end, out = 3, min(len(body), 3 + total), []
    while pos + 3 <= end:
        ln = int.from_bytes(body[pos:pos + 3], "big")
        if pos + 3 + ln > end:
            break
        out.append(body[pos + 3:pos + 3 + ln])
        pos += 3 + ln
    return tuple(out)


def _ske_params(ske: bytes, cipher: int) -> dict:
    """p and g of a DHE ServerKeyExchange, the curve of an ECDHE one, and the TLS 1.2
    signature algorithm that signs them."""
    s = H.suite(cipher)
    out: dict = {}
    try:
        if s is not None and s.kx in ("DHE", "DH_anon"):
            pos = 0
            vals = []
            for _ in range(3):
                ln = struct.unpack("!H", ske[pos:pos + 2])[0]
                vals.append(ske[pos + 2:pos + 2 + ln])
                pos += 2 + ln
            out.update(p=vals[0], g=vals[1])
        elif s is not None and s.kx in ("ECDHE", "ECDH_anon") and ske[:1] == b"\x03":
            out["curve"] = struct.unpack("!H", ske[1:3])[0]
            pos = 4 + ske[3]
        else:
            return out
        if s.kx in ("DHE", "ECDHE") and pos + 2 <= len(ske):
            out["sigalg"] = struct.unpack("!H", ske[pos:pos + 2])[0]
    except (struct.error, IndexError):
        pass
    return out


# --- the probes ------------------------------------------------------------------------

class _Scan:
    def __init__(self, ep: Endpoint, sni: str | None, pool: ThreadPoolExecutor):
        self.ep, self.sni, self.pool = ep, sni, pool
        self.count = 0
        self.unanswered: list[str] = []  # list.append is atomic: the workers share it

    def hello(self, version: int, suites, *, full: bool = False, **kw) -> Flight:
        self.count += 1
        f = self._hello(version, suites, full=full, **kw)
        if f.outcome in ("timeout", "noconnect"):
            self.unanswered.append(f"{H.VERSION_NAMES[version]} ClientHello ({len(suites)} suites): {f.detail}")
        return f

    def _hello(self, version: int, suites, *, full: bool = False, **kw) -> Flight:
        try:
            sock = open_for_tls(self.ep)
        except ConnectError as exc:
            return Flight("noconnect", detail=exc.message)
        try:
            sock.settimeout(self.ep.budget())
            sock.sendall(feature_hello(version, suites, sni=kw.pop("sni", self.sni), **kw))
            return read_flight(sock, timeout=self.ep.budget(), full=full)
        except ConnectError as exc:
            return Flight("timeout", detail=exc.message)
        except OSError as exc:
            return Flight("closed", detail=str(exc))
        finally:
            sock.close()

    def enumerate(self, version: int, codes) -> list[int] | None:
        """The suites of ``codes`` the server accepts at ``version`` (or lower, for TLS <= 1.2):
        offer them all, strike the chosen one, repeat.  None if a probe got no answer."""
        got: list[int] = []
        left = list(codes)
        while left:
            f = self.hello(version, left)
            if f.outcome in ("timeout", "noconnect"):
                return None
            if not f.accepted or f.cipher not in left:
                break
            got.append(f.cipher)
            left.remove(f.cipher)
        return got

    # real handshakes ------------------------------------------------------------------
    def _stdlib_ctx(self, *, max12: bool, tickets: bool = True):
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        import warnings

        with warnings.catch_warnings():  # TLS 1.0 is deprecated: we audit, the server decides
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
                ctx.minimum_version = ssl.TLSVersion.TLSv1
            except (ssl.SSLError, ValueError):
                pass
        if max12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if not tickets:
            ctx.options |= ssl.OP_NO_TICKET
        return ctx

    def _handshake(self, ctx, *, sni: str | None, session=None):
        sock = open_for_tls(self.ep)
        sock.settimeout(self.ep.budget())
        try:
            return ctx.wrap_socket(sock, server_hostname=sni if sni and not is_ip_literal(sni) else None,
                                   session=session)
        except BaseException:
            sock.close()
            raise

    def no_sni_leaf(self) -> bytes | None:
        try:
            s = self._handshake(self._stdlib_ctx(max12=False), sni=None)
        except (OSError, ConnectError):
            return None
        try:
            return s.getpeercert(binary_form=True)
        finally:
            s.close()

    def resumption(self, *, tickets: bool) -> bool | None:
        """True if a second TLS 1.2 handshake resumed the first one's session (by ticket
        with ``tickets``, else by session ID); None if either handshake failed."""
        ctx = self._stdlib_ctx(max12=True, tickets=tickets)
        try:
            s = self._handshake(ctx, sni=self.sni)
            session = s.session
            used_ticket = bool(session is not None and session.has_ticket)
            s.close()
            if session is None or (tickets and not used_ticket):
                return False if session is not None else None
            s2 = self._handshake(ctx, sni=self.sni, session=session)
            reused = s2.session_reused
            s2.close()
            return bool(reused)
        except (OSError, ConnectError):
            return None

    def client_renegotiation(self) -> bool | None:
        """A TLS 1.2 handshake with pyOpenSSL, then a client-initiated renegotiation: True
        if the server completed it, False if it refused, None if no TLS 1.2 handshake."""
        import select

        from OpenSSL import SSL

        try:
            sock = open_for_tls(self.ep)
        except ConnectError:
            return None
        try:
            ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
            ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
            ctx.set_cipher_list(b"ALL:COMPLEMENTOFALL:@SECLEVEL=0")
            ctx.set_min_proto_version(SSL.TLS1_VERSION)
            ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
            conn = SSL.Connection(ctx, sock)
            if self.sni and not is_ip_literal(self.sni):
                conn.set_tlsext_host_name(self.sni.encode("idna"))
            conn.set_connect_state()
            sock.setblocking(False)

            def drive(fn):
                deadline = time.monotonic() + self.ep.budget()
                while True:
                    try:
                        return fn()
                    except (SSL.WantReadError, SSL.WantWriteError) as exc:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise socket.timeout() from None
                        w = isinstance(exc, SSL.WantWriteError)
                        r, wr, _ = select.select([] if w else [sock], [sock] if w else [], [], left)
                        if not r and not wr:
                            raise socket.timeout() from None

            try:
                drive(conn.do_handshake)
            except (SSL.Error, OSError):
                return None
            try:
                if not conn.renegotiate():
                    return False
                drive(conn.do_handshake)
                # The server answers the new ClientHello only when it reads: our do_handshake
                # returns once the ClientHello is out, so read until the renegotiation ends.
                end = time.monotonic() + self.ep.budget()
                while conn.renegotiate_pending() and time.monotonic() < end:
                    try:
                        drive(lambda: conn.recv(1024))
                    except SSL.WantReadError:
                        pass
                return not conn.renegotiate_pending()
            except (SSL.Error, OSError):
                return False
        finally:
            sock.close()

    def early_data(self) -> dict:
        """0-RTT as internet.nl tests it, with ``openssl s_client``: a TLS 1.3 handshake that
        saves the session ticket, then -- if the ticket allows early data -- a resumption
        that sends EHLO as early data.  {"max_early_data": N, "accepted": bool} or {}."""
        import shutil

        openssl = shutil.which("openssl")
        if openssl is None:
            return {}
        base = [openssl, "s_client", "-connect", f"{_hostport(self.ep)}", "-tls1_3"]
        if not self.ep.implicit_tls:
            base += ["-starttls", {"imap": "imap", "pop3": "pop3"}.get(self.ep.role, "smtp")]
        base += ["-servername", self.sni] if self.sni and not is_ip_literal(self.sni) else ["-noservername"]
        # OpenSSL's server accepts early data only when the client's ticket age agrees with its
        # own, which it counts in whole seconds: a resumption that straddles a second boundary
        # the wrong way is rejected now and then (seen in CI on haproxy while sslyze, a moment
        # later, was accepted).  So a rejection is tried again with a fresh ticket, three times
        # at most; a server whose tickets allow no early data answers in the first round.
        out: dict = {}
        for _ in range(3):
            out = self._early_data_once(base)
            if not out.get("max_early_data") or out.get("accepted"):
                return out
        return out

    def _early_data_once(self, base: list[str]) -> dict:
        openssl = base[0]
        with tempfile.TemporaryDirectory(prefix="mailca-0rtt-") as tmp:
            sess = os.path.join(tmp, "sess.pem")
            # The ticket arrives after the handshake; s_client writes it to -sess_out then.
            out = _s_client(base + ["-sess_out", sess], self.ep.budget(), lambda text: _complete(sess))
            if out is None or not _complete(sess):
                return {}
            info = _s_client([openssl, "sess_id", "-in", sess, "-noout", "-text"], self.ep.budget(),
                             lambda text: "Max Early Data" in text)
            max_early = _max_early(info or "")
            out = {"max_early_data": max_early or 0, "accepted": False}
            if not max_early:
                return out
            ed = os.path.join(tmp, "early.txt")
            with open(ed, "wb") as fh:
                fh.write(b"EHLO mailca-check.invalid\r\n")
            r2 = _s_client(base + ["-sess_in", sess, "-early_data", ed], self.ep.budget(),
                           lambda text: "Early data was" in text)
            out["accepted"] = bool(r2 and "Early data was accepted" in r2)
            return out


def _hostport(ep: Endpoint) -> str:
    return f"[{ep.host}]:{ep.port}" if ":" in ep.host else f"{ep.host}:{ep.port}"


def _s_client(argv: list[str], timeout: float, done) -> str | None:
    """Run ``openssl s_client`` (stdin kept open, so it does not hang up first) until
    ``done(output so far)`` or ``timeout``; its output, or None if it could not run."""
    import select

    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    out = b""
    end = time.monotonic() + max(timeout, 0.5)
    try:
        while len(out) < 256 * 1024:
            left = end - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([proc.stdout], [], [], min(left, 0.05))
            if r:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
            text = out.decode("latin-1")
            if done(text):
                # EOF on stdin: s_client sends close_notify; a session whose connection was
                # cut without one is not resumable (OpenSSL drops it from the server cache).
                proc.stdin.close()
                try:
                    proc.wait(min(max(end - time.monotonic(), 0.1), 2.0))
                except subprocess.TimeoutExpired:
                    pass
                return text
            if not r and proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdin, proc.stdout):
            if not f.closed:
                f.close()
    return out.decode("latin-1")


def _complete(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read().rstrip().endswith(b"-----END SSL SESSION PARAMETERS-----")
    except OSError:
        return False


def _max_early(text: str) -> int | None:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Max Early Data:"):
            try:
                return int(line.split(":", 1)[1])
            except ValueError:
                return None
    return None


def _collect(ep: Endpoint, sni: str | None, workers: int = _WORKERS) -> dict:
    """Every probe, ``workers`` connections at a time; returns the raw results by name."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        sc = _Scan(ep, sni, pool)
        legacy = tuple(c for c in H.ALL_SUITES)
        fs_suites = tuple(c for c in H.FS_SUITES)
        jobs: dict = {"early": pool.submit(sc.early_data)}  # three processes in a row: first
        # The enumeration chains are the longest (one connection per accepted suite): first.
        chunks = [legacy[i:i + _CHUNK] for i in range(0, len(legacy), _CHUNK)]
        for i, ch in enumerate(chunks):
            jobs[("suites", i)] = pool.submit(sc.enumerate, H.TLS1_2, ch)
        jobs.update({
            "base13": pool.submit(sc.hello, H.TLS1_3, H.TLS13_SUITES),
            "base12": pool.submit(sc.hello, H.TLS1_2, legacy, full=True),
            "base11": pool.submit(sc.hello, H.TLS1_1, legacy),
            "comp": pool.submit(sc.hello, H.TLS1_2, legacy, compression=(1, 0)),
            "sha1": pool.submit(sc.hello, H.TLS1_2, fs_suites, full=True, sig_algs=_SIG_SHA1),
            "dhe": pool.submit(sc.hello, H.TLS1_2, H.DHE_SUITES, full=True),
            "fb12": pool.submit(sc.hello, H.TLS1_2, legacy, fallback=True),
            "fb11": pool.submit(sc.hello, H.TLS1_1, legacy, fallback=True),
            "reneg": pool.submit(sc.client_renegotiation),
            "res_id": pool.submit(sc.resumption, tickets=False),
            "res_ticket": pool.submit(sc.resumption, tickets=True),
            "nosni": pool.submit(sc.no_sni_leaf),
            "suites13": pool.submit(sc.enumerate, H.TLS1_3, H.TLS13_SUITES),
        })
        for g in PROBE_GROUPS:
            jobs[("g13", g)] = pool.submit(sc.hello, H.TLS1_3, H.TLS13_SUITES, groups=(g,), key_share=False)
        out = {k: f.result() for k, f in jobs.items()}
        # A TLS 1.2-only server: its ECDHE curves, one per probe.
        if not (out["base13"].accepted and out["base13"].version == H.TLS1_3):
            ecdhe = tuple(c for c in fs_suites if H.suite(c).kx == "ECDHE")
            g12 = {g: pool.submit(sc.hello, H.TLS1_2, ecdhe, full=True, groups=(g,))
                   for g in PROBE_GROUPS if g < 256}
            for g, f in g12.items():
                out[("g12", g)] = f.result()
        out["_count"] = sc.count
        out["_unanswered"] = list(sc.unanswered)
    return out


# --- evaluation ------------------------------------------------------------------------

def evaluate(raw: dict, *, port: int, name: str | None, chain: list[bytes], chain_facts: list[dict]) -> tuple[dict, list[Finding]]:
    """Facts (``tls_features`` in the JSON) and findings from the raw probe results."""
    fs: list[Finding] = []
    b13, b12, b11 = raw["base13"], raw["base12"], raw["base11"]
    known = lambda f: f.outcome not in ("timeout", "noconnect")  # noqa: E731
    has13 = b13.accepted and b13.version == H.TLS1_3
    legacy = b12.version if b12.accepted and b12.version in H.VERSION_NAMES and b12.version < H.TLS1_3 else None
    facts: dict = {"probes": raw.get("_count", 0), "unanswered": raw.get("_unanswered", [])}

    # Cipher suites with their NCSC rating.
    suites: list[int] = []
    unknown = False
    for key, val in raw.items():
        if isinstance(key, tuple) and key[0] == "suites":
            if val is None:
                unknown = True
            else:
                suites.extend(val)
    s13 = raw["suites13"] or []
    rated: dict[str, list[str]] = {r: [] for r in ncsc.RATINGS}
    for c in list(s13) + suites:
        nm = H.suite_name(c)
        rated[ncsc.rate_suite(nm)].append(nm)
    facts["ncsc_suites"] = rated
    facts["suites_version"] = H.VERSION_NAMES.get(legacy) if legacy else None
    facts["suites_complete"] = not unknown and raw["suites13"] is not None
    if rated[ncsc.INSUFFICIENT]:
        fs.append(finding("ncsc.suite_insufficient", _list(rated[ncsc.INSUFFICIENT]), port=port))
    if rated[ncsc.PHASE_OUT]:
        fs.append(finding("ncsc.suite_phase_out", _list(rated[ncsc.PHASE_OUT]), port=port))
    rsa = [H.suite_name(c) for c in suites if H.suite(c) and H.suite(c).kx == "RSA"]
    facts["rsa_key_exchange"] = bool(rsa) if not unknown else (True if rsa else None)
    if rsa:
        fs.append(finding("kex.rsa", _list(rsa), port=port))

    # Key-exchange groups.
    groups: dict[str, str] = {}
    groups_unknown = False
    for key, f in raw.items():
        if isinstance(key, tuple) and key[0] in ("g13", "g12"):
            if key[0] == "g12" and has13:
                continue
            g = key[1]
            if not known(f):
                groups_unknown = True
                continue
            chosen = f.group if key[0] == "g13" else _ske_params(f.ske, f.cipher).get("curve") if f.accepted else None
            if f.accepted and chosen == g and (key[0] == "g12" or f.version == H.TLS1_3):
                groups[ncsc.GROUP_NAMES[g]] = ncsc.rate_group(g)
    facts["groups"] = groups
    facts["groups_complete"] = not groups_unknown
    # The group the server picks for a client offering the usual list (X25519 first, the
    # NIST curves, ffdhe): MEDIUM if that one is insufficient, as internet.nl rates the key
    # exchange it gets.  A weak group that is merely supported (a client must offer nothing
    # better to get it) is LOW -- OpenSSL 3's default TLS 1.3 list includes ffdhe2048.
    chosen = None
    if has13:
        chosen = b13.group
    elif legacy:
        chosen = _ske_params(b12.ske, b12.cipher).get("curve")
    facts["preferred_group"] = ncsc.GROUP_NAMES.get(chosen, chosen) if chosen is not None else None
    bad = [g for g, r in groups.items() if r == ncsc.INSUFFICIENT]
    po = [g for g, r in groups.items() if r == ncsc.PHASE_OUT]
    if bad:
        picked = facts["preferred_group"] in bad
        fs.append(finding("kex.group_insufficient", ", ".join(bad) + (
            f" (the server picks {facts['preferred_group']} when a client offers the usual groups)" if picked else
            f" (supported; the server picks {facts['preferred_group']} when a client offers the usual groups)"),
            port=port, severity=None if picked else "LOW"))
    if po:
        fs.append(finding("kex.group_phase_out", ", ".join(po), port=port))

    # Finite-field DH group, by its prime.
    dhe = raw["dhe"]
    dh = None
    if dhe.accepted and dhe.version < H.TLS1_3:
        prm = _ske_params(dhe.ske, dhe.cipher)
        if "p" in prm:
            gname = ncsc.dh_group_name(prm["p"])
            bits = int.from_bytes(prm["p"], "big").bit_length()
            dh = {"bits": bits, "group": gname, "generator": int.from_bytes(prm["g"], "big"),
                  "ncsc": ncsc.rate_dh(prm["p"], prm["g"])}
            if gname == "ffdhe2048":
                fs.append(finding("kex.dh_ffdhe2048", "TLS 1.2 DHE uses the RFC 7919 group ffdhe2048", port=port))
            elif gname is None or not gname.startswith("ffdhe"):
                what = f"the well-known {gname}" if gname else f"a self-generated {bits}-bit group"
                fs.append(finding("kex.dh_custom", f"TLS 1.2 DHE uses {what}", port=port))
    facts["dhe_group"] = dh

    # Key-exchange signature hash (TLS 1.2).
    sig = _ske_params(b12.ske, b12.cipher).get("sigalg") if b12.accepted and b12.version == H.TLS1_2 else None
    facts["kex_signature"] = SIG_NAMES.get(sig, f"0x{sig:04X}") if sig is not None else None
    s1 = raw["sha1"]
    if legacy == H.TLS1_2 and known(s1):
        sha1 = bool(s1.accepted and s1.version == H.TLS1_2 and s1.ske
                    and _ske_params(s1.ske, s1.cipher).get("sigalg") in _SIG_SHA1)
        facts["kex_sha1"] = sha1
        if sha1:
            alg = SIG_NAMES.get(_ske_params(s1.ske, s1.cipher).get("sigalg"), "")
            fs.append(finding("kex.sha1", f"{H.suite_name(s1.cipher)} key exchange signed with {alg}", port=port))
    else:
        facts["kex_sha1"] = None if legacy == H.TLS1_2 else False

    # Compression, secure renegotiation, EMS (TLS <= 1.2 only: TLS 1.3 has them built in).
    comp = raw["comp"]
    if comp.accepted and comp.version < H.TLS1_3:
        facts["compression"] = comp.compression != 0
        if comp.compression:
            fs.append(finding("tls.compression", f"the server chose compression method {comp.compression} "
                                                 "(DEFLATE) with " + (H.suite_name(comp.cipher) or ""), port=port))
    else:  # refused (or answered with TLS 1.3): no compression; no answer: unknown
        facts["compression"] = False if known(comp) else None
    if legacy:
        ri = EXT_RENEG in b12.extensions
        ems = EXT_EMS in b12.extensions
        facts["secure_renegotiation"], facts["extended_master_secret"] = ri, ems
        facts["session_ticket_extension"] = EXT_TICKET in b12.extensions
        vname = H.VERSION_NAMES[legacy]
        if not ri:
            fs.append(finding("tls.no_secure_renegotiation", f"{vname} ServerHello has no renegotiation_info", port=port))
        if not ems:
            fs.append(finding("tls.no_ems", f"{vname} ServerHello does not echo extended_master_secret", port=port))
    else:
        facts["secure_renegotiation"] = facts["extended_master_secret"] = None if not known(b12) else "TLSv1.3 only"
        facts["session_ticket_extension"] = None
    reneg = raw["reneg"]
    facts["client_renegotiation"] = reneg
    if reneg:
        fs.append(finding("tls.client_renegotiation", "a TLS 1.2 renegotiation started by the client completed",
                          port=port))

    # TLS_FALLBACK_SCSV: a hello below the highest version, flagged as a fallback, must be refused.
    versions = {H.TLS1_3: has13, H.TLS1_2: legacy == H.TLS1_2,
                H.TLS1_1: b11.accepted and b11.version == H.TLS1_1}
    fb = None
    for lower, probe_key in ((H.TLS1_2, "fb12"), (H.TLS1_1, "fb11")):
        higher = any(ok for v, ok in versions.items() if v > lower)
        f = raw[probe_key]
        if versions.get(lower) and higher and known(f):
            # inappropriate_fallback (86), or any refusal of a hello the server accepts without the
            # SCSV: Dovecot closes the connection without flushing the alert (seen on 2.3.19).
            refused = not f.accepted
            fb = refused if fb is None else (fb and refused)
            if not refused:
                fs.append(finding("tls.no_fallback_scsv", f"a {H.VERSION_NAMES[lower]} ClientHello with "
                                  f"TLS_FALLBACK_SCSV was answered with {f.detail or f.outcome}"
                                  + (f" ({H.suite_name(f.cipher)})" if f.accepted else ""), port=port))
                break
    facts["fallback_scsv"] = fb  # None: only one version, nothing to fall back to

    # Session resumption and 0-RTT.
    facts["resumption"] = {"session_id": raw["res_id"], "ticket": raw["res_ticket"]}
    early = raw["early"] or {}
    if not early and not has13 and known(b13):
        early = {"max_early_data": 0, "accepted": False}  # no TLS 1.3, no 0-RTT
    facts["early_data"] = early or None
    if early.get("accepted"):
        fs.append(finding("tls.early_data", f"EHLO sent as TLS 1.3 early data was accepted "
                                            f"(ticket max_early_data {early.get('max_early_data')})", port=port))

    # The certificate without SNI.
    leaf = raw["nosni"]
    nos: dict | None = None
    if leaf is not None:
        from cryptography import x509

        from .certcheck import hostname_matches

        same = bool(chain) and leaf == chain[0]
        nos = {"same_as_sni": same, "matches_name": None}
        try:
            cert = x509.load_der_x509_certificate(leaf)
            nos["subject"] = cert.subject.rfc4514_string()
            if name:
                nos["matches_name"] = hostname_matches(cert, name)
        except ValueError:
            pass
        if name and nos["matches_name"] is False and not same:
            fs.append(finding("cert.no_sni_mismatch", f"without SNI the server sends {nos.get('subject', '?')}",
                              port=port))
    facts["no_sni_certificate"] = nos

    # NCSC ratings of every certificate in the chain (key and signature hash).
    rated_chain = []
    for i, c in enumerate(chain_facts):
        kr = ncsc.rate_cert_key(str(c.get("key", "")), int(c.get("key_bits") or 0))
        # The root's self-signature is not checked by anyone: rate it only for a leaf.
        hr = ncsc.rate_cert_hash(str(c.get("signature_hash", ""))) if not c.get("self_signed") or i == 0 else None
        rated_chain.append({"subject": c.get("subject"), "key": kr, "signature_hash": hr})
    facts["ncsc_chain"] = rated_chain
    return facts, fs


def _list(names: list[str], limit: int = 12) -> str:
    names = list(dict.fromkeys(names))
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class Running:
    """The feature probes of one port, running in the background."""

    def __init__(self, ep: Endpoint, sni: str | None, workers: int = _WORKERS):
        import threading

        self._raw: dict | None = None
        self._error: str | None = None
        self._thread = threading.Thread(target=self._work, args=(ep, sni, workers), daemon=True)
        self._thread.start()

    def _work(self, ep, sni, workers):
        try:
            self._raw = _collect(ep, sni, workers)
        except Exception as exc:  # never into the audit
            self._error = f"{type(exc).__name__}: {exc}"

    def finish(self, *, port: int, name: str | None, chain: list[bytes], chain_facts: list[dict],
               timeout: float) -> tuple[dict, list[Finding]]:
        self._thread.join(timeout)
        if self._raw is None:
            return {"error": self._error or "the feature probes did not finish within the port deadline"}, []
        try:
            return evaluate(self._raw, port=port, name=name, chain=chain, chain_facts=chain_facts)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}, []


def start(ep: Endpoint, sni: str | None, parallel: int = 8) -> Running:
    """Start the feature probes of one port in the background.  ``parallel`` is the port's
    connection budget (``--parallel``): the feature probes take half of it, at most 4."""
    return Running(ep, sni, max(1, min(_WORKERS, parallel // 2)))
