"""mailca rekey: stage a new key, publish its TLSA record, switch after 2 x TTL."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, store_option, warn


@click.command("rekey", short_help="Replace a host's key safely for DANE (stage, publish, commit).")
@store_option
@click.argument("host")
@click.option("--stage", "action", flag_value="stage", help="Create the next key (nothing changes on the server yet).")
@click.option("--commit", "action", flag_value="commit", help="Issue a certificate for the staged key and make it live.")
@click.option("--abort", "action", flag_value="abort", help="Throw the staged key away.")
@click.option("--key-type", "key_types", multiple=True, metavar="TYPE", help="Only this lineage of a dual pair (repeatable).")
@click.option("--force", is_flag=True, help="Commit even if the 'next' TLSA record is younger than 2 x TTL (breaks DANE for cached resolvers).")
@json_option
def cli(store_dir, host, action, key_types, force, as_json):
    """Roll HOST's key without breaking DANE (RFC 7671 section 8.1).

    \b
    1. mailca rekey mail.example.org --stage     # next key, kept in the store (0600)
    2. mailca dane mail.example.org              # prints current AND next 3 1 1 records;
                                                 # publish both in your signed zone
    3. wait 2 x TTL (so no resolver still caches the old record set)
    4. mailca rekey mail.example.org --commit    # certificate for the next key goes live
    5. postfix reload; later remove the old 3 1 1 record

    --commit refuses before 2 x TTL have passed since 'dane' first printed the next
    record (--force overrides).  Plain renewal keeps the key, so 3 1 1 stays valid.
    """
    from ..issuance import ca as camod
    from ..core import certinfo, keys
    from ..mailconf import dane
    from ..errors import StoreError, UsageError

    if action is None:
        raise UsageError("say what to do: --stage, --commit or --abort")
    if force and action != "commit":
        raise UsageError("--force only applies to --commit")
    store = get_store(store_dir)
    entries = dane.find_lineages(store, host)
    if key_types:
        wanted = [keys.check_key_type(k) for k in key_types]
        have = {e["key_type"] for e in entries}
        for k in wanted:
            if k not in have:
                raise UsageError(f"--key-type {k}: {entries[0]['name']} has no such certificate; it has {', '.join(sorted(have))}")
        entries = [e for e in entries if e["key_type"] in wanted]
    name = entries[0]["name"]
    dane.finish_interrupted(store, entries)
    now = certinfo.utcnow()
    out = []
    if action == "stage":
        for e in entries:
            if not (store.live_dir(e["name"], e["key_type"]) / "key.pem").exists():
                raise UsageError(f"the {e['key_type']} key of {name} is not in the store (signed from a CSR); "
                                 "make the new key on the mail server and sign a new CSR instead")
            meta = dane.read_staged(store, e)
            if meta is not None:
                raise StoreError(f"a next {e['key_type']} key for {name} is already staged (since {meta.get('created')}); "
                                 f"use 'mailca rekey {name} --commit' or '--abort'")
        prepared = [(e, keys.generate(e["key_type"])) for e in entries]
        with store.lock():
            for e, _ in prepared:  # again under the lock: another process may have staged meanwhile
                if dane.read_staged(store, e) is not None:
                    raise StoreError(f"a next {e['key_type']} key for {name} was staged meanwhile; "
                                     f"use 'mailca rekey {name} --commit' or '--abort'")
            for e, key in prepared:
                d = dane.lineage_dir(store, e)
                store.write_file(d / dane.NEXT_KEY, keys.private_pem(key), private=True)
                meta = {"key_type": e["key_type"], "created": certinfo.iso(now), "spki_sha256": keys.spki_sha256(key.public_key()),
                        "first_published": None, "ttl": 0}
                dane.write_staged_meta(store, e, meta)
                out.append(meta)
        if as_json:
            emit_json({"host": name, "staged": out})
            return
        for m in out:
            click.echo(f"Staged a next {m['key_type']} key for {name}: TLSA 3 1 1 {m['spki_sha256']}")
        click.echo(f"Next: 'mailca dane {name}', publish the records it prints, wait 2 x TTL, then 'mailca rekey {name} --commit'.")
        return
    staged = [(e, dane.read_staged(store, e)) for e in entries]
    staged = [(e, m) for e, m in staged if m is not None]
    if not staged:
        raise StoreError(f"no next key is staged for {name}; run 'mailca rekey {name} --stage' first")
    if action == "abort":
        with store.lock():
            for e, m in staged:
                dane.drop_staged(store, e)
                out.append(m)
        if as_json:
            emit_json({"host": name, "aborted": out})
        else:
            click.echo(f"Removed the staged key(s) of {name}; remove their 'next' TLSA records from the zone.")
        return
    # commit: check every lineage first, write nothing unless all pass
    for e, m in staged:
        ready = dane.commit_ready_at(m)
        if ready is None:
            msg = (f"the next {e['key_type']} key's TLSA record for {name} has never been printed; run 'mailca dane {name}', "
                   "publish it, wait 2 x TTL, then commit")
        elif now < ready:
            msg = (f"the next {e['key_type']} key's TLSA record for {name} was first printed {m['first_published']}; "
                   f"wait until {certinfo.iso(ready)} (2 x TTL {m['ttl']}s) so resolvers have it, then commit")
        else:
            continue
        if not force:
            raise StoreError(msg + " (or --force)")
        warn(msg.split(";")[0] + "; committing anyway (--force): DANE senders with a cached old record set will fail until it expires")
    ca = camod.load_ca(store)
    prepared = []
    for e, m in staged:
        d = dane.lineage_dir(store, e)
        key = keys.load_private(str(d / dane.NEXT_KEY))
        if keys.spki_sha256(key.public_key()) != m["spki_sha256"]:
            raise StoreError(f"{d / dane.NEXT_KEY} does not match {d / dane.NEXT_META}; '--abort' and stage again")
        try:
            profile = camod.profile_for(ca, e.get("profile"))
        except Exception:
            profile = ca.profile
        days = camod.resolve_days(profile, None)
        dns, ips = camod.normalize_request(ca, profile, list(e["names"]), [], list(e.get("ips", [])))
        cert = camod.sign_leaf(ca, key.public_key(), dns=dns, ips=ips, days=days, profile=profile, now=now)
        prepared.append((e, m, key, cert, profile))
    with store.lock():
        for e, m, *_ in prepared:  # again under the lock: a concurrent commit/abort wins
            now_staged = dane.read_staged(store, e)
            if now_staged is None or now_staged["spki_sha256"] != m["spki_sha256"]:
                raise StoreError(f"the staged {e['key_type']} key of {name} changed meanwhile (another rekey ran); "
                                 "check 'mailca dane' and try again")
        for e, m, key, cert, profile in prepared:
            # new version live first, staged files last: a crash in between leaves a staged key
            # equal to the current one, which the next rekey/dane run recognises and drops
            issued = camod.commit_version(store, ca, name=e["name"], key_type=e["key_type"], key=key, cert=cert,
                                          profile=profile, source="rekey")
            dane.drop_staged(store, e)
            out.append(issued.as_dict(store))
    from ..mailconf.deploy import verify_deployed

    probes = verify_deployed(store, [name])  # deployed with 'mailca deploy': reload + prove it
    if as_json:
        emit_json({"host": name, "certificates": out, "probes": probes})
        return
    for r in out:
        click.echo(f"{name} ({r['key_type']}) now uses the staged key: serial {r['serial']}, TLSA 3 1 1 {r['spki_sha256']}")
    for p in probes:
        click.echo(f"verified on the wire: {p['proto']} {p['address']}:{p['port']} serves serial {p['serial']}")
    if not probes:
        click.echo("Reload Postfix and Dovecot now; remove the old 3 1 1 record once they serve the new certificate.")
