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
@click.option("--secure-domain", "secure_domains", multiple=True, metavar="DOMAIN",
              help="Send mail to DOMAIN (and its subdomains) only over TLS verified against the mailca root "
                   "(policy level 'secure'; repeatable).  Off by default: a next hop without a mailca "
                   "certificate (a hosted list server, a backup MX) would defer mail.")
@click.option("--root-file", "root_file", default=None, metavar="PATH",
              help="The mailca root file the policy table's tafile= names (default: the store's ca/root.crt). "
                   "Postfix's smtp client reads it as the 'postfix' user, which cannot enter a 0700 store: "
                   "give the world-readable copy from 'mailca deploy --root-copy PATH'.")
@json_option
def cli(store_dir, host, profile, postfix_version, ports, fmt, write_dir, dane_ta, secure_domains, root_file,
        as_json):
    """Print the Postfix settings that put HOST's certificate to work.

    Port 25 gets opportunistic STARTTLS (a public MX must accept plaintext senders),
    587 requires STARTTLS and offers AUTH only after it, 465 speaks implicit TLS; the
    protocol and cipher limits come from the TLS profile.  With --secure-domain, mail to
    those domains is sent at level 'secure', verified against your root only.  The
    'smtp inet' line (smtpd or postscreen) is never emitted: port 25 needs only main.cf.
    To apply the settings to a running server use 'mailca deploy HOST --dry-run', then
    'mailca deploy HOST' (it merges, reloads and proves the result).  Every line carries a comment
    saying why.  The Postfix version decides the syntax (smtpd_tls_chain_files from
    3.4, '>=TLSv1.2' from 3.6).

    \b
    Examples:
      mailca postfix mail.example.org
      mailca postfix mail.example.org --postfix-version 2.9 --profile intermediate
      mailca postfix mail.example.org --format postconf | sh     # apply directly
      mailca postfix mail.example.org --write /etc/postfix/mailca
      mailca postfix mail.example.org --secure-domain example.org --root-file /etc/ssl/mailca/root.crt
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
    domains = _secure_domains(secure_domains, ca_domains(store))
    # the policy table lives next to main.cf: the --write directory, else $MAIL_CONFIG's
    policy_dir = os.path.abspath(write_dir) if write_dir else (os.environ.get("MAIL_CONFIG") or "/etc/postfix")
    if write_dir and os.path.exists(write_dir) and not os.path.isdir(write_dir):
        raise UsageError(f"--write {write_dir!r} is a file; give a directory")
    if write_dir:
        from ..storage.outpaths import refuse_inside_store

        refuse_inside_store(write_dir, store.path, "--write")
    root_path = _root_file(root_file, store.ca_file("root.crt")) if root_file else store.ca_file("root.crt")
    if domains and not root_file and not _others_can_read(str(root_path)):
        from .common import warn

        warn(f"tafile= names {root_path}, which Postfix's smtp client (user 'postfix') cannot read: mail to "
             f"{domains[0]} would be deferred; write a copy with 'mailca deploy HOST --root-copy "
             "/etc/ssl/mailca/root.crt' and give --root-file /etc/ssl/mailca/root.crt")
    cfg = pf.render(entries[0]["name"], version=version, profile=tls, certs=cert_files(store, entries),
                    root_path=root_path, domains=domains, ports=port_list, dane_ta=dane_ta,
                    policy_dir=policy_dir)
    problems = pf.check_version(cfg)
    if problems:  # a bug in mailca's tables, never the user's input
        raise UsageError(f"internal: rendering for Postfix {version[0]}.{version[1]} used {problems[0]}")
    text = pf.format_postconf(cfg) if fmt == "postconf" else None
    if write_dir:
        files = pf.write_config_files(cfg, write_dir, postconf_text=text)
        if as_json:
            emit_json({"written": sorted(os.path.join(policy_dir, n) for n in files)})
        else:
            for name in files:
                click.echo(f"wrote {os.path.join(policy_dir, name)}")
            click.echo(f"Apply them with 'mailca deploy {cfg.host} --dry-run', then 'mailca deploy {cfg.host}' "
                       "(merges via postconf, keeps postscreen, reloads and probes)"
                       + (f", or run 'sh {os.path.join(policy_dir, 'postconf.sh')}'" if text is not None else "")
                       + "; do not append the files to main.cf/master.cf.")
        return
    if as_json:
        emit_json({
            "host": cfg.host, "postfix_version": f"{version[0]}.{version[1]}", "profile": cfg.profile,
            "main": [{"name": s.name, "value": s.value, "why": s.why} for s in cfg.main],
            "master": [{"service": s.name, "type": s.type, "port": s.port, "fields": list(s.fields),
                        "options": [{"name": o.name, "value": o.value, "why": o.why} for o in s.options]}
                       for s in cfg.master],
            "policy_map": {"path": cfg.policy_path, "lines": cfg.policy_lines} if cfg.policy_path else None,
        })
        return
    click.echo(text if text is not None else pf.format_snippet(cfg), nl=False)


def _others_can_read(path: str) -> bool:
    """True when a user other than the owner can open PATH (every parent searchable, file readable)."""
    import os
    import stat

    p = os.path.realpath(path)
    try:
        if not os.stat(p).st_mode & stat.S_IROTH:
            return False
        d = os.path.dirname(p)
        while True:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
            if d == os.path.dirname(d):
                return True
            d = os.path.dirname(d)
    except OSError:
        return False


def _root_file(given: str, store_root) -> str:
    """--root-file checked: an absolute path to a PEM file that holds this CA's root."""
    import os

    from cryptography import x509

    from ..errors import UsageError

    if not os.path.isabs(given):
        raise UsageError(f"--root-file {given!r} is not an absolute path (Postfix resolves it from its own directory); "
                         "give e.g. /etc/ssl/mailca/root.crt")
    try:
        with open(given, "rb") as fh:
            data = fh.read(1 << 20)
        certs = x509.load_pem_x509_certificates(data)
    except OSError as exc:
        raise UsageError(f"--root-file {given!r} cannot be read ({exc.strerror}); "
                         "write it with 'mailca deploy HOST --root-copy PATH'") from None
    except ValueError:
        raise UsageError(f"--root-file {given!r} holds no PEM certificate; give the mailca root (PEM)") from None
    root = x509.load_pem_x509_certificate(store_root.read_bytes())
    if root not in certs:
        raise UsageError(f"--root-file {given!r} does not hold this CA's root ({root.subject.rfc4514_string()}); "
                         "refresh it with 'mailca deploy HOST --root-copy PATH'")
    return given


def _secure_domains(given, ca_domains: list[str]) -> list[str]:
    """--secure-domain values, each one of the CA's domains or below one (the root's name
    constraints allow nothing else)."""
    from ..core.names import normalize_dns_name
    from ..errors import UsageError

    out = []
    for d in given:
        n = normalize_dns_name(d, what="--secure-domain")
        if not any(n == c or n.endswith("." + c) for c in ca_domains):
            raise UsageError(f"--secure-domain {d!r} is not one of the CA's domains ({', '.join(ca_domains)}) "
                             "or below one; a mailca certificate can only exist for those")
        if n not in out:
            out.append(n)
    return out
