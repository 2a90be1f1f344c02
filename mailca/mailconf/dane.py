"""DANE TLSA records (RFC 6698/7671/7672) and safe key rollover state.

* DANE-EE ``3 1 1``: SHA-256 of the leaf's SubjectPublicKeyInfo - RFC 7672 §3.1.1's
  recommendation: it survives renewals that keep the key, whatever the CA does.
* DANE-TA ``2 0 1`` (SHA-256 of the whole trust-anchor certificate) and ``2 1 1`` (of its
  public key): the trust anchor must be IN the chain the server sends (RFC 7671 §5.2.2), so
  for the intermediate that is the normal chain, for the root the ``*-root.pem`` files.

Rollover (RFC 7671 §8.1, "current + next"): the staged next key of ``mailca rekey --stage``
(:mod:`mailca.lifecycle.rekey`, which owns those files) adds its 3 1 1 record to
:func:`records`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..dns.gate import parse_ports, pem_cert_der, spki_sha256_of_der
from ..errors import StoreError, UsageError
from ..lifecycle.rekey import read_staged
from ..storage.index import lineages_for_host as find_lineages

__all__ = ["Record", "find_lineages", "ca_domains", "parse_ports", "records", "pem_cert_der", "spki_sha256_of_der"]


# ----------------------------------------------------------------- host -> lineages
# find_lineages(store, host): the current lineages serving a host (answered by the index)


def ca_domains(store) -> list[str]:
    """The CA's domains from ca.json, without loading (parsing) any certificate: the
    commands that only render text stay free of the cryptography import."""
    from ..storage.castate import load_castate

    return list(load_castate(store).domains)


# ----------------------------------------------------------------------- digests
@dataclass(frozen=True)
class Record:
    port: int
    usage: int
    selector: int
    mtype: int
    data: str
    role: str  # current | next | ta
    key_type: str | None
    what: str
    host: str
    ttl: int

    @property
    def owner(self) -> str:
        return f"_{self.port}._tcp.{self.host}."

    @property
    def rdata(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data}"

    def line(self) -> str:
        return f"{self.owner} {self.ttl} IN TLSA {self.rdata}"

    def as_dict(self) -> dict:
        return {"owner": self.owner, "port": self.port, "ttl": self.ttl, "usage": self.usage, "selector": self.selector,
                "matching_type": self.mtype, "data": self.data, "rdata": self.rdata, "role": self.role,
                "key_type": self.key_type, "what": self.what, "line": self.line()}


# ------------------------------------------------------------------------ records
def _ta_certs(store, entries: list[dict], ta: str) -> list[tuple[bytes, str, str]]:
    """DER of the trust anchors the 2 x y records must name: for the intermediate, the one in
    each host lineage's LIVE chain (what the server sends now) and, when ``ca renew-intermediate``
    made a new one that the leaves do not carry yet, that coming one too."""
    if ta == "root":
        return [(pem_cert_der(store.ca_file("root.crt")), "ta", "the root CA; the server must send it")]
    out: list[tuple[bytes, str, str]] = []
    for e in entries:
        chain = store.live_dir(e["name"], e["key_type"]) / "chain.pem"
        if chain.exists():
            der = pem_cert_der(chain)
            if all(der != d for d, *_ in out):
                out.append((der, "ta", "the intermediate CA in the live chain the server sends"))
    coming = pem_cert_der(store.ca_file("intermediate.crt"))
    if not out:
        out.append((coming, "ta", "the intermediate CA; the server must send it"))
    elif all(coming != d for d, *_ in out):
        out.append((coming, "ta-next", "the renewed intermediate CA that the next renewal of the leaves will send "
                                       "(publish it now; the old one stays until every leaf is renewed)"))
    return out


def records(store, entries: list[dict], *, host: str, ports: list[int], usage: str, ta: str, ta_selectors: list[int],
            ttl: int) -> list[Record]:
    """TLSA records for ``entries`` (current keys, plus staged next keys)."""
    if usage not in ("3", "2", "both"):
        raise UsageError(f"--usage {usage!r}: use 3 (DANE-EE), 2 (DANE-TA) or both")
    if ta not in ("intermediate", "root"):
        raise UsageError(f"--ta {ta!r}: use intermediate or root")
    out: list[Record] = []
    for port in ports:
        if usage in ("3", "both"):
            for e in entries:
                out.append(Record(port, 3, 1, 1, e["spki_sha256"], "current", e["key_type"],
                                  f"DANE-EE: {e['key_type']} key of the current certificate (serial {e['serial'][:16]}...)",
                                  host, ttl))
                meta = read_staged(store, e)
                if meta is not None and meta["spki_sha256"] != e["spki_sha256"]:  # equal: commit interrupted
                    out.append(Record(port, 3, 1, 1, meta["spki_sha256"], "next", e["key_type"],
                                      f"DANE-EE: staged NEXT {e['key_type']} key ('mailca rekey --commit' switches to it)",
                                      host, ttl))
        if usage in ("2", "both"):
            for der, role, what in _ta_certs(store, entries, ta):
                for sel in ta_selectors:
                    data = hashlib.sha256(der).hexdigest() if sel == 0 else spki_sha256_of_der(der)
                    if any(r.port == port and r.usage == 2 and r.selector == sel and r.data == data for r in out):
                        continue  # 2 1 1 of a renewed intermediate (same key) is one record
                    out.append(Record(port, 2, sel, 1, data, role, None,
                                      f"DANE-TA: {what} ({'certificate' if sel == 0 else 'public key'})"
                                      + (" - use the *-root.pem chain ('mailca postfix --dane-ta root')" if ta == "root" else ""),
                                      host, ttl))
    return out
