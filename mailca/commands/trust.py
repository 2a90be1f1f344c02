"""mailca trust: install the root into this machine's trust stores (system store, NSS)."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, store_option, warn


def _root(store_dir, cert_file):
    from ..distribution.trust import load_root_file, root_from_cert

    if cert_file:
        return load_root_file(cert_file)
    from ..issuance.ca import load_ca

    return root_from_cert(load_ca(get_store(store_dir)).root)


def cert_option(f):
    return click.option(
        "--cert", "cert_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
        help="Use this root certificate (PEM or DER, e.g. the bundle's .crt) instead of the store's.",
    )(f)


def _where(r: dict) -> str:
    if r["store"] == "system":
        return f"system store ({r['kind']}): {r['anchor']}"
    return f"NSS {r['label']}: {r['db']}"


def _sudo_note(nss: bool) -> None:
    import os

    if nss and hasattr(os, "geteuid") and os.geteuid() == 0 and os.environ.get("SUDO_USER"):
        warn(f"--nss as root uses root's NSS databases ($HOME={os.environ.get('HOME')}); for "
             f"{os.environ['SUDO_USER']}'s browsers run 'mailca trust install --nss --no-system' as that user")


@click.group("trust", short_help="Install the root into this machine's trust stores (like mkcert).")
def cli():
    """Put the CA's root into this machine's trust stores, the way mkcert does.

    Use it on admin machines and on the mail server itself, so that openssl,
    curl, Python and other programs using the system store verify your own
    certificates (Postfix's smtp client too, where smtp_tls_CAfile points at
    the system bundle).  Users' devices get the root from 'mailca bundle'.

    \b
    Stores:
      system   Debian/Ubuntu /usr/local/share/ca-certificates + update-ca-certificates,
               Fedora/RHEL /etc/pki/ca-trust/source/anchors + update-ca-trust
               (also Arch and openSUSE); needs root
      NSS      with --nss: every cert9.db of the current user ($HOME/.pki/nssdb
               for Chromium, Firefox and Thunderbird profiles) via certutil;
               $MAILCA_NSS_DBS (colon-separated directories) replaces the search

    \b
    Examples:
      sudo mailca trust install
      mailca trust install --nss --no-system      # as yourself: your browsers
      mailca trust status --json
      sudo mailca trust uninstall
    """


@cli.command("install", short_help="Trust the root on this machine.")
@store_option
@cert_option
@click.option("--nss", is_flag=True, help="Also add it to the current user's NSS databases (Firefox, Thunderbird, Chromium).")
@click.option("--no-system", is_flag=True, help="Leave the system store alone (use with --nss as a normal user).")
@click.option("--allow-unconstrained", is_flag=True,
              help="Install a root without name constraints (it could vouch for ANY site). Refused otherwise.")
@json_option
def install_cmd(store_dir, cert_file, nss, no_system, allow_unconstrained, as_json):
    """Install the root (idempotent: running it twice changes nothing the second time).

    The anchor file and NSS nickname are mailca-<org>-<first 8 hex of the
    root's SHA-256>, so 'mailca trust uninstall' removes exactly this.  The root's
    scope (the names its constraints permit) is shown; a root without name
    constraints is refused unless --allow-unconstrained.

    \b
    Examples:
      sudo mailca trust install
      sudo mailca trust install --cert ./for-users/mailca-example-mail-1a2b3c4d.crt
      mailca trust install --nss --no-system
    """
    from ..distribution.trust import install

    root = _root(store_dir, cert_file)
    _sudo_note(nss)
    res = install(root, system=not no_system, nss=nss, allow_unconstrained=allow_unconstrained)
    if as_json:
        emit_json(res)
        return
    for w in res["warnings"]:
        warn(w)
    click.echo(f"{root.common_name} (SHA-256 {root.sha256})")
    click.echo(f"  scope: {res['scope']['summary']}")
    for r in res["results"]:
        click.echo(f"  {'installed in' if r['changed'] else 'already in  '} {_where(r)}")
    if not res["changed"]:
        click.echo("Nothing to do: the root was already trusted everywhere you asked for.")
    elif not no_system:
        click.echo("Programs using the system store (openssl, curl, Python, ...) now trust certificates from this CA; "
                   "restart long-running ones. Undo with 'mailca trust uninstall'.")


@cli.command("uninstall", short_help="Remove the root from this machine's stores.")
@store_option
@cert_option
@click.option("--no-system", is_flag=True, help="Leave the system store alone (remove only from NSS databases).")
@click.option("--no-nss", is_flag=True, help="Leave the NSS databases alone.")
@json_option
def uninstall_cmd(store_dir, cert_file, no_system, no_nss, as_json):
    """Remove exactly what 'mailca trust install' added: the anchor file (then the
    store is rebuilt) and NSS entries whose nickname AND certificate match.

    \b
    Example:
      sudo mailca trust uninstall
    """
    from ..distribution.trust import uninstall

    root = _root(store_dir, cert_file)
    res = uninstall(root, system=not no_system, nss=not no_nss)
    if as_json:
        emit_json(res)
        return
    removed = [r for r in res["results"] if r["changed"]]
    if not removed:
        click.echo(f"{root.common_name} ({root.nickname}) is not installed in any store mailca manages; nothing to do.")
    for r in removed:
        click.echo(f"  removed from {_where(r)}")
    if res["still_trusted_elsewhere"]:
        warn("the system bundle still contains this root: it was installed by other means too")


@cli.command("status", short_help="Where the root is installed on this machine.")
@store_option
@cert_option
@json_option
def status_cmd(store_dir, cert_file, as_json):
    """Show where the root is installed: the system store (anchor file, and whether the
    extracted bundle really contains it) and each NSS database found for this user.

    \b
    Example:
      mailca trust status --json
    """
    from ..distribution.trust import status

    root = _root(store_dir, cert_file)
    st = status(root)
    if as_json:
        emit_json(st)
        return
    click.echo(f"{root.common_name}  ({root.nickname})")
    click.echo(f"SHA-256 {root.sha256}")
    s = st["system"]
    if s is None:
        click.echo("  system store: none supported found on this machine")
    else:
        state = "installed" if s["installed"] else "not installed"
        if s["active"] and not s["installed"]:
            state = "trusted via another file (not installed by mailca)"
        elif s["installed"] and not s["active"]:
            state = f"anchor present but not yet in {s['bundle']}: run {' '.join(s['update_command'])}"
        click.echo(f"  system store ({s['kind']}): {state}  [{s['anchor']}]")
    if not st["nss"]:
        click.echo("  NSS: no databases found for this user" + ("" if st["certutil"] else " (certutil not installed)"))
    for n in st["nss"]:
        state = f"installed (trust {n['trust']})" if n["installed"] else "not installed"
        click.echo(f"  NSS {n['label']}: {state}  [{n['db']}]")
