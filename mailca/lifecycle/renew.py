"""Certificate lifecycle: states, "what is due", renewal, deploy hooks (the intermediate CA's
renewal lives in :mod:`mailca.lifecycle.intermediate`, key rollover in :mod:`mailca.lifecycle.rekey`).

States (computed from the index only, never by parsing certificates, so that ``status``
and ``renew --dry-run`` over 10,000 certificates stay fast):

* ``revoked``    - the entry's status is "revoked" (set by ``mailca revoke``);
* ``superseded`` - an older version of a lineage (a lineage is (name, key type));
* ``expired``    - now >= notAfter;
* ``due``        - the renewal point has passed: ``fraction`` of the lifetime
  (profile ``renew.fraction``, default 2/3) or, with ``--days-before N``, fewer than N days left;
* ``valid``      - otherwise.

Renewal keeps the key (the live ``key.pem`` bytes are reused unchanged, so DANE 3 1 1 records
stay valid) unless ``new_key``.  Each renewal is one :func:`mailca.issuance.ca.commit_version`: a new
archive version, the index, then the ``live`` link - crash-safe like ``issue``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field

from ..core import certinfo
from ..errors import HookError, MailcaError, StoreError, UsageError
from ..storage.index import Index, current_by_lineage as lineages

__all__ = ["Policy", "RenewResult", "renew", "load_policy", "intermediate_warning", "status_rows",
           "resolve_names", "days_left", "lineages"]

HOOK_TIMEOUT = 600


# ----------------------------------------------------------------- states
# lineages(entries): (name, key type) -> the current entry of that lineage (storage.index)


@dataclass(frozen=True)
class Policy:
    fraction: float = 2 / 3
    days_before: int | None = None


def _t(s: str) -> _dt.datetime:
    """Fast parse of the index's ISO times (2027-01-01T00:00:00Z); strptime is ~20x slower,
    which matters for status over 10,000 certificates."""
    try:
        return _dt.datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith("Z") else s)
    except ValueError:
        return certinfo.parse_iso(s)


def renew_at(entry: dict, policy: Policy) -> _dt.datetime:
    """The moment ``entry`` becomes due."""
    nb, na = _t(entry["not_before"]), _t(entry["not_after"])
    if policy.days_before is not None:
        return na - _dt.timedelta(days=policy.days_before)
    return nb + (na - nb) * policy.fraction


def state_of(entry: dict, now: _dt.datetime, policy: Policy, *, current: bool = True) -> str:
    if entry.get("status") == "revoked":
        return "revoked"
    if not current:
        return "superseded"
    if now >= _t(entry["not_after"]):
        return "expired"
    if now >= renew_at(entry, policy):
        return "due"
    return "valid"


def days_left(entry: dict, now: _dt.datetime) -> int:
    delta = _t(entry["not_after"]) - now
    return int(delta.total_seconds() // 86400)


def status_rows(entries: list[dict], now: _dt.datetime, policy: Policy, *, names: list[str] | None = None,
                all_versions: bool = False) -> list[dict]:
    """One row per certificate for ``mailca status`` (current versions; all with ``all_versions``)."""
    cur = lineages(entries)
    current_ids = {id(e) for e in cur.values()}
    rows = []
    for e in entries:
        is_cur = id(e) in current_ids
        if not is_cur and not all_versions:
            continue
        if names and e.get("name") not in names:
            continue
        row = {
            "name": e["name"],
            "names": e.get("names", []),
            "ips": e.get("ips", []),
            "serial": e["serial"],
            "key_type": e["key_type"],
            "version": e.get("version"),
            "not_before": e["not_before"],
            "not_after": e["not_after"],
            "days_left": days_left(e, now),
            "state": state_of(e, now, policy, current=is_cur),
            "renew_at": certinfo.iso(renew_at(e, policy)),
            "spki_sha256": e.get("spki_sha256"),
            "tlsa_3_1_1": f"3 1 1 {e.get('spki_sha256')}",
            "sha256_fingerprint": e.get("cert_sha256"),
            "source": e.get("source", "issue"),
            "path": e.get("path"),
        }
        if e.get("status") == "revoked":
            row["revoked_at"] = e.get("revoked_at")
            row["revocation_reason"] = e.get("revocation_reason")
        rows.append(row)
    rows.sort(key=lambda r: (r["name"], r["key_type"], -(r["version"] or 0)))
    return rows


def resolve_names(entries: list[dict], wanted: list[str]) -> list[str]:
    """Map user-given names (U- or A-labels, any case) to lineage names; UsageError if unknown."""
    from ..core.names import normalize_dns_name

    known = {e.get("name") for e in entries}
    out = []
    for raw in wanted:
        name = raw.strip().lower().rstrip(".")
        if name not in known:
            try:
                name = normalize_dns_name(raw, allow_wildcard=True)
            except MailcaError:
                pass
        if name not in known:
            hint = ", ".join(sorted(known)[:5]) + (" ..." if len(known) > 5 else "") if known else "none issued yet"
            raise UsageError(f"no certificate named {raw!r} in the store; known names: {hint} (see 'mailca status')")
        if name not in out:
            out.append(name)
    return out


# ------------------------------------------------------------------ hooks
@dataclass(frozen=True)
class Hook:
    text: str
    argv: tuple[str, ...]
    path: str


def parse_hooks(cmds: list[str]) -> list[Hook]:
    """Parse each --deploy-hook CMD with shlex (no shell) and find its program; UsageError/HookError
    before anything is renewed."""
    hooks = []
    for cmd in cmds:
        try:
            argv = shlex.split(cmd)
        except ValueError as exc:
            raise UsageError(f"--deploy-hook {cmd!r} cannot be parsed ({exc}); quote it like a shell word list") from None
        if not argv:
            raise UsageError("--deploy-hook '' is empty; give a command such as 'postfix reload'")
        prog = argv[0]
        path = shutil.which(prog) if os.sep not in prog else (prog if os.access(prog, os.X_OK) and os.path.isfile(prog) else None)
        if path is None:
            raise HookError(
                f"deploy hook {cmd!r}: program {prog!r} not found or not executable (PATH={os.environ.get('PATH', '')}); "
                "nothing was renewed"
            )
        hooks.append(Hook(cmd, tuple(argv), path))
    return hooks


def hook_env(store, renewed: list[dict]) -> dict:
    from ..core.childenv import child_env

    env = child_env()  # hooks never see the passphrase
    names: list[str] = []
    for r in renewed:
        for n in r["names"]:
            if n not in names:
                names.append(n)
    live = [r["live_dir"] for r in renewed]
    env.update({
        "MAILCA_STORE": str(store.path),
        "MAILCA_RENEWED_NAMES": " ".join(names),
        "MAILCA_RENEWED_LINEAGES": " ".join(f"{r['name']}/{r['key_type']}" for r in renewed),
        "MAILCA_RENEWED_LIVE_DIRS": " ".join(live),
        "MAILCA_RENEWED_FULLCHAINS": " ".join(os.path.join(d, "fullchain.pem") for d in live),
        "MAILCA_RENEWED_KEYS": " ".join(os.path.join(d, "key.pem") for d in live),
        "MAILCA_RENEWED_JSON": json.dumps(renewed, sort_keys=True),
        # certbot's names, so existing deploy hooks work unchanged
        "RENEWED_DOMAINS": " ".join(names),
        "RENEWED_LINEAGE": live[0] if live else "",
    })
    return env


def run_hooks(hooks: list[Hook], store, renewed: list[dict]) -> list[dict]:
    """Run each hook once (argv list, no shell).  Returns results; raises nothing."""
    env = hook_env(store, renewed)
    results = []
    for h in hooks:
        try:
            p = subprocess.run(list(h.argv), env=env, capture_output=True, text=True, timeout=HOOK_TIMEOUT,
                               stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            results.append({"hook": h.text, "ok": False, "error": f"program {h.argv[0]!r} not found"})
            continue
        except PermissionError:
            results.append({"hook": h.text, "ok": False, "error": f"program {h.argv[0]!r} is not executable"})
            continue
        except subprocess.TimeoutExpired:
            results.append({"hook": h.text, "ok": False, "error": f"timed out after {HOOK_TIMEOUT} s"})
            continue
        except OSError as exc:
            results.append({"hook": h.text, "ok": False, "error": exc.strerror or str(exc)})
            continue
        res = {"hook": h.text, "ok": p.returncode == 0, "exit": p.returncode,
               "output": (p.stdout + p.stderr).strip()[-2000:]}
        if p.returncode != 0:
            last = (p.stderr or p.stdout).strip().splitlines()
            res["error"] = f"exited with status {p.returncode}" + (f": {last[-1]}" if last else "")
        results.append(res)
    return results


# ---------------------------------------------------------------- renewal
@dataclass
class RenewResult:
    renewed: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    not_due: int = 0
    hooks: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict:
        return {"renewed": self.renewed, "failed": self.failed, "skipped": self.skipped, "not_due": self.not_due,
                "hooks": self.hooks, "warnings": self.warnings, "dry_run": self.dry_run}


def load_policy(store, days_before: int | None):
    """(Policy, Profile): the renewal policy and the CA's profile snapshot (ca.json), read
    without loading any certificate."""
    from ..storage.castate import load_castate

    state = load_castate(store)
    prof = state.profile()
    return Policy(prof.renew_fraction, days_before), prof


def intermediate_warning(store, now: _dt.datetime, warn_days: int) -> tuple[str | None, dict]:
    """A warning when the intermediate expires within ``warn_days``; plus its facts."""
    from cryptography import x509

    p = store.ca_file("intermediate.crt")
    try:
        cert = x509.load_pem_x509_certificate(p.read_bytes())
    except FileNotFoundError:
        raise StoreError(f"CA file {p} is missing; restore it from a backup") from None
    except ValueError:
        raise StoreError(f"{p} is not a valid PEM certificate (corrupt?); restore it from a backup") from None
    na = cert.not_valid_after_utc
    left = int((na - now).total_seconds() // 86400)
    info = {"not_after": certinfo.iso(na), "days_left": left}
    if left < warn_days:
        if na <= now:
            msg = (f"the intermediate CA expired on {certinfo.iso(na)}: renewals fail until you run "
                   "'mailca ca renew-intermediate' (needs the root passphrase)")
        else:
            msg = (f"the intermediate CA expires in {left} days ({certinfo.iso(na)}); renewed certificates are cut "
                   "short to that date: run 'mailca ca renew-intermediate' (needs the root passphrase)")
        return msg, info
    return None, info


def _lifetime_days(entry: dict, backdate_minutes: int) -> int:
    nb, na = certinfo.parse_iso(entry["not_before"]), certinfo.parse_iso(entry["not_after"])
    secs = (na - nb).total_seconds() - backdate_minutes * 60
    return max(1, int(round(secs / 86400)))


def select_due(entries: list[dict], now: _dt.datetime, policy: Policy, *, names: list[str] | None,
               force: bool = False) -> tuple[list[dict], list[dict], int]:
    """(due current entries, skipped [{name, key_type, reason}], number not due)."""
    due, skipped, not_due = [], [], 0
    for (name, kt), e in sorted(lineages(entries).items()):
        if names and name not in names:
            continue
        st = state_of(e, now, policy)
        if e.get("source") == "acme":
            if names:
                skipped.append({"name": name, "key_type": kt, "reason": "issued over ACME: its ACME client renews it"})
            continue
        if st == "revoked":
            skipped.append({"name": name, "key_type": kt, "reason": f"revoked ({e.get('revocation_reason') or 'unspecified'})"})
            continue
        if st in ("due", "expired") or force:
            due.append(e)
        else:
            not_due += 1
    return due, skipped, not_due


def _read_key(store, entry: dict):
    """The lineage's private key bytes and object from its current version (what live/ points at)."""
    from ..core import keys
    from ..storage import fsguard

    vdir = store.version_path(entry)
    live_key = store.live_dir(entry["name"], entry["key_type"]) / "key.pem"
    for p in (live_key, vdir / "key.pem"):
        try:
            fsguard.check_components(store.path, p, allow_live=True)  # live -> archive/NNNN only
            pem = fsguard.read_bytes(p, limit=1 << 20)
        except FileNotFoundError:
            continue
        except PermissionError:
            raise StoreError(f"cannot read key file {p}: permission denied (run as the store's owner)") from None
        key = keys.load_private_pem(pem, str(p))
        if keys.spki_sha256(key.public_key()) == entry.get("spki_sha256"):
            return pem, key
    raise StoreError(f"key file {vdir / 'key.pem'} is missing or does not match the certificate; "
                     "run 'mailca doctor', or renew with --new-key")


def renew(store, *, names: list[str] | None = None, days_before: int | None = None, new_key: bool = False,
          hooks: list[str] = (), dry_run: bool = False, force: bool = False,
          now: _dt.datetime | None = None, on_renewed=None) -> RenewResult:
    """Renew every due certificate (of ``names`` or all).  See module docstring."""
    now = now or certinfo.utcnow()
    if days_before is not None and not (0 <= days_before <= 3650):
        raise UsageError(f"--days-before {days_before} is out of range; give 0..3650 days")
    policy, prof = load_policy(store, days_before)
    parsed_hooks = parse_hooks(list(hooks))
    res = RenewResult(dry_run=dry_run)
    warn, _ = intermediate_warning(store, now, prof.intermediate_warn_days)
    if warn:
        res.warnings.append(warn)

    if dry_run:
        entries = store.load_index()["certs"]
        wanted = resolve_names(entries, names) if names else None
        due, res.skipped, res.not_due = select_due(entries, now, policy, names=wanted, force=force)
        _explicit_revoked(res.skipped, wanted, entries)
        for e in due:
            item = {"name": e["name"], "key_type": e["key_type"], "names": e.get("names", []), "serial": e["serial"],
                    "not_after": e["not_after"], "state": state_of(e, now, policy), "would_renew": True}
            if e.get("source") == "csr":
                item["would_renew"] = False
                item["error"] = _csr_message(e)
            res.renewed.append(item)
        return res

    from ..issuance import ca as camod

    store.check_writable()
    with store.lock():
        entries = store.load_index()["certs"]
        wanted = resolve_names(entries, names) if names else None
        due, res.skipped, res.not_due = select_due(entries, now, policy, names=wanted, force=force)
        _explicit_revoked(res.skipped, wanted, entries)
        if not due:
            return res
        ca = camod.load_ca(store)
        int_after = ca.intermediate.not_valid_after_utc
        idx = Index.load(store)
        try:
            _renew_each(store, ca, prof, due, res, idx, now=now, new_key=new_key, int_after=int_after,
                        on_renewed=on_renewed)
        except OSError as exc:
            raise StoreError(f"writing a renewed certificate failed: {exc.strerror or exc} ({getattr(exc, 'filename', '')}); "
                             f"{len(res.renewed)} were renewed before; run 'mailca doctor'") from None
        finally:
            if res.renewed:
                idx.save()  # the journal covers a crash before this (recovery re-indexes)
    if res.renewed and parsed_hooks:
        res.hooks = run_hooks(parsed_hooks, store, res.renewed)
    return res


def _renew_each(store, ca, prof, due, res, idx, *, now, new_key, int_after, on_renewed) -> None:
    from ..issuance import ca as camod
    from ..core import keys

    since_flush = 0
    for e in due:
        label = f"{e['name']} ({e['key_type']})"
        try:
            if e.get("source") == "csr" and not new_key:
                raise UsageError(_csr_message(e))
            profile = prof
            pname = e.get("profile")
            if pname and pname != prof.name:
                # the profile as approved at issue (a snapshot in the store), never a file re-read
                profile = camod.recorded_profile(ca, pname)
            days = min(_lifetime_days(e, profile.backdate_minutes), profile.leaf_days)
            room = int((int_after - now).total_seconds() // 86400)
            if room < 1:
                raise StoreError(f"the intermediate CA expires {certinfo.iso(int_after)}; run 'mailca ca renew-intermediate' first")
            if days > room:
                days = room
            if new_key or e.get("source") == "csr":
                key = keys.generate(e["key_type"])
                key_pem = keys.private_pem(key)
            else:
                key_pem, key = _read_key(store, e)
            # the names come from the index: validate them like 'issue' does, before signing
            dns, ips = camod.normalize_request(ca, profile, list(e.get("names", [])), [], list(e.get("ips", [])),
                                               cap=False)
            cert = camod.sign_leaf(ca, key.public_key(), dns=dns, ips=ips, days=days, profile=profile, now=now)
            issued = camod.commit_version(store, ca, name=e["name"], key_type=e["key_type"], key=key, cert=cert,
                                          profile=profile, source="renew", key_pem=key_pem, index=idx,
                                          save_index=False)
            since_flush += 1
            if since_flush >= 50:  # rewriting the whole index per renewal would be O(n^2)
                idx.save()
                since_flush = 0
            d = issued.as_dict(store)
            d["previous_serial"] = e["serial"]
            d["new_key"] = bool(new_key or e.get("source") == "csr")
            res.renewed.append(d)
            if on_renewed:
                on_renewed(d)
        except MailcaError as exc:
            res.failed.append({"name": e["name"], "key_type": e["key_type"], "error": f"{label}: {exc}"})


def _csr_message(e: dict) -> str:
    return (f"{e['name']} ({e['key_type']}) was signed from a CSR, so its key is not in the store and mailca cannot "
            "renew it: make a new CSR on the mail server and run 'mailca sign', or 'mailca renew --new-key' "
            "to move the key into the store")


def _explicit_revoked(skipped: list[dict], wanted: list[str] | None, entries: list[dict] | None = None) -> None:
    """Naming a certificate whose every lineage is revoked is an error (with --all, or when the
    name's other key type is still good, the revoked one is just skipped)."""
    if not wanted:
        return
    alive = {n for (n, _), e in lineages(entries or []).items() if e.get("status") != "revoked"}
    for s in skipped:
        if s["name"] in wanted and s["name"] not in alive:
            raise UsageError(f"{s['name']} ({s['key_type']}) is {s['reason']} and will not be renewed; "
                             f"issue a new certificate with 'mailca issue {s['name']}'")
