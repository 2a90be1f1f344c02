"""mailca issue: issue a server certificate for the mail host names (dual RSA+ECDSA, --batch)."""

from __future__ import annotations

import click

from .common import emit_json, json_option, store_option, get_store


def print_issued(results: list[dict]) -> None:
    for r in results:
        names = ", ".join(r["names"] + r["ips"])
        click.echo(f"Issued {r['key_type']} certificate for {names}")
        click.echo(f"  serial:        {r['serial']}")
        click.echo(f"  expires:       {r['not_after']}")
        click.echo(f"  SHA-256:       {r['sha256_fingerprint']}")
        click.echo(f"  TLSA 3 1 1:    {r['spki_sha256']}")
        click.echo(f"  fullchain:     {r['paths']['fullchain']}")
        if "key" in r["paths"]:
            click.echo(f"  key:           {r['paths']['key']}")


@click.command("issue", short_help="Issue a server certificate for mail host names.")
@store_option
@click.argument("hosts", nargs=-1, metavar="HOST [HOST...]")
@click.option("--san", "sans", multiple=True, metavar="NAME", help="Another DNS name for the certificate (repeatable).")
@click.option("--ip", "ips", multiple=True, metavar="ADDR", help="An IP address SAN (only if the profile permits IP ranges).")
@click.option("--key-type", "key_types", multiple=True, metavar="TYPE",
              help="ecdsa-p256 (default), ecdsa-p384, rsa-2048, rsa-3072, rsa-4096. Twice (ecdsa-p256 and rsa-2048) gives a dual pair.")
@click.option("--days", type=int, default=None, help="Validity in days (default and maximum: the profile's leaf.days).")
@click.option("--profile", default=None, metavar="NAME|FILE", help="Certificate profile (default: the one the CA was created with).")
@click.option("--replace", is_flag=True,
              help="Replace the host's live certificate (new key, new name list). Without it, a host that "
                   "already has one is refused: use 'mailca renew --force' (same key) or 'mailca rekey' (DANE-safe).")
@click.option("--batch", "batch_file", default=None, metavar="FILE",
              help="Issue one certificate per line of FILE ('-' for stdin): the line's names, space-separated.")
@json_option
def cli(store_dir, hosts, sans, ips, key_types, days, profile, replace, batch_file, as_json):
    """Issue a server certificate whose SAN holds every HOST and --san name.

    Names may be given as U-labels (bücher.example.org) or A-labels; they are stored
    as A-labels.  Every name must lie inside the CA's domains, and the certificate is
    verified (chain, hostname, lint) before anything is written.  The result lands in
    the store under certs/HOST/KEY-TYPE/live/ (cert.pem, chain.pem, fullchain.pem,
    key.pem, keyfullchain.pem), which changes atomically on renewal.

    \b
    Examples:
      mailca issue mail.example.org --san smtp.example.org --san imap.example.org
      mailca issue mail.example.org --key-type ecdsa-p256 --key-type rsa-2048
    """
    from ..issuance import ca as camod
    from ..errors import UsageError

    store = get_store(store_dir)
    if batch_file is not None:
        if hosts or sans or ips:
            raise UsageError("--batch takes the names from FILE; do not also give HOST, --san or --ip")
        from ..issuance.batch import issue_batch

        summary = issue_batch(store, batch_file, key_types=list(key_types), days=days, profile=profile,
                              progress=not as_json, replace=replace)
        if as_json:
            emit_json(summary.as_dict())
        else:
            click.echo(f"Issued {summary.issued} certificates ({summary.failed} lines failed).")
            for f in summary.errors:
                click.echo(f"  line {f['line']}: {f['error']}", err=True)
        if summary.failed:
            raise UsageError(f"{summary.failed} batch line(s) failed; the other lines were issued")
        return
    if not hosts:
        raise UsageError("no host name given: usage 'mailca issue mail.example.org [--san NAME]...'")
    req = camod.IssueRequest(dns_names=tuple(hosts) + tuple(sans), ips=tuple(ips), key_types=tuple(key_types),
                             days=days, profile=profile, replace=replace)
    results = [r.as_dict(store) for r in camod.issue(store, req)]
    if as_json:
        emit_json({"certificates": results})
    else:
        print_issued(results)
