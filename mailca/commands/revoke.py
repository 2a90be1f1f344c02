"""mailca revoke: revoke a server certificate and refresh the CRL."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, store_option


@click.command("revoke", short_help="Revoke a server certificate (by host name or serial) and refresh the CRL.")
@store_option
@click.argument("target", required=False, metavar="NAME|SERIAL")
@click.option("--reason", default=None, metavar="REASON",
              help="RFC 5280 reason, any case: unspecified (default), keyCompromise, superseded, "
                   "cessationOfOperation, affiliationChanged, privilegeWithdrawn.")
@click.option("--key-type", default=None, metavar="TYPE",
              help="With NAME: which lineage of a dual pair to revoke (ecdsa-p256, rsa-2048, ...).")
@click.option("--all-key-types", is_flag=True, help="With NAME: revoke the current certificate of every key type.")
@click.option("--dry-run", is_flag=True, help="Show what would be revoked; change nothing.")
@json_option
def cli(store_dir, target, reason, key_type, all_key_types, dry_run, as_json):
    """Revoke a certificate, record it, and write a fresh CRL.

    NAME (e.g. mail.example.org) revokes the current (newest) certificate of that
    name; if the name has an ECDSA and an RSA certificate, pick one with --key-type or
    take both with --all-key-types.  SERIAL revokes exactly that certificate: give it in
    hexadecimal as 'mailca status' or 'openssl x509 -noout -serial' print it (colons,
    0x and case do not matter; decimal is not accepted).

    With --reason keyCompromise every other unrevoked certificate that uses the same
    key is revoked too (renewals keep the key by default), and each is listed.
    Revocation is permanent; revoking again is harmless (it only refreshes the CRL)
    unless --reason names a different reason.  The revoked certificate stays in live/ -
    mailca does not fall back to an older one - so issue a replacement and reload your
    servers.

    \b
    Examples:
      mailca revoke mail.example.org --reason superseded
      mailca revoke mail.example.org --key-type rsa-2048 --reason keyCompromise
      mailca revoke 3a:9f:12:...:c4 --reason cessationOfOperation
      mailca revoke mail.example.org --dry-run

    \b
    Afterwards:
      mailca issue mail.example.org          # new key and certificate
      postfix reload; doveadm reload
      mailca crl --out /var/www/html/ca.crl  # if you publish the CRL
    """
    from ..lifecycle.revoke import revoke

    store = get_store(store_dir)
    res = revoke(store, target, reason=reason, key_type=key_type, all_key_types=all_key_types, dry_run=dry_run)
    if as_json:
        emit_json(res.as_dict())
        return
    verb = "Would revoke" if res.dry_run else "Revoked"
    for r in res.revoked:
        why = " (same key)" if r["same_key"] else ""
        click.echo(f"{verb} {r['name']} {r['key_type']} v{r['version']} serial {r['serial']}: {r['reason']}{why}")
    for n in res.notes:
        click.echo(f"  note: {n}")
    if res.dry_run:
        click.echo("Nothing was changed (--dry-run).")
        return
    c = res.crl
    if not res.revoked:
        click.echo(f"Nothing new to revoke; CRL #{c['crl_number']} refreshed ({c['revoked']} certificate(s)): {c['pem']}")
        return
    click.echo(f"CRL #{c['crl_number']} lists {c['revoked']} certificate(s), next update {c['next_update']}: {c['pem']}")
    names = sorted({r["name"] for r in res.revoked})
    click.echo("Next: the revoked certificate is still in live/ - issue a replacement "
               f"('mailca issue {names[0]}'), reload Postfix/Dovecot, and publish the CRL ('mailca crl --out FILE').")
    if any(r["reason"] == "keyCompromise" for r in res.revoked):
        click.echo("Key compromised: the new certificate gets a new key; publish its TLSA 3 1 1 record and remove "
                   "the old one ('mailca dane').")
