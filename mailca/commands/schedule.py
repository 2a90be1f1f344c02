"""mailca schedule: systemd timer or cron line that runs the scheduled job 'mailca auto' unattended."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, store_option


@click.command("schedule", short_help="Write a systemd timer or a cron line that runs the scheduled job 'mailca auto'.")
@store_option
@click.option("--systemd", "kind", flag_value="systemd", help="mailca-renew.service + mailca-renew.timer (twice daily).")
@click.option("--cron", "kind", flag_value="cron", help="A cron.d file 'mailca-renew' (twice daily, random minute).")
@click.option("--write", "write_dir", default=None, metavar="DIR",
              help="Write the files into DIR (e.g. /etc/systemd/system, /etc/cron.d) instead of printing them.")
@click.option("--deploy-hook", "hooks", multiple=True, metavar="CMD",
              help="Passed to 'mailca auto --deploy-hook' (e.g. 'postfix reload'). Repeatable.")
@click.option("--days-before", type=click.IntRange(0, 3650), default=None, metavar="N",
              help="Passed to 'mailca auto': renew when fewer than N days are left.")
@click.option("--rekey-every", default=None, metavar="DURATION",
              help="Passed to 'mailca auto': rotate published hosts' keys this often (default: profile rekey.every).")
@click.option("--passphrase-file", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="Passed to 'mailca auto' (its path, not the secret): lets the job renew the intermediate CA.")
@click.option("--crl-out", default=None, metavar="FILE", help="Passed to 'mailca auto': where to publish the CRL.")
@click.option("--user", default="root", show_default=True, help="User field of the cron.d line.")
@json_option
def cli(store_dir, kind, write_dir, hooks, days_before, rekey_every, passphrase_file, crl_out, user, as_json):
    """Set up the unattended job: 'mailca auto --quiet' twice a day.

    One run renews what is due, rotates keys (profile rekey.every), renews the
    intermediate CA, publishes and prunes TLSA records of the hosts remembered with
    'mailca dane publish ... --remember' (each switch only once the DNS gate opens),
    refreshes the CRL and reloads + probes what 'mailca deploy' installed; see
    'mailca auto --help'.  The command line carries no secret.

    The systemd timer has a randomized delay (1 h) and is persistent (a run missed
    while the machine was off happens at boot).  The job does nothing unless something
    is due, so running it often is harmless.

    \b
    Examples:
      mailca schedule --systemd --deploy-hook "postfix reload" --deploy-hook "doveadm reload" \\
          --write /etc/systemd/system && systemctl daemon-reload && systemctl enable --now mailca-renew.timer
      mailca schedule --cron --deploy-hook "postfix reload" --write /etc/cron.d
    """
    from ..errors import UsageError
    from ..lifecycle import schedule as sch

    if kind is None:
        raise UsageError("say which scheduler: --systemd or --cron")
    import os

    store = get_store(store_dir)
    extra = []
    if days_before is not None:
        extra += ["--days-before", str(days_before)]
    if rekey_every is not None:
        from ..mailconf.auto import parse_every

        parse_every(rekey_every)
        extra += ["--rekey-every", rekey_every]
    if passphrase_file is not None:
        if not os.path.isfile(passphrase_file):
            raise UsageError(f"--passphrase-file {passphrase_file!r} is not a file; give the file holding the root "
                             "passphrase (mode 0600)")
        extra += ["--passphrase-file", os.path.abspath(passphrase_file)]
    if crl_out is not None:
        from ..lifecycle.crl import check_out_path

        check_out_path(crl_out)
        extra += ["--crl-out", os.path.abspath(crl_out)]
    argv = sch.job_argv(str(store.path), list(hooks), extra)
    if kind == "systemd":
        files = sch.systemd_units(argv)
    else:
        if not user or any(c.isspace() for c in user):
            raise UsageError(f"--user {user!r} is not a user name")
        files = {sch.CRON: sch.cron_line(argv, user=user)}
    if write_dir:
        from ..storage.outpaths import refuse_inside_store

        refuse_inside_store(write_dir, store.path, "--write")
    written = sch.write_files(files, write_dir) if write_dir else []
    if as_json:
        emit_json({"kind": kind, "argv": argv, "files": files, "written": written})
        return
    if written:
        for w in written:
            click.echo(f"wrote {w}")
        if kind == "systemd":
            click.echo("next: systemctl daemon-reload && systemctl enable --now mailca-renew.timer")
        return
    for name, text in files.items():
        click.echo(f"# ---- {name}")
        click.echo(text, nl=False)
