"""mailca renew: renew every certificate that is due (for cron / systemd timers)."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, ns_port_option, store_option, warn


@click.command("renew", short_help="Renew the certificates that are due (run it from cron or a systemd timer).")
@store_option
@click.argument("names", nargs=-1, metavar="[NAME...]")
@click.option("--all", "all_", is_flag=True, help="Consider every certificate (the default when no NAME is given).")
@click.option("--days-before", type=int, default=None, metavar="N",
              help="Due when fewer than N days are left (default: when 2/3 of the lifetime has passed, profile renew.fraction).")
@click.option("--new-key", is_flag=True,
              help="Generate a new key now (default: keep the key, so TLSA 3 1 1 records stay valid; with DANE use 'mailca rekey').")
@click.option("--force", is_flag=True, help="Renew even if not due (e.g. to move every certificate onto a renewed intermediate).")
@click.option("--deploy-hook", "hooks", multiple=True, metavar="CMD",
              help="Run CMD (split like a shell word list, no shell) once after at least one renewal. Repeatable.")
@click.option("--dry-run", is_flag=True, help="Show what is due; write nothing, run no hook.")
@click.option("--quiet", "-q", is_flag=True, help="Print only warnings and errors.")
@click.option("--resolver", default=None, metavar="ADDR[@PORT]", envvar="MAILCA_DNS_RESOLVER",
              help="DNS gate (docs/dane.md): hold back a renewal that changes the served chain or key until every "
                   "authoritative server and this validating resolver serve a matching TLSA record for 2 x TTL.")
@ns_port_option
@click.option("--dane-port", "dane_ports", multiple=True, metavar="N", help="TLSA owner port(s) the gate checks (default 25).")
@json_option
def cli(store_dir, names, all_, days_before, new_key, force, hooks, dry_run, quiet, resolver, ns_port, dane_ports, as_json):
    """Renew every certificate that is due, keeping its key unless --new-key.

    A certificate is due when two thirds of its lifetime have passed (profile
    renew.fraction) or, with --days-before N, when fewer than N days are left.
    Revoked certificates are never renewed; certificates signed from a CSR cannot be
    renewed here (their key lives on the mail server).  Each renewal is a new version
    under certs/NAME/KEY-TYPE/archive/ and live/ switches atomically, so Postfix and
    Dovecot keep reading the same paths.

    Deploy hooks run once per run, after at least one renewal, with these variables:
    MAILCA_RENEWED_NAMES, MAILCA_RENEWED_LINEAGES, MAILCA_RENEWED_LIVE_DIRS,
    MAILCA_RENEWED_FULLCHAINS, MAILCA_RENEWED_KEYS (space-separated), MAILCA_RENEWED_JSON,
    MAILCA_STORE, and certbot's RENEWED_DOMAINS / RENEWED_LINEAGE.

    A host put on a server with 'mailca deploy' is then reloaded and probed on every
    deployed port: a port still serving the old certificate fails the run (exit 4).

    Silent when nothing is due; one line per renewed certificate otherwise.  Exit 0
    when everything due was renewed; 3/2 when a renewal failed, 7 when a hook failed.

    \b
    Examples:
      mailca renew --quiet --deploy-hook "postfix reload" --deploy-hook "doveadm reload"
      mailca renew --dry-run --days-before 30
      mailca renew mail.example.org --new-key
      MAILCA_NOW=2027-06-01T00:00:00Z mailca renew --dry-run   # what would renew then
    """
    from ..errors import HookError, StoreError, UsageError
    from ..lifecycle.renew import renew

    if all_ and names:
        raise UsageError("give NAMEs or --all, not both")
    store = get_store(store_dir)
    held = _dns_gate(store, names, days_before, force, new_key, resolver, ns_port, dane_ports) if resolver and not dry_run else {}
    for held_name, why in held.items():
        warn(f"renewal of {held_name} held back by the DNS gate (the TLSA records do not cover it yet): {why}")
    if held:
        from ..lifecycle.renew import lineages, resolve_names

        entries = store.load_index()["certs"]
        pool = resolve_names(entries, list(names)) if names else \
            sorted({n for (n, _), e in lineages(entries).items() if e.get("status") != "revoked"})
        names = tuple(n for n in pool if n not in held)
        if not names:
            if as_json:
                emit_json({"renewed": [], "held": held})
            return
    res = renew(store, names=list(names) or None, days_before=days_before, new_key=new_key, hooks=list(hooks),
                dry_run=dry_run, force=force)
    if as_json:
        emit_json(res.as_dict())
    else:
        for w in res.warnings:
            warn(w)
        if dry_run:
            for r in res.renewed:
                if r.get("would_renew"):
                    if not quiet:
                        click.echo(f"would renew {r['name']} ({r['key_type']}): {r['state']}, expires {r['not_after']}")
                else:
                    click.echo(f"cannot renew {r['name']} ({r['key_type']}): {r['error']}", err=True)
            if not quiet and res.renewed and hooks:
                click.echo(f"would run {len(hooks)} deploy hook(s): " + "; ".join(hooks))
        else:
            if not quiet:
                for r in res.renewed:
                    how = "new key" if r.get("new_key") else "same key"
                    click.echo(f"renewed {r['name']} ({r['key_type']}, {how}): serial {r['serial']}, "
                               f"expires {r['not_after']}, live {r['live_dir']}")
            for f in res.failed:
                click.echo(f"mailca: renewal failed: {f['error']}", err=True)
            for h in res.hooks:
                if h["ok"]:
                    if not quiet:
                        click.echo(f"deploy hook ok: {h['hook']}")
                else:
                    click.echo(f"mailca: deploy hook failed: {h['hook']}: {h['error']}", err=True)
    if res.failed:
        first = res.failed[0]["error"]
        more = f" (and {len(res.failed) - 1} more)" if len(res.failed) > 1 else ""
        raise StoreError(f"{len(res.failed)} renewal(s) failed; first: {first}{more}")
    bad_hooks = [h for h in res.hooks if not h["ok"]]
    if bad_hooks:
        raise HookError(f"deploy hook {bad_hooks[0]['hook']!r} failed: {bad_hooks[0]['error']}; "
                        f"the certificates were renewed, reload the servers by hand")
    if not dry_run and res.renewed:
        from ..mailconf.deploy import verify_deployed

        # what 'mailca deploy' put on a live server is reloaded and probed: a port still
        # serving the old certificate is an error (VerificationError), not a silent success
        for p in verify_deployed(store, sorted({r["name"] for r in res.renewed})):
            if not quiet and not as_json:
                click.echo(f"verified on the wire: {p['proto']} {p['address']}:{p['port']} serves serial {p['serial']}")


def _dns_gate(store, names, days_before, force, new_key, resolver, ns_port, dane_ports) -> dict:
    """{lineage name: why} for the due renewals the DNS gate holds back (mailca/dns/gate.py)."""
    from ..core import certinfo
    from ..lifecycle.renew import load_policy, resolve_names, select_due
    from ..dns import client as publish, gate as dnsgate
    from ..mailconf import dane

    entries = store.load_index()["certs"]
    wanted = resolve_names(entries, list(names)) if names else None
    policy, _ = load_policy(store, days_before)
    due, _, _ = select_due(entries, certinfo.utcnow(), policy, names=wanted, force=force)
    return dnsgate.hold_chain_changes(store, due, dane.parse_ports(dane_ports), publish.parse_server(resolver, "--resolver"),
                                      ns_port, new_key=new_key)
