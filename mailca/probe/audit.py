"""``mailca check`` in one place: per port, one real SMTP session (policy, certificate
chain) and then a few dozen hand-built ClientHello probes run in parallel, each on its
own connection, turned into findings.

Order of work for a port (each phase waits for the previous one):

1. policy session: banner, EHLO, (MAIL FROM / VRFY probes), STARTTLS, a real TLS
   handshake with pyOpenSSL (chain as sent), EHLO again.  Any connection problem here
   ends the port with a clear error -- no probe is started against a dead server.
2. protocol probes: SSLv3, TLS 1.0, 1.1, 1.2, 1.3, each a ClientHello for that version only.
3. for every accepted version <= TLS 1.2: one probe per cipher class; on the highest one
   also cipher order, forward secrecy and the (EC)DH parameters of DHE and ADH suites.

Beside phases 2 and 3, on the same pool and port deadline: the vulnerability probes of
``vulns.py`` (Heartbleed, CCS injection, ROBOT, SSLv2, STARTTLS injection); on a pool of
their own, the TLS feature probes of ``tlsfeatures.py`` (NCSC ratings, renegotiation, EMS,
0-RTT, ...), collected after the certificate analysis.
"""

from __future__ import annotations

import datetime as _dt
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import ConnectError
from . import hello as H
from . import imap, monitor, tlsfeatures
from . import vulns
from .report import Finding, PortReport, Report, finding
from .smtp import Endpoint, PortDeadline, SMTPClient, TLSFailure, open_for_tls

__all__ = ["Options", "audit"]

CLASS_IDS = {"NULL": "cipher.null", "aNULL": "cipher.anull", "EXPORT": "cipher.export", "LOW": "cipher.low",
             "3DES": "cipher.3des", "RC4": "cipher.rc4", "CBC": "cipher.cbc"}
PROTO_IDS = {H.SSL3: "protocol.sslv3", H.TLS1_0: "protocol.tls1_0", H.TLS1_1: "protocol.tls1_1"}
_PASSWORD_MECHS = {"PLAIN", "LOGIN"}
# Probe outcomes that say nothing about the server's TLS: it did not answer (in time).
NO_ANSWER = ("timeout", "noconnect")


class RateLimited(ConnectError):
    """The policy session worked, then no probe connection got an answer: the server limits
    connections (the audit is incomplete, the server does not refuse TLS)."""


class ProtocolError(ConnectError):
    """The server answered a probe with something it could not have chosen (a cipher or
    version that was not offered, a malformed ServerHello): its TLS results cannot be trusted."""


@dataclass(frozen=True)
class Options:
    name: str | None = None
    ca_certs: tuple = ()
    tlsa: tuple = ()
    timeout: float = 10.0
    workers: int = 8
    port_deadline: float = 30.0
    now: _dt.datetime | None = None
    warn_days: int | None = None


# --- phase 1: the real SMTP session ------------------------------------------------------

def policy_session(ep: Endpoint, opts: Options) -> tuple[dict, list[Finding], list[bytes]]:
    facts: dict = {}
    fs: list[Finding] = []
    chain: list[bytes] = []
    port = ep.port
    sni = opts.name
    if ep.role in imap.MAIL_ROLES:
        return imap.policy_session(ep, opts, _handshake)
    with SMTPClient(ep) as c:
        c.connect()
        if ep.implicit_tls:
            _handshake(c, sni, facts)
            if c.tls is None:
                return facts, fs, chain
            chain = c.tls.chain_der()
        banner = c.banner()
        facts["banner"] = banner.text
        _, ext = c.ehlo()
        key = "ehlo_after_tls" if ep.implicit_tls else "ehlo_before_tls"
        facts[key] = sorted(ext)
        if not ep.implicit_tls:
            auth = ext.get("AUTH", None)
            facts["auth_before_tls"] = auth.split() if auth is not None else []
            if auth is not None:
                mechs = {m.upper() for m in auth.split()}
                sev = "HIGH" if mechs & _PASSWORD_MECHS or not mechs else "MEDIUM"
                fs.append(finding("smtp.auth_before_tls", f"EHLO before STARTTLS offers AUTH {auth}".strip(),
                                  port=port, severity=sev))
            if ep.role == "submission":
                r = c.command("MAIL FROM:<mailca-check@example.invalid>")
                facts["mail_before_tls"] = {"code": r.code, "accepted": r.code == 250}
                if r.code == 250:
                    fs.append(finding("smtp.mail_before_tls", f"MAIL FROM answered {r.code} {r.text}", port=port))
                c.command("RSET")
            vrfy = _vrfy(c)
            if "STARTTLS" not in ext:
                facts["starttls"] = False
                sev = "HIGH" if ep.role == "submission" else "MEDIUM"
                fs.append(finding("smtp.no_starttls", "EHLO does not list STARTTLS", port=port, severity=sev))
                _vrfy_finding(vrfy, facts, fs, port)
                c.quit()
                return facts, fs, chain
            facts["starttls"] = True
            c.starttls()
            _handshake(c, sni, facts)
            if c.tls is not None:
                chain = c.tls.chain_der()
                _, ext = c.ehlo()
                facts["ehlo_after_tls"] = sorted(ext)
            if vrfy is None or vrfy.code == 530:
                vrfy = _vrfy(c) if c.tls is not None else vrfy
        else:
            vrfy = _vrfy(c)
        _vrfy_finding(vrfy, facts, fs, port)
        if c.tls is not None:
            auth = ext.get("AUTH")
            facts["auth_after_tls"] = auth.split() if auth is not None else []
            if ep.role in ("submission", "submissions"):
                if auth is None:
                    fs.append(finding("smtp.no_auth", "EHLO after TLS lists no AUTH", port=port))
                else:
                    fs.append(finding("smtp.auth", f"after TLS: {auth}", port=port))
            c.quit()
    return facts, fs, chain


def _handshake(c: SMTPClient, sni, facts: dict) -> None:
    try:
        c.start_tls(sni=sni)
    except TLSFailure as exc:
        # The server speaks TLS but refused what OpenSSL offers: the raw probes will tell.
        facts["tls"] = {"error": exc.message}
        c.tls = None
        c.close()
        return
    facts["tls"] = {"version": c.tls.version, "cipher": c.tls.cipher}


def _vrfy(c: SMTPClient):
    if c.sock is None:
        return None
    return c.command("VRFY postmaster")


def _vrfy_finding(r, facts, fs, port):
    if r is None:
        facts["vrfy"] = None
        return
    enabled = r.code in (250, 251, 252, 550, 551, 553)
    facts["vrfy"] = {"code": r.code, "enabled": enabled}
    if enabled:
        fs.append(finding("smtp.vrfy", f"VRFY postmaster answered {r.code} {r.text}", port=port))


# --- phases 2 and 3: raw probes -------------------------------------------------------

class Prober:
    def __init__(self, ep: Endpoint, opts: Options, pool: ThreadPoolExecutor):
        import threading

        self.ep, self.opts, self.pool = ep, opts, pool
        self.count = 0
        self.unanswered: list[str] = []
        self.protocol_errors: list[str] = []
        self.retries = 0
        self.refused_after_retries = 0
        self._lock = threading.Lock()

    def one(self, version: int, suites, *, full: bool = False) -> H.HelloResult:
        """One probe on its own connection.  Silence, a refused or stalled connection and
        the port deadline give a "timeout"/"noconnect" result (no answer -- never
        "accepted"); a ServerHello choosing what was not offered is a "protocol_error"."""
        with self._lock:
            self.count += 1
        what = f"{H.VERSION_NAMES[version]} ClientHello ({len(suites)} suites)"
        # A server that rate-limits refuses or drops new connections for a while: retry with
        # backoff (0.25, 0.5, 1, 2 s) within the port deadline before calling it unanswered.
        delay = 0.25
        for attempt in range(5):
            sock, r = self._open(what)
            if sock is not None or r.outcome != "noconnect" or attempt == 4:
                break
            with self._lock:
                self.retries += 1
            try:
                left = self.ep.budget()
            except PortDeadline:
                break
            if left <= delay:
                break
            time.sleep(delay)
            delay *= 2
        if sock is None:
            with self._lock:
                if r.outcome == "noconnect":
                    self.refused_after_retries += 1
        else:
            try:
                r = H.probe(sock, version, suites, sni=self.opts.name, timeout=self.ep.budget(), full=full)
            except PortDeadline:
                r = H.HelloResult("timeout", detail="not sent: the port deadline ran out")
            finally:
                sock.close()
        if r.outcome == "garbage":
            raise ConnectError(f"{self.ep.label}: does not speak TLS after {'connect' if self.ep.implicit_tls else 'STARTTLS'} ({r.detail})")
        with self._lock:
            if r.outcome in NO_ANSWER:
                self.unanswered.append(f"{what}: {r.detail}")
            elif r.outcome == "protocol_error":
                self.protocol_errors.append(f"{what}: {r.detail}")
        return r

    def _open(self, what: str):
        try:
            return open_for_tls(self.ep), None
        except PortDeadline:
            return None, H.HelloResult("timeout", detail="not sent: the port deadline ran out")
        except ConnectError as exc:
            return None, H.HelloResult("noconnect", detail=exc.message)

    def many(self, jobs: dict) -> dict:
        futs = {k: self.pool.submit(self.one, *args, **kw) for k, (args, kw) in jobs.items()}
        out = {k: f.result() for k, f in futs.items()}
        bad = [(jobs[k], r) for k, r in out.items() if r.outcome == "protocol_error"]  # in job order
        if bad:
            ((version, suites), _), r = bad[0]
            n = len(bad)
            raise ProtocolError(f"{self.ep.label}: protocol error, TLS results not trustworthy: "
                                f"{H.VERSION_NAMES[version]} ClientHello ({len(suites)} suites): {r.detail}"
                                + (f" (and {n - 1} more)" if n > 1 else ""))
        return out


def tls_probes(pr: Prober) -> tuple[dict, list[Finding]]:
    port = pr.ep.port
    fs: list[Finding] = []
    facts: dict = {}

    # Phase 2: protocols.
    jobs = {v: ((v, H.TLS13_SUITES if v == H.TLS1_3 else H.ALL_SUITES), {"full": v != H.TLS1_3})
            for v in H.VERSIONS}
    res = pr.many(jobs)
    accepted = [v for v in H.VERSIONS if res[v].accepted and res[v].version == v]
    unknown = {v for v in H.VERSIONS if res[v].outcome in NO_ANSWER}
    # None: no answer, so we do not know (a stalled probe is never counted as accepted).
    facts["protocols"] = {H.VERSION_NAMES[v]: (None if v in unknown else v in accepted) for v in H.VERSIONS}
    if not accepted:
        pr.ep.budget()  # raises PortDeadline if that is why nothing was accepted
        if unknown == set(H.VERSIONS):
            raise RateLimited(f"{pr.ep.label}: no answer to any ClientHello probe "
                               f"({res[H.TLS1_2].detail}); is the server rate-limiting?")
        why = "; ".join(f"{H.VERSION_NAMES[v]}: {res[v].detail or res[v].outcome}" for v in H.VERSIONS)
        raise ConnectError(f"{pr.ep.label}: no TLS version accepted ({why})")
    for v, cid in PROTO_IDS.items():
        if v in accepted:
            fs.append(finding(cid, f"server answered a {H.VERSION_NAMES[v]}-only ClientHello with "
                                   f"{res[v].cipher_name}", port=port))
    if H.TLS1_3 in accepted:
        fs.append(finding("protocol.tls1_3", res[H.TLS1_3].cipher_name or "", port=port))
    elif H.TLS1_3 not in unknown:
        fs.append(finding("protocol.no_tls1_3", "", port=port))
    if H.TLS1_2 not in accepted and H.TLS1_3 not in accepted and not unknown & {H.TLS1_2, H.TLS1_3}:
        fs.append(finding("protocol.no_tls1_2", "highest version: " + H.VERSION_NAMES[max(accepted)], port=port))

    legacy = [v for v in accepted if v != H.TLS1_3]
    classes: dict[str, dict[str, str]] = {k: {} for k in H.CIPHER_CLASSES}
    if legacy:
        top = max(legacy)
        first = res[top]
        # Phase 3: cipher classes on every accepted version, order / FS / DH on the top one.
        jobs = {(k, v): ((v, codes), {}) for k, codes in H.CIPHER_CLASSES.items() for v in legacy}
        jobs["reverse"] = ((top, tuple(reversed(H.ALL_SUITES))), {})
        jobs["fs"] = ((top, H.FS_SUITES), {})
        jobs["dhe"] = ((top, H.DHE_SUITES), {"full": True})
        jobs["adh"] = ((top, H.ADH_SUITES), {"full": True})
        r3 = pr.many(jobs)
        for (k, v), r in ((key, r) for key, r in r3.items() if isinstance(key, tuple)):
            if r.accepted and r.version == v:
                classes[k][H.VERSION_NAMES[v]] = r.cipher_name
        rev = r3["reverse"]
        order = None
        if rev.accepted and first.accepted:
            order = rev.cipher == first.cipher
        facts["preferred_cipher"] = first.cipher_name
        facts["server_cipher_order"] = order
        if order is False:
            fs.append(finding("cipher.order", f"offered strongest-first it chose {first.cipher_name}, "
                                              f"weakest-first {rev.cipher_name}", port=port))
        fs_ok = (r3["fs"].accepted and r3["fs"].version == top) or H.TLS1_3 in accepted
        if not fs_ok and r3["fs"].outcome in NO_ANSWER:
            fs_ok = None  # unknown
        facts["forward_secrecy"] = fs_ok
        if fs_ok is False:
            fs.append(finding("cipher.no_fs", "no ECDHE/DHE suite accepted", port=port))
        elif first.accepted and H.suite(first.cipher) and not H.suite(first.cipher).forward_secret and order:
            fs.append(finding("cipher.fs_not_preferred", f"preferred cipher {first.cipher_name}", port=port))
        dh = {}
        for key, label in (("dhe", "DHE"), ("adh", "ADH")):
            r = r3[key]
            dh[label] = r.dh_bits if (r.accepted and r.version == top) else None
        facts["dh_bits"] = dh
        sized = {k: b for k, b in dh.items() if b}
        if sized:
            smallest = min(sized.values())
            detail = ", ".join(f"{k} {b} bits" for k, b in sized.items())
            if smallest < 1024:
                fs.append(finding("kex.dh_weak", detail, port=port))
            elif smallest < 2048:
                fs.append(finding("kex.dh_small", detail, port=port))
        curve = first.curve if first.accepted else None
        facts["ecdh_group"] = H.GROUP_NAMES.get(curve, curve) if curve else None
    else:
        facts.update(preferred_cipher=None, server_cipher_order=None, forward_secrecy=True,
                     dh_bits={"DHE": None, "ADH": None}, ecdh_group=None)
    if H.TLS1_3 in accepted:
        facts["tls13_group"] = H.GROUP_NAMES.get(res[H.TLS1_3].curve, res[H.TLS1_3].curve)
    facts["cipher_classes"] = classes
    for k, cid in CLASS_IDS.items():
        if classes[k]:
            fs.append(finding(cid, ", ".join(f"{v}: {n}" for v, n in classes[k].items()), port=port))
    beast = [classes[k]["TLSv1.0"] for k in ("CBC", "3DES", "LOW") if "TLSv1.0" in classes[k]]
    if H.TLS1_0 in accepted and H.suite(res[H.TLS1_0].cipher) and H.suite(res[H.TLS1_0].cipher).cbc:
        beast.insert(0, res[H.TLS1_0].cipher_name)
    if beast:
        fs.append(finding("cipher.beast", "TLSv1.0 with " + ", ".join(dict.fromkeys(beast))
                          + " (a client-side attack; TLS 1.0 should go anyway)", port=port))
    aead_unknown = legacy and any(r.outcome in NO_ANSWER for key, r in r3.items()
                                  if isinstance(key, tuple) and key[0] == "AEAD")
    if not classes["AEAD"] and H.TLS1_3 not in accepted and not aead_unknown and H.TLS1_3 not in unknown:
        fs.append(finding("cipher.no_aead", "", port=port))
    # Certificates from the raw TLS <= 1.2 answer, in case the real handshake failed.
    facts["_raw_chain"] = list(res[max(legacy)].certs) if legacy else []
    return facts, fs


def audit_port(ep: Endpoint, opts: Options) -> PortReport:
    """Audit one port.  Never raises: a connection problem, a protocol error or a bug in our
    own analysis becomes this port's ``error`` (with whatever was learned before it), so
    the other ports are still reported and --json stays a complete document."""
    from dataclasses import replace

    from . import certcheck
    from ..core.certinfo import utcnow

    t0 = time.monotonic()
    ep = replace(ep, deadline=t0 + opts.port_deadline, port_deadline=opts.port_deadline)
    tls = "implicit" if ep.implicit_tls else "starttls"
    facts: dict = {}
    fs: list[Finding] = []
    error = None
    incomplete: list[str] = []
    try:
        facts, fs, chain = policy_session(ep, opts)
        if facts.get("starttls") is False:
            return PortReport(ep.port, ep.role, tls, None, facts, tuple(fs), time.monotonic() - t0)
        pr = None
        feat = tlsfeatures.start(ep, opts.name, opts.workers)  # issue #13 A: beside the probes below
        try:
            with ThreadPoolExecutor(max_workers=opts.workers) as pool:
                pr = Prober(ep, opts, pool)
                vjobs = vulns.start(ep, opts.name, pool)  # beside the other probes
                try:
                    pfacts, pfs = tls_probes(pr)
                finally:
                    vfacts, vfs, vnotes = vulns.collect(vjobs)
                    pr.count += vjobs.connections
                facts.update(vfacts)
                fs.extend(vfs)
                incomplete.extend(vnotes)
            raw_chain = pfacts.pop("_raw_chain")
            facts.update(pfacts)
            fs.extend(pfs)
            if not chain:
                chain = raw_chain
        except RateLimited as exc:
            incomplete.append(exc.message)
        except ConnectError as exc:
            error = exc.message
        if pr is not None and error is None and pr.refused_after_retries:
            # The first connection worked, later ones were refused/dropped even after backoff.
            facts["status"] = "incomplete: rate limited"
            n = pr.refused_after_retries
            fs.append(finding("check.rate_limited", f"{n} of {pr.count} probe connection(s) refused or dropped "
                                                    f"after {pr.retries} retries with backoff; the findings cover "
                                                    "only what was answered", port=ep.port))
            incomplete.insert(0, f"rate limited: {n} probe connection(s) refused after retries with backoff")
        if pr is not None:
            facts["probes"] = pr.count + 1
            if pr.unanswered:
                n = len(pr.unanswered)
                incomplete.append(f"{n} of {pr.count} probe(s) got no answer, their results are unknown "
                                  f"(first: {pr.unanswered[0]})")
        if chain or error is None:
            cfacts, cfs = certcheck.analyze(chain, port=ep.port, name=opts.name, ca_certs=list(opts.ca_certs),
                                            tlsa=list(opts.tlsa), now=opts.now or utcnow())
            facts["certificate"] = cfacts
            fs.extend(cfs)
            cfacts["days_left"] = monitor.days_left(chain, opts.now or utcnow())
            fs.extend(monitor.expiry_warnings(chain, opts.warn_days, opts.now or utcnow(), port=ep.port, already=cfs))
        facts["tls_features"], ffs = feat.finish(port=ep.port, name=opts.name, chain=chain,
                                                 chain_facts=facts.get("certificate", {}).get("chain", []),
                                                 timeout=max(ep.deadline - time.monotonic(), 0) if ep.deadline else 60)
        fs.extend(ffs)
        if facts["tls_features"].get("unanswered"):
            miss = facts["tls_features"]["unanswered"]
            incomplete.append(f"{len(miss)} TLS feature probe(s) got no answer, those items are unknown (first: {miss[0]})")
        if error is None and "tls" in facts and "error" not in facts["tls"]:
            t = facts["tls"]
            fs.append(finding("tls.handshake", f"{t['version']} {t['cipher']}"
                              + ("" if ep.implicit_tls else " after STARTTLS"), port=ep.port))
    except ConnectError as exc:
        error = error or exc.message
    except Exception as exc:  # a bug or a server we did not foresee: this port only
        error = (f"{ep.label}: internal error while auditing this port ({type(exc).__name__}: {exc}); "
                 "the other ports are unaffected -- please report this")
    if ep.expired and error is None:
        incomplete.insert(0, f"the port deadline of {opts.port_deadline:g} s ran out (--port-deadline)")
    return PortReport(ep.port, ep.role, tls, error, facts, tuple(fs), time.monotonic() - t0,
                      tuple(incomplete))


def audit(host: str, endpoints: list[Endpoint], opts: Options) -> Report:
    from ..core.certinfo import iso, utcnow

    started = iso(utcnow())
    t0 = time.monotonic()
    if len(endpoints) == 1:
        ports = [audit_port(endpoints[0], opts)]
    else:
        with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
            ports = list(pool.map(lambda e: audit_port(e, opts), endpoints))
    return Report(host, opts.name, tuple(ports), started, time.monotonic() - t0)
