"""Shared click options and output helpers for command modules (light imports only)."""

from __future__ import annotations

import json
import sys

import click


def store_option(f):
    """``--dir`` on the subcommand too (``mailca issue --dir X`` as well as ``mailca --dir X issue``)."""
    return click.option(
        "--dir", "store_dir", type=click.Path(file_okay=False), default=None,
        help="Store directory (default: $MAILCA_DIR, /etc/mailca as root, else ~/.local/share/mailca).",
    )(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (stable schema, see README).")(f)


def passphrase_option(f):
    return click.option(
        "--passphrase-file", type=click.Path(dir_okay=False), default=None,
        help="Read the root key passphrase from the first line of FILE (else $MAILCA_PASSPHRASE, else a prompt).",
    )(f)


def ns_port_option(f):
    """``--ns-port``: where the DNS gate asks the zone's authoritative servers (rekey, renew, dane rotate)."""
    return click.option(
        "--ns-port", default=53, show_default=True, type=click.IntRange(1, 65535), envvar="MAILCA_DNS_NS_PORT",
        help="Port of the zone's authoritative servers (the gate asks each one directly).",
    )(f)


def get_store(store_dir: str | None):
    from ..storage.store import open_store

    if store_dir is None:
        ctx = click.get_current_context(silent=True)
        while ctx is not None and store_dir is None:
            if ctx.obj and ctx.obj.get("store_dir"):
                store_dir = ctx.obj["store_dir"]
            ctx = ctx.parent
    return open_store(store_dir)


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def warn(msg: str) -> None:
    click.echo(f"mailca: warning: {msg}", err=True)


def is_tty() -> bool:
    return sys.stdout.isatty()
