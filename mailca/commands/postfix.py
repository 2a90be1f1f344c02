"""mailca postfix: main.cf / master.cf TLS settings for a host, per Postfix version."""

from __future__ import annotations

import click

from .common import emit_json, get_store, json_option, store_option


def cert_files(store, entries):
    """CertFiles for the live directories of ``entries`` (light helper shared with dovecot)."""
    from ..mailconf.postfix import CertFiles

    out = []
    for e in entries:
        live = store.live_dir(e["name"], e["key_type"])
        out.append(CertFiles(e["key_type"], live, has_key=(live / "key.pem").exists()))
    return out


@click.command("postfix", short_help="Postfix TLS settings (main.cf, master.cf) for a host.")
@store_option
@click.argument("host")
@click.option("--profile", "profile", default="strict", show_default=True, metavar="strict|intermediate|FILE",
              help="TLS profile: packaged strict or intermediate, or a .toml file with a [tls] table.")
@click.option("--postfix-version", default=None, metavar="X.Y",
              help="Render for this Postfix version (default: 'postconf -h mail_version', else 3.7).")
@click.option("--ports", default="25,587,465", show_default=True, metavar="LIST",
              help="Services to emit: 25 (smtp/MX), 587 (submission), 465 (submissions).")
@click.option("--format", "fmt", type=click.Choice(["snippet", "postconf"]), default="snippet", show_default=True,
              help="snippet: main.cf/master.cf text; postconf: the equivalent postconf -e/-M/-P commands.")
@click.option("--write", "write_dir", default=None, metavar="DIR",
              help="Write main.cf.mailca, master.cf.mailca and mailca-tls-policy into DIR instead of printing.")
@click.option("--dane-ta", type=click.Choice(["intermediate", "root"]), default="intermediate", show_default=True,
              help="Which CA your DANE-TA record names; 'root' makes Postfix send the root too.")
@json_option
def cli(store_dir, host, profile, postfix_version, ports, fmt, write_dir, dane_ta, as_json):
    """Print the Postfix settings that put HOST's certificate to work.

    Port 25 gets opportunistic STARTTLS (a public MX must accept plaintext senders),
    587 requires STARTTLS and offers AUTH only after it, 465 speaks implicit TLS; the
    protocol and cipher limits come from the TLS profile.  Mail to your own domains is
    sent at level 'secure', verified against your root.  Every line carries a comment
    saying why.  The Postfix version decides the syntax (smtpd_tls_chain_files from
    3.4, '>=TLSv1.2' from 3.6).

    \b
    Examples:
      mailca postfix mail.example.org
      mailca postfix mail.example.org --postfix-version 2.9 --profile intermediate
      mailca postfix mail.example.org --format postconf | sh     # apply directly
      mailca postfix mail.example.org --write /etc/postfix/mailca
    """
    import os

    from ..mailconf.dane import ca_domains, find_lineages
    from ..errors import UsageError
    from ..mailconf import postfix as pf
    from ..mailconf.tlsprofiles import load_tls_profile

    tls = load_tls_profile(profile)
    detected = None
    if postfix_version is None:
        detected = pf.detect_version()
    version = pf.parse_version(postfix_version or detected or "3.7")
    port_list = pf.parse_ports(ports)
    store = get_store(store_dir)
    entries = find_lineages(store, host)
    domains = ca_domains(store)
    policy_dir = os.path.abspath(write_dir) if write_dir else "/etc/postfix"
    if write_dir and os.path.exists(write_dir) and not os.path.isdir(write_dir):
        raise UsageError(f"--write {write_dir!r} is a file; give a directory")
    if write_dir:
        from ..storage.outpaths import refuse_inside_store

        refuse_inside_store(write_dir, store.path, "--write")
    cfg = pf.render(entries[0]["name"], version=version, profile=tls, certs=cert_files(store, entries),
                    root_path=store.ca_file("root.crt"), domains=domains, ports=port_list, dane_ta=dane_ta,
                    policy_dir=policy_dir)
    problems = pf.check_version(cfg)
    if problems:  # a bug in mailca's tables, never the user's input
        raise UsageError(f"internal: rendering for Postfix {version[0]}.{version[1]} used {problems[0]}")
    text = pf.format_postconf(cfg) if fmt == "postconf" else None
    if write_dir:
        from ..storage.store import atomic_write, ensure_dir

        ensure_dir(write_dir, 0o755)
        files = {"main.cf.mailca": pf.format_main(cfg), "master.cf.mailca": pf.format_master(cfg),
                 pf.POLICY_FILE: pf.format_policy(cfg)}
        if text is not None:
            files["postconf.sh"] = text
        for name, content in files.items():
            atomic_write(os.path.join(write_dir, name), content.encode(), 0o644)
        if as_json:
            emit_json({"written": sorted(os.path.join(policy_dir, n) for n in files)})
        else:
            for name in files:
                click.echo(f"wrote {os.path.join(policy_dir, name)}")
            click.echo("Merge main.cf.mailca into main.cf and master.cf.mailca into master.cf, then 'postfix reload'.")
        return
    if as_json:
        emit_json({
            "host": cfg.host, "postfix_version": f"{version[0]}.{version[1]}", "profile": cfg.profile,
            "main": [{"name": s.name, "value": s.value, "why": s.why} for s in cfg.main],
            "master": [{"service": s.name, "type": s.type, "port": s.port, "fields": list(s.fields),
                        "options": [{"name": o.name, "value": o.value, "why": o.why} for o in s.options]}
                       for s in cfg.master],
            "policy_map": {"path": cfg.policy_path, "lines": cfg.policy_lines},
        })
        return
    click.echo(text if text is not None else pf.format_snippet(cfg), nl=False)
