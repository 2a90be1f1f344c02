"""mailca bundle: the files that hand the root certificate to users' devices."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, store_option


@click.command("bundle", short_help="Write the root as PEM/DER/.mobileconfig plus an offline install page.")
@store_option
@click.option("--out", "out", type=click.Path(), default="mailca-bundle", show_default=True, metavar="DIR",
              help="Directory for the bundle (created 0755). Must not hold any private key.")
@json_option
def cli(store_dir, out, as_json):
    """Write everything a user needs to trust this CA's root on their device.

    \b
    Files (NAME = mailca-<org>-<first 8 hex of the root's SHA-256>):
      NAME.crt            the root, PEM (Linux, Thunderbird, Firefox, Android, macOS)
      NAME.cer            the root, DER (Windows, Android)
      NAME.mobileconfig   Apple profile (iPhone, iPad, Mac); stable UUID, so
                          re-installing replaces instead of duplicating
      fingerprints.txt    SHA-256 / SHA-1 in the forms the OS dialogs show
      index.html          one self-contained page (no scripts, no external
                          assets): downloads, fingerprints, the name-constraint
                          scope and install steps per platform

    Copy the directory to any web server (or a USB stick) and tell users the
    SHA-256 fingerprint by another channel.  Only public files are written;
    a directory that contains a private key (or lies inside the store) is
    refused.  Re-running rewrites the same bytes.

    \b
    Examples:
      mailca bundle --out /var/www/html/ca
      mailca bundle --out ./for-users --json
    """
    from ..distribution.bundles import bundle_from_store

    summary = bundle_from_store(get_store(store_dir), out)
    if as_json:
        emit_json(summary)
        return
    r = summary["root"]
    click.echo(f"Wrote the bundle for {r['common_name']} to {summary['out']}/")
    for kind in ("pem", "der", "mobileconfig", "fingerprints", "html"):
        click.echo(f"  {summary['files'][kind]['path']}")
    click.echo(f"SHA-256: {r['sha256']}")
    click.echo(f"Scope:   {r['scope']['summary']}")
    click.echo("Next: publish the directory (or copy it to a USB stick), open index.html, and give users the "
               "SHA-256 fingerprint by another channel so they can check it.")
