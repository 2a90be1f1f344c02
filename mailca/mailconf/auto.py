"""The scheduled job (``mailca auto``): everything the renewal timer does, one idempotent step
per run, with no human in the loop.

One run, in this order (each step reads the store afresh, so a run that was interrupted or
held is simply continued by the next one):

1. **CRL**: refreshed (store copy, and ``--crl-out FILE`` when given) when there is none yet
   and a place to publish it, or when less than half of its lifetime (profile
   ``crl.next_update_days``) is left before nextUpdate.
2. **Publish**: for every host whose publishing settings were remembered
   (``mailca dane publish HOST ... --remember``, :mod:`mailca.dns.settings`), the TLSA records
   (current, staged next, live + coming trust anchor) go to the primary; stale ones go.
3. **Intermediate**: when it expires within the profile's ``renew.intermediate_warn_days`` and
   no leaf is still waiting to switch to a previous renewal, it is re-certified (same key),
   and step 2 runs again so its new ``2 0 1`` is published at once.  Needs the root key: an
   unencrypted root, ``--passphrase-file`` or ``MAILCA_PASSPHRASE``; otherwise a warning.
4. **Rotation**: for each remembered host, when the profile's ``rekey.every`` (or
   ``--rekey-every``) is set: stage a next key when the current one is that old (and publish
   its ``3 1 1``); commit a staged key once the DNS gate opens.
5. **Renewal**: what is due (profile ``renew.fraction`` or ``--days-before``), plus every leaf
   whose live chain still carries the previous intermediate (the *leaf switch*).  A renewal
   that changes the served chain of a published host waits for the DNS gate
   (:func:`mailca.dns.gate.hold_chain_changes`); without a remembered resolver, for 2 x TTL
   after mailca first published the coming trust anchor (the printed-time rule, said so).
6. **Deploy**: after any change: the deploy hooks (reload), the live probe of what
   ``mailca deploy`` installed, then step 2 again (the records nothing serves any more go).

A held gate is a normal outcome (the result's ``held``); every DNS query, hook and probe is
bounded in time, so one run is too.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field

from ..core import certinfo
from ..errors import GateHeld, MailcaError, StoreError, UsageError

__all__ = ["AutoResult", "parse_every", "publish_host", "pending_switch", "run"]


@dataclass
class AutoResult:
    actions: list = field(default_factory=list)  # one line per change made
    held: list = field(default_factory=list)  # one line per step the DNS gate holds
    warnings: list = field(default_factory=list)
    failures: list = field(default_factory=list)  # one line per step that failed (the run went on)
    hooks: list = field(default_factory=list)
    probes: list = field(default_factory=list)
    published: list = field(default_factory=list)  # record changes sent to DNS
    exit_code: int = 0  # of the first failure (the MailcaError's), 0 when none
    busy: bool = False  # another run held the job lock: this one did nothing

    def fail(self, text: str, exc: MailcaError | None = None, code: int | None = None) -> None:
        self.failures.append(text)
        if not self.exit_code:
            self.exit_code = int(code if code is not None else (exc.exit_code if exc is not None else 1))

    def status(self) -> str:
        """One line for the log: what this run did or why it waits."""
        if self.busy:
            return "mailca auto: another 'mailca auto' run is in progress; this one did nothing"
        if self.failures:
            return f"mailca auto: {len(self.failures)} step(s) failed; first: {self.failures[0]}"
        parts = []
        if self.actions:
            parts.append(f"{len(self.actions)} change(s)")
        if self.held:
            parts.append("waiting for DNS: " + "; ".join(self.held))
        return "mailca auto: " + (", ".join(parts) if parts else "nothing to do")

    def as_dict(self) -> dict:
        return {"status": self.status(), "ok": not self.failures, "busy": self.busy, "actions": self.actions,
                "held": self.held,
                "warnings": self.warnings, "failures": self.failures, "hooks": self.hooks, "probes": self.probes,
                "published": self.published}


def parse_every(text: str, what: str = "--rekey-every") -> int:
    """'1y', '6m', '90d', '12h', '30s' -> seconds."""
    units = {"y": 365 * 86400, "m": 30 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "s": 1}
    t = str(text).strip().lower()
    if len(t) >= 2 and t[:-1].isdigit() and t[-1] in units and int(t[:-1]) > 0:
        return int(t[:-1]) * units[t[-1]]
    raise UsageError(f"{what} {text!r}: use a number and a unit (y, m, w, d, h, s), e.g. 1y or 90d")


# ----------------------------------------------------------------------- publishing
def _records(store, hs):
    from . import dane

    entries = dane.find_lineages(store, hs.host)
    sels = {"0": [0], "1": [1], "both": [0, 1]}[hs.ta_selector]
    recs = dane.records(store, entries, host=hs.host, ports=list(hs.ports), usage=hs.usage, ta=hs.ta,
                        ta_selectors=sels, ttl=hs.ttl)
    return entries, recs


def publish_host(store, hs, *, now=None, dry_run: bool = False):
    """Send ``hs.host``'s records to its primary; note what the gate needs to know (the first
    time a staged key's or coming trust anchor's record was published, owners that had no
    RRset before).  Returns the :class:`mailca.dns.client.PublishResult`."""
    from ..dns import client, gate as dnsgate
    from ..lifecycle import rekey as rekeymod

    now = now or certinfo.utcnow()
    entries, recs = _records(store, hs)
    try:
        key = client.load_tsig(hs.tsig_key_file)
    except UsageError as exc:  # the remembered file went away or changed: not the user's typing
        raise StoreError(f"the TSIG key file remembered for {hs.host} is unusable ({exc.message}); restore it or run "
                         f"'mailca dane publish {hs.host} ... --remember' again") from None
    res = client.publish(recs, server=client.parse_server(hs.server, "server"), key=key, zone=hs.zone, dry_run=dry_run)
    if not dry_run:
        dnsgate.note_absent(store, dict(res.absent), now)
        # a staged key is covered by its own 3 1 1 ("next") or by the CA's 2 x 1: either starts
        # the printed-time clock (a 2-only deployment commits too)
        if any(r.role == "next" or r.usage == 2 for r in recs):
            rekeymod.mark_published(store, entries, hs.ttl, now)
        dnsgate.mark_printed(store, [(r.owner, r.rdata) for r in recs if r.role == "ta-next"], hs.ttl, now)
    return res


def _sync(store, settings, res: AutoResult, what: str, now) -> None:
    for hs in settings:
        try:
            pr = publish_host(store, hs, now=now)
        except MailcaError as exc:
            res.fail(f"{hs.host}: publishing the TLSA records failed: {exc.message}", exc)
            continue
        for c in pr.changes:
            if c.action != "keep":
                res.published.append({"host": hs.host, "step": what, **c.as_dict()})
                res.actions.append(f"{hs.host}: {'published' if c.action == 'add' else 'removed'} {c.owner} TLSA {c.rdata}"
                                   f" ({what})")


# ----------------------------------------------------------------------- the steps
def _crl(store, crl_out, now, res: AutoResult) -> None:
    from ..lifecycle import crl as crlmod
    from ..lifecycle.renew import load_policy

    _, prof = load_policy(store, None)
    st = crlmod.read_state(store)
    if st.get("next_update"):
        left = certinfo.parse_iso(st["next_update"]) - now
        due = left <= _dt.timedelta(days=prof.crl_next_update_days) / 2 or (crl_out and not os.path.exists(crl_out))
    else:
        due = bool(crl_out or prof.crl_url)
    if not due:
        return
    r = crlmod.generate(store, out=crl_out, now=now)
    res.actions.append(f"CRL #{r.number} written ({r.revoked} revoked), next update {r.next_update}"
                       + (f", published to {crl_out}" if crl_out else ""))


def pending_switch(store, now=None) -> list[dict]:
    """Current, unrevoked, unexpired leaves (keys in the store) whose live chain does not carry
    ca/intermediate.crt: they switch at their next renewal (the 'leaf switch')."""
    from ..dns.gate import pem_cert_der
    from ..storage.index import current_by_lineage

    now = now or certinfo.utcnow()
    coming = pem_cert_der(store.ca_file("intermediate.crt"))
    out = []
    for e in current_by_lineage(store.load_index()["certs"]).values():
        if e.get("status") == "revoked" or e.get("source") == "csr" or certinfo.parse_iso(e["not_after"]) <= now:
            continue
        chain = store.live_dir(e["name"], e["key_type"]) / "chain.pem"
        if not chain.exists() or pem_cert_der(chain) != coming:
            out.append(e)
    return out


def _intermediate(store, passphrase_file, now, res: AutoResult) -> bool:
    from ..core import keys
    from ..lifecycle.intermediate import renew_intermediate
    from ..lifecycle.renew import intermediate_warning, load_policy
    from ..storage.castate import load_castate

    if pending_switch(store, now):
        return False
    _, prof = load_policy(store, None)
    msg, _info = intermediate_warning(store, now, prof.intermediate_warn_days)
    if msg is None:
        return False
    passphrase = None
    if load_castate(store).root_encrypted:
        if not passphrase_file and not os.environ.get(keys.PASSPHRASE_ENV):
            res.warnings.append(msg.replace("run 'mailca ca renew-intermediate' (needs the root passphrase)",
                                            "the scheduled job cannot renew it without the root passphrase: run "
                                            "'mailca ca renew-intermediate' by hand, or give 'mailca schedule "
                                            "--passphrase-file FILE'"))
            return False
        passphrase = keys.read_passphrase(passphrase_file, purpose="root CA key")
    r = renew_intermediate(store, passphrase, now=now)
    res.actions.append(f"renewed the intermediate CA (same key): serial {r.new.serial}, valid until {r.new.not_after}; "
                       f"its {r.new.tlsa_2_0_1} is published now, the leaves switch when the DNS gate opens")
    return True


def _key_age_exceeds(store, e: dict, every_s: int, now) -> bool:
    born = min((certinfo.parse_iso(x["not_before"]) for x in store.entries()
                if x.get("name") == e["name"] and x.get("key_type") == e["key_type"]
                and x.get("spki_sha256") == e["spki_sha256"] and x.get("not_before")),
               default=certinfo.parse_iso(e["not_before"]))
    return now - born >= _dt.timedelta(seconds=every_s)


def _rotate(store, hs, every_s: int, now, res: AutoResult) -> list[dict]:
    """One rotation step for ``hs.host``; the new certificates when a staged key was committed."""
    from ..lifecycle import rekey as rekeymod
    from . import dane

    entries = dane.find_lineages(store, hs.host)
    rekeymod.finish_interrupted(store, entries)
    staged = [(e, rekeymod.read_staged(store, e)) for e in entries]
    if not any(m for _, m in staged):
        old = [e["key_type"] for e in entries if e.get("source") != "csr" and (store.live_dir(e["name"], e["key_type"])
               / "key.pem").exists() and _key_age_exceeds(store, e, every_s, now)]
        if old:
            r = rekeymod.rekey(store, hs.host, "stage", key_types=old, now=now)
            for m in r.staged:
                res.actions.append(f"{hs.host}: staged a next {m['key_type']} key (TLSA 3 1 1 {m['spki_sha256']}); "
                                   "it goes live when the DNS gate opens")
        return []
    try:
        r = rekeymod.rekey(store, hs.host, "commit", resolver=hs.resolver, ns_port=hs.ns_port,
                           ports=[str(p) for p in hs.ports], now=now)
    except GateHeld as exc:
        res.held.append(f"{hs.host} key rotation: {exc.message}")
        return []
    res.warnings += list(r.warnings)
    for c in r.certificates:
        res.actions.append(f"{hs.host} ({c['key_type']}) now uses the staged key: serial {c['serial']}, "
                           f"TLSA 3 1 1 {c['spki_sha256']}")
    return list(r.certificates)


def _hold(store, hs, entries: list[dict], now) -> dict[str, str]:
    """{lineage name: why} for the chain-changing renewals of ``hs.host`` DNS does not cover yet."""
    from ..dns import client, gate as dnsgate

    if hs.resolver:
        return dnsgate.hold_chain_changes(store, entries, list(hs.ports), client.parse_server(hs.resolver, "resolver"),
                                          hs.ns_port, host=hs.host, now=now)
    return dnsgate.printed_hold(store, entries, list(hs.ports), usage=hs.usage, host=hs.host, now=now)


def _renew(store, settings, days_before, now, res: AutoResult) -> list[dict]:
    from ..lifecycle.renew import load_policy, renew, select_due
    from . import dane

    policy, _ = load_policy(store, days_before)
    due, _, _ = select_due(store.load_index()["certs"], now, policy, names=None)
    for e in due:
        if e.get("source") == "csr":
            res.warnings.append(f"{e['name']} ({e['key_type']}) is due but was signed from a CSR: make a new CSR on the "
                                "mail server and run 'mailca sign'")
    cands = {(e["name"], e["key_type"]): e for e in due + pending_switch(store, now) if e.get("source") != "csr"}
    if not cands:
        return []
    held: dict[str, str] = {}
    for hs in settings:
        mine = [cands[(e["name"], e["key_type"])] for e in dane.find_lineages(store, hs.host)
                if (e["name"], e["key_type"]) in cands]
        if mine:
            try:
                for name, why in _hold(store, hs, mine, now).items():
                    held[name] = why
                    res.held.append(f"{hs.host} renewal of {name}: {why}")
            except MailcaError as exc:  # e.g. the resolver is unreachable: nothing switches
                for e in mine:
                    held[e["name"]] = exc.message
                res.fail(f"{hs.host}: DNS gate: {exc.message}", exc)
    names = sorted({n for n, _ in cands} - set(held))
    if not names:
        return []
    r = renew(store, names=names, force=True, now=now)
    res.warnings += [w for w in r.warnings if w not in res.warnings]
    for f in r.failed:
        res.fail(f"renewal failed: {f['error']}", code=3)
    for d in r.renewed:
        res.actions.append(f"renewed {d['name']} ({d['key_type']}): serial {d['serial']}, expires {d['not_after']}")
    return list(r.renewed)


def run(store, *, hooks: list[str] = (), days_before: int | None = None, rekey_every: str | None = None,
        passphrase_file: str | None = None, crl_out: str | None = None, now=None) -> AutoResult:
    """One run of the scheduled job (see the module docstring)."""
    from ..dns import settings as dsettings
    from ..lifecycle.renew import load_policy, parse_hooks, run_hooks

    if days_before is not None and not (0 <= days_before <= 3650):
        raise UsageError(f"--days-before {days_before} is out of range; give 0..3650 days")
    parsed_hooks = parse_hooks(list(hooks))
    if rekey_every is None:
        rekey_every = (load_policy(store, None)[1].raw.get("rekey") or {}).get("every")
    every_s = parse_every(rekey_every) if rekey_every else None
    if crl_out is not None:
        from ..lifecycle.crl import check_out_path
        from ..storage.outpaths import refuse_inside_store

        refuse_inside_store(check_out_path(crl_out), store.path, "--crl-out")
    settings = dsettings.load(store)
    with store.job_lock("auto") as mine:
        if not mine:  # cron + a hand run, or a slow run overlapping the next: one at a time
            return AutoResult(busy=True)
        return _run(store, settings, parsed_hooks, days_before, every_s, passphrase_file, crl_out, now)


def _run(store, settings, parsed_hooks, days_before, every_s, passphrase_file, crl_out, now) -> AutoResult:
    from ..lifecycle.renew import run_hooks

    now = now or certinfo.utcnow()
    res = AutoResult()

    def step(what, fn, *args):
        try:
            return fn(*args)
        except GateHeld as exc:
            res.held.append(f"{what}: {exc.message}")
        except MailcaError as exc:
            res.fail(f"{what}: {exc.message}", exc)
        return None

    step("CRL", _crl, store, crl_out, now, res)
    _sync(store, settings, res, "publish", now)
    if step("intermediate", _intermediate, store, passphrase_file, now, res):
        _sync(store, settings, res, "coming intermediate", now)
    changed: list[dict] = []
    if every_s:
        for hs in settings:
            before = len(res.actions)
            got = step(f"{hs.host} key rotation", _rotate, store, hs, every_s, certinfo.utcnow(), res)
            changed += got or []
            if not got and len(res.actions) > before:  # a key was staged: publish its record now
                _sync(store, [hs], res, "next key", now)
    changed += step("renewal", _renew, store, settings, days_before, certinfo.utcnow(), res) or []
    if changed:
        if parsed_hooks:
            res.hooks = run_hooks(parsed_hooks, store, changed)
            for h in res.hooks:
                if not h["ok"]:
                    res.fail(f"deploy hook {h['hook']!r} failed: {h['error']}; the new certificates are live, "
                             "reload the servers by hand", code=7)
        if all(h["ok"] for h in res.hooks):
            from .deploy import verify_deployed

            try:
                res.probes = verify_deployed(store, sorted({c["name"] for c in changed}))
            except MailcaError as exc:  # a port still serves the old certificate: keep its records
                res.fail(exc.message, exc)
                return res
            # the servers present the new chain/key now: what matches nothing served goes
            _sync(store, settings, res, "prune", certinfo.utcnow())
    return res
