"""mailca acme: an ACME (RFC 8555) server so certbot, lego and dehydrated get certificates from this CA."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, ns_port_option, store_option

__all__ = ["cli"]


@click.group("acme", short_help="ACME server (certbot, lego, dehydrated) and its external account bindings.")
def cli():
    """An ACME (RFC 8555) endpoint for this CA, so every mail host gets and renews its
    certificate with the ACME client its admin knows.

    \b
      mailca acme eab new --allow mail.example.org --json     # {"kid": ..., "hmac": ...}
      mailca acme serve --listen 0.0.0.0:14000 --name ca.example.org
      certbot certonly --standalone --server https://ca.example.org:14000/directory \\
        --eab-kid KID --eab-hmac-key HMAC -d mail.example.org
    See docs/acme.md (hooks for Postfix/Dovecot, --reuse-key for DANE)."""


@cli.command("serve", short_help="Run the ACME server (foreground).")
@store_option
@click.option("--listen", default="127.0.0.1:14000", show_default=True, metavar="ADDR:PORT",
              help="Address and port to listen on (HTTPS).")
@click.option("--name", required=True, metavar="HOST",
              help="The server's host name; its TLS certificate is issued by this store (and the listen "
                   "address is added when the profile permits IP SANs).")
@click.option("--http01-port", default=80, show_default=True, type=click.IntRange(1, 65535),
              help="Port the server connects to for http-01 validation.")
@click.option("--tlsalpn01-port", default=443, show_default=True, type=click.IntRange(1, 65535),
              help="Port the server connects to for tls-alpn-01 validation.")
@click.option("--resolver", default=None, metavar="ADDR[:PORT]", help="Validating DNS resolver for dns-01.")
@click.option("--resolve-to", default=None, metavar="LOOPBACK",
              help="Test option: connect to this loopback address for http-01/tls-alpn-01 instead of resolving names.")
@click.option("--no-eab", is_flag=True,
              help="Accept accounts without an external account binding (any name inside the CA's domains).")
@click.option("--profile", default=None, metavar="NAME|FILE", help="Certificate profile for ACME orders.")
@click.option("--orders-per-hour", default=300, show_default=True, type=click.IntRange(1, 1000000),
              help="Rate limit: new orders per account per hour.")
@click.option("--dane-port", "dane_ports", multiple=True, type=click.IntRange(1, 65535), metavar="N",
              help="Ports whose TLSA records (_N._tcp.NAME) the DANE guard looks at (repeatable; default 25).")
@ns_port_option
def serve(store_dir, listen, name, http01_port, tlsalpn01_port, resolver, resolve_to, no_eab, profile, orders_per_hour,
          dane_ports, ns_port):
    """Serve ACME until interrupted: directory at https://NAME:PORT/directory.  State
    (accounts, orders, nonces) lives in the store under acme/ and survives a restart.

    DANE guard: a CSR with a new key for a name whose current key has a published TLSA
    3 1 1 record is refused (use the client's --reuse-key).  With --resolver the DNS is
    asked too (every authoritative server on --ns-port and the validating resolver)."""
    import sys

    from ..acme import server

    store = get_store(store_dir)

    def ready(cfg):
        print(f"mailca acme: listening on https://{cfg.listen_host}:{cfg.listen_port}/directory "
              f"(name {cfg.name})", flush=True)
        sys.stdout.flush()

    try:
        server.run(store, listen=listen, name=name, http01_port=http01_port, tlsalpn01_port=tlsalpn01_port,
                   resolve_to=resolve_to, resolver=resolver, eab_required=not no_eab, profile=profile,
                   orders_per_hour=orders_per_hour, ready=ready, ns_port=ns_port, dane_ports=tuple(dane_ports) or (25,))
    except KeyboardInterrupt:
        pass


@cli.group("eab", short_help="External account bindings: who may order which names.")
def eab():
    """External account bindings (on by default): an ACME account may only order the names
    its binding allows, always inside the CA's permitted domains."""


@eab.command("new", short_help="Create a binding; prints its kid and HMAC key once.")
@store_option
@click.option("--allow", "allow", multiple=True, metavar="NAME",
              help="A name the account may order (repeatable); '*.mx.example.org' allows any name one label below.")
@click.option("--note", default="", help="Free text kept with the binding.")
@json_option
def eab_new(store_dir, allow, note, as_json):
    """Create an external account binding.  Give the kid and HMAC key to the mail host's ACME
    client (certbot --eab-kid/--eab-hmac-key, lego --eab --kid/--hmac)."""
    from ..acme import state

    rec = state.eab_new(get_store(store_dir), list(allow), note=note)
    if as_json:
        emit_json(rec)
    else:
        click.echo(f"kid:  {rec['kid']}\nhmac: {rec['hmac']}\nallow: {', '.join(rec['allow'])}")


@eab.command("list", short_help="List bindings (never their HMAC keys).")
@store_option
@json_option
def eab_list(store_dir, as_json):
    """List external account bindings."""
    from ..acme import state

    rows = state.eab_list(get_store(store_dir))
    if as_json:
        emit_json({"bindings": rows})
        return
    for r in rows:
        click.echo(f"{r['kid']}  {'revoked' if r['revoked'] else 'active '}  account={r['account'] or '-'}  "
                   f"allow={','.join(r['allow'])}")


@eab.command("revoke", short_help="Revoke a binding (its account is deactivated).")
@store_option
@click.argument("kid")
@json_option
def eab_revoke(store_dir, kid, as_json):
    """Revoke an external account binding; the account bound to it can order nothing more."""
    from ..acme import state

    rec = state.eab_revoke(get_store(store_dir), kid)
    if as_json:
        emit_json(rec)
    else:
        click.echo(f"revoked {rec['kid']}" + (f" (account {rec['account']} deactivated)" if rec["account"] else ""))
