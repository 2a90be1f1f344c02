"""``mailca check --mx DOMAIN``: every MX host of DOMAIN in priority order x every A/AAAA
address, audited in parallel (the full per-port audit of ``audit.py``, certificate name =
the MX host name), one report per address, plus the MX facts (DNSSEC status of the MX
answer, of every address answer).  Resolving is ``dns/client.py``'s, shared with --dane.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from ..errors import ConnectError
from .audit import Options, audit
from .report import Report
from .smtp import Endpoint

__all__ = ["MXReport", "audit_mx", "SCHEMA"]

SCHEMA = "mailca-check-mx/1"
MAX_TARGETS = 32


@dataclass(frozen=True)
class MXReport:
    domain: str
    mx: dict
    targets: tuple  # ((mx host, address, Report), ...) in priority order
    elapsed: float

    @property
    def reports(self) -> list[Report]:
        return [r for _, _, r in self.targets]

    @property
    def findings(self):
        return [f for r in self.reports for f in r.findings]

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "domain": self.domain, "mx": self.mx, "elapsed_seconds": round(self.elapsed, 3),
                "reports": [{"mx": h, "address": a, **r.to_json()} for h, a, r in self.targets]}


def audit_mx(domain: str, resolver: tuple[str, int], specs: list[tuple[int, str]], opts: Options,
             *, dns_timeout: float = 5.0) -> MXReport:
    """Raises ConnectError if the resolver does not answer, the MX answer is bogus, the domain
    has a null MX / no MX and no address, or no MX host has an address."""
    from ..dns.client import mx_hosts

    t0 = time.monotonic()
    facts = mx_hosts(resolver, domain, timeout=dns_timeout)
    if facts["mx_status"] == "bogus":
        raise ConnectError(f"{domain}: the MX answer is bogus (DNSSEC validation failed at {resolver[0]}@{resolver[1]})")
    if facts["null_mx"]:
        raise ConnectError(f"{domain}: null MX (\"0 .\"): the domain accepts no mail, nothing to audit")
    targets = [(h["name"], a) for h in facts["hosts"] for a in h["addresses"]]
    if not targets:
        raise ConnectError(f"{domain}: no MX host with an A/AAAA address "
                           f"({', '.join(h['name'] for h in facts['hosts']) or 'no MX records'})")
    if len(targets) > MAX_TARGETS:
        facts["skipped"] = [f"{h} {a}" for h, a in targets[MAX_TARGETS:]]
        targets = targets[:MAX_TARGETS]

    def one(t):
        host, addr = t
        o = replace(opts, name=host)
        try:
            return audit(addr, [Endpoint(addr, p, role, opts.timeout) for p, role in specs], o)
        except ConnectError as exc:  # audit() reports per port; this is a safety net
            from .report import PortReport

            return Report(addr, host, tuple(PortReport(p, role, "starttls", exc.message) for p, role in specs),
                          "", 0.0)

    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        reports = list(pool.map(one, targets))
    if facts["mx_status"] == "insecure":
        # Not a TLS problem of any port: a fact (DANE needs a signed MX answer; see --dane).
        facts["note"] = "the MX answer is not DNSSEC-validated (insecure): DANE cannot apply (see --dane)"
    return MXReport(domain, facts, tuple((h, a, r) for (h, a), r in zip(targets, reports)),
                    time.monotonic() - t0)
