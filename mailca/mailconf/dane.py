"""DANE TLSA records (RFC 6698/7671/7672) and safe key rollover state.

* DANE-EE ``3 1 1``: SHA-256 of the leaf's SubjectPublicKeyInfo - RFC 7672 §3.1.1's
  recommendation: it survives renewals that keep the key, whatever the CA does.
* DANE-TA ``2 0 1`` (SHA-256 of the whole trust-anchor certificate) and ``2 1 1`` (of its
  public key): the trust anchor must be IN the chain the server sends (RFC 7671 §5.2.2), so
  for the intermediate that is the normal chain, for the root the ``*-root.pem`` files.

Rollover (RFC 7671 §8.1, "current + next"): ``rekey --stage`` puts the next key beside the
lineage (``next-key.pem`` 0600 and ``next.json``); from then on :func:`records` also yields the
next key's 3 1 1 record (its digest needs only the public key).  The first time such a record
is printed, ``first_published`` (and the TTL) is stored; ``rekey --commit`` switches keys only
once 2 x TTL has passed since then, so every resolver cache has the new record before the
server presents the new key.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..core import certinfo
from ..errors import StoreError, UsageError

NEXT_KEY = "next-key.pem"
NEXT_META = "next.json"


# ----------------------------------------------------------------- host -> lineages
def find_lineages(store, host: str) -> list[dict]:
    """Current index entries (one per key type) of the lineage(s) serving ``host``.

    ``host`` is a lineage name (the first name given to ``mailca issue``) or any DNS name in
    a current certificate.  Revoked lineages are skipped.  Raises if there is none."""
    from ..core.names import normalize_dns_name

    name = normalize_dns_name(host, allow_wildcard=True, what="host")
    store.require_ca()
    current: dict[tuple[str, str], dict] = {}
    for e in store.entries():
        k = (e.get("name"), e.get("key_type"))
        if k not in current or e.get("version", 0) > current[k].get("version", 0):
            current[k] = e
    live = [e for e in current.values() if e.get("status") != "revoked"]
    by_name = [e for e in live if e.get("name") == name]
    if not by_name:
        lineage_names = sorted({e["name"] for e in live if name in e.get("names", [])})
        if len(lineage_names) > 1:
            raise UsageError(f"{host!r} is in several certificates ({', '.join(lineage_names)}); name one of those")
        by_name = [e for e in live if lineage_names and e["name"] == lineage_names[0]]
    if not by_name:
        raise StoreError(f"no certificate for {host!r} in {store.path}; issue one with 'mailca issue {name}'")
    return sorted(by_name, key=lambda e: e["key_type"])


def ca_domains(store) -> list[str]:
    """The CA's domains from ca.json, without loading (parsing) any certificate: the
    commands that only render text stay free of the cryptography import."""
    return [str(d) for d in store.read_ca_meta()["domains"]]


# ----------------------------------------------------------------------- digests
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


def parse_ports(ports) -> list[int]:
    out: list[int] = []
    for p in ports or (25,):
        s = str(p)
        if not s.isdigit() or not 1 <= int(s) <= 65535:
            raise UsageError(f"--port {p!r} is not a TCP port number (1-65535), e.g. 25")
        if int(s) not in out:
            out.append(int(s))
    return out


# ------------------------------------------------------------------ staged keys
def lineage_dir(store, entry: dict) -> Path:
    return store.lineage_dir(entry["name"], entry["key_type"])


def _staged_meta_ok(meta) -> bool:
    if not isinstance(meta, dict) or not isinstance(meta.get("spki_sha256"), str):
        return False
    ttl = meta.get("ttl")
    if ttl is not None and (type(ttl) is not int or not 0 <= ttl < 10 ** 9):
        return False
    fp = meta.get("first_published")
    if fp:
        try:
            certinfo.parse_iso(fp)
        except (TypeError, ValueError, OverflowError):
            return False
    return True


def read_staged(store, entry: dict) -> dict | None:
    """The staged next key's metadata (``next.json``) or None."""
    d = lineage_dir(store, entry)
    meta_p, key_p = d / NEXT_META, d / NEXT_KEY
    if not meta_p.exists() or not key_p.exists():
        return None
    fix = f"remove it and {key_p} and stage again"
    meta = store.read_json(meta_p, fix=fix)
    if not _staged_meta_ok(meta):
        raise StoreError(f"{meta_p} is corrupt (want an object with spki_sha256, a ttl 0..10^9 and an ISO "
                         f"first_published); {fix}")
    return meta


def write_staged_meta(store, entry: dict, meta: dict) -> None:
    store.write_file(lineage_dir(store, entry) / NEXT_META, (json.dumps(meta, sort_keys=True) + "\n").encode(), private=True)


def mark_published(store, entries: list[dict], ttl: int, now: _dt.datetime) -> list[dict]:
    """Record that the next-key records were printed now (first time only; the TTL kept is
    the largest printed).  Returns the staged metas, updated."""
    out = []
    with store.lock():
        for e in entries:
            meta = read_staged(store, e)
            if meta is None:
                continue
            changed = False
            if not meta.get("first_published"):
                meta["first_published"] = certinfo.iso(now)
                changed = True
            if int(meta.get("ttl") or 0) < ttl:
                meta["ttl"] = ttl
                changed = True
            if changed:
                write_staged_meta(store, e, meta)
            out.append(meta)
    return out


def drop_staged(store, entry: dict) -> None:
    """Remove the staged key files of ``entry``'s lineage (under the lock)."""
    import contextlib
    import os

    from ..storage.store import fsync_dir

    d = lineage_dir(store, entry)
    for f in (NEXT_META, NEXT_KEY):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(d / f)
    fsync_dir(d)


def finish_interrupted(store, entries: list[dict]) -> list[dict]:
    """A staged key that already IS the current key means a commit was interrupted after the
    new version went live: drop the leftovers.  Returns the entries that still have a real
    staged key."""
    left = []
    for e in entries:
        meta = read_staged(store, e)
        if meta is not None and meta["spki_sha256"] == e["spki_sha256"]:
            with store.lock():
                drop_staged(store, e)
        else:
            left.append(e)
    return left


def commit_ready_at(meta: dict) -> _dt.datetime | None:
    if not meta.get("first_published"):
        return None
    return certinfo.parse_iso(meta["first_published"]) + _dt.timedelta(seconds=2 * int(meta.get("ttl") or 0))


# ------------------------------------------------------------------------ records
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
            der = pem_cert_der(store.ca_file("intermediate.crt" if ta == "intermediate" else "root.crt"))
            for sel in ta_selectors:
                data = hashlib.sha256(der).hexdigest() if sel == 0 else spki_sha256_of_der(der)
                out.append(Record(port, 2, sel, 1, data, "ta", None,
                                  f"DANE-TA: the {ta} CA ({'certificate' if sel == 0 else 'public key'}); the server must send it"
                                  + (" - use the *-root.pem chain ('mailca postfix --dane-ta root')" if ta == "root" else ""),
                                  host, ttl))
    return out
