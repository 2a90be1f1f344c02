"""IMAP and POP3 for ``mailca check``: the greeting, capabilities, STARTTLS / STLS or
implicit TLS, with the same bounded reads as ``smtp.py`` (a line is at most 4096 bytes, a
response at most 200 lines, every read ends by a deadline; server text is cleaned before
it is shown).

Roles: ``imap`` (143, STARTTLS), ``imaps`` (993, implicit TLS), ``pop3`` (110, STLS),
``pop3s`` (995, implicit TLS).  ``open_for_tls`` gives a socket on which the next bytes
are a ClientHello, so every TLS probe of ``audit.py`` / ``vulns.py`` runs through them
unchanged.  ``policy_session`` is the real session: what is offered before TLS (LOGIN
without LOGINDISABLED, AUTH=PLAIN, USER, SASL PLAIN) and after it.
"""

from __future__ import annotations

import socket
import time

from ..errors import ConnectError
from .report import Finding, finding
from .smtp import Endpoint, SMTPClient
from .text import clean

__all__ = ["IMAP_ROLES", "POP3_ROLES", "MAIL_ROLES", "DEFAULT_PORT", "MailClient", "open_for_tls", "policy_session",
           "starttls_injection"]

IMAP_ROLES = ("imap", "imaps")
POP3_ROLES = ("pop3", "pop3s")
MAIL_ROLES = IMAP_ROLES + POP3_ROLES
DEFAULT_PORT = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995}
_MAX_LINE = 4096
_MAX_LINES = 200
_PASSWORD_MECHS = {"PLAIN", "LOGIN"}


def _printable(data: bytes, limit: int = 60) -> str:
    return clean(data[:limit].decode("latin-1"))


class MailClient(SMTPClient):
    """IMAP or POP3 over a socket (later over TLS), one line at a time.  Transport, TLS and
    timeouts are those of ``SMTPClient``."""

    _show = staticmethod(_printable)  # escaped, as everything a server sends

    def __init__(self, endpoint: Endpoint):
        super().__init__(endpoint)
        self.imap = endpoint.role in IMAP_ROLES
        self._tag = 0

    @property
    def proto(self) -> str:
        return "IMAP" if self.imap else "POP3"

    def read_line(self, what: str, deadline: float | None = None) -> str:
        if deadline is None:
            deadline = time.monotonic() + self.ep.budget()
        raw = self._line(what, deadline)
        if len(raw) > _MAX_LINE:
            raise ConnectError(f"{self.ep.label}: does not speak {self.proto} (line too long)")
        return raw.rstrip(b"\r").decode("utf-8", "replace")

    # -- greeting and capabilities ------------------------------------------------------
    def greeting(self) -> str:
        line = self.read_line(f"the {self.proto} greeting")
        if self.imap:
            if line.upper().startswith("* BYE"):
                raise ConnectError(f"{self.ep.label}: server refused the session ({clean(line, 200)})")
            if not line.upper().startswith(("* OK", "* PREAUTH")):
                raise ConnectError(f"{self.ep.label}: does not speak IMAP (expected '* OK ...', got "
                                   f"{clean(line, 60)!r})")
        else:
            if line.startswith("-ERR"):
                raise ConnectError(f"{self.ep.label}: server refused the session ({clean(line, 200)})")
            if not line.startswith("+OK"):
                raise ConnectError(f"{self.ep.label}: does not speak POP3 (expected '+OK ...', got "
                                   f"{clean(line, 60)!r})")
        return line

    def imap_command(self, cmd: str) -> tuple[str, list[str]]:
        """Send a tagged command; return (tagged status line, untagged lines)."""
        self._tag += 1
        tag = f"m{self._tag}"
        self.send(f"{tag} {cmd}")
        deadline = time.monotonic() + self.ep.budget()
        untagged: list[str] = []
        while True:
            line = self.read_line(f"the reply to {cmd.split()[0]}", deadline)
            if line.startswith(tag + " "):
                return line[len(tag) + 1:], untagged
            untagged.append(line)
            if len(untagged) > _MAX_LINES:
                raise ConnectError(f"{self.ep.label}: IMAP reply longer than {_MAX_LINES} lines")

    def pop_command(self, cmd: str, *, multiline: bool = False) -> tuple[str, list[str]]:
        self.send(cmd)
        deadline = time.monotonic() + self.ep.budget()
        status = self.read_line(f"the reply to {cmd.split()[0]}", deadline)
        lines: list[str] = []
        if multiline and status.startswith("+OK"):
            while True:
                line = self.read_line(f"the reply to {cmd}", deadline)
                if line == ".":
                    break
                lines.append(line[1:] if line.startswith("..") else line)
                if len(lines) > _MAX_LINES:
                    raise ConnectError(f"{self.ep.label}: POP3 reply longer than {_MAX_LINES} lines")
        return status, lines

    def capabilities(self) -> list[str]:
        """Capability words, upper-cased (IMAP: 'STARTTLS', 'AUTH=PLAIN', 'LOGINDISABLED';
        POP3: 'STLS', 'USER', 'SASL PLAIN LOGIN' -> 'SASL=PLAIN', 'SASL=LOGIN')."""
        if self.imap:
            status, untagged = self.imap_command("CAPABILITY")
            if not status.upper().startswith("OK"):
                raise ConnectError(f"{self.ep.label}: CAPABILITY refused ({clean(status, 200)})")
            caps: list[str] = []
            for line in untagged:
                if line.upper().startswith("* CAPABILITY "):
                    caps.extend(w.upper() for w in line.split()[2:])
            return caps
        status, lines = self.pop_command("CAPA", multiline=True)
        if not status.startswith("+OK"):
            return []  # RFC 2449 is optional: nothing advertised
        caps = []
        for line in lines:
            words = line.split()
            if not words:
                continue
            kw = words[0].upper()
            if kw == "SASL":
                caps.extend(f"SASL={m.upper()}" for m in words[1:])
                if len(words) == 1:
                    caps.append("SASL")
            else:
                caps.append(kw)
        return caps

    def starttls(self) -> None:
        if self.imap:
            status, _ = self.imap_command("STARTTLS")
            ok = status.upper().startswith("OK")
        else:
            status, _ = self.pop_command("STLS")
            ok = status.startswith("+OK")
        if not ok:
            raise ConnectError(f"{self.ep.label}: {'STARTTLS' if self.imap else 'STLS'} refused ({clean(status, 200)})")
        self.discard_pending()  # anything pipelined after the OK would be a plaintext-injection hole

    def discard_pending(self) -> None:
        self._buf = b""

    def quit(self) -> None:
        try:
            if self.imap:
                self.imap_command("LOGOUT")
            else:
                self.pop_command("QUIT")
        except ConnectError:
            pass


def _starttls_word(c: MailClient) -> str:
    return "STARTTLS" if c.imap else "STLS"


def open_for_tls(ep: Endpoint) -> socket.socket:
    """Like ``smtp.open_for_tls`` for the IMAP/POP3 roles."""
    c = MailClient(ep)
    sock = c.connect()
    if ep.implicit_tls:
        return sock
    try:
        c.greeting()
        c.starttls()  # straight away, as clients that know the server do (no CAPABILITY round trip)
    except BaseException:
        c.close()
        raise
    return sock


_DOVECOT_AUTH_FIX = ("Dovecot: disable_plaintext_auth = yes (Dovecot 2.4: auth_allow_cleartext = no) in "
                     "conf.d/10-auth.conf and ssl = required in conf.d/10-ssl.conf")


def policy_session(ep: Endpoint, opts, handshake) -> tuple[dict, list[Finding], list[bytes]]:
    """The real IMAP/POP3 session: facts, policy findings and the chain as sent.  ``handshake``
    is audit.py's ``_handshake(client, sni, facts)``."""
    facts: dict = {}
    fs: list[Finding] = []
    chain: list[bytes] = []
    port = ep.port
    with MailClient(ep) as c:
        c.connect()
        if ep.implicit_tls:
            handshake(c, opts.name, facts)
            if c.tls is None:
                return facts, fs, chain
            chain = c.tls.chain_der()
        facts["banner"] = clean(c.greeting(), 200)
        caps = c.capabilities()
        if ep.implicit_tls:
            facts["capabilities_after_tls"] = caps
            c.quit()
            return facts, fs, chain
        facts["capabilities_before_tls"] = caps
        word = _starttls_word(c)
        weak = _plaintext_offers(c, caps)
        facts["plaintext_auth_before_tls"] = weak
        if weak:
            fid = "imap.plaintext_auth" if c.imap else "pop3.plaintext_auth"
            fs.append(finding(fid, "before " + word + ": " + ", ".join(weak), port=port))
        if word not in caps:
            facts["starttls"] = False
            fs.append(finding("imap.no_starttls" if c.imap else "pop3.no_stls",
                              f"{c.proto} capabilities list no {word}", port=port))
            c.quit()
            return facts, fs, chain
        facts["starttls"] = True
        c.starttls()
        handshake(c, opts.name, facts)
        if c.tls is not None:
            chain = c.tls.chain_der()
            facts["capabilities_after_tls"] = c.capabilities()
            c.quit()
    return facts, fs, chain


def _plaintext_offers(c: MailClient, caps: list[str]) -> list[str]:
    """What lets a password travel in clear before TLS."""
    weak = []
    if c.imap:
        if "LOGINDISABLED" not in caps:
            weak.append("LOGIN (no LOGINDISABLED)")
        weak += [cap for cap in caps if cap.startswith("AUTH=") and cap[5:] in _PASSWORD_MECHS]
    else:
        if "USER" in caps:
            weak.append("USER/PASS")
        weak += [cap for cap in caps if cap.startswith("SASL=") and cap[5:] in _PASSWORD_MECHS]
    return weak


def starttls_injection(ep: Endpoint, *, sni: str | None):
    """STARTTLS command injection on IMAP/POP3 (CVE-2011-0411 class, testssl.sh --SI): a
    command pipelined in plaintext with STARTTLS / STLS must be discarded, not answered
    inside TLS.  Returns a ``vulns.VulnResult``."""
    from .smtp import TLSFailure
    from .vulns import NOT_APPLICABLE, NOT_VULNERABLE, UNKNOWN, VULNERABLE, VulnResult

    with MailClient(ep) as c:
        c.connect()
        c.greeting()
        word = _starttls_word(c)
        if c.imap:
            c.send("m1 STARTTLS\r\nm2 NOOP")  # one write
            deadline = time.monotonic() + ep.budget()
            while True:
                line = c.read_line("the STARTTLS reply", deadline)
                if line.startswith("m1 "):
                    break
            ok = line[3:].upper().startswith("OK")
        else:
            c.send("STLS\r\nNOOP")
            line = c.read_line("the STLS reply")
            ok = line.startswith("+OK")
        if not ok:
            return VulnResult(NOT_APPLICABLE, f"{word} answered {clean(line, 80)}")
        c.discard_pending()  # a plaintext answer to the NOOP (before TLS) is not the hole we look for
        try:
            c.start_tls(sni=sni)
        except TLSFailure as exc:
            return VulnResult(UNKNOWN, f"no TLS handshake after {word}: {exc.message}")
        except ConnectError:
            # The policy session's STARTTLS worked: this one was dropped for the pipelined
            # command (Dovecot disconnects a client that sends data after STARTTLS).
            return VulnResult(NOT_VULNERABLE, f"the server closed the connection when a command was pipelined "
                                              f"with {word}")
        c.send("m3 LOGOUT" if c.imap else "QUIT")
        lines: list[str] = []
        deadline = time.monotonic() + ep.budget()
        try:
            while len(lines) < 4:
                lines.append(c.read_line("the replies inside TLS", deadline))
                if c.imap and lines[-1].startswith("m3 "):
                    break
        except ConnectError:
            pass  # the server closed after its last reply
    if not lines:
        return VulnResult(UNKNOWN, f"no reply inside TLS after {word}")
    if c.imap:
        hit = next((ln for ln in lines if ln.startswith("m2 ")), None)
    else:
        hit = lines[0] if len(lines) > 1 else None  # two answers to one QUIT: the NOOP ran inside TLS
    if hit is None:
        return VulnResult(NOT_VULNERABLE, f"the NOOP sent with {word} was discarded")
    return VulnResult(VULNERABLE, f"the NOOP sent in plaintext with {word} was answered inside TLS ({clean(hit, 80)})")
