"""Publishing TLSA records: RFC 2136 dynamic update signed with TSIG (dnspython), the
``nsupdate`` script form, and relative owner names for web DNS panels.

One update message per zone carries every change, so the primary applies it atomically:
the records mailca wants (current, staged next, trust anchor) are added, and the TLSA
records at the same owner names that match nothing served or staged are deleted.  The TSIG
key is read from a file (BIND ``key "name" { algorithm ...; secret "..."; };`` or Knot's
``keymgr -t`` YAML); it never appears on a command line.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from ..errors import ConnectError, StoreError, UsageError

__all__ = ["parse_server", "TsigKey", "load_tsig", "rdata_key", "query", "zone_of", "served_tlsa", "negative_ttl", "Change", "plan", "relative", "nsupdate_script", "PublishResult", "publish",
           "system_resolver", "resolve", "mx_hosts"]

MAX_KEY_FILE = 64 * 1024
TIMEOUT = 5.0


def parse_server(text: str, what: str, default_port: int = 53) -> tuple[str, int]:
    """``ADDR`` or ``ADDR@PORT`` (an IP literal: a name would need DNS to reach DNS)."""
    addr, _, port = str(text).partition("@")
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not an IP address; use ADDR or ADDR@PORT, e.g. 127.0.0.1@53") from None
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise UsageError(f"{what} {text!r}: port {port!r} is not 1-65535; use ADDR@PORT, e.g. 192.0.2.53@53")
    return addr, int(port) if port else default_port


_ALGS = {"hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5"}


@dataclass(frozen=True)
class TsigKey:
    name: str
    algorithm: str
    secret: str  # base64; never printed

    def keyring(self):
        import dns.tsigkeyring

        return dns.tsigkeyring.from_text({self.name: (self.algorithm, self.secret)})


def load_tsig(path: str) -> TsigKey:
    """A TSIG key from ``path`` (BIND key clause or Knot keymgr YAML)."""
    import base64
    import binascii

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise UsageError(f"--tsig-key-file {path!r}: {exc.strerror}; give a file with a BIND 'key' clause "
                         "(e.g. from 'tsig-keygen NAME')") from None
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read(MAX_KEY_FILE + 1)
    if len(raw) > MAX_KEY_FILE:
        raise UsageError(f"--tsig-key-file {path!r} is larger than {MAX_KEY_FILE} bytes; it is not a TSIG key file")
    text = raw.decode("utf-8", "replace")
    m = re.search(r'key\s+"?([A-Za-z0-9._-]+)"?\s*\{(.*?)\}\s*;', text, re.S)
    if m:
        name, body = m.group(1), m.group(2)
        alg = re.search(r"algorithm\s+\"?([A-Za-z0-9-]+)\"?\s*;", body)
        sec = re.search(r'secret\s+"([A-Za-z0-9+/=]+)"\s*;', body)
    else:  # knot: - id: NAME / algorithm: X / secret: Y
        idm = re.search(r"^\s*-?\s*id:\s*\"?([A-Za-z0-9._-]+)\"?\s*$", text, re.M)
        name = idm.group(1) if idm else None
        alg = re.search(r"^\s*algorithm:\s*\"?([A-Za-z0-9-]+)\"?\s*$", text, re.M)
        sec = re.search(r"^\s*secret:\s*\"?([A-Za-z0-9+/=]+)\"?\s*$", text, re.M)
    if not name or not alg or not sec:
        raise UsageError(f"--tsig-key-file {path!r} has no TSIG key (want key \"NAME\" {{ algorithm hmac-sha256; "
                         "secret \"BASE64\"; }}; as written by tsig-keygen or keymgr -t)")
    algorithm = alg.group(1).lower()
    if algorithm not in _ALGS:
        raise UsageError(f"--tsig-key-file {path!r}: algorithm {algorithm!r} is not one of {', '.join(sorted(_ALGS))}")
    try:
        base64.b64decode(sec.group(1), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"--tsig-key-file {path!r}: the secret is not base64") from None
    return TsigKey(name.rstrip(".") + ".", algorithm, sec.group(1))


def rdata_key(usage: int, selector: int, mtype: int, data: str) -> str:
    return f"{usage} {selector} {mtype} {data.lower()}"


def query(server: tuple[str, int], qname: str, rtype: str, *, rd: bool = False, dnssec: bool = False,
          timeout: float = TIMEOUT):
    """One query over UDP (TCP when truncated), bounded by ``timeout``."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.query

    q = dns.message.make_query(qname, rtype, want_dnssec=dnssec)
    if not rd:
        q.flags &= ~dns.flags.RD
    if dnssec:
        q.flags |= dns.flags.AD
    try:
        r = dns.query.udp(q, server[0], port=server[1], timeout=timeout)
        if r.flags & dns.flags.TC:
            r = dns.query.tcp(q, server[0], port=server[1], timeout=timeout)
    except dns.exception.Timeout:
        raise ConnectError(f"DNS server {server[0]}@{server[1]} did not answer a {rtype} query for {qname} "
                           f"within {timeout:g}s") from None
    except (OSError, dns.exception.DNSException) as exc:
        raise ConnectError(f"DNS server {server[0]}@{server[1]}: {type(exc).__name__}: {exc}"[:300]) from None
    return r


def zone_of(server: tuple[str, int], name: str, *, rd: bool = False) -> str:
    """The zone holding ``name``, from the SOA in the answer or authority section."""
    import dns.rdatatype

    import dns.rcode

    r = query(server, name, "SOA", rd=rd)
    if r.rcode() == dns.rcode.SERVFAIL:
        raise ConnectError(f"DNS server {server[0]}@{server[1]} answered SERVFAIL for {name}: DNSSEC validation failed "
                           "(bogus) or the zone's servers are unreachable")
    for section in (r.answer, r.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.SOA:
                return rrset.name.to_text()
    raise ConnectError(f"DNS server {server[0]}@{server[1]} gave no SOA for {name}; is it authoritative for its zone? "
                       "Name the zone with --zone")


def served_tlsa(server: tuple[str, int], owner: str, *, rd: bool = False) -> tuple[set[str], int | None, object]:
    """TLSA rdatas (as :func:`rdata_key` text) and TTL at ``owner``, and the response."""
    import dns.rdatatype

    r = query(server, owner, "TLSA", rd=rd, dnssec=rd)
    out: set[str] = set()
    ttl = None
    for rrset in r.answer:
        if rrset.rdtype == dns.rdatatype.TLSA and rrset.name.to_text().lower() == owner.lower():
            ttl = rrset.ttl
            for rd_ in rrset:
                out.add(rdata_key(rd_.usage, rd_.selector, rd_.mtype, rd_.cert.hex()))
    return out, ttl, r


def negative_ttl(resp) -> int | None:
    """RFC 2308 §5: a NXDOMAIN/NODATA answer is cached for min(SOA TTL, SOA MINIMUM) of the
    SOA in its authority section; None when there is none."""
    import dns.rdatatype

    for rrset in resp.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return min([int(rrset.ttl)] + [int(rd.minimum) for rd in rrset])
    return None


@dataclass(frozen=True)
class Change:
    owner: str
    action: str  # add | delete | keep
    rdata: str
    ttl: int
    why: str

    def as_dict(self) -> dict:
        return {"owner": self.owner, "action": self.action, "rdata": self.rdata, "ttl": self.ttl, "why": self.why}


def plan(records, served: dict[str, set[str]]) -> list[Change]:
    """Changes that make each owner's TLSA RRset exactly ``records`` (served: owner -> rdatas)."""
    want: dict[str, dict[str, object]] = {}
    for r in records:
        want.setdefault(r.owner.lower(), {})[rdata_key(r.usage, r.selector, r.mtype, r.data)] = r
    out = []
    for owner, recs in want.items():
        have = served.get(owner, set())
        for key, r in recs.items():
            out.append(Change(owner, "keep" if key in have else "add", key, r.ttl, r.what))
        for key in sorted(have - set(recs)):
            out.append(Change(owner, "delete", key, 0, "matches nothing served or staged"))
    return out


def relative(owner: str, zone: str) -> str:
    o, z = owner.rstrip(".").lower(), zone.rstrip(".").lower()
    if o == z:
        return "@"
    if not o.endswith("." + z):
        raise UsageError(f"--zone {zone!r}: {owner} is not inside it; name the zone that holds the host")
    return o[: -len(z) - 1]


def nsupdate_script(records, *, server: tuple[str, int] | None, zone: str | None) -> str:
    """An ``nsupdate`` script: replace each owner's TLSA RRset with ``records`` in one update."""
    lines = []
    if server:
        lines.append(f"server {server[0]} {server[1]}")
    if zone:
        lines.append(f"zone {zone.rstrip('.')}.")
    owners = []
    for r in records:
        if r.owner not in owners:
            owners.append(r.owner)
    for o in owners:
        lines.append(f"update delete {o} TLSA")
    for r in records:
        lines.append(f"update add {r.owner} {r.ttl} TLSA {r.rdata}")
    lines.append("send")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PublishResult:
    zone: str
    server: str
    changes: tuple[Change, ...]
    dry_run: bool
    absent: tuple = ()  # (owner, negative TTL) of owners that had no TLSA RRset before this update

    def as_dict(self) -> dict:
        return {"zone": self.zone, "server": self.server, "dry_run": self.dry_run,
                "changes": [c.as_dict() for c in self.changes]}


def publish(records, *, server: tuple[str, int], key: TsigKey, zone: str | None = None, dry_run: bool = False,
            timeout: float = TIMEOUT) -> PublishResult:
    """Send one TSIG-signed update to the zone's primary; raises unless it says NOERROR."""
    import dns.exception
    import dns.name
    import dns.query
    import dns.rcode
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.tsig
    import dns.update

    if not records:
        raise UsageError("nothing to publish: no TLSA records were chosen")
    owners = sorted({r.owner.lower() for r in records})
    zone = (zone.rstrip(".") + ".") if zone else zone_of(server, owners[0])
    for o in owners:
        relative(o, zone)  # every owner must be inside the zone
    answers = {o: served_tlsa(server, o, rd=False) for o in owners}
    served = {o: a[0] for o, a in answers.items()}
    absent = tuple((o, negative_ttl(a[2])) for o, a in answers.items() if not a[0] and negative_ttl(a[2]))
    changes = plan(records, served)
    if dry_run or not any(c.action != "keep" for c in changes):
        return PublishResult(zone, f"{server[0]}@{server[1]}", tuple(changes), dry_run)
    upd = dns.update.UpdateMessage(zone, keyring=key.keyring(), keyname=key.name, keyalgorithm=key.algorithm)
    for c in changes:
        rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, c.rdata)
        name = dns.name.from_text(c.owner)
        if c.action == "delete":
            upd.delete(name, rd)
        elif c.action == "add":
            upd.add(name, c.ttl, rd)
    try:
        resp = dns.query.tcp(upd, server[0], port=server[1], timeout=timeout)
    except dns.tsig.PeerError as exc:
        raise StoreError(f"the primary {server[0]}@{server[1]} refused the TSIG signature of key {key.name} "
                         f"({type(exc).__name__}); check the key file and the server's key") from None
    except dns.exception.Timeout:
        raise ConnectError(f"the primary {server[0]}@{server[1]} did not answer the update within {timeout:g}s") from None
    except (OSError, dns.exception.DNSException) as exc:
        raise ConnectError(f"update to {server[0]}@{server[1]} failed: {type(exc).__name__}: {exc}"[:300]) from None
    rc = resp.rcode()
    if rc != dns.rcode.NOERROR:
        raise StoreError(f"the primary {server[0]}@{server[1]} answered the update for {zone} with "
                         f"{dns.rcode.to_text(rc)}; does key {key.name} have the right to update it "
                         "(Knot: acl action update; BIND: update-policy)?")
    return PublishResult(zone, f"{server[0]}@{server[1]}", tuple(changes), False, absent)



# --- resolving through a (validating) resolver: shared by check --mx and check --dane ------

def system_resolver() -> str:
    """The first ``nameserver`` of /etc/resolv.conf (the default --resolver)."""
    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as fh:
            for line in fh.read(65536).splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return parts[1]
    except OSError:
        pass
    raise UsageError("no --resolver given and /etc/resolv.conf names no nameserver; give a validating resolver, "
                     "e.g. --resolver 127.0.0.1@53")


def resolve(server: tuple[str, int], name: str, rtype: str, *, timeout: float = TIMEOUT) -> tuple[str, list]:
    """(status, rdatas) of ``name``/``rtype`` asked recursively with the DO bit: status is
    "secure" (AD set by the validating resolver), "insecure", "bogus" (SERVFAIL) or "nxdomain"."""
    import dns.flags
    import dns.rcode
    import dns.rdatatype

    r = query(server, name, rtype, rd=True, dnssec=True, timeout=timeout)
    rc = r.rcode()
    if rc == dns.rcode.SERVFAIL:
        return "bogus", []
    if rc == dns.rcode.NXDOMAIN:
        return "nxdomain", []
    if rc != dns.rcode.NOERROR:
        raise ConnectError(f"DNS server {server[0]}@{server[1]} answered {dns.rcode.to_text(rc)} for {name} {rtype}")
    want = dns.rdatatype.from_text(rtype)
    rdatas = [rd for rrset in r.answer if rrset.rdtype == want for rd in rrset]
    return ("secure" if r.flags & dns.flags.AD else "insecure"), rdatas


def mx_hosts(server: tuple[str, int], domain: str, *, timeout: float = TIMEOUT) -> dict:
    """The MX facts of ``domain``: the DNSSEC status of the MX answer and every MX host in
    priority order (ties by name) with its A and AAAA addresses and their status.  No MX:
    the domain itself (RFC 5321 5.1); a null MX ("0 ."): no hosts."""
    status, rds = resolve(server, domain, "MX", timeout=timeout)
    facts: dict = {"domain": domain, "mx_status": status, "null_mx": False, "implicit_mx": False, "hosts": []}
    if status == "bogus":
        return facts
    pairs = sorted((rd.preference, rd.exchange.to_text().rstrip(".").lower()) for rd in rds)
    if pairs and pairs[0][1] == "":
        facts["null_mx"] = True
        return facts
    if not pairs and status != "nxdomain":
        pairs = [(0, domain)]
        facts["implicit_mx"] = True
    for pref, host in pairs:
        h: dict = {"name": host, "preference": pref, "addresses": [], "address_status": {}}
        for rtype in ("A", "AAAA"):
            st, ards = resolve(server, host, rtype, timeout=timeout)
            h["address_status"][rtype] = st
            h["addresses"] += sorted((rd.address for rd in ards), key=ipaddress.ip_address)
        facts["hosts"].append(h)
    return facts
