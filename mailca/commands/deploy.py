"""mailca deploy: put a host's certificate onto the live Postfix + Dovecot, prove it is served, roll back if not."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, store_option


@click.command("deploy", short_help="Put a host's certificate onto the live Postfix + Dovecot, prove it, roll back if not.")
@store_option
@click.argument("host", required=False)
@click.option("--postfix-config", "postfix_config", default=None, metavar="DIR", envvar="MAIL_CONFIG",
              help="Postfix instance to change (its main.cf directory; default $MAIL_CONFIG, else Postfix's default).")
@click.option("--dovecot-config", "dovecot_config", default=None, metavar="FILE",
              help="Dovecot's dovecot.conf (default /etc/dovecot/dovecot.conf when it exists).")
@click.option("--no-dovecot", is_flag=True, help="Leave Dovecot alone (no drop-in, no IMAP probes).")
@click.option("--profile", "profile", default="strict", show_default=True, metavar="strict|intermediate|FILE",
              help="TLS profile (as for 'mailca postfix').")
@click.option("--ports", default="25,587,465", show_default=True, metavar="LIST",
              help="Postfix services to manage: 25 (smtp/MX), 587 (submission), 465 (submissions).")
@click.option("--connect", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="Address the probes connect to for services that listen on all addresses.")
@click.option("--wait", default=30.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds each port may take after the reload to serve the new certificate.")
@click.option("--root-copy", "root_copy", default=None, metavar="PATH",
              help="Also write a world-readable (0644) copy of the mailca root to PATH (e.g. "
                   "/etc/ssl/mailca/root.crt) for local services that do not run as root: Exim "
                   "(tls_verify_certificates), fetchmail (sslcertfile), a sending Postfix (smtp_tls_CAfile).")
@click.option("--dry-run", is_flag=True, help="Show the change set as a diff and stop.")
@click.option("--rollback", "do_rollback", is_flag=True, help="Restore the files of the last deploy and reload.")
@json_option
def cli(store_dir, host, postfix_config, dovecot_config, no_dovecot, profile, ports, connect, wait, root_copy,
        dry_run, do_rollback, as_json):
    """Deploy HOST's current certificate and mailca's TLS settings onto a running Postfix
    (and Dovecot), then prove them on the wire.

    Reads the live configuration with postconf -n/-M/-P and doveconf -n, shows the
    minimal change set as a diff (one reason per line), and keeps what mailca does not
    own: the 'smtp inet' line (postscreen and its companions), chroot columns, other -o
    overrides, the SASL backend (Dovecot or Cyrus; with none it refuses to enable 587/465),
    policy maps and CA files.  Applying: a timestamped backup in the store, postconf
    -e/-M/-P, a Dovecot drop-in conf.d/99-mailca.conf, 'postfix check', 'doveconf -n', a
    reload, then every configured port is probed (new serial served, chain and host name
    verify against the mailca root, AUTH only after TLS).  Any failure restores the
    backup byte for byte, reloads and exits non-zero.  The root key is never needed.

    \b
    Examples:
      mailca deploy mail.example.org --dry-run
      mailca deploy mail.example.org --root-copy /etc/ssl/mailca/root.crt
      mailca deploy --rollback
      mailca deploy mail.example.org --postfix-config /etc/postfix-out --no-dovecot --ports 25
    """
    import os

    from ..errors import UsageError
    from ..mailconf import deploy as dp
    from ..mailconf import postfix as pf
    from ..mailconf.tlsprofiles import load_tls_profile

    store = get_store(store_dir)
    if do_rollback:
        if host or dry_run:
            raise UsageError("--rollback takes no HOST and no --dry-run: it restores the last deploy's backup")
        store.require_ca()
        res = dp.rollback(store)
        if as_json:
            emit_json(res)
        else:
            click.echo(f"restored {', '.join(res['files'])} from backup {res['restored']} and reloaded")
        return
    if not host:
        raise UsageError("give the HOST whose certificate to deploy (or --rollback)")
    tls = load_tls_profile(profile)
    port_list = pf.parse_ports(ports)
    if no_dovecot:
        if dovecot_config:
            raise UsageError("--no-dovecot and --dovecot-config contradict each other; give one")
    elif dovecot_config is None and os.path.isfile("/etc/dovecot/dovecot.conf"):
        dovecot_config = "/etc/dovecot/dovecot.conf"
    if root_copy:
        dp.check_root_copy(store, root_copy)
    target = dp.make_target(store, host)
    live = dp.read_live(postfix_config, None if no_dovecot else dovecot_config)
    plan = dp.plan(live, target, profile=tls, ports=port_list)
    if dry_run:
        if as_json:
            emit_json({**_plan_json(plan), "root_copy": root_copy})
        else:
            click.echo(dp.format_plan(plan), nl=False)
            if root_copy:
                click.echo(f"# would write the mailca root (0644) to {root_copy}")
        return
    if not as_json:
        click.echo(dp.format_plan(plan), nl=False)
    res = dp.apply(store, live, plan, connect=connect, wait=wait)
    copy = dp.install_root(store, root_copy) if root_copy else None
    if as_json:
        emit_json({**_plan_json(plan), **res, "root_copy": copy})
        return
    if copy:
        click.echo(f"wrote the mailca root (0644, for local services) to {copy['path']}")
        if copy["note"]:
            click.echo(f"mailca: warning: {copy['note']}", err=True)
    for r in res["probes"]:
        click.echo(f"ok   {r['proto']:<11} {r['address']}:{r['port']} serves serial {r['serial']}")
    if res["backup"]:
        click.echo(f"deployed {plan.target.host}: {res['changes']} change(s), backup {res['backup']} "
                   "('mailca deploy --rollback' restores it)")
    else:
        click.echo(f"nothing to change for {plan.target.host}; every port already serves the current certificate")


def _plan_json(plan) -> dict:
    return {
        "host": plan.target.host, "sasl": plan.sasl, "sasl_detail": plan.sasl_detail,
        "changes": [{"where": c.where, "key": c.key, "old": c.old, "new": c.new, "why": c.why} for c in plan.changes],
        "listeners": [{"proto": ls.proto, "address": ls.address, "port": ls.port, "source": ls.source}
                      for ls in plan.listeners],
    }
