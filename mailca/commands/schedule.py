"""mailca schedule: systemd timer or cron line that runs 'mailca renew' unattended."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, store_option


@click.command("schedule", short_help="Write a systemd timer or a cron line that runs 'mailca renew'.")
@store_option
@click.option("--systemd", "kind", flag_value="systemd", help="mailca-renew.service + mailca-renew.timer (twice daily).")
@click.option("--cron", "kind", flag_value="cron", help="A cron.d file 'mailca-renew' (twice daily, random minute).")
@click.option("--write", "write_dir", default=None, metavar="DIR",
              help="Write the files into DIR (e.g. /etc/systemd/system, /etc/cron.d) instead of printing them.")
@click.option("--deploy-hook", "hooks", multiple=True, metavar="CMD",
              help="Passed to 'mailca renew --deploy-hook' (e.g. 'postfix reload'). Repeatable.")
@click.option("--user", default="root", show_default=True, help="User field of the cron.d line.")
@json_option
def cli(store_dir, kind, write_dir, hooks, user, as_json):
    """Set up unattended renewal: 'mailca renew --quiet' twice a day.

    The systemd timer has a randomized delay (1 h) and is persistent (a run missed
    while the machine was off happens at boot).  Renewal does nothing unless a
    certificate is due, so running it often is harmless.

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
    store = get_store(store_dir)
    argv = sch.renew_argv(str(store.path), list(hooks))
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
