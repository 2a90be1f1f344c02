"""mailca init: create the root and intermediate CA, name-constrained to your domains."""

from __future__ import annotations

import click

from .common import emit_json, json_option, passphrase_option, store_option, get_store


@click.command(
    "init",
    short_help="Create the root and intermediate CA for your mail domains.",
)
@store_option
@click.option("--domain", "domains", multiple=True, required=True, metavar="DOMAIN",
              help="A domain the CA may vouch for (it and its subdomains). Repeat for more. Required.")
@click.option("--org", default="", help="Organization name shown in the CA certificates (default: the first domain).")
@click.option("--key-type", default=None, metavar="TYPE",
              help="CA key type: ecdsa-p256 (default), ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.")
@click.option("--profile", default=None, metavar="NAME|FILE", help="Certificate profile (packaged name or .toml file).")
@click.option("--crl-url", default=None, metavar="URL",
              help="http:// URL where you publish the CRL ('mailca crl --out'); every leaf then names it "
                   "(CRL distribution point), so audits such as testssl.sh find a revocation source.")
@passphrase_option
@click.option("--no-root-passphrase", is_flag=True,
              help="Store the root key unencrypted (NOT recommended; for throw-away test CAs only).")
@json_option
def cli(store_dir, domains, org, key_type, profile, passphrase_file, no_root_passphrase, crl_url, as_json):
    """Create a private CA: a root (10 years) and an intermediate (5 years, pathlen 0).

    Both carry name constraints that permit only the --domain values and their
    subdomains, so the root your users install cannot be used to impersonate any
    other site.  The root key is encrypted with a passphrase (from --passphrase-file,
    $MAILCA_PASSPHRASE or a prompt); keep it offline if you can.  The intermediate key
    stays unencrypted (0600) so that unattended renewal works.

    \b
    Example:
      mailca init --dir /etc/mailca --domain example.org --org "Example Mail"
      mailca init --domain example.org --crl-url http://mail.example.org/ca/ca.crl
    """
    from ..issuance import ca as camod
    from ..core import keys
    from ..errors import UsageError
    from ..core.profiles import load_profile

    store = get_store(store_dir)
    camod.refuse_existing_ca(store)
    if key_type:
        keys.check_key_type(key_type)
    prof = load_profile(profile)
    if crl_url is not None:  # snapshotted into ca.json with the rest of the profile
        from ..core.profiles import build_profile

        raw = dict(prof.raw)
        raw["crl"] = {**raw.get("crl", {}), "distribution_point": crl_url}
        if not crl_url.startswith("http://"):
            raise UsageError(f"--crl-url {crl_url!r} must be an http:// URL (CRLs are fetched over plain HTTP, "
                             "RFC 5280 4.2.1.13), e.g. http://mail.example.org/ca.crl")
        prof = build_profile(prof.name, raw, merged=True)
    if no_root_passphrase and passphrase_file:
        raise UsageError("--no-root-passphrase and --passphrase-file contradict each other; give one")
    passphrase = None if no_root_passphrase else keys.read_passphrase(passphrase_file, confirm=True)
    ca = camod.init_ca(store, domains=list(domains), org=org, profile=prof, passphrase=passphrase, key_type=key_type)
    from ..core.certinfo import cert_sha256, colon_hex, iso

    info = {
        "dir": str(store.path),
        "domains": ca.domains,
        "root": {
            "path": str(store.ca_file("root.crt")),
            "key": str(store.ca_file("root.key")),
            "key_encrypted": passphrase is not None,
            "sha256_fingerprint": colon_hex(cert_sha256(ca.root)),
            "not_after": iso(ca.root.not_valid_after_utc),
        },
        "intermediate": {
            "path": str(store.ca_file("intermediate.crt")),
            "key": str(store.ca_file("intermediate.key")),
            "sha256_fingerprint": colon_hex(cert_sha256(ca.intermediate)),
            "not_after": iso(ca.intermediate.not_valid_after_utc),
        },
        "profile": prof.name,
    }
    if as_json:
        emit_json(info)
        return
    click.echo(f"Created a CA in {store.path} for {', '.join(ca.domains)} (and subdomains only).")
    click.echo(f"  root:          {info['root']['path']}  (expires {info['root']['not_after']})")
    click.echo(f"  root key:      {info['root']['key']}  ({'encrypted' if passphrase else 'NOT encrypted'})")
    click.echo(f"  intermediate:  {info['intermediate']['path']}  (expires {info['intermediate']['not_after']})")
    click.echo(f"  root SHA-256:  {info['root']['sha256_fingerprint']}")
    click.echo("Next: mailca issue mail." + ca.domains[0] + "   then hand the root to your users with 'mailca bundle'.")
