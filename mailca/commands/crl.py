"""mailca crl: write the intermediate CA's certificate revocation list."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, store_option, warn


@click.command("crl", short_help="Write the CRL (revoked server certificates), signed by the intermediate.")
@store_option
@click.option("--out", default=None, metavar="FILE",
              help="Also write the CRL to FILE (e.g. the web directory behind the profile's distribution point).")
@click.option("--format", "fmt", default=None, metavar="pem|der",
              help="Format of --out FILE (default: DER for *.crl and *.der, PEM otherwise).")
@json_option
def cli(store_dir, out, fmt, as_json):
    """Generate a fresh CRL listing every revoked certificate in the store.

    The CRL is signed by the intermediate CA (which issued the server certificates),
    valid from now until now + the profile's crl.next_update_days (default 7), and
    carries a CRL number that only ever grows.  It is written atomically to the store
    as crl/intermediate.crl.pem and crl/intermediate.crl.der, and to --out FILE if
    given.  'mailca revoke' refreshes it too; run 'mailca crl' from cron or a systemd
    timer well within the next-update interval so that clients never see a stale CRL.

    \b
    Examples:
      mailca crl
      mailca crl --out /var/www/html/ca.crl          # DER, as served over HTTP
      mailca crl --out /etc/ssl/mailca.crl.pem       # PEM, for openssl -CRLfile
      mailca crl --json

    \b
    Check it:
      openssl crl -in crl/intermediate.crl.pem -CAfile ca/intermediate.crt -noout -verify
    """
    from ..lifecycle import crl as crlmod
    from ..errors import UsageError

    if out is not None and not out.strip():
        raise UsageError("--out is empty; give a file such as /var/www/html/ca.crl")
    store = get_store(store_dir)
    result = crlmod.generate(store, out=out, out_format=fmt)
    for w in result.warnings:
        warn(w)
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(f"CRL #{result.number}: {result.revoked} revoked certificate(s), "
               f"valid {result.this_update} .. {result.next_update}")
    click.echo(f"  PEM:  {result.pem_path}")
    click.echo(f"  DER:  {result.der_path}")
    if result.out_path is not None:
        click.echo(f"  out:  {result.out_path} ({result.out_format.upper()})")
    click.echo(f"Publish it again before {result.next_update} (e.g. 'mailca crl --out FILE' from a daily timer).")
