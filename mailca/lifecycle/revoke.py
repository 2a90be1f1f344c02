"""Revocation: ``mailca revoke NAME|SERIAL [--reason R]``.

One straight line: parse the reason and the target (before anything is touched) ->
``store.lock()`` -> pick the certificates from the index -> write the revocation journal
(``crl/revocations.tsv``) -> mark the index entries (``status: "revoked"``, ``revoked_at``,
``revocation_reason``) -> write a fresh CRL.  Journal before index: a crash in between
leaves a certificate on the CRL that the index still calls active (the next ``revoke``
reconciles both), never the dangerous opposite.

Choices (see docs/revocation.md):

* NAME revokes the *current* (newest) version of the name's lineage.  A name with
  several lineages (a dual ECDSA + RSA pair) needs ``--key-type`` or ``--all-key-types``:
  revocation cannot be undone, so mailca does not guess.
* SERIAL is hexadecimal, as ``mailca status`` and ``openssl x509 -serial`` print it
  (colons, spaces and a ``0x`` prefix are ignored, any case).  Decimal is not accepted: a
  serial made only of digits would be ambiguous.
* Revoking a certificate that is revoked already is not an error (it refreshes the CRL),
  so that a run interrupted by a crash can simply be repeated; asking for a *different*
  reason is refused - a revocation and its reason are final.
* ``keyCompromise`` also revokes every other unrevoked certificate with the *same public
  key* - ``mailca renew`` keeps the key by default (so TLSA 3 1 1 records stay valid),
  and an attacker holding the key could present any of them.
* Reasons that make no sense for a server certificate are refused: cACompromise and
  aACompromise (they are about a CA or an attribute authority), certificateHold (mailca
  revocations are permanent) and removeFromCRL (only meaningful in delta CRLs, which
  mailca does not issue).  ``unspecified`` is the default; the CRL then carries no
  reasonCode, as RFC 5280 5.3.1 recommends.
* The ``live`` link is left alone: the revoked certificate keeps being served until you
  issue a new one.  Falling back silently to an older version could serve a certificate
  with other names or another key (breaking TLSA records) - or one that is itself stale.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field

from ..core import certinfo
from .crl import REASON_CODES
from ..errors import UsageError
from ..storage.index import Index

__all__ = ["REASON_CODES", "Plan", "RevokeResult", "plan", "revoke", "reapply_journal", "reconcile"]

# Reasons accepted for a server certificate, in the order the help lists them.
LEAF_REASONS = ("unspecified", "keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged",
                "privilegeWithdrawn")
REFUSED = {
    "cACompromise": "is for a compromised CA key, not a server certificate; if the intermediate key leaked, "
                    "create a new CA (mailca init --dir NEW) and reissue every certificate",
    "aACompromise": "is for attribute authorities (RFC 5755), not server certificates",
    "certificateHold": "is a temporary suspension, but mailca revocations are permanent; use superseded or "
                       "cessationOfOperation, or keyCompromise if the key may have leaked",
    "removeFromCRL": "only lifts a certificateHold in a delta CRL; mailca neither holds certificates nor issues "
                     "delta CRLs, and a revocation cannot be undone",
}
_FOLD = {re.sub(r"[-_ ]", "", k).lower(): k for k in REASON_CODES}
_SERIAL_STRIP = re.compile(r"[:\s]")
_HEX = re.compile(r"[0-9a-fA-F]+")


def parse_reason(value: str | None) -> str:
    """The RFC 5280 name of a reason given in any case (hyphens/underscores ignored)."""
    if value is None:
        return "unspecified"
    key = re.sub(r"[-_ ]", "", value.strip()).lower()
    canonical = _FOLD.get(key)
    if canonical is None:
        import difflib

        close = difflib.get_close_matches(key, list(_FOLD), n=1, cutoff=0.6)
        hint = f" (did you mean {_FOLD[close[0]]}?)" if close and _FOLD[close[0]] in LEAF_REASONS else ""
        raise UsageError(f"unknown revocation reason {value!r}{hint}; valid: {', '.join(LEAF_REASONS)}")
    if canonical in REFUSED:
        raise UsageError(f"reason {canonical} {REFUSED[canonical]}; valid here: {', '.join(LEAF_REASONS)}")
    return canonical


def parse_serial(value: str) -> int:
    """A hex serial, with or without colons/spaces/0x, any case."""
    s = _SERIAL_STRIP.sub("", value)
    if s[:2].lower() == "0x":
        s = s[2:]
    if not s or not _HEX.fullmatch(s):
        raise UsageError(
            f"{value!r} is neither a host name (like mail.example.org) nor a hexadecimal serial "
            "(like 3a:9f:... from 'mailca status' or 'openssl x509 -noout -serial')"
        )
    n = int(s, 16)
    if n == 0:
        raise UsageError(f"serial {value!r} is zero; certificate serials are positive (see 'mailca status')")
    if n.bit_length() > 160:
        raise UsageError(f"serial {value!r} is longer than 20 octets, the RFC 5280 maximum; check that it is complete")
    return n


def parse_target(value: str | None) -> tuple[str, object]:
    """('name', A-label name) or ('serial', int).  Every name has a dot; no serial has one."""
    from ..core.names import is_ip_literal, normalize_dns_name

    if value is None or not value.strip():
        raise UsageError("name what to revoke: 'mailca revoke mail.example.org' or 'mailca revoke SERIAL' "
                         "(serials: 'mailca status')")
    v = value.strip()
    if is_ip_literal(v.strip("[]")):
        raise UsageError(f"{v!r} is an IP address; revoke by the certificate's host name or serial (see 'mailca status')")
    if "." in v:
        return "name", normalize_dns_name(v, allow_wildcard=True)
    return "serial", parse_serial(v)


@dataclass
class Plan:
    targets: list[dict] = field(default_factory=list)   # index entries to revoke
    already: list[dict] = field(default_factory=list)   # matched, but revoked before (idempotent)
    same_key: set = field(default_factory=set)         # serials added because they share the key
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RevokeResult:
    """What ``revoke`` did (or would do): rows for the revoked and already-revoked
    certificates (serial, name, names, key_type, version, not_after, revoked_at, reason,
    same_key), the refreshed CRL (None for a dry run) and notes.  ``as_dict()`` is the
    documented ``--json`` output."""

    dry_run: bool
    revoked: tuple[dict, ...]
    already_revoked: tuple[dict, ...]
    crl: dict | None
    notes: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "revoked": list(self.revoked), "already_revoked": list(self.already_revoked),
                "crl": self.crl, "notes": list(self.notes)}


def _serial_of(e: dict) -> int | None:
    try:
        return int(e["serial"], 16)
    except (KeyError, TypeError, ValueError):
        return None


def _already(p: Plan, e: dict, reason: str, explicit: bool) -> None:
    """A matched certificate that is revoked already: fine (idempotent, so that a re-run
    after a crash completes) unless the user asks for a different reason."""
    old = e.get("revocation_reason") or "unspecified"
    if explicit and reason != old:
        raise UsageError(
            f"{e.get('name')} ({e.get('key_type')}) serial {e['serial']} is already revoked as {old} since "
            f"{e.get('revoked_at', '?')}; a revocation and its reason are final, so --reason {reason} cannot apply"
        )
    p.already.append(e)
    p.notes.append(f"{e.get('name')} ({e.get('key_type')}) serial {e['serial']} was already revoked on "
                   f"{e.get('revoked_at', '?')} ({old})")


def plan(index, ca, kind: str, target, *, reason: str, key_type: str | None = None,
         all_key_types: bool = False, explicit_reason: bool = True) -> Plan:
    """Pick the index entries to revoke (raises UsageError with one line if none fits).
    Certificates revoked before land in ``Plan.already`` (not an error, unless
    ``explicit_reason`` names a different reason)."""
    certs = index.entries
    p = Plan()
    if kind == "serial":
        if key_type or all_key_types:
            raise UsageError("--key-type/--all-key-types only apply to a NAME; a serial names exactly one certificate")
        hexs = format(target, "x")
        for label, cert in (("intermediate CA", ca.intermediate), ("root CA", ca.root)):
            if cert.serial_number == target:
                raise UsageError(f"serial {hexs} is the {label} certificate, which cannot be listed on its own CRL; "
                                 "to retire a CA, create a new one (mailca init --dir NEW) and reissue")
        found = [e for e in certs if _serial_of(e) == target]
        if not found:
            raise UsageError(f"no certificate with serial {hexs} in {len(certs)} issued by this CA; "
                             "'mailca status' lists the serials (hexadecimal)")
        e = found[0]
        if e.get("status") == "revoked":
            _already(p, e, reason, explicit_reason)
        else:
            p.targets.append(e)
    else:
        name = target
        mine = [e for e in certs if e.get("name") == name]
        if not mine:
            in_san = sorted({e.get("name") for e in certs if name in (e.get("names") or []) and e.get("status") != "revoked"})
            if in_san:
                raise UsageError(f"{name} is not a certificate name but a SAN of {', '.join(in_san)}; "
                                 f"revoke by that name (or by serial, see 'mailca status')")
            known = sorted({str(e.get("name")) for e in certs})
            listing = ", ".join(known[:5]) + (" ..." if len(known) > 5 else "") if known else "none yet"
            raise UsageError(f"no certificate named {name}; names in this store: {listing}")
        from ..storage.index import current_by_lineage

        lineages = {kt or "?": e for (_, kt), e in current_by_lineage(mine).items()}
        if key_type:
            from ..core.keys import check_key_type

            kt = check_key_type(key_type)
            if kt not in lineages:
                raise UsageError(f"{name} has no {kt} certificate; it has: {', '.join(sorted(lineages))}")
            chosen = [lineages[kt]]
        elif len(lineages) > 1 and not all_key_types:
            parts = ", ".join(f"{kt} serial {e['serial']}" for kt, e in sorted(lineages.items()))
            raise UsageError(f"{name} has {len(lineages)} current certificates ({parts}); "
                             "add --key-type TYPE to pick one or --all-key-types to revoke them all")
        else:
            chosen = [lineages[k] for k in sorted(lineages)]
        for e in chosen:
            if e.get("status") == "revoked":
                _already(p, e, reason, explicit_reason)
            else:
                p.targets.append(e)
    if reason == "keyCompromise":
        spkis = {e.get("spki_sha256") for e in p.targets + p.already if e.get("spki_sha256")}
        chosen_ids = {id(e) for e in p.targets}
        for e in certs:
            if id(e) not in chosen_ids and e.get("status") != "revoked" and e.get("spki_sha256") in spkis:
                p.targets.append(e)
                p.same_key.add(e["serial"])
    return p


def reconcile(index, journal: dict[int, dict]) -> list[str]:
    """Make index and journal agree (after a crash between the two writes, or an index
    rebuilt from the archive): revoked in either means revoked in both.  Returns notes."""
    from .crl import journal_record

    notes = []
    by_serial = {}
    for e in index.entries:
        s = _serial_of(e)
        if s is not None:
            by_serial[s] = e
    for s, rec in journal.items():
        e = by_serial.get(s)
        if e is not None and e.get("status") != "revoked":
            index.mark_revoked(e, at=rec["revoked_at"], reason=rec["reason"])
            notes.append(f"re-applied the revocation of serial {rec['serial']} ({rec['name']}) from the journal")
    for s, e in by_serial.items():
        if e.get("status") == "revoked" and s not in journal:
            try:
                rec = journal_record(e)
                from .crl import der_time_from_iso

                der_time_from_iso(rec["revoked_at"])
            except (KeyError, TypeError, ValueError):
                continue
            if rec["reason"] not in REASON_CODES:
                rec["reason"] = "unspecified"
            journal[s] = rec
            notes.append(f"added revoked serial {rec['serial']} ({rec['name']}) to the journal")
    return notes


def _row(e: dict, same_key: bool) -> dict:
    return {
        "serial": e["serial"],
        "name": e.get("name"),
        "names": e.get("names", []),
        "key_type": e.get("key_type"),
        "version": e.get("version"),
        "not_after": e.get("not_after"),
        "revoked_at": e.get("revoked_at"),
        "reason": e.get("revocation_reason"),
        "same_key": same_key,
    }


def revoke(store, target: str | None, *, reason: str | None = None, key_type: str | None = None,
           all_key_types: bool = False, dry_run: bool = False, now: _dt.datetime | None = None) -> RevokeResult:
    """Revoke and refresh the CRL (see :class:`RevokeResult`)."""
    from . import crl as crlmod
    from ..issuance.ca import load_ca

    reason_name = parse_reason(reason)
    explicit = reason is not None
    kind, value = parse_target(target)
    if key_type is not None and all_key_types:
        raise UsageError("--key-type and --all-key-types contradict each other; give one")
    ca = load_ca(store)
    now = now or certinfo.utcnow()
    when = certinfo.iso(now)
    if dry_run:
        p = plan(Index.load(store), ca, kind, value, reason=reason_name, key_type=key_type,
                 all_key_types=all_key_types, explicit_reason=explicit)
        rows = [_row(e, e["serial"] in p.same_key) | {"revoked_at": when, "reason": reason_name} for e in p.targets]
        return RevokeResult(True, tuple(rows), tuple(_row(e, False) for e in p.already), None, tuple(p.notes))
    ca.intermediate_key  # noqa: B018 - load and check it before the lock: the CRL needs it
    with crlmod.bulk_objects(), store.lock():
        index = Index.load(store)
        p = plan(index, ca, kind, value, reason=reason_name, key_type=key_type, all_key_types=all_key_types,
                 explicit_reason=explicit)
        journal = crlmod.read_journal(store)
        if journal is None:
            journal = crlmod.journal_from_index(index.entries)
        crlmod.next_number(store)  # crl/state.json must be readable before anything is written
        # an interrupted revoke is finished (temp files swept) by the next locked command
        store.note_intent(crlmod.crl_dir(store))
        for e in p.targets:
            prior = journal.get(int(e["serial"], 16))
            # a run interrupted between journal and index already chose the time: keep it
            keep = prior is not None and prior["reason"] == reason_name
            index.mark_revoked(e, at=prior["revoked_at"] if keep else when, reason=reason_name)
            journal[int(e["serial"], 16)] = crlmod.journal_record(e)
        notes = p.notes + reconcile(index, journal)
        if p.targets or notes != p.notes:
            crlmod.write_journal(store, journal)   # 1. the CRL's source
            index.save()                           # 2. listings (status, renew)
        # 3. the published list - also when everything was revoked before, so that a re-run
        #    after a crash between index and CRL completes the job
        result = crlmod.write_crl_locked(store, ca, now=now, entries=crlmod.entries_from_journal_records(journal))
    rows = [_row(e, e["serial"] in p.same_key) for e in p.targets]
    return RevokeResult(False, tuple(rows), tuple(_row(e, False) for e in p.already), result.as_dict(), tuple(notes))


def reapply_journal(store) -> list[str]:
    """For ``mailca doctor --fix`` after rebuilding index.json from the archive: put the
    revocation marks from the journal back into the index.  Caller holds the lock."""
    from . import crl as crlmod

    journal = crlmod.read_journal(store)
    if not journal:
        return []
    index = Index.load(store)
    notes = reconcile(index, journal)
    if notes:
        crlmod.write_journal(store, journal)
        index.save()
    return notes
