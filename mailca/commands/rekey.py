"""mailca rekey: stage a new key, publish its TLSA record, switch after 2 x TTL."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, ns_port_option, store_option, warn


@click.command("rekey", short_help="Replace a host's key safely for DANE (stage, publish, commit).")
@store_option
@click.argument("host")
@click.option("--stage", "action", flag_value="stage", help="Create the next key (nothing changes on the server yet).")
@click.option("--commit", "action", flag_value="commit", help="Issue a certificate for the staged key and make it live.")
@click.option("--abort", "action", flag_value="abort", help="Throw the staged key away.")
@click.option("--key-type", "key_types", multiple=True, metavar="TYPE", help="Only this lineage of a dual pair (repeatable).")
@click.option("--force", is_flag=True, help="Commit even if the 'next' TLSA record is younger than 2 x TTL (breaks DANE for cached resolvers).")
@click.option("--resolver", default=None, metavar="ADDR[@PORT]", envvar="MAILCA_DNS_RESOLVER",
              help="Validating resolver for the DNS gate (env MAILCA_DNS_RESOLVER); without it --commit uses the time "
                   "'mailca dane' first printed the record.")
@ns_port_option
@click.option("--port", "ports", multiple=True, metavar="N", help="TLSA owner port(s) the gate checks (default 25).")
@json_option
def cli(store_dir, host, action, key_types, force, resolver, ns_port, ports, as_json):
    """Roll HOST's key without breaking DANE (RFC 7671 section 8.1).

    \b
    1. mailca rekey mail.example.org --stage     # next key, kept in the store (0600)
    2. mailca dane publish mail.example.org ...  # current AND next 3 1 1 records (or
                                                 # 'mailca dane' and publish them by hand)
    3. wait 2 x TTL (so no resolver still caches the old record set)
    4. mailca rekey mail.example.org --commit --resolver 127.0.0.1
                                                 # certificate for the next key goes live
    5. postfix reload; the next 'dane publish' removes the old 3 1 1 record

    With --resolver (or MAILCA_DNS_RESOLVER) --commit asks every authoritative server of
    the zone and the validating resolver (AD bit) and refuses until all of them have served
    a record matching the new chain (next 3 1 1, or the intermediate's 2 x 1) for 2 x the
    TTL they serve.  Without it, the wait counts from when 'dane' first printed the next
    record.  --force overrides either.  Plain renewal keeps the key, so 3 1 1 stays valid.
    """
    from ..lifecycle.rekey import rekey

    res = rekey(get_store(store_dir), host, action, key_types=key_types, force=force, resolver=resolver,
                ns_port=ns_port, ports=ports)
    for w in res.warnings:
        warn(w)
    probes = []
    if res.action == "commit":
        from ..mailconf.deploy import verify_deployed

        probes = verify_deployed(get_store(store_dir), [res.host])  # deployed with 'mailca deploy': reload + prove it
    if as_json:
        emit_json({**res.as_dict(), **({"probes": probes} if res.action == "commit" else {})})
        return
    name = res.host
    if res.action == "stage":
        for m in res.staged:
            click.echo(f"Staged a next {m['key_type']} key for {name}: TLSA 3 1 1 {m['spki_sha256']}")
        click.echo(f"Next: 'mailca dane {name}', publish the records it prints, wait 2 x TTL, then 'mailca rekey {name} --commit'.")
    elif res.action == "abort":
        click.echo(f"Removed the staged key(s) of {name}; remove their 'next' TLSA records from the zone.")
    else:
        for r in res.certificates:
            click.echo(f"{name} ({r['key_type']}) now uses the staged key: serial {r['serial']}, TLSA 3 1 1 {r['spki_sha256']}")
        for p in probes:
            click.echo(f"verified on the wire: {p['proto']} {p['address']}:{p['port']} serves serial {p['serial']}")
        if not probes:
            click.echo("Reload Postfix and Dovecot now; remove the old 3 1 1 record once they serve the new certificate.")
