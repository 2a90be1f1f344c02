"""mailca dovecot: Dovecot TLS settings for a host (2.3 or 2.4 syntax)."""

from __future__ import annotations

import click

from .common import get_store, store_option


@click.command("dovecot", short_help="Dovecot TLS settings for a host.")
@store_option
@click.argument("host")
@click.option("--dovecot-version", default=None, metavar="2.3|2.4",
              help="Syntax to emit (default: the installed dovecot's, else 2.3).")
@click.option("--profile", "profile", default="strict", show_default=True, metavar="strict|intermediate|FILE",
              help="TLS profile (Dovecot always gets the 'mandatory' protocol and cipher limits).")
@click.option("--no-sasl-listener", is_flag=True, help="Leave out the auth socket for Postfix SASL.")
def cli(store_dir, host, dovecot_version, profile, no_sasl_listener):
    """Print Dovecot TLS settings for HOST: certificate and key paths (both when a dual
    ECDSA+RSA pair exists), minimum protocol, strong ciphers in the server's order, no
    plaintext authentication without TLS, and the auth socket Postfix uses for SASL
    (below Postfix's queue_directory, as 'postconf -h queue_directory' reports it).

    The output is a drop-in: save it as /etc/dovecot/conf.d/99-mailca.conf (Debian's
    dovecot.conf includes conf.d/*.conf), or let 'mailca deploy HOST' do it and prove it.

    \b
    Examples:
      mailca dovecot mail.example.org > /etc/dovecot/conf.d/99-mailca.conf && doveadm reload
      mailca dovecot mail.example.org --dovecot-version 2.4
    """
    from ..mailconf.dane import find_lineages
    from ..mailconf import dovecot as dc
    from ..mailconf.tlsprofiles import load_tls_profile
    from .postfix import cert_files

    tls = load_tls_profile(profile)
    version = dc.parse_version(dovecot_version or dc.detect_version() or "2.3")
    store = get_store(store_dir)
    entries = find_lineages(store, host)
    click.echo(dc.render(entries[0]["name"], version=version, profile=tls, certs=cert_files(store, entries),
                         sasl_listener=not no_sasl_listener, postfix_queue=_queue_directory()), nl=False)


def _queue_directory() -> str:
    """Postfix's queue_directory (honours MAIL_CONFIG), where the SASL socket must live."""
    import shutil
    import subprocess

    exe = shutil.which("postconf")
    if exe:
        try:
            from ..core.childenv import child_env

            r = subprocess.run([exe, "-h", "queue_directory"], capture_output=True, text=True, timeout=20, env=child_env())
            if r.returncode == 0 and r.stdout.strip().startswith("/"):
                return r.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return "/var/spool/postfix"
