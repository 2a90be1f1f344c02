"""The DNS gate: switch a served key or chain only when DNS really serves its TLSA record.

RFC 7671 §8.1: a server may present a new key (or chain) only when every resolver that may
still cache the TLSA RRset has had a copy containing a record for it.  So before a switch
mailca asks

* every authoritative server of the zone (the NS set, each address asked directly, no
  recursion, AA required), and
* the validating resolver (RD + DO, the AD bit required: an unvalidated answer is no answer
  for a DANE sender),

for the TLSA RRset at each owner name, and proceeds only when every one of them serves a
record that matches the new chain and has done so, continuously, for at least 2 x the TTL
they serve.  The first time a record was SEEN everywhere is kept in ``<store>/dane-seen.json``
(atomic write under the store lock); a check that misses it anywhere starts the clock again.
The clock is :func:`mailca.core.certinfo.utcnow` (``MAILCA_NOW`` in tests).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass

from ..core import certinfo
from ..errors import ConnectError, StoreError, UsageError
from . import client as publish

__all__ = ["parse_ports", "pem_cert_der", "spki_sha256_of_der", "View", "Need", "NeedState", "GateResult", "observe", "load_state", "check", "note_absent", "mark_printed", "printed_hold", "chain_accepts", "rekey_needs", "hold_chain_changes"]

STATE_FILE = "dane-seen.json"
MAX_NS = 16


def parse_ports(ports) -> list[int]:
    out: list[int] = []
    for p in ports or (25,):
        s = str(p)
        if not s.isdigit() or not 1 <= int(s) <= 65535:
            raise UsageError(f"--port {p!r} is not a TCP port number (1-65535), e.g. 25")
        if int(s) not in out:
            out.append(int(s))
    return out


def pem_cert_der(path: Path) -> bytes:
    """DER of the first certificate in a PEM file (base64 body; no X.509 parsing needed for
    a 2 0 1 digest, which hashes the whole certificate)."""
    import base64
    import binascii

    try:
        text = path.read_text()
        body = text.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
        return base64.b64decode("".join(body.split()), validate=True)
    except FileNotFoundError:
        raise StoreError(f"{path} is missing; restore it from a backup") from None
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        raise StoreError(f"{path} is not a PEM certificate (corrupt?); restore it from a backup") from None


def spki_sha256_of_der(der: bytes) -> str:
    from cryptography import x509

    from ..core.keys import spki_der

    return hashlib.sha256(spki_der(x509.load_der_x509_certificate(der).public_key())).hexdigest()


@dataclass(frozen=True)
class View:
    """What one server answered for one owner name."""

    server: str  # "ns1.example.org. 192.0.2.53@53" or "resolver 127.0.0.53@53"
    role: str  # authoritative | resolver
    rdatas: frozenset
    ttl: int | None
    error: str | None  # None: a proper (authoritative / validated) answer
    neg_ttl: int | None = None  # NXDOMAIN/NODATA: how long a resolver may cache "no record" (RFC 2308)

    def as_dict(self) -> dict:
        return {"server": self.server, "role": self.role, "rdatas": sorted(self.rdatas), "ttl": self.ttl, "error": self.error,
                "neg_ttl": self.neg_ttl}


@dataclass(frozen=True)
class Need:
    """One owner name must serve one of ``accept`` (any of them makes the new chain match)."""

    owner: str
    accept: frozenset
    what: str


@dataclass(frozen=True)
class NeedState:
    need: Need
    matched: str | None  # the accepted record served everywhere (the longest-seen one)
    first_seen: _dt.datetime | None
    ttl: int
    ready_at: _dt.datetime | None
    missing: tuple  # servers that do not serve an accepted record (or did not answer properly)
    neg_ttl: int = 0  # the RRset was absent before: its negative-cache TTL counts too (0: not)

    @property
    def ready(self) -> bool:
        return self.ready_at is not None and self.ready_at <= certinfo.utcnow()

    def as_dict(self) -> dict:
        return {"owner": self.need.owner, "what": self.need.what, "matched": self.matched, "neg_ttl": self.neg_ttl,
                "first_seen": certinfo.iso(self.first_seen) if self.first_seen else None, "ttl": self.ttl,
                "ready_at": certinfo.iso(self.ready_at) if self.ready_at else None, "missing": list(self.missing)}


@dataclass(frozen=True)
class GateResult:
    ready: bool
    mode: str  # dns | printed-time
    needs: tuple
    views: tuple

    def as_dict(self) -> dict:
        return {"ready": self.ready, "mode": self.mode, "needs": [n.as_dict() for n in self.needs],
                "views": [v.as_dict() for v in self.views]}

    def explain(self) -> str:
        """One line: why the gate holds (or that it is open)."""
        if self.ready:
            return "every authoritative server and the validating resolver have served the new record for 2 x TTL"
        parts = []
        for n in self.needs:
            if n.missing:
                parts.append(f"{n.need.owner} ({n.need.what}): not served by {', '.join(n.missing)}")
            elif n.ready_at is not None and not n.ready:
                neg = (f"; the RRset did not exist before and a resolver may cache that for {n.neg_ttl}s (SOA minimum)"
                       if n.neg_ttl > n.ttl else "")
                parts.append(f"{n.need.owner} ({n.need.what}): seen everywhere since {certinfo.iso(n.first_seen)}, "
                             f"wait until {certinfo.iso(n.ready_at)} (2 x TTL {n.ttl}s{neg})")
        return "; ".join(parts)


def _clean(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))[:200]


def observe(owner: str, resolver: tuple[str, int], ns_port: int = 53, *, timeout: float = 3.0) -> list[View]:
    """Ask the resolver for the zone and its NS set, then every NS address and the resolver
    for the TLSA RRset at ``owner``.  An unreachable resolver raises ConnectError: without it
    nothing can be known."""
    import dns.flags
    import dns.rcode
    import dns.rdatatype

    zone = publish.zone_of(resolver, owner, rd=True)
    r = publish.query(resolver, zone, "NS", rd=True, timeout=timeout)
    ns_names = sorted({rd.target.to_text() for rrset in r.answer if rrset.rdtype == dns.rdatatype.NS for rd in rrset})
    if not ns_names:
        raise ConnectError(f"the resolver {resolver[0]}@{resolver[1]} gave no NS set for {zone}")
    views: list[View] = []
    for ns in ns_names[:MAX_NS]:
        addrs = []
        for rtype in ("A", "AAAA"):
            try:
                a = publish.query(resolver, ns, rtype, rd=True, timeout=timeout)
            except ConnectError as exc:
                views.append(View(f"{ns} ({rtype})", "authoritative", frozenset(), None, _clean(exc)))
                continue
            addrs += [rd.address for rrset in a.answer if rrset.rdtype == dns.rdatatype.from_text(rtype) for rd in rrset]
        if not addrs:
            views.append(View(ns, "authoritative", frozenset(), None, "no address"))
        for addr in addrs:
            label = f"{ns} {addr}@{ns_port}"
            try:
                got, ttl, resp = publish.served_tlsa((addr, ns_port), owner, rd=False)
            except ConnectError as exc:
                views.append(View(label, "authoritative", frozenset(), None, _clean(exc)))
                continue
            if not resp.flags & dns.flags.AA:
                views.append(View(label, "authoritative", frozenset(got), ttl, "answer is not authoritative (no AA bit)"))
            elif resp.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                views.append(View(label, "authoritative", frozenset(), None, dns.rcode.to_text(resp.rcode())))
            else:
                views.append(View(label, "authoritative", frozenset(got), ttl, None, None if got else publish.negative_ttl(resp)))
    label = f"resolver {resolver[0]}@{resolver[1]}"
    got, ttl, resp = publish.served_tlsa(resolver, owner, rd=True)  # ConnectError propagates
    if resp.rcode() == dns.rcode.SERVFAIL:
        views.append(View(label, "resolver", frozenset(), None, "SERVFAIL (bogus DNSSEC or an unreachable zone)"))
    elif not resp.flags & dns.flags.AD:
        views.append(View(label, "resolver", frozenset(got), ttl,
                          "answer not validated (no AD bit): the zone is not DNSSEC-signed or the resolver does not validate"))
    else:
        views.append(View(label, "resolver", frozenset(got), ttl, None, None if got else publish.negative_ttl(resp)))
    return views


def note_absent(store, absent: dict, now=None) -> None:
    """Record owners whose TLSA RRset did not exist (owner -> negative TTL, as seen by
    'dane publish' before its update added one): a resolver may cache that "no record"
    answer, so the gate also waits 2 x the negative TTL from when the RRset was first
    seen everywhere."""
    absent = {o: n for o, n in (absent or {}).items() if n}
    if not absent:
        return
    now = now or certinfo.utcnow()
    with store.lock():
        st = load_state(store)
        owners = st.setdefault("owners", {})
        for owner, neg in absent.items():
            owners[owner.lower()] = {"absent_at": certinfo.iso(now), "neg_ttl": int(neg), "present_since": None}
        store.write_file(_state_path(store), (json.dumps(st, indent=1, sort_keys=True) + "\n").encode(), private=True)


# ------------------------------------------------------------------------ state
def _state_path(store):
    return store.path / STATE_FILE


def load_state(store) -> dict:
    p = _state_path(store)
    if not p.exists():
        return {"version": 1, "seen": {}}
    try:
        st = json.loads(p.read_text())
        if not isinstance(st.get("seen"), dict):
            raise ValueError("no 'seen' map")
        for k, v in st["seen"].items():
            certinfo.parse_iso(v["first_seen"])
            if type(v.get("ttl")) is not int or v["ttl"] < 0:
                raise ValueError(f"seen[{k[:60]!r}] has a bad ttl")
        owners = st.get("owners", {})
        if not isinstance(owners, dict):
            raise ValueError("'owners' is not an object")
        for k, v in owners.items():
            certinfo.parse_iso(v["absent_at"])
            if v.get("present_since") is not None:
                certinfo.parse_iso(v["present_since"])
            if type(v.get("neg_ttl")) is not int or v["neg_ttl"] < 0:
                raise ValueError(f"owners[{k[:60]!r}] has a bad neg_ttl")
    except (OSError, ValueError, AttributeError, TypeError, KeyError, OverflowError) as exc:
        raise StoreError(f"{p} is corrupt ({exc}); remove it (the gate then starts its clocks again)") from None
    return st


def check(store, needs: list[Need], resolver: tuple[str, int], ns_port: int = 53, *, now=None,
          timeout: float = 3.0) -> GateResult:
    """Ask DNS, update the first-seen clocks, and say whether every need is met for 2 x TTL."""
    now = now or certinfo.utcnow()
    views_by_owner = {}
    for n in needs:
        if n.owner not in views_by_owner:
            try:
                views_by_owner[n.owner] = observe(n.owner, resolver, ns_port, timeout=timeout)
            except ConnectError as exc:
                raise ConnectError(f"DNS gate: cannot ask the validating resolver about {n.owner} ({exc.message}); "
                                   "nothing was switched - check --resolver / MAILCA_DNS_RESOLVER") from None
    states = []
    with store.lock():
        st = load_state(store)
        seen = st["seen"]
        owners = st.setdefault("owners", {})
        changed = False
        for owner, views in views_by_owner.items():  # absent / present, for the negative-cache wait
            o = owner.lower()
            negs = [v.neg_ttl for v in views if v.error is None and not v.rdatas and v.neg_ttl]
            if any(v.error is None and not v.rdatas for v in views):
                owners[o] = {"absent_at": certinfo.iso(now), "neg_ttl": max(negs + [0]), "present_since": None}
                changed = True
            elif o in owners and owners[o].get("present_since") is None and all(v.error is None and v.rdatas for v in views):
                owners[o]["present_since"] = certinfo.iso(now)
                changed = True
        for n in needs:
            views = views_by_owner[n.owner]
            ttl = max([v.ttl or 0 for v in views if v.error is None] or [0])
            everywhere = sorted(a for a in n.accept if all(v.error is None and a in v.rdatas for v in views))
            for a in n.accept:
                k = f"{n.owner} {a}"
                if a in everywhere:
                    entry = seen.get(k)
                    if entry is None:
                        seen[k] = {"first_seen": certinfo.iso(now), "ttl": ttl}
                        changed = True
                    elif int(entry.get("ttl") or 0) < ttl:
                        entry["ttl"] = ttl
                        changed = True
                elif k in seen:  # missing somewhere: the clock starts again when it is back
                    del seen[k]
                    changed = True
            best = None
            neg = owners.get(n.owner.lower())
            neg_ttl = int(neg["neg_ttl"]) if neg and neg.get("present_since") else 0
            for a in everywhere:
                e = seen[f"{n.owner} {a}"]
                at = certinfo.parse_iso(e["first_seen"]) + _dt.timedelta(seconds=2 * int(e["ttl"]))
                if neg and neg.get("present_since"):  # absent before: a cached NXDOMAIN/NODATA must expire too
                    at = max(at, certinfo.parse_iso(neg["present_since"]) + _dt.timedelta(seconds=2 * int(neg["neg_ttl"])))
                if best is None or at < best[2]:
                    best = (a, certinfo.parse_iso(e["first_seen"]), at, int(e["ttl"]))
            missing = tuple(v.server + (f" ({v.error})" if v.error else "") for v in views
                            if v.error is not None or not (v.rdatas & n.accept))
            if best is None:
                states.append(NeedState(n, None, None, ttl, None, missing))
            else:
                states.append(NeedState(n, best[0], best[1], best[3], best[2], missing, neg_ttl))
        if changed:
            store.write_file(_state_path(store), (json.dumps(st, indent=1, sort_keys=True) + "\n").encode(), private=True)
    ready = all(s.ready_at is not None and s.ready_at <= now for s in states)
    views = tuple(v for vs in views_by_owner.values() for v in vs)
    return GateResult(ready, "dns", tuple(states), views)


def chain_accepts(store, spki_sha256: str) -> frozenset:
    """TLSA rdatas that match a chain of a new leaf with this key under the CA's current
    intermediate: DANE-EE 3 1 1 of the key, DANE-TA 2 0 1 / 2 1 1 of the intermediate."""
    import hashlib

    der = pem_cert_der(store.ca_file("intermediate.crt"))
    return frozenset({publish.rdata_key(3, 1, 1, spki_sha256),
                      publish.rdata_key(2, 0, 1, hashlib.sha256(der).hexdigest()),
                      publish.rdata_key(2, 1, 1, spki_sha256_of_der(der))})


def rekey_needs(store, staged: list[tuple[dict, dict]], host: str, ports: list[int]) -> list[Need]:
    return [Need(f"_{p}._tcp.{host}.", chain_accepts(store, m["spki_sha256"]), f"next {e['key_type']} key")
            for p in ports for e, m in staged]


def _ta_accepts(store) -> frozenset:
    import hashlib

    der = pem_cert_der(store.ca_file("intermediate.crt"))
    return frozenset({publish.rdata_key(2, 0, 1, hashlib.sha256(der).hexdigest()),
                      publish.rdata_key(2, 1, 1, spki_sha256_of_der(der))})


def _chain_needs(store, due: list[dict], ports: list[int], host: str | None, new_key: bool) -> dict[str, list[Need]]:
    coming = pem_cert_der(store.ca_file("intermediate.crt"))
    needs_by_name: dict[str, list[Need]] = {}
    for e in due:
        chain = store.live_dir(e["name"], e["key_type"]) / "chain.pem"
        changes_chain = not chain.exists() or pem_cert_der(chain) != coming
        if not (changes_chain or new_key):
            continue
        accept = set(_ta_accepts(store))
        if not new_key:
            accept.add(publish.rdata_key(3, 1, 1, e["spki_sha256"]))
        what = f"{e['key_type']}: " + ("new key" if new_key else "chain with the renewed intermediate")
        for p in ports:
            needs_by_name.setdefault(e["name"], []).append(Need(f"_{p}._tcp.{host or e['name']}.", frozenset(accept), what))
    return needs_by_name


def mark_printed(store, owner_rdatas: list[tuple[str, str]], ttl: int, now=None) -> None:
    """Remember when mailca first published each (owner, rdata) - the printed-time rule's
    clock when no resolver is configured (first time only; the largest TTL is kept)."""
    if not owner_rdatas:
        return
    now = now or certinfo.utcnow()
    with store.lock():
        st = load_state(store)
        printed = st.setdefault("printed", {})
        changed = False
        for owner, rdata in owner_rdatas:
            k = f"{owner.lower()} {rdata.lower()}"
            e = printed.get(k)
            if e is None:
                printed[k] = {"first_seen": certinfo.iso(now), "ttl": int(ttl)}
                changed = True
            elif int(e.get("ttl") or 0) < ttl:
                e["ttl"] = int(ttl)
                changed = True
        if changed:
            store.write_file(_state_path(store), (json.dumps(st, indent=1, sort_keys=True) + "\n").encode(), private=True)


def printed_hold(store, due: list[dict], ports: list[int], *, usage: str, host: str | None = None,
                 now=None) -> dict[str, str]:
    """The no-DNS fallback of :func:`hold_chain_changes`: a chain change waits until 2 x TTL
    after mailca first published the coming trust anchor's record (:func:`mark_printed`).
    With usage 3 published the current key's 3 1 1 covers any chain, so nothing waits.
    The reason says that DNS was not asked."""
    if usage in ("3", "both"):
        return {}
    now = now or certinfo.utcnow()
    needs = _chain_needs(store, due, ports, host, False)
    if not needs:
        return {}
    printed = load_state(store).get("printed", {})
    held = {}
    for name, ns in needs.items():
        for n in ns:
            times = []
            for a in n.accept:
                e = printed.get(f"{n.owner.lower()} {a}")
                if e:
                    times.append(certinfo.parse_iso(e["first_seen"]) + _dt.timedelta(seconds=2 * int(e["ttl"])))
            if any(t <= now for t in times):
                continue
            held[name] = ("DNS not asked (no resolver remembered; printed-time rule): "
                          + (f"{n.owner} ({n.what}): published by mailca, wait until {certinfo.iso(min(times))} "
                             "(2 x TTL)" if times else
                             f"{n.owner} ({n.what}): no matching record was published by mailca yet"))
            break
    return held


def hold_chain_changes(store, due: list[dict], ports: list[int], resolver: tuple[str, int], ns_port: int = 53, *,
                       new_key: bool = False, now=None, host: str | None = None) -> dict[str, str]:
    """Renewals among ``due`` that would change what the server presents in a way the TLSA
    RRset may not cover yet - the chain after 'ca renew-intermediate', or the key with
    --new-key - and are not covered by DNS for 2 x TTL: {lineage name: why}.

    A renewal that keeps the key stays covered by the current 3 1 1; otherwise the new
    intermediate's 2 0 1 / 2 1 1 must be served.  ``host``: the TLSA owner's host when it is
    not the lineage name (an MX that is a SAN of the lineage)."""
    needs_by_name = _chain_needs(store, due, ports, host, new_key)
    if not needs_by_name:
        return {}
    now = now or certinfo.utcnow()
    result = check(store, [n for ns in needs_by_name.values() for n in ns], resolver, ns_port, now=now)
    held: dict[str, str] = {}
    for name, ns in needs_by_name.items():
        mine = [s for s in result.needs if s.need in ns]
        bad = [s for s in mine if s.ready_at is None or s.ready_at > now]
        if bad:
            held[name] = GateResult(False, "dns", tuple(bad), ()).explain()
    return held
