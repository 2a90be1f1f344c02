"""mailca dane: TLSA records for a host (current key, staged next key, CA)."""

from __future__ import annotations

import click

from .common import emit_json, get_store, store_option


@click.command("dane", short_help="TLSA records (DANE) for a host's zone.")
@store_option
@click.argument("host")
@click.option("--port", "ports", multiple=True, metavar="N", help="TCP port (repeatable; default 25).")
@click.option("--usage", default="both", show_default=True, metavar="3|2|both",
              help="3: DANE-EE (the server's key, RFC 7672's first choice); 2: DANE-TA (the CA); both.")
@click.option("--ta", default="intermediate", show_default=True, metavar="intermediate|root",
              help="Trust anchor of the 2 x 1 records (root: run 'mailca postfix --dane-ta root' too).")
@click.option("--ta-selector", default="0", show_default=True, metavar="0|1|both",
              help="DANE-TA selector: 0 = whole CA certificate (2 0 1), 1 = its public key (2 1 1).")
@click.option("--ttl", default=3600, show_default=True, type=int, help="TTL of the records (seconds); the key rollover waits 2 x TTL.")
@click.option("--format", "fmt", type=click.Choice(["zone", "json"]), default="zone", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def cli(store_dir, host, ports, usage, ta, ta_selector, ttl, fmt, as_json):
    """Print zone-file TLSA lines for HOST.

    DANE-EE 3 1 1 pins the server's public key and survives renewals (they keep the
    key); DANE-TA 2 0 1 names the CA the server sends in its chain.  After
    'mailca rekey HOST --stage' the staged next key's 3 1 1 record is printed too, and
    the first time it is printed is remembered: 'rekey --commit' waits until 2 x TTL
    later.  The zone MUST be DNSSEC-signed, or no sender will use these records.

    \b
    Examples:
      mailca dane mail.example.org
      mailca dane mail.example.org --port 25 --port 465 --usage 3 --ttl 3600
      mailca dane mail.example.org --ta-selector both --format json
    """
    from ..core import certinfo
    from ..mailconf import dane
    from ..lifecycle.rekey import commit_ready_at, mark_published
    from ..errors import UsageError

    if usage not in ("3", "2", "both"):
        raise UsageError(f"--usage {usage!r}: use 3 (DANE-EE), 2 (DANE-TA) or both")
    if ta not in ("intermediate", "root"):
        raise UsageError(f"--ta {ta!r}: use intermediate or root")
    sels = {"0": [0], "1": [1], "both": [0, 1]}.get(ta_selector)
    if sels is None:
        raise UsageError(f"--ta-selector {ta_selector!r}: use 0, 1 or both")
    if not 1 <= ttl <= 604800:
        raise UsageError(f"--ttl {ttl}: use 1 to 604800 seconds (a week); 3600 is common")
    port_list = dane.parse_ports(ports)
    store = get_store(store_dir)
    entries = dane.find_lineages(store, host)
    from ..core.names import normalize_dns_name

    # the owner name is the host asked for (an MX may be a SAN of the lineage), not the lineage name
    name = normalize_dns_name(host)
    recs = dane.records(store, entries, host=name, ports=port_list, usage=usage, ta=ta, ta_selectors=sels, ttl=ttl)
    staged = []
    if any(r.role == "next" for r in recs):
        staged = mark_published(store, [e for e in entries], ttl, certinfo.utcnow())
    if as_json or fmt == "json":
        emit_json({"host": name, "ttl": ttl, "records": [r.as_dict() for r in recs],
                   "rollover": [{"key_type": m.get("key_type"), "spki_sha256": m["spki_sha256"],
                                 "first_published": m.get("first_published"), "ttl": m.get("ttl"),
                                 "commit_after": certinfo.iso(commit_ready_at(m))} for m in staged]})
        return
    click.echo(f"; mailca: TLSA records for {name} - publish them in a DNSSEC-SIGNED zone (unsigned: ignored by senders)")
    for r in recs:
        click.echo(f"; {r.what}")
        click.echo(r.line())
    for m in staged:
        click.echo(f"; next {m.get('key_type')} key first published {m['first_published']}; "
                   f"'mailca rekey {name} --commit' allowed from {certinfo.iso(commit_ready_at(m))} (2 x TTL {m['ttl']}s)")
