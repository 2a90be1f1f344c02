"""mailca dane: TLSA records for a host (current key, staged next key, CA); 'dane publish' sends them by RFC 2136."""

from __future__ import annotations

import click

from .common import emit_json, get_store, ns_port_option, store_option


class _DefaultShow(click.Group):
    """``mailca dane HOST ...`` is ``mailca dane show HOST ...`` (the command predates 'publish')."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group("dane", cls=_DefaultShow, short_help="TLSA records (DANE) for a host's zone; print or publish them.")
def cli():
    """TLSA records for a host: 'mailca dane HOST' prints them (zone lines, nsupdate script
    or JSON); 'mailca dane publish HOST' sends them to the zone's primary (RFC 2136 + TSIG)
    and removes the stale ones."""


def _record_options(f):
    for opt in reversed([
        click.option("--port", "ports", multiple=True, metavar="N", help="TCP port (repeatable; default 25)."),
        click.option("--usage", default="both", show_default=True, metavar="3|2|both",
                     help="3: DANE-EE (the server's key, RFC 7672's first choice); 2: DANE-TA (the CA); both."),
        click.option("--ta", default="intermediate", show_default=True, metavar="intermediate|root",
                     help="Trust anchor of the 2 x 1 records (root: run 'mailca postfix --dane-ta root' too)."),
        click.option("--ta-selector", default="0", show_default=True, metavar="0|1|both",
                     help="DANE-TA selector: 0 = whole CA certificate (2 0 1), 1 = its public key (2 1 1)."),
        click.option("--ttl", default=None, type=int,
                     help="TTL of the records (seconds; default: the TTL remembered for a staged key, else 3600); "
                          "the key rollover waits 2 x TTL."),
    ]):
        f = opt(f)
    return f


def _prepare(store_dir, host, ports, usage, ta, ta_selector, ttl):
    """(store, entries, owner host, records); also returns the TTL used as records[i].ttl."""
    from ..errors import UsageError
    from ..mailconf import dane
    from ..lifecycle import rekey as rekeymod

    if usage not in ("3", "2", "both"):
        raise UsageError(f"--usage {usage!r}: use 3 (DANE-EE), 2 (DANE-TA) or both")
    if ta not in ("intermediate", "root"):
        raise UsageError(f"--ta {ta!r}: use intermediate or root")
    sels = {"0": [0], "1": [1], "both": [0, 1]}.get(ta_selector)
    if sels is None:
        raise UsageError(f"--ta-selector {ta_selector!r}: use 0, 1 or both")
    if ttl is not None and not 1 <= ttl <= 604800:
        raise UsageError(f"--ttl {ttl}: use 1 to 604800 seconds (a week); 3600 is common")
    port_list = dane.parse_ports(ports)
    store = get_store(store_dir)
    entries = dane.find_lineages(store, host)
    if ttl is None:  # a later 'dane' without --ttl keeps the TTL the next record was printed with
        remembered = [int((rekeymod.read_staged(store, e) or {}).get("ttl") or 0) for e in entries]
        ttl = max(remembered + [0]) or 3600
    from ..core.names import normalize_dns_name

    # the owner name is the host asked for (an MX may be a SAN of the lineage), not the lineage name
    name = normalize_dns_name(host)
    recs = dane.records(store, entries, host=name, ports=port_list, usage=usage, ta=ta, ta_selectors=sels, ttl=ttl)
    return store, entries, name, recs


@cli.command("show", short_help="Print the TLSA records (zone lines, nsupdate script, JSON).")
@store_option
@click.argument("host")
@_record_options
@click.option("--format", "fmt", type=click.Choice(["zone", "nsupdate", "json"]), default="zone", show_default=True,
              help="zone: zone-file lines; nsupdate: a script that replaces each owner's TLSA set in one update.")
@click.option("--zone", "zone", default=None, metavar="ZONE", help="The zone holding HOST (nsupdate 'zone' line; --relative).")
@click.option("--relative", is_flag=True, help="Owner names relative to --zone (for web DNS panels), e.g. _25._tcp.mail.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def show(store_dir, host, ports, usage, ta, ta_selector, ttl, fmt, zone, relative, as_json):
    """Print zone-file TLSA lines for HOST.

    DANE-EE 3 1 1 pins the server's public key and survives renewals (they keep the
    key); DANE-TA 2 0 1 names the CA the server sends in its chain.  After
    'mailca rekey HOST --stage' the staged next key's 3 1 1 record is printed too, and
    the first time it is printed is remembered: 'rekey --commit' waits until 2 x TTL
    later.  The zone MUST be DNSSEC-signed, or no sender will use these records.

    \b
    Examples:
      mailca dane mail.example.org
      mailca dane mail.example.org --port 25 --port 465 --usage 3 --ttl 3600
      mailca dane mail.example.org --ta-selector both --format json
    """
    from ..core import certinfo
    from ..errors import UsageError
    from ..dns import client as publish
    from ..mailconf import dane
    from ..lifecycle import rekey as rekeymod

    if relative and not zone:
        raise UsageError("--relative needs --zone ZONE (the zone the owner names are relative to), e.g. --zone example.org")
    store, entries, name, recs = _prepare(store_dir, host, ports, usage, ta, ta_selector, ttl)
    ttl = recs[0].ttl if recs else (ttl or 3600)
    if zone:
        for r in recs:
            publish.relative(r.owner, zone)  # the host must be inside the zone
    staged = []
    if any(r.role == "next" or r.usage == 2 for r in recs):  # a 2 x 1 covers a staged key too (2-only deployments)
        staged = rekeymod.mark_published(store, [e for e in entries], ttl, certinfo.utcnow())
    if as_json or fmt == "json":
        emit_json({"host": name, "ttl": ttl, "records": [r.as_dict() for r in recs],
                   "rollover": [{"key_type": m.get("key_type"), "spki_sha256": m["spki_sha256"],
                                 "first_published": m.get("first_published"), "ttl": m.get("ttl"),
                                 "commit_after": certinfo.iso(rekeymod.commit_ready_at(m))} for m in staged]})
        return
    if fmt == "nsupdate":
        click.echo(f"; mailca: replace the TLSA records of {name} (run with 'nsupdate -k KEYFILE')")
        click.echo(publish.nsupdate_script(recs, server=None, zone=zone), nl=False)
        return
    click.echo(f"; mailca: TLSA records for {name} - publish them in a DNSSEC-SIGNED zone (unsigned: ignored by senders)")
    for r in recs:
        click.echo(f"; {r.what}")
        click.echo(f"{publish.relative(r.owner, zone)} {r.ttl} IN TLSA {r.rdata}" if relative else r.line())
    for m in staged:
        click.echo(f"; next {m.get('key_type')} key first published {m['first_published']}; "
                   f"'mailca rekey {name} --commit' allowed from {certinfo.iso(rekeymod.commit_ready_at(m))} (2 x TTL {m['ttl']}s)")


@cli.command("publish", short_help="Send the TLSA records to the zone's primary (RFC 2136 + TSIG); remove stale ones.")
@store_option
@click.argument("host")
@_record_options
@click.option("--server", required=True, metavar="ADDR[@PORT]", envvar="MAILCA_DNS_PRIMARY",
              help="The zone's primary (accepts TSIG-signed updates); env MAILCA_DNS_PRIMARY.")
@click.option("--tsig-key-file", required=True, type=click.Path(dir_okay=False), envvar="MAILCA_TSIG_KEY_FILE",
              help="TSIG key (BIND 'key' clause, e.g. from tsig-keygen; or keymgr -t output); env MAILCA_TSIG_KEY_FILE.")
@click.option("--zone", default=None, metavar="ZONE", help="The zone to update (default: asked from the server's SOA).")
@click.option("--dry-run", is_flag=True, help="Show what would be added and removed; send nothing.")
@click.option("--remember", is_flag=True,
              help="After a successful update, keep these settings in the store (dane-publish.json: server, the key "
                   "FILE's path, zone, ttl, ports, usage, resolver) for the scheduled job 'mailca auto'.")
@click.option("--resolver", default=None, metavar="ADDR[@PORT]", envvar="MAILCA_DNS_RESOLVER",
              help="With --remember: the validating resolver the scheduled job's DNS gate asks.")
@ns_port_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def publish_cmd(store_dir, host, ports, usage, ta, ta_selector, ttl, server, tsig_key_file, zone, dry_run, remember,
                resolver, ns_port, as_json):
    """Publish HOST's TLSA records (current, staged next, trust anchor) by dynamic update.

    One TSIG-signed update per zone: the records mailca wants are added, TLSA records at
    the same names that match nothing served or staged are removed.  Afterwards
    'mailca rekey --commit' (with --resolver) waits until every authoritative server and
    the validating resolver have served the new record for 2 x TTL.

    With --remember the settings that just worked are kept in the store, and the scheduled
    job ('mailca schedule' runs 'mailca auto') publishes, rotates and renews this host
    unattended; the timer's command line then carries no key and no address.

    \b
    Examples:
      mailca dane publish mail.example.org --server 192.0.2.53 --tsig-key-file /etc/mailca/update.key
      mailca dane publish mail.example.org --server 127.0.0.1@5353 --tsig-key-file k.key --dry-run
      mailca dane publish mail.example.org --server 192.0.2.53 --tsig-key-file /etc/mailca/update.key \\
          --ttl 3600 --resolver 127.0.0.1 --remember
    """
    from ..core import certinfo
    from ..errors import UsageError
    from ..dns import client as publish, settings as dsettings
    from ..mailconf import auto, dane

    if remember and dry_run:
        raise UsageError("--remember keeps settings that worked: it cannot be combined with --dry-run")
    srv = publish.parse_server(server, "--server")
    if resolver:
        publish.parse_server(resolver, "--resolver")
    publish.load_tsig(tsig_key_file)
    store, entries, name, recs = _prepare(store_dir, host, ports, usage, ta, ta_selector, ttl)
    ttl = recs[0].ttl if recs else (ttl or 3600)
    hs = dsettings.HostSettings(host=name, server=f"{srv[0]}@{srv[1]}", tsig_key_file=str(tsig_key_file),
                                zone=(zone.rstrip(".") + ".") if zone else None, ttl=ttl,
                                ports=tuple(dane.parse_ports(ports)), usage=usage, ta=ta, ta_selector=ta_selector,
                                resolver=resolver, ns_port=ns_port)
    result = auto.publish_host(store, hs, dry_run=dry_run, now=certinfo.utcnow())
    if remember:
        dsettings.remember(store, hs)
    if as_json:
        emit_json({"host": name, **result.as_dict(), **({"remembered": hs.as_dict()} if remember else {})})
        return
    verb = "would" if dry_run else ""
    for c in result.changes:
        label = {"add": "added" if not dry_run else "would add", "delete": "removed" if not dry_run else "would remove",
                 "keep": "kept"}[c.action]
        click.echo(f"{label:>12}  {c.owner} TLSA {c.rdata}  ({c.why})")
    n_add = sum(c.action == "add" for c in result.changes)
    n_del = sum(c.action == "delete" for c in result.changes)
    click.echo(f"{'Dry run: ' if dry_run else ''}zone {result.zone} on {result.server}: {n_add} {verb + ' ' if verb else ''}added, "
               f"{n_del} {verb + ' ' if verb else ''}removed.")
    if remember:
        click.echo(f"Remembered for the scheduled job: {name} via {hs.server}"
                   + (f", DNS gate through {resolver}" if resolver else
                      " (no --resolver: switches wait 2 x TTL from publication, DNS is not asked)")
                   + "; set up the timer with 'mailca schedule --systemd'.")


@cli.command("forget", short_help="Stop the scheduled job publishing HOST (drop its remembered settings).")
@store_option
@click.argument("host")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def forget_cmd(store_dir, host, as_json):
    """Remove HOST from the settings 'mailca dane publish --remember' kept: 'mailca auto'
    stops publishing, rotating and gating it.  The records in DNS stay as they are."""
    from ..core.names import normalize_dns_name
    from ..dns import settings as dsettings
    from ..errors import UsageError

    store = get_store(store_dir)
    name = normalize_dns_name(host)
    known = [h.host for h in dsettings.load(store)]
    if name not in known:
        raise UsageError(f"{host!r} is not remembered for publishing; remembered: {', '.join(known) or 'none'}")
    dsettings.forget(store, name)
    if as_json:
        emit_json({"host": name, "forgotten": True})
        return
    click.echo(f"{name}: the scheduled job no longer publishes its TLSA records (DNS left as it is).")


@cli.command("rotate", short_help="One step of unattended key rotation: stage -> publish -> DNS gate -> commit -> prune.")
@store_option
@click.argument("host")
@_record_options
@click.option("--every", default=None, metavar="DURATION",
              help="Rotate a key once it is this old (e.g. 1y, 90d); default: the profile's rekey.every.")
@click.option("--server", required=True, metavar="ADDR[@PORT]", envvar="MAILCA_DNS_PRIMARY", help="The zone's primary.")
@click.option("--tsig-key-file", required=True, type=click.Path(dir_okay=False), envvar="MAILCA_TSIG_KEY_FILE",
              help="TSIG key file for the updates.")
@click.option("--zone", default=None, metavar="ZONE", help="The zone to update (default: from the server's SOA).")
@click.option("--resolver", required=True, metavar="ADDR[@PORT]", envvar="MAILCA_DNS_RESOLVER",
              help="Validating resolver for the DNS gate.")
@ns_port_option
@click.option("--deploy-hook", "hooks", multiple=True, metavar="CMD", help="Run after a commit (argv, no shell), e.g. 'postfix reload'.")
def rotate_cmd(store_dir, host, ports, usage, ta, ta_selector, ttl, every, server, tsig_key_file, zone, resolver, ns_port,
               hooks):
    """Advance HOST's key rotation by one step; run it from the renewal timer.

    Each run: publish the records (current, staged next, TA; stale ones removed); when no
    next key is staged and the current key is older than --every, stage one and publish
    its record; when one is staged, commit it as soon as the DNS gate opens (every
    authoritative server and the validating resolver have served a matching record for
    2 x TTL), run the deploy hooks, and publish again (the old 3 1 1 goes).  No step
    needs a human; a run that has nothing to do prints nothing.
    """
    import datetime as dt

    from ..core import certinfo
    from ..errors import GateHeld, HookError, UsageError
    from ..lifecycle.renew import parse_hooks, run_hooks
    from ..dns import client as publish, settings as dsettings
    from ..mailconf import auto, dane
    from ..lifecycle import rekey as rekeymod
    from . import rekey

    if every is None:
        from ..lifecycle.renew import load_policy

        every = (load_policy(get_store(store_dir), None)[1].raw.get("rekey") or {}).get("every")
        if every is None:
            raise UsageError("no rotation interval: give --every (e.g. 1y) or set rekey.every in the CA's profile")
    every_s = auto.parse_every(every, "--every")
    parsed_hooks = parse_hooks(list(hooks))
    srv = publish.parse_server(server, "--server")
    publish.parse_server(resolver, "--resolver")
    publish.load_tsig(tsig_key_file)  # a bad key file is a usage error before anything happens
    ctx = click.get_current_context()

    def sync(what):
        store, entries, name, recs = _prepare(store_dir, host, ports, usage, ta, ta_selector, ttl)
        hs = dsettings.HostSettings(host=name, server=f"{srv[0]}@{srv[1]}", tsig_key_file=str(tsig_key_file),
                                    zone=(zone.rstrip(".") + ".") if zone else None, ttl=recs[0].ttl if recs else 3600,
                                    ports=tuple(dane.parse_ports(ports)), usage=usage, ta=ta, ta_selector=ta_selector,
                                    resolver=resolver, ns_port=ns_port)
        res = auto.publish_host(store, hs, now=certinfo.utcnow())  # as the scheduled job publishes
        for c in res.changes:
            if c.action != "keep":
                click.echo(f"{what}: {'added' if c.action == 'add' else 'removed'} {c.owner} TLSA {c.rdata}")
        return store, entries, name

    store, entries, name = sync("publish")
    now = certinfo.utcnow()
    staged = [(e, rekeymod.read_staged(store, e)) for e in entries]
    if not any(m for _, m in staged):
        history = store.entries()
        old = []
        for e in entries:
            born = min((certinfo.parse_iso(x["not_before"]) for x in history
                        if x.get("name") == e["name"] and x.get("key_type") == e["key_type"]
                        and x.get("spki_sha256") == e["spki_sha256"] and x.get("not_before")),
                       default=certinfo.parse_iso(e["not_before"]))
            if now - born >= dt.timedelta(seconds=every_s):
                old.append(e["key_type"])
        if old:
            ctx.invoke(rekey.cli, store_dir=store_dir, host=host, action="stage", key_types=tuple(old), force=False,
                       resolver=None, ns_port=ns_port, ports=ports, as_json=False)
            sync("publish next")
        return
    try:
        ctx.invoke(rekey.cli, store_dir=store_dir, host=host, action="commit", key_types=(), force=False,
                   resolver=resolver, ns_port=ns_port, ports=ports, as_json=False)
    except GateHeld as exc:
        click.echo(f"waiting: {exc.message}")
        return
    if not parsed_hooks:
        click.echo("committed; reload the servers now - the next run removes the old record")
        return
    store = get_store(store_dir)
    done = [e | {"live_dir": str(store.live_dir(e["name"], e["key_type"]))} for e in dane.find_lineages(store, host)]
    for h in run_hooks(parsed_hooks, store, done):  # reload BEFORE the old record goes
        if not h["ok"]:
            raise HookError(f"deploy hook {h['hook']!r} failed: {h['error']}; the new key is live, reload by hand")
        click.echo(f"deploy hook ok: {h['hook']}")
    sync("prune")
