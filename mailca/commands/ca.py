"""mailca ca: CA maintenance (renew-intermediate)."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, passphrase_option, store_option


@click.group("ca", short_help="CA maintenance: renew the intermediate CA, re-encrypt the root key.")
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
    from ..lifecycle.intermediate import renew_intermediate as do_renew

    store = get_store(store_dir)
    store.require_ca()
    from ..storage.castate import load_castate

    encrypted = load_castate(store).root_encrypted
    passphrase = keys.read_passphrase(passphrase_file, purpose="root CA key") if encrypted else None
    info = do_renew(store, passphrase, days=days, dry_run=dry_run)
    if encrypted:
        from ..lifecycle.rewrap import root_key_kdf

        kdf = root_key_kdf(store)
        if kdf.kdf != "pbkdf2" or (kdf.iterations or 0) < keys.WEAK_KDF_ITERATIONS:
            from .common import warn

            warn(f"the root key is protected by {kdf.describe()} only; upgrade it with 'mailca ca rewrap-key'")
    if dry_run:  # the real run signs another certificate (new serial, new signature): its 2 0 1 is unknown now
        info = info._replace(new=info.new._replace(tlsa_2_0_1=None))
    if as_json:
        emit_json(info.as_dict())
        return
    verb = "Would renew" if dry_run else "Renewed"
    click.echo(f"{verb} the intermediate CA (same key): serial {info.new.serial}, "
               f"valid until {info.new.not_after} (was {info.old.not_after}).")
    click.echo(f"  name constraints kept: {', '.join(info.name_constraints)}")
    click.echo(f"  {info.leaves_checked} current certificate(s) verified against the new intermediate.")
    click.echo("DANE / TLSA:")
    click.echo(f"  unchanged:        {info.tlsa_2_1_1}   (and every 3 1 1 record)")
    if dry_run:
        click.echo("  publish FIRST:    (a new 2 0 1 record; the real run prints it - a dry run signs a throw-away "
                   "certificate whose digest will never exist)")
    else:
        click.echo(f"  publish FIRST:    {info.new.tlsa_2_0_1}")
    click.echo(f"  remove later:     {info.old.tlsa_2_0_1}")
    click.echo("Next: publish the new 2 0 1 record next to the old one and wait two TTLs; then deploy the new chain "
               "with 'mailca renew --all --force' (it reloads and probes what 'mailca deploy' put on a server; "
               "other servers: add --deploy-hook \"postfix reload\"); then remove the old 2 0 1 record.")


@cli.command("rewrap-key", short_help="Re-encrypt the root key with the current KDF (and optionally a new passphrase).")
@store_option
@passphrase_option
@click.option("--new-passphrase-file", type=click.Path(dir_okay=False), default=None,
              help="Encrypt under the passphrase on the first line of FILE (default: keep the current one).")
@json_option
def rewrap_key(store_dir, passphrase_file, new_passphrase_file, as_json):
    """Upgrade ca/root.key to PBKDF2-HMAC-SHA256 with 600,000 iterations (stores made by
    older mailca versions use 2,048) and optionally change its passphrase.

    The new file is verified to open and to match root.crt before it replaces the old one
    (atomically); the old key is kept as ca/root.key.pre-rewrap until then.  A new
    passphrase (or the kept one) must pass the passphrase policy.

    \b
    Examples:
      mailca ca rewrap-key --passphrase-file /root/ca-pass
      mailca ca rewrap-key --passphrase-file old-pass --new-passphrase-file new-pass
    """
    from ..core import keys
    from ..lifecycle.rewrap import rewrap_root_key, root_key_kdf
    from ..errors import UsageError

    store = get_store(store_dir)
    store.require_ca()
    if root_key_kdf(store).kdf == "none":
        raise UsageError(f"{store.ca_file('root.key')} is not encrypted (the CA was made with --no-root-passphrase); "
                         "there is nothing to rewrap")
    passphrase = keys.read_passphrase(passphrase_file, purpose="root CA key")
    new = None
    if new_passphrase_file:
        new = keys.read_passphrase(new_passphrase_file, confirm=True, purpose="root CA key (new)")
    info = rewrap_root_key(store, passphrase, new)
    if as_json:
        emit_json(info)
        return
    click.echo(f"Re-encrypted {info['key']}: {info['after']} (was {info['before']})"
               + ("; new passphrase set." if info["passphrase_changed"] else "; passphrase unchanged."))
