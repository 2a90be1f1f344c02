"""mailca auto: the scheduled job - renew, rotate, renew the intermediate, publish TLSA, refresh the CRL."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, passphrase_option, store_option, warn


@click.command("auto", short_help="The scheduled job: everything due, one safe step per run (what the timer runs).")
@store_option
@click.option("--deploy-hook", "hooks", multiple=True, metavar="CMD",
              help="Run CMD (no shell) once after a run that changed a served certificate, e.g. 'postfix reload'.")
@click.option("--days-before", type=int, default=None, metavar="N",
              help="Renew when fewer than N days are left (default: the profile's renew.fraction).")
@click.option("--rekey-every", default=None, metavar="DURATION",
              help="Rotate the keys of published hosts once this old (e.g. 1y, 90d; default: the profile's rekey.every).")
@passphrase_option
@click.option("--crl-out", default=None, metavar="FILE",
              help="Also write the refreshed CRL here (DER for *.crl/*.der), e.g. /var/www/html/ca.crl.")
@click.option("--quiet", "-q", is_flag=True, help="Print only warnings, errors and a held DNS gate.")
@json_option
def cli(store_dir, hooks, days_before, rekey_every, passphrase_file, crl_out, quiet, as_json):
    """Do everything that is due, unattended; 'mailca schedule' makes the timer run this.

    \b
    Each run (idempotent; a run that finds nothing to do prints nothing):
      1. CRL: refreshed before half its lifetime is gone (and written to --crl-out)
      2. TLSA: every host remembered by 'mailca dane publish ... --remember' is published
      3. intermediate CA: renewed when it enters renew.intermediate_warn_days (needs the
         root passphrase: --passphrase-file FILE or an unencrypted root); its new 2 0 1
         is published at once, the leaves switch later (step 5)
      4. key rotation (rekey.every): stage a next key and publish its 3 1 1; commit it
         once the DNS gate opens
      5. renewal: what is due, and the leaves still sending the old intermediate - each
         chain change of a published host only once the DNS gate opens
      6. after a change: the deploy hooks, the live probe of what 'mailca deploy'
         installed, and a last publish that removes the records nothing serves any more

    The DNS gate (docs/dane.md) asks every authoritative server and the validating
    resolver; while it holds, the run exits 0 with one line 'waiting for DNS: ...' - the
    next run continues.  Exit 3/4/6/7 when a step failed (the other steps still ran).

    \b
    Examples:
      mailca auto --deploy-hook "postfix reload" --deploy-hook "doveadm reload"
      mailca auto --json
    """
    from ..errors import MailcaError
    from ..mailconf import auto

    res = auto.run(get_store(store_dir), hooks=list(hooks), days_before=days_before, rekey_every=rekey_every,
                   passphrase_file=passphrase_file, crl_out=crl_out)
    if as_json:
        emit_json(res.as_dict())
    else:
        for w in res.warnings:
            warn(w)
        if not quiet:
            for a in res.actions:
                click.echo(a)
            for h in res.hooks:
                if h["ok"]:
                    click.echo(f"deploy hook ok: {h['hook']}")
            for p in res.probes:
                click.echo(f"verified on the wire: {p['proto']} {p['address']}:{p['port']} serves serial {p['serial']}")
        if res.actions or res.held or res.busy:
            click.echo(res.status())
    if res.failures:
        more = f" (and {len(res.failures) - 1} more)" if len(res.failures) > 1 else ""
        err = MailcaError(f"{res.failures[0]}{more}")
        err.exit_code = res.exit_code or 1
        raise err
