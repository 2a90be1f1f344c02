"""``mailca rekey``: replace a host's key without breaking DANE (RFC 7671 §8.1, "current + next").

``stage`` puts the next key beside the lineage (``next-key.pem`` 0600 and ``next.json``); from
then on ``mailca dane`` also prints the next key's 3 1 1 record (its digest needs only the
public key).  The first time such a record is printed, ``first_published`` (and the TTL) is
stored (:func:`mark_published`); ``commit`` switches keys only once 2 x TTL has passed since
then, so every resolver cache has the new record before the server presents the new key.
``abort`` throws the staged key away.

Every write happens under the store lock through the store's atomic helpers; checks run
before anything is written, and again under the lock (another process may have staged,
committed or aborted meanwhile).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import NamedTuple

from ..core import certinfo
from ..errors import GateHeld, StoreError, UsageError

__all__ = ["NEXT_KEY", "NEXT_META", "RekeyResult", "rekey", "stage", "abort", "commit", "lineage_dir",
           "read_staged", "write_staged_meta", "mark_published", "drop_staged", "finish_interrupted",
           "commit_ready_at"]

NEXT_KEY = "next-key.pem"
NEXT_META = "next.json"


class RekeyResult(NamedTuple):
    """What one ``rekey`` run did: ``staged``/``aborted`` hold the staged keys' metadata
    (key_type, created, spki_sha256, first_published, ttl); ``certificates`` the new versions
    (as :meth:`mailca.issuance.ca.Issued.as_dict`); ``warnings`` what ``--force`` overrode."""

    host: str
    action: str  # stage | abort | commit
    staged: tuple[dict, ...] = ()
    aborted: tuple[dict, ...] = ()
    certificates: tuple[dict, ...] = ()
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        key = {"stage": "staged", "abort": "aborted", "commit": "certificates"}[self.action]
        return {"host": self.host, key: list(getattr(self, key))}


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
    """The staged next key's metadata (``next.json``) or None (shape-checked, no link followed)."""
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

    store.require_lock()
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


# ------------------------------------------------------------------ the command's work
def rekey(store, host: str, action: str | None, *, key_types: tuple[str, ...] | list[str] = (), force: bool = False,
          now: _dt.datetime | None = None, resolver: str | None = None, ns_port: int = 53,
          ports: tuple[str, ...] | list[str] = ()) -> RekeyResult:
    """``action``: stage | commit | abort, for the lineage(s) serving ``host`` (all key types,
    or only ``key_types``)."""
    from ..core import keys
    from ..storage.index import lineages_for_host as find_lineages

    if action is None:
        raise UsageError("say what to do: --stage, --commit or --abort")
    if action not in ("stage", "commit", "abort"):
        raise UsageError(f"unknown rekey action {action!r}: use --stage, --commit or --abort")
    if force and action != "commit":
        raise UsageError("--force only applies to --commit")
    entries = find_lineages(store, host)
    if key_types:
        wanted = [keys.check_key_type(k) for k in key_types]
        have = {e["key_type"] for e in entries}
        for k in wanted:
            if k not in have:
                raise UsageError(f"--key-type {k}: {entries[0]['name']} has no such certificate; it has {', '.join(sorted(have))}")
        entries = [e for e in entries if e["key_type"] in wanted]
    finish_interrupted(store, entries)
    now = now or certinfo.utcnow()
    if action == "stage":
        return stage(store, entries, now=now)
    if action == "abort":
        return abort(store, entries)
    return commit(store, entries, force=force, now=now, host=host, resolver=resolver, ns_port=ns_port, ports=ports)


def stage(store, entries: list[dict], *, now: _dt.datetime) -> RekeyResult:
    """Create the next key of every lineage in ``entries`` (all or nothing)."""
    from ..core import keys

    name = entries[0]["name"]
    for e in entries:
        if not (store.live_dir(e["name"], e["key_type"]) / "key.pem").exists():
            raise UsageError(f"the {e['key_type']} key of {name} is not in the store (signed from a CSR); "
                             "make the new key on the mail server and sign a new CSR instead")
        meta = read_staged(store, e)
        if meta is not None:
            raise StoreError(f"a next {e['key_type']} key for {name} is already staged (since {meta.get('created')}); "
                             f"use 'mailca rekey {name} --commit' or '--abort'")
    prepared = [(e, keys.generate(e["key_type"])) for e in entries]
    out = []
    with store.lock():
        for e, _ in prepared:  # again under the lock: another process may have staged meanwhile
            if read_staged(store, e) is not None:
                raise StoreError(f"a next {e['key_type']} key for {name} was staged meanwhile; "
                                 f"use 'mailca rekey {name} --commit' or '--abort'")
        for e, key in prepared:
            store.write_file(lineage_dir(store, e) / NEXT_KEY, keys.private_pem(key), private=True)
            meta = {"key_type": e["key_type"], "created": certinfo.iso(now), "spki_sha256": keys.spki_sha256(key.public_key()),
                    "first_published": None, "ttl": 0}
            write_staged_meta(store, e, meta)
            out.append(meta)
    return RekeyResult(name, "stage", staged=tuple(out))


def _staged_or_fail(store, entries: list[dict]) -> list[tuple[dict, dict]]:
    staged = [(e, read_staged(store, e)) for e in entries]
    staged = [(e, m) for e, m in staged if m is not None]
    if not staged:
        name = entries[0]["name"]
        raise StoreError(f"no next key is staged for {name}; run 'mailca rekey {name} --stage' first")
    return staged


def abort(store, entries: list[dict]) -> RekeyResult:
    """Throw the staged key(s) away."""
    staged = _staged_or_fail(store, entries)
    out = []
    with store.lock():
        for e, m in staged:
            drop_staged(store, e)
            out.append(m)
    return RekeyResult(entries[0]["name"], "abort", aborted=tuple(out))


def commit(store, entries: list[dict], *, force: bool, now: _dt.datetime, host: str | None = None,
           resolver: str | None = None, ns_port: int = 53, ports=()) -> RekeyResult:
    """Issue a certificate for each staged key and make it live (checks all lineages first,
    writes nothing unless all pass).  With ``resolver`` the DNS gate decides (every
    authoritative server and the validating resolver have served a matching record for
    2 x the served TTL); without it, the time 'mailca dane' first printed the record."""
    from ..core import keys
    from ..issuance import ca as camod

    name = entries[0]["name"]
    staged = _staged_or_fail(store, entries)
    warnings = []
    if resolver:
        from ..core.names import normalize_dns_name
        from ..dns import client as publish, gate as dnsgate

        gate = dnsgate.check(store, dnsgate.rekey_needs(store, staged, normalize_dns_name(host or name),
                                                        dnsgate.parse_ports(tuple(ports))),
                             publish.parse_server(resolver, "--resolver"), ns_port, now=now)
        if not gate.ready:
            if not force:
                raise GateHeld(f"DNS gate holds for {name}: {gate.explain()}; publish with 'mailca dane publish {name}' "
                                 "and commit again later (or --force)")
            warnings.append(f"DNS gate holds ({gate.explain()}); committing anyway (--force)")
        staged_check = []
    else:
        staged_check = staged
        if not force:
            warnings.append("DNS not asked (no --resolver / MAILCA_DNS_RESOLVER): the wait counted from when "
                            "'mailca dane' first printed the next record, not from when DNS served it")
    for e, m in staged_check:
        ready = commit_ready_at(m)
        if ready is None:
            msg = (f"the next {e['key_type']} key's TLSA record for {name} has never been printed; run 'mailca dane {name}', "
                   "publish it, wait 2 x TTL, then commit")
        elif now < ready:
            msg = (f"the next {e['key_type']} key's TLSA record for {name} was first printed {m['first_published']}; "
                   f"wait until {certinfo.iso(ready)} (2 x TTL {m['ttl']}s) so resolvers have it, then commit")
        else:
            continue
        if not force:
            raise GateHeld(msg + " (or --force)")
        warnings.append(msg.split(";")[0] + "; committing anyway (--force): DANE senders with a cached old record set "
                        "will fail until it expires")
    ca = camod.load_ca(store)
    prepared = []
    for e, m in staged:
        d = lineage_dir(store, e)
        key = keys.load_private(str(d / NEXT_KEY))
        if keys.spki_sha256(key.public_key()) != m["spki_sha256"]:
            raise StoreError(f"{d / NEXT_KEY} does not match {d / NEXT_META}; '--abort' and stage again")
        try:
            profile = camod.profile_for(ca, e.get("profile"))
        except Exception:
            profile = ca.profile
        days = camod.resolve_days(profile, None)
        dns, ips = camod.normalize_request(ca, profile, list(e["names"]), [], list(e.get("ips", [])))
        cert = camod.sign_leaf(ca, key.public_key(), dns=dns, ips=ips, days=days, profile=profile, now=now)
        prepared.append((e, m, key, cert, profile))
    out = []
    with store.lock():
        for e, m, *_ in prepared:  # again under the lock: a concurrent commit/abort wins
            now_staged = read_staged(store, e)
            if now_staged is None or now_staged["spki_sha256"] != m["spki_sha256"]:
                raise StoreError(f"the staged {e['key_type']} key of {name} changed meanwhile (another rekey ran); "
                                 "check 'mailca dane' and try again")
        for e, m, key, cert, profile in prepared:
            # new version live first, staged files last: a crash in between leaves a staged key
            # equal to the current one, which the next rekey/dane run recognises and drops
            issued = camod.commit_version(store, ca, name=e["name"], key_type=e["key_type"], key=key, cert=cert,
                                          profile=profile, source="rekey")
            drop_staged(store, e)
            out.append(issued.as_dict(store))
    return RekeyResult(name, "commit", certificates=tuple(out), warnings=tuple(warnings))
