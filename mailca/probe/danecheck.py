"""``mailca check --dane DOMAIN``: a domain's DANE for SMTP as a sending MTA sees it
(RFC 7672), monitoring-grade, in the spirit of danecheck.

1. MX RRset through the validating resolver (its DNSSEC status; no MX: the domain itself).
2. Every MX host's A/AAAA (TLSA is looked up only for hosts whose addresses are secure).
3. ``_PORT._tcp.MX`` TLSA: bogus (SERVFAIL) is CRITICAL; insecure means DANE is not in
   effect; a validated denial of existence likewise; usages 0/1 are ignored with a note.
4. For every address x key algorithm the server offers (ECDSA, RSA - chosen through the
   ClientHello's signature_algorithms), STARTTLS and the chain actually served, matched like
   a sender does: DANE-EE 3 x x against the leaf (no name or expiry check), DANE-TA 2 x x
   against a certificate of the chain that the leaf chains to, with the MX host name (or the
   domain) in the leaf and every certificate up to the anchor valid at ``--at``.
5. The rollover scheme: current + next per algorithm, or 3 1 1 plus 2 x 1.

Severity: CRITICAL (a sender defers mail), WARNING (DANE not in effect, no rollover record),
INFO, OK.  Nothing here trusts what a server sends: text is cleaned before it is shown.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import ConnectError

__all__ = ["Item", "Lookup", "Served", "Report", "lookup", "match_chain", "served_chain", "check_domain"]

SEVERITIES = ("OK", "INFO", "WARNING", "CRITICAL")
ALGS = {
    "ecdsa": b"ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512",
    "rsa": b"rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:RSA+SHA256:RSA+SHA384:RSA+SHA512",
}
# the TLS 1.2-only fallback when OpenSSL's sigalgs call is out of reach (see _restrict_sigalgs)
TLS12_CIPHERS = {"ecdsa": b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305",
                 "rsa": b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"}


def _clean(text) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))[:300]


@dataclass(frozen=True)
class Item:
    severity: str
    where: str
    message: str

    def as_dict(self) -> dict:
        return {"severity": self.severity, "where": self.where, "message": self.message}


@dataclass(frozen=True)
class Lookup:
    status: str  # secure | insecure | bogus | error
    rdatas: tuple
    exists: bool  # False: NXDOMAIN / NODATA
    error: str | None = None


@dataclass(frozen=True)
class Served:
    mx: str
    addr: str
    alg: str
    offered: bool
    matched: tuple = ()
    leaf_spki: str | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return {"mx": self.mx, "address": self.addr, "algorithm": self.alg, "offered": self.offered,
                "matched": list(self.matched), "leaf_spki_sha256": self.leaf_spki, "error": self.error}


@dataclass
class Report:
    domain: str
    port: int
    at: str
    mx_status: str = "error"
    mx_hosts: list = field(default_factory=list)
    tlsa: dict = field(default_factory=dict)  # mx -> {"status", "records", "usable"}
    served: list = field(default_factory=list)
    items: list = field(default_factory=list)

    def add(self, severity: str, where: str, message: str) -> None:
        self.items.append(Item(severity, where, _clean(message)))

    @property
    def status(self) -> str:
        worst = max((SEVERITIES.index(i.severity) for i in self.items), default=0)
        return SEVERITIES[worst]

    @property
    def dane_in_effect(self) -> dict:
        return {mx: t["status"] == "secure" and bool(t["usable"]) for mx, t in self.tlsa.items()}

    @property
    def verdict(self) -> str:
        """What a DANE sender concludes: verified (every chain served matches), fails (a
        sender defers), not-in-effect (no secure, usable TLSA: opportunistic TLS)."""
        if any(i.severity == "CRITICAL" for i in self.items):
            return "fails"
        eff = self.dane_in_effect
        if eff and all(eff.values()) and self.served and all(s.matched for s in self.served if s.offered):
            return "verified"
        return "not-in-effect"

    def as_dict(self) -> dict:
        return {"domain": self.domain, "port": self.port, "at": self.at, "status": self.status, "verdict": self.verdict,
                "mx_status": self.mx_status, "mx_hosts": self.mx_hosts, "dane_in_effect": self.dane_in_effect,
                "tlsa": self.tlsa, "served": [s.as_dict() for s in self.served],
                "items": [i.as_dict() for i in self.items]}


def lookup(resolver, name: str, rtype: str, timeout: float) -> Lookup:
    import dns.flags
    import dns.rcode
    import dns.rdatatype

    from ..dns.client import query

    try:
        r = query(resolver, name, rtype, rd=True, dnssec=True, timeout=timeout)
    except ConnectError as exc:
        return Lookup("error", (), False, exc.message)
    rc = r.rcode()
    if rc == dns.rcode.SERVFAIL:
        return Lookup("bogus", (), False, "SERVFAIL")
    if rc not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return Lookup("error", (), False, dns.rcode.to_text(rc))
    want = dns.rdatatype.from_text(rtype)
    rdatas = tuple(rd for rrset in r.answer if rrset.rdtype == want for rd in rrset)
    return Lookup("secure" if r.flags & dns.flags.AD else "insecure", rdatas, bool(rdatas))


def _handshake(addr: str, port: int, alg: str, sni: str, timeout: float) -> list[bytes]:
    return served_chain(addr, port, alg, sni, timeout)


def served_chain(addr: str, port: int, alg: str, sni: str, timeout: float, *, tls12_ciphers: bool = False) -> list[bytes]:
    """STARTTLS to addr:port offering only ``alg``'s signature algorithms; the chain served
    (DER, leaf first).  ``tls12_ciphers``: take the public-API route of
    :func:`_restrict_sigalgs` (TLS 1.2, key type chosen by cipher suite) even when the
    sigalgs call is available - the route a future pyOpenSSL without it would take."""
    from OpenSSL import SSL

    from .smtp import Endpoint, TLSChannel, open_for_tls

    ep = Endpoint(addr, port, "smtp", timeout)
    sock = open_for_tls(ep)
    try:
        ch = TLSChannel.__new__(TLSChannel)
        ch.ep, ch.sock = ep, sock
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
        _restrict_sigalgs(ctx, alg, tls12_ciphers=tls12_ciphers)
        ch.conn = SSL.Connection(ctx, sock)
        ch.conn.set_tlsext_host_name(sni.encode("idna"))
        ch.conn.set_connect_state()
        sock.setblocking(False)
        ch.handshake()
        return ch.chain_der()
    finally:
        sock.close()


def _restrict_sigalgs(ctx, alg: str, *, tls12_ciphers: bool = False) -> None:
    """Offer only ``alg``'s signature algorithms, so a dual-certificate server shows that chain.

    There is no public API for this: pyOpenSSL (26.x) wraps neither SSL_CTX_set1_sigalgs_list
    nor SSL_CTX_set1_client_sigalgs, Python's ssl module has no sigalgs setter, and
    cryptography exposes no TLS at all.  The cipher-suite route (ECDHE-ECDSA-* vs ECDHE-RSA-*)
    is public but works only up to TLS 1.2 - in TLS 1.3 the suite does not name the key type,
    the signature_algorithms extension alone does - so it would miss a TLS 1.3-only server
    and check a different handshake than the one DANE senders make.  So the binding that
    pyOpenSSL itself loads (``OpenSSL._util.lib``, cffi over libssl) is used; if a future
    pyOpenSSL drops it, the public TLS 1.2 route takes over rather than failing."""
    from OpenSSL import SSL

    try:
        from OpenSSL._util import lib as _lib  # noqa: PLC2701 - no public equivalent, see above

        setter = None if tls12_ciphers else _lib.SSL_CTX_set1_sigalgs_list
    except (ImportError, AttributeError):
        setter = None
    if setter is not None:
        if setter(ctx._context, ALGS[alg]) != 1:
            raise ConnectError(f"OpenSSL refused the signature algorithms for {alg}")
        return
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_cipher_list(TLS12_CIPHERS[alg])


def _matches(rd, cert) -> bool:
    from cryptography.hazmat.primitives import serialization

    if rd.selector == 0:
        blob = cert.public_bytes(serialization.Encoding.DER)
    elif rd.selector == 1:
        blob = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        return False
    if rd.mtype == 1:
        blob = hashlib.sha256(blob).digest()
    elif rd.mtype == 2:
        blob = hashlib.sha512(blob).digest()
    elif rd.mtype != 0:
        return False
    return blob == rd.cert


def _valid_at(cert, at: _dt.datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def match_chain(rdatas, chain_der: list[bytes], names: list[str], at: _dt.datetime) -> tuple[list[str], str | None]:
    """Usable TLSA records (usage 2/3) matching the served chain the way RFC 7672 says."""
    from cryptography import x509

    from .certcheck import hostname_matches

    certs = [x509.load_der_x509_certificate(d) for d in chain_der]
    if not certs:
        return [], None
    leaf = certs[0]
    from ..core.keys import spki_sha256

    out = []
    for rd in rdatas:
        if rd.usage == 3 and _matches(rd, leaf):
            out.append(f"{rd.usage} {rd.selector} {rd.mtype} {rd.cert.hex()}")
        elif rd.usage == 2:
            # the leaf must chain (signatures checked link by link) to the matching anchor
            path_ok = True
            for i in range(1, len(certs)):
                try:
                    certs[i - 1].verify_directly_issued_by(certs[i])
                except Exception:
                    path_ok = False
                if not path_ok:
                    break
                if _matches(rd, certs[i]):
                    if all(_valid_at(c, at) for c in certs[:i + 1]) and any(hostname_matches(leaf, n) for n in names):
                        out.append(f"{rd.usage} {rd.selector} {rd.mtype} {rd.cert.hex()}")
                    break
    return out, spki_sha256(leaf.public_key())


def check_domain(domain: str, resolver, *, port: int = 25, at: _dt.datetime, timeout: float = 5.0,
                 addr_override=None) -> Report:
    rep = Report(domain, port, at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    mx = lookup(resolver, domain, "MX", timeout)
    if mx.status == "error":
        raise ConnectError(f"the resolver {resolver[0]}@{resolver[1]} did not answer the MX query for {domain}: {mx.error}")
    rep.mx_status = mx.status
    if mx.status == "bogus":
        rep.add("CRITICAL", domain, "MX lookup is bogus (DNSSEC validation failed): senders cannot deliver")
        return rep
    hosts = [h for _, h in sorted((rd.preference, rd.exchange.to_text().rstrip(".").lower()) for rd in mx.rdatas)]
    if hosts == [""]:
        rep.add("INFO", domain, "null MX: the domain accepts no mail")
        return rep
    if not hosts:
        hosts = [domain]
        rep.add("INFO", domain, "no MX records: the domain itself is the mail host")
    if mx.status == "insecure":
        rep.add("WARNING", domain, "the MX RRset is not DNSSEC-validated (insecure): DANE-TA name checks can only use the "
                                   "MX host names as given; sign the zone")
    rep.mx_hosts = hosts
    jobs = []
    for h in hosts:
        addrs, sec = [], True
        for rtype in ("A", "AAAA"):
            a = lookup(resolver, h, rtype, timeout)
            if a.status == "bogus":
                rep.add("CRITICAL", h, f"{rtype} lookup is bogus (DNSSEC validation failed)")
            if a.exists:
                sec = sec and a.status == "secure"
                addrs += [rd.address for rd in a.rdatas]
        if addr_override:
            addrs = [addr_override]
        t = lookup(resolver, f"_{port}._tcp.{h}", "TLSA", timeout)
        usable = [rd for rd in t.rdatas if rd.usage in (2, 3) and rd.selector in (0, 1) and rd.mtype in (0, 1, 2)]
        rep.tlsa[h] = {"status": t.status, "records": [rd.to_text() for rd in t.rdatas],
                       "usable": [rd.to_text() for rd in usable]}
        where = f"_{port}._tcp.{h}"
        if not addrs:
            rep.add("CRITICAL", h, "no address records")
            continue
        if not sec:
            rep.add("WARNING", h, "address records are not DNSSEC-validated: DANE not in effect for this host")
            continue
        if t.status == "bogus":
            rep.add("CRITICAL", where, "TLSA lookup is bogus (DNSSEC validation failed): DANE senders defer mail")
            continue
        if t.status == "error":
            rep.add("CRITICAL", where, f"TLSA lookup failed ({t.error}): DANE senders defer mail")
            continue
        if t.status == "insecure":
            rep.add("WARNING", where, "TLSA answer is insecure (zone not signed): DANE not in effect")
            continue
        if not t.exists:
            rep.add("WARNING", where, "no TLSA records (validated denial of existence): DANE not in effect for this host")
            continue
        for rd in t.rdatas:
            if rd.usage in (0, 1):
                rep.add("INFO", where, f"usage {rd.usage} record ignored (PKIX-{'TA' if rd.usage == 0 else 'EE'} is not "
                                       f"used for SMTP, RFC 7672 §3.1.3): {rd.to_text()[:40]}")
        if not usable:
            rep.add("WARNING", where, "no usable TLSA record (only usages 0/1 or unknown parameters): senders encrypt "
                                      "but cannot authenticate")
            continue
        for addr in addrs:
            for alg in ALGS:
                jobs.append((h, addr, alg, usable))

    def run(job):
        h, addr, alg, usable = job
        try:
            chain = _handshake(addr, port, alg, h, timeout)
        except ConnectError as exc:
            return Served(h, addr, alg, False, error=_clean(exc.message))
        except OSError as exc:
            return Served(h, addr, alg, False, error=_clean(f"{type(exc).__name__}: {exc}"))
        matched, spki = match_chain(usable, chain, [h, domain], at)
        return Served(h, addr, alg, True, tuple(matched), spki)

    with ThreadPoolExecutor(max_workers=8) as pool:
        rep.served = list(pool.map(run, jobs))
    for h in hosts:
        mine = [s for s in rep.served if s.mx == h]
        if not mine:
            continue
        offered = [s for s in mine if s.offered]
        if not offered:
            rep.add("CRITICAL", h, "no TLS handshake succeeded: " + "; ".join(sorted({s.error or "" for s in mine})))
            continue
        for s in mine:
            if not s.offered:
                rep.add("INFO", f"{h} {s.addr}", f"no {s.alg.upper()} certificate offered ({s.error})")
            elif not s.matched:
                rep.add("CRITICAL", f"{h} {s.addr}", f"{s.alg.upper()} chain matches no TLSA record (its key is 3 1 1 "
                                                      f"{s.leaf_spki}): DANE senders defer mail")
            else:
                rep.add("OK", f"{h} {s.addr}", f"{s.alg.upper()} chain matches {s.matched[0][:20]}...")
        # rollover: current + next per algorithm, or 3 1 1 plus 2 x 1
        usable = rep.tlsa[h]["usable"]
        n3 = sum(1 for u in usable if u.startswith("3 "))
        n2 = sum(1 for u in usable if u.startswith("2 "))
        algs = len({s.alg for s in offered})
        if not (n2 and n3) and n3 < 2 * algs and not (n2 and not n3):
            rep.add("WARNING", f"_{port}._tcp.{h}", "no rollover record: a key change needs a next 3 1 1 published 2 x TTL "
                                                    "ahead ('mailca rekey --stage' + 'mailca dane publish'), or add a 2 x 1")
    return rep
