"""A small SMTP client for auditing: banner, EHLO, STARTTLS or implicit TLS, with a timeout
on every operation.

It returns plain sockets that are ready for TLS (so that the hand-built ClientHello probes
in ``hello.py`` can run after STARTTLS) and can finish a real TLS handshake with pyOpenSSL
(``TLSChannel``) to read the certificate chain exactly as sent and talk SMTP over TLS.
Every failure to reach the server or to get SMTP out of it is a ``ConnectError`` whose
message says which port did what.
"""

from __future__ import annotations

import re
import select
import socket
import time
from dataclasses import dataclass

from ..core.names import is_ip_literal
from ..errors import ConnectError
from .text import clean

__all__ = ["ROLES", "DEFAULT_ROLE", "Endpoint", "SMTPClient", "open_for_tls", "TLSFailure"]

ROLES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")
DEFAULT_ROLE = {25: "smtp", 587: "submission", 465: "submissions", 143: "imap", 993: "imaps", 110: "pop3", 995: "pop3s"}
IMPLICIT_ROLES = ("submissions", "imaps", "pop3s")
_REPLY = re.compile(rb"^(\d{3})([ -])(.*)$")
_MAX_LINE = 4096
_MAX_LINES = 200


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    role: str = "smtp"
    timeout: float = 10.0
    # The whole audit of the port must end by ``deadline`` (time.monotonic()); every wait is
    # the per-step ``timeout`` cut to what is left.  ``port_deadline`` is the same in seconds.
    deadline: float | None = None
    port_deadline: float | None = None

    def budget(self) -> float:
        """Seconds the next network step may take; raises ``PortDeadline`` once the port's
        deadline has passed."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise PortDeadline(f"{self.label}: the audit did not finish within the port deadline of "
                               f"{self.port_deadline:g} s (--port-deadline)")
        return min(self.timeout, left)

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    @property
    def implicit_tls(self) -> bool:
        return self.role in IMPLICIT_ROLES

    @property
    def label(self) -> str:
        return f"{self.host} port {self.port}"


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


def _printable(data: bytes, limit: int = 60) -> str:
    s = data[:limit].decode("latin-1")
    return "".join(c if 32 <= ord(c) < 127 else "." for c in s)


class SMTPClient:
    """SMTP over a socket (and later over a ``TLSChannel``), one reply at a time."""

    def __init__(self, endpoint: Endpoint):
        self.ep = endpoint
        self.sock: socket.socket | None = None
        self.tls: TLSChannel | None = None
        self._buf = b""

    # -- transport ------------------------------------------------------------------
    def connect(self) -> socket.socket:
        ep = self.ep
        try:
            self.sock = socket.create_connection((ep.host, ep.port), timeout=ep.budget())
        except ConnectionRefusedError:
            raise ConnectError(f"{ep.label}: connection refused (nothing listens there?)") from None
        except socket.timeout:
            ep.budget()  # the port deadline, if that is what ran out
            raise ConnectError(f"{ep.label}: no TCP connection within {ep.timeout:g} s") from None
        except socket.gaierror as exc:
            raise ConnectError(f"{ep.host}: cannot resolve the host name ({exc.strerror})") from None
        except OSError as exc:
            raise ConnectError(f"{ep.label}: cannot connect ({exc.strerror or exc})") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    proto = "SMTP"                  # named in "does not speak ..." errors
    _show = staticmethod(_printable)  # how peer bytes appear in those errors

    def _line(self, what: str, deadline: float) -> bytes:
        """The next line the server sent (without its LF), never buffering more than
        _MAX_LINE bytes while waiting for it."""
        while b"\n" not in self._buf:
            if len(self._buf) > _MAX_LINE:
                raise ConnectError(f"{self.ep.label}: does not speak {self.proto} (line too long: "
                                   f"{self._show(self._buf)!r})")
            chunk = self._recv(what, deadline)
            if not chunk:
                got = f" after {self._show(self._buf)!r}" if self._buf else ""
                raise ConnectError(f"{self.ep.label}: server closed the connection while we waited "
                                   f"for {what}{got}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\n", 1)
        return raw

    def _recv(self, what: str, deadline: float) -> bytes:
        """Some bytes, or b"" at EOF; the whole reply must arrive before ``deadline``
        (a server dribbling one byte at a time cannot stretch the timeout)."""
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            if self.tls is not None:
                data = self.tls.recv(what, deadline)
            else:
                self.sock.settimeout(left)
                data = self.sock.recv(8192)
        except socket.timeout:
            self.ep.budget()  # the port deadline, if that is what ran out
            raise ConnectError(f"{self.ep.label}: timed out after {self.ep.timeout:g} s waiting for {what}"
                               + (" (is this an SMTP port?)" if what == "the SMTP greeting" else "")) from None
        except ConnectionResetError:
            data = b""
        except OSError as exc:
            raise ConnectError(f"{self.ep.label}: connection failed while waiting for {what} "
                               f"({exc.strerror or exc})") from None
        return data

    def send(self, line: str) -> None:
        data = line.encode("ascii") + b"\r\n"
        try:
            if self.tls is not None:
                self.tls.sendall(data)
            else:
                self.sock.settimeout(self.ep.budget())
                self.sock.sendall(data)
        except OSError as exc:
            raise ConnectError(f"{self.ep.label}: connection lost sending {line.split()[0]} "
                               f"({exc.strerror or exc})") from None

    # -- SMTP -----------------------------------------------------------------------
    def read_reply(self, what: str = "reply") -> Reply:
        lines: list[str] = []
        code = None
        deadline = time.monotonic() + self.ep.budget()
        while True:
            raw = self._line(what, deadline).rstrip(b"\r")
            m = _REPLY.match(raw) or (re.match(rb"^(\d{3})()$", raw))
            if not m:
                raise ConnectError(f"{self.ep.label}: does not speak SMTP (expected a reply like "
                                   f"'220 ...', got {_printable(raw)!r})")
            this = int(m.group(1))
            if code is not None and this != code:
                raise ConnectError(f"{self.ep.label}: malformed SMTP reply (codes {code} and {this} in one reply)")
            code = this
            lines.append(m.group(3).decode("utf-8", "replace") if m.lastindex and m.group(3) else "")
            if len(lines) > _MAX_LINES:
                raise ConnectError(f"{self.ep.label}: SMTP reply longer than {_MAX_LINES} lines")
            if not m.group(2) or m.group(2) == b" ":
                return Reply(code, tuple(lines))

    def command(self, line: str, what: str | None = None) -> Reply:
        self.send(line)
        return self.read_reply(what or f"the reply to {line.split()[0]}")

    def banner(self) -> Reply:
        r = self.read_reply("the SMTP greeting")
        if r.code != 220:
            raise ConnectError(f"{self.ep.label}: server refused the session ({r.code} {clean(r.text, 200)})")
        return r

    def ehlo(self) -> tuple[Reply, dict[str, str]]:
        """EHLO with an address literal of our own address; returns the extensions
        (keyword upper-cased -> parameters)."""
        try:
            local = self.sock.getsockname()[0]
        except OSError:
            local = "127.0.0.1"
        literal = f"[IPv6:{local}]" if ":" in local else f"[{local}]"
        r = self.command(f"EHLO {literal}", "the EHLO reply")
        if r.code != 250:
            raise ConnectError(f"{self.ep.label}: EHLO refused ({r.code} {clean(r.text, 200)})")
        ext: dict[str, str] = {}
        for line in r.lines[1:]:
            parts = line.strip().split(None, 1)
            if not parts:
                continue
            kw, params = parts[0].upper(), (parts[1] if len(parts) > 1 else "")
            if kw.startswith("AUTH="):  # the pre-RFC 2554 form some servers add (broken_sasl_auth_clients)
                kw, params = "AUTH", (parts[0][5:] + " " + params).strip()
                if "AUTH" in ext:
                    continue
            ext[kw] = params
        return r, ext

    def starttls(self) -> None:
        r = self.command("STARTTLS", "the STARTTLS reply")
        if r.code != 220:
            raise ConnectError(f"{self.ep.label}: STARTTLS refused ({r.code} {clean(r.text, 200)})")
        if self._buf:
            # Data pipelined after the 220 would be a plaintext-injection hole; drop it.
            self._buf = b""

    def quit(self) -> None:
        try:
            self.send("QUIT")
            self.read_reply("the QUIT reply")
        except ConnectError:
            pass

    # -- TLS ------------------------------------------------------------------------
    def start_tls(self, *, sni: str | None = None) -> "TLSChannel":
        self.tls = TLSChannel(self.sock, self.ep, sni=sni)
        self.tls.handshake()
        return self.tls


def open_for_tls(ep: Endpoint) -> socket.socket:
    """A connected socket on which the next bytes we send are a TLS ClientHello: after
    banner, EHLO and STARTTLS, or straight away on an implicit-TLS port."""
    if ep.role not in ("smtp", "submission", "submissions"):
        from .imap import open_for_tls as mail_open_for_tls  # IMAP / POP3

        return mail_open_for_tls(ep)
    c = SMTPClient(ep)
    sock = c.connect()
    if ep.implicit_tls:
        return sock
    try:
        c.banner()
        _, ext = c.ehlo()
        if "STARTTLS" not in ext:
            raise ConnectError(f"{ep.label}: STARTTLS is not offered")
        c.starttls()
    except BaseException:
        c.close()
        raise
    return sock


class TLSChannel:
    """A pyOpenSSL client connection driven by select(), so that timeouts work (a socket
    with a timeout is non-blocking underneath and pyOpenSSL would raise WantReadError)."""

    def __init__(self, sock: socket.socket, ep: Endpoint, *, sni: str | None = None):
        from OpenSSL import SSL

        self.ep = ep
        self.sock = sock
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
        # Accept whatever the server chooses: we audit, we do not judge here.
        ctx.set_cipher_list(b"ALL:COMPLEMENTOFALL:@SECLEVEL=0")
        try:
            ctx.set_min_proto_version(SSL.TLS1_VERSION)
        except Exception:  # pragma: no cover - old pyOpenSSL
            pass
        self.conn = SSL.Connection(ctx, sock)
        if sni and not is_ip_literal(sni):  # RFC 6066: no IP addresses in SNI
            self.conn.set_tlsext_host_name(sni.encode("idna"))
        self.conn.set_connect_state()
        sock.setblocking(False)

    def _wait(self, deadline: float, *, write: bool, what: str) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        r, w, _ = select.select([] if write else [self.sock], [self.sock] if write else [], [], left)
        if not r and not w:
            raise socket.timeout()

    def _run(self, fn, what: str, deadline: float | None = None):
        from OpenSSL import SSL

        if deadline is None:
            deadline = time.monotonic() + self.ep.budget()
        while True:
            try:
                return fn()
            except SSL.WantReadError:
                self._wait(deadline, write=False, what=what)
            except SSL.WantWriteError:
                self._wait(deadline, write=True, what=what)

    def handshake(self) -> None:
        from OpenSSL import SSL

        try:
            self._run(self.conn.do_handshake, "the TLS handshake")
        except socket.timeout:
            self.ep.budget()  # the port deadline, if that is what ran out
            raise ConnectError(f"{self.ep.label}: TLS handshake stalled (no answer within "
                               f"{self.ep.timeout:g} s)") from None
        except SSL.SysCallError as exc:
            raise ConnectError(f"{self.ep.label}: server closed the connection during the TLS handshake "
                               f"({_sslerr(exc)})") from None
        except SSL.ZeroReturnError:
            raise ConnectError(f"{self.ep.label}: server closed the connection during the TLS handshake") from None
        except SSL.Error as exc:
            why = _sslerr(exc)
            if "eof" in why.lower():
                raise ConnectError(f"{self.ep.label}: server closed the connection during the TLS handshake "
                                   f"({why})") from None
            raise TLSFailure(f"{self.ep.label}: TLS handshake failed ({why})") from None

    def recv(self, what: str, deadline: float | None = None) -> bytes:
        from OpenSSL import SSL

        try:
            return self._run(lambda: self.conn.recv(8192), what, deadline)
        except (SSL.ZeroReturnError, SSL.SysCallError):
            return b""
        except SSL.Error as exc:
            raise ConnectError(f"{self.ep.label}: TLS error while waiting for {what} ({_sslerr(exc)})") from None

    def sendall(self, data: bytes) -> None:
        from OpenSSL import SSL

        try:
            while data:
                n = self._run(lambda: self.conn.send(data), "sending")
                data = data[n:]
        except socket.timeout:
            raise
        except SSL.Error as exc:
            raise OSError(f"TLS send failed ({_sslerr(exc)})") from None

    def chain_der(self) -> list[bytes]:
        from OpenSSL import crypto

        chain = self.conn.get_peer_cert_chain(as_cryptography=False) if _has_as_crypto() else \
            self.conn.get_peer_cert_chain()
        return [crypto.dump_certificate(crypto.FILETYPE_ASN1, c) for c in (chain or [])]

    @property
    def version(self) -> str:
        return self.conn.get_protocol_version_name()

    @property
    def cipher(self) -> str:
        return self.conn.get_cipher_name()


class PortDeadline(ConnectError):
    """The port's overall deadline ran out (a tarpit, or a server too slow to audit)."""


class TLSFailure(ConnectError):
    """The server answered the handshake with an alert (it is reachable and speaks TLS,
    but not with what we offered)."""




def _has_as_crypto() -> bool:
    import inspect

    from OpenSSL import SSL

    try:
        return "as_cryptography" in inspect.signature(SSL.Connection.get_peer_cert_chain).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _sslerr(exc) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], list) and args[0]:
        try:
            return args[0][0][2]
        except (IndexError, TypeError):
            pass
    if args and isinstance(args[0], tuple) and len(args[0]) == 2:
        return args[0][1]
    return str(exc) or type(exc).__name__
