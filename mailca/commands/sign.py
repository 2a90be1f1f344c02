"""mailca sign: sign a CSR generated on the mail server."""

from __future__ import annotations

import click

from .common import emit_json, json_option, store_option, get_store


@click.command("sign", short_help="Sign a CSR made on the mail server (the key never leaves it).")
@store_option
@click.argument("csr_file", metavar="CSR_FILE")
@click.option("--san", "sans", multiple=True, metavar="NAME", help="Add a DNS name to those in the CSR (repeatable).")
@click.option("--ip", "ips", multiple=True, metavar="ADDR", help="Add an IP address SAN (if the profile permits).")
@click.option("--days", type=int, default=None, help="Validity in days (default and maximum: the profile's leaf.days).")
@click.option("--profile", default=None, metavar="NAME|FILE", help="Certificate profile.")
@click.option("--replace", is_flag=True,
              help="Replace a live certificate whose key is in the store (live/ then has no key.pem).")
@json_option
def cli(store_dir, csr_file, sans, ips, days, profile, replace, as_json):
    """Sign a PKCS#10 CSR (PEM or DER) so the CA can live on another, offline machine.

    The CSR's self-signature is checked; only its public key and names (CN and SAN)
    are used, validated exactly like 'mailca issue'.  The certificate lands in the same
    store and index (without a key: that stays on the mail server).

    \b
    On the mail server:
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\
        -keyout mail.key -subj /CN=mail.example.org -out mail.csr
    On the CA machine:
      mailca sign mail.csr --san smtp.example.org
    """
    from ..issuance import ca as camod
    from .issue import print_issued

    store = get_store(store_dir)
    issued = camod.sign_csr(store, csr_file, extra_sans=list(sans), ips=list(ips), days=days, profile_name=profile, replace=replace)
    d = issued.as_dict(store)
    d["paths"].pop("key")
    d["paths"].pop("keyfullchain")
    if as_json:
        emit_json({"certificates": [d]})
    else:
        print_issued([d])
