"""mailca status: every certificate with its state, read from the index."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, store_option, warn


@click.command("status", short_help="List certificates: names, serial, expiry, days left, state, TLSA digest.")
@store_option
@click.argument("names", nargs=-1, metavar="[NAME...]")
@click.option("--all-versions", is_flag=True, help="Also list superseded (older) versions of each certificate.")
@click.option("--days-before", type=int, default=None, metavar="N",
              help="Call a certificate due when fewer than N days are left (as 'renew --days-before N').")
@json_option
def cli(store_dir, names, all_versions, days_before, as_json):
    """List every certificate (the current version of each NAME and key type).

    States: valid, due (renew would renew it now), expired, revoked, and superseded
    (older versions, with --all-versions).  Read from index.json only - no certificate
    is parsed - so it is fast on large stores.  Columns: name, key type, serial,
    not-after, days left, state, and the TLSA 3 1 1 digest (SHA-256 of the public key,
    also the key fingerprint; unchanged by renewals without --new-key).

    \b
    Examples:
      mailca status
      mailca status mail.example.org --json
      MAILCA_NOW=2027-06-01T00:00:00Z mailca status   # states at another time
    """
    from ..core import certinfo
    from ..errors import UsageError
    from ..lifecycle.renew import intermediate_warning, load_policy, resolve_names, status_rows

    store = get_store(store_dir)
    store.require_ca()
    if days_before is not None and not (0 <= days_before <= 3650):
        raise UsageError(f"--days-before {days_before} is out of range; give 0..3650 days")
    policy, prof = load_policy(store, days_before)
    now = certinfo.utcnow()
    entries = store.load_index()["certs"]
    wanted = resolve_names(entries, list(names)) if names else None
    rows = status_rows(entries, now, policy, names=wanted, all_versions=all_versions)
    w, inter = intermediate_warning(store, now, prof.intermediate_warn_days)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    if as_json:
        emit_json({"now": certinfo.iso(now), "certificates": rows, "counts": counts,
                   "intermediate": dict(inter, warning=w)})
        return
    if w:
        warn(w)
    if not rows:
        click.echo("No certificates yet; issue one with 'mailca issue mail.example.org'.")
        return
    out = []
    out.append(f"{'NAME':<32} {'KEY':<10} {'STATE':<10} {'NOT AFTER':<20} {'DAYS':>5}  {'SERIAL':<40} TLSA 3 1 1")
    for r in rows:
        out.append(f"{r['name']:<32} {r['key_type']:<10} {r['state']:<10} {r['not_after']:<20} {r['days_left']:>5}  "
                   f"{r['serial']:<40} {r['spki_sha256']}")
        extra = [n for n in r["names"] if n != r["name"]] + r["ips"]
        if extra:
            out.append(f"  also: {', '.join(extra)}")
        if r.get("source") == "acme":
            out.append("  issued over ACME (mailca acme serve): its ACME client renews it, 'mailca renew' does not")
    out.append("")
    out.append(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    click.echo("\n".join(out))
