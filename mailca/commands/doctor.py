"""mailca doctor: check the store's consistency; --fix repairs what needs no backup."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, store_option


@click.command("doctor", short_help="Check the store: certificates, keys, live links, permissions, index.")
@store_option
@click.option("--fix", "do_fix", is_flag=True,
              help="Finish interrupted operations, rebuild a corrupt index from the archive, repair permissions.")
@json_option
def cli(store_dir, do_fix, as_json):
    """Check that the store is consistent and say exactly what is wrong and how to fix it.

    Checks: every index entry has its certificate and (unless signed from a CSR) its key;
    each key matches its certificate; every live/ link resolves to the current version;
    key files are 0600 and directories 0700; the index parses; the intermediate key
    matches the intermediate certificate; no temp files are left over.

    ERROR findings mean the store is inconsistent (exit 5).  PENDING findings are the
    leftovers of an interrupted command (kill, power cut): the store still holds the old
    or the new state, and the next mailca command, or --fix, finishes the job.

    \b
    Examples:
      mailca doctor
      mailca doctor --fix
      mailca doctor --json | jq .findings
    """
    from ..lifecycle.doctor import check
    from ..errors import CheckFindings

    store = get_store(store_dir)
    rep = check(store, repair=do_fix)
    if as_json:
        emit_json(rep.as_dict())
    else:
        for a in rep.fixed:
            click.echo(f"fixed: {a}")
        for f in rep.findings:
            click.echo(f.line())
        if rep.consistent:
            tail = ""
            if rep.pending:
                tail = (f" ({rep.pending} leftover(s) of an interrupted operation; the next mailca command "
                        "or 'mailca doctor --fix' cleans them up)")
            click.echo(f"Store {store.path} is consistent{tail}.")
    if not rep.consistent:
        raise CheckFindings(f"{rep.errors} problem(s) in {store.path}; see the fixes above")
