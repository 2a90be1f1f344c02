"""mailca ca: CA maintenance (renew-intermediate)."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, passphrase_option, store_option


@click.group("ca", short_help="CA maintenance: renew the intermediate CA.")
def cli():
    """Maintenance of the CA itself (the root stays; its key is only needed here)."""


@cli.command("renew-intermediate", short_help="Re-certify the intermediate CA with the same key.")
@store_option
@passphrase_option
@click.option("--days", type=int, default=None, help="Validity in days (default: the profile's ca.intermediate_days).")
@click.option("--dry-run", is_flag=True, help="Build and check the new intermediate, print the plan, write nothing.")
@json_option
def renew_intermediate(store_dir, passphrase_file, days, dry_run, as_json):
    """Issue a new intermediate certificate for the SAME key, subject and name constraints.

    Needs the root key passphrase (--passphrase-file, $MAILCA_PASSPHRASE or a prompt).
    Existing server certificates keep chaining (same issuer name and key), DANE
    "2 1 1" records (intermediate public key) stay valid; "2 0 1" records (hash of the
    intermediate certificate) change: publish the new one next to the old first.

    \b
    Examples:
      mailca ca renew-intermediate --passphrase-file /root/ca-pass
      mailca ca renew-intermediate --dry-run --json
    """
    from ..core import keys
    from ..lifecycle.renew import renew_intermediate as do_renew

    store = get_store(store_dir)
    store.require_ca()
    encrypted = bool(store.read_ca_meta().get("root_encrypted", True))
    passphrase = keys.read_passphrase(passphrase_file, purpose="root CA key") if encrypted else None
    info = do_renew(store, passphrase, days=days, dry_run=dry_run)
    if as_json:
        emit_json(info)
        return
    verb = "Would renew" if dry_run else "Renewed"
    click.echo(f"{verb} the intermediate CA (same key): serial {info['new']['serial']}, "
               f"valid until {info['new']['not_after']} (was {info['old']['not_after']}).")
    click.echo(f"  name constraints kept: {', '.join(info['name_constraints'])}")
    click.echo(f"  {info['leaves_checked']} current certificate(s) verified against the new intermediate.")
    click.echo("DANE / TLSA:")
    click.echo(f"  unchanged:        {info['tlsa_2_1_1']}   (and every 3 1 1 record)")
    click.echo(f"  publish FIRST:    {info['new']['tlsa_2_0_1']}")
    click.echo(f"  remove later:     {info['old']['tlsa_2_0_1']}")
    click.echo("Next: publish the new 2 0 1 record next to the old one and wait two TTLs; then deploy the new chain "
               "with 'mailca renew --all --force --deploy-hook \"postfix reload\"'; then remove the old 2 0 1 record.")
