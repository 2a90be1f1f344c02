"""mailca check: audit a live SMTP server's TLS (like testssl.sh) and say which Postfix
setting fixes each problem."""

from __future__ import annotations

import click

from .common import emit_json, json_option


def _port_spec(value: str) -> tuple[int, str]:
    from ..errors import UsageError
    from ..probe.smtp import DEFAULT_ROLE, ROLES

    port_s, _, role = value.partition(":")
    from ..probe.imap import DEFAULT_PORT

    if port_s.lower() in DEFAULT_PORT and not role:  # --port imaps: the role's default port
        return DEFAULT_PORT[port_s.lower()], port_s.lower()
    try:
        port = int(port_s)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise UsageError(f"--port {value!r}: not a port number 1-65535 (optionally PORT:ROLE, ROLE one of {', '.join(ROLES)})")
    role = role.lower() or DEFAULT_ROLE.get(port, "smtp")
    if role not in ROLES:
        raise UsageError(f"--port {value!r}: unknown role {role!r}; use one of {', '.join(ROLES)} "
                         "(smtp, submission, imap and pop3 use STARTTLS/STLS; submissions, imaps and pop3s implicit TLS)")
    return port, role


@click.command("check", short_help="Audit a live SMTP server's TLS and say which setting fixes what.")
@click.argument("host", required=False)
@click.option("--dane", "dane_domain", default=None, metavar="DOMAIN",
              help="Audit DOMAIN's DANE instead (MX, TLSA via a validating resolver, every MX x address x key "
                   "algorithm); see docs/dane.md.")
@click.option("--mx", "mx_domain", default=None, metavar="DOMAIN",
              help="Audit every MX host of DOMAIN (priority order) x every A/AAAA address, in parallel, one "
                   "report per address (certificate name = the MX host); --json adds the MX facts with the "
                   "DNSSEC status of the MX answer.  Give no HOST.")
@click.option("--resolver", default=None, metavar="ADDR[@PORT]", envvar="MAILCA_DNS_RESOLVER",
              help="--dane, --mx: the (validating) resolver (default: first nameserver of /etc/resolv.conf).")
@click.option("--at", "at_date", default=None, metavar="DATE",
              help="--dane: judge DANE-TA validity on this day (ISO date), e.g. 2027-06-01.")
@click.option("--nagios", is_flag=True,
              help="Monitoring-plugin form (Nagios/Icinga): one line 'MAILCA CHECK OK|WARNING|CRITICAL|UNKNOWN - "
                   "... | perfdata' and exit 0 OK, 1 WARNING (MEDIUM, or audit incomplete), 2 CRITICAL (HIGH or "
                   "worse), 3 UNKNOWN (bad usage, port unreachable); also with --dane.")
@click.option("--warn-days", default=None, type=click.IntRange(1, 3650), metavar="N",
              help="A certificate of the chain that expires within N days is a WARNING (MEDIUM) finding "
                   "(clock: MAILCA_NOW if set).")
@click.option("--baseline", "baseline", default=None, metavar="FILE",
              help="Compare with FILE: the first run writes it (all findings reported), later runs report only "
                   "findings that are new or resolved since the last run and update FILE (for cron jobs).")
@click.option("--port", "ports", multiple=True, metavar="PORT[:ROLE]",
              help="Port to audit (repeatable; default 25).  ROLE is smtp (STARTTLS, MX), submission "
                   "(STARTTLS, AUTH expected), submissions (implicit TLS), imap (STARTTLS), imaps, pop3 (STLS) "
                   "or pop3s; 25, 587, 465, 143, 993, 110 and 995 get theirs by default, and a ROLE alone "
                   "(--port imaps) means its default port.")
@click.option("--imap", "imap_ports", is_flag=True, help="Also audit IMAP: 143 (STARTTLS) and 993 (implicit TLS).")
@click.option("--pop3", "pop3_ports", is_flag=True, help="Also audit POP3: 110 (STLS) and 995 (implicit TLS).")
@click.option("--name", default=None, metavar="HOSTNAME",
              help="Host name the certificate must match and to send as SNI (default: HOST unless it is an IP address).")
@click.option("--ca", "ca_file", default=None, metavar="FILE",
              help="Trust these root certificate(s) (PEM) instead of the system store, e.g. your mailca root.")
@click.option("--tlsa", "tlsa", multiple=True, metavar='"U S M HEX"',
              help='A TLSA record to match against the chain, e.g. "3 1 1 <sha256>" (repeatable; usages 2 and 3).')
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 300),
              help="Seconds to wait for any single network step (connect, reply, handshake).")
@click.option("--port-deadline", default=30.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Seconds the whole audit of one port may take; what has not answered by then is "
                   "reported as unknown (a tarpit cannot stretch the run).")
@click.option("--parallel", default=8, show_default=True, type=click.IntRange(1, 32),
              help="Connections per port at a time during the probes, plus half as many (at most 4) for the "
                   "TLS feature probes (lower it for servers that rate-limit).")
@click.option("--min-severity", default="OK", type=click.Choice(["OK", "LOW", "MEDIUM", "HIGH", "CRITICAL"]),
              help="Hide text findings below this severity (JSON always has all).")
@click.option("-v", "--verbose", is_flag=True, help="Also list the OK facts (protocols not offered, ...).")
@json_option
def cli(host, dane_domain, mx_domain, resolver, at_date, nagios, warn_days, baseline, ports, imap_ports, pop3_ports, name, ca_file, tlsa, timeout, port_deadline, parallel,
        min_severity, verbose, as_json):
    """Audit the TLS of a live SMTP server: protocols, cipher classes, cipher order,
    forward secrecy, DH group size, the certificate chain as sent (trust, host name,
    expiry, key, signature), DANE, and SMTP policy (STARTTLS, AUTH before TLS, MAIL FROM
    before TLS on submission, VRFY).  Each problem comes with the Postfix setting that
    fixes it -- 'mailca postfix' output already has them all.

    Old protocols (SSLv3, TLS 1.0/1.1) and cipher classes OpenSSL 3 no longer speaks
    (export, DES, RC4) are probed with hand-built ClientHello messages after STARTTLS,
    the way testssl.sh's socket mode does.

    Known vulnerabilities are probed the same way, in parallel: Heartbleed, OpenSSL CCS
    injection, ROBOT (RSA key exchange padding oracle), SSLv2 (DROWN) and, on STARTTLS
    ports, STARTTLS command injection ("vulnerabilities" in --json; -v lists the clean ones).

    Also the TLS items of internet.nl's mail test and sslyze's default scan: every
    offered suite and key-exchange group rated by NCSC-NL, the DH group by its prime,
    SHA-1 in the key exchange, compression, secure and client-initiated renegotiation,
    Extended Master Secret, 0-RTT, TLS_FALLBACK_SCSV, session resumption and the
    certificate sent without SNI (docs/check.md has the internet.nl mapping).

    IMAP and POP3 (Dovecot) get the same TLS audit through STARTTLS/STLS or implicit TLS
    (--imap: 143 + 993, --pop3: 110 + 995, or --port 143:imap / --port imaps), plus what
    lets a password travel in clear before TLS (LOGIN without LOGINDISABLED, AUTH=PLAIN,
    USER/PASS, SASL PLAIN) with the Dovecot setting that fixes it.

    A server that stops answering new connections part-way (rate limits, postscreen,
    anvil) is retried with backoff within --port-deadline, then reported as "incomplete:
    rate limited" -- never as clean, never as refusing everything.

    \b
    Exit codes: 0 nothing MEDIUM or worse, 5 findings MEDIUM or worse,
                6 a port could not be reached, did not speak SMTP/TLS, broke the TLS
                  protocol, or was audited incompletely (no answer, rate limited, port deadline), 2 bad input.
    With --nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.  With --baseline: 5 only for
    new findings MEDIUM or worse.

    \b
    Examples:
      mailca check mail.example.org
      mailca check mail.example.org --port 25 --port 587 --port 465
      mailca check 192.0.2.25 --name mail.example.org --ca ~/mailca/ca/root.crt
      mailca check mail.example.org --tlsa "3 1 1 0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6"
      mailca check 127.0.0.1 --port 10587:submission --json | jq '.findings[]'
      mailca check mail.example.org --imap --pop3
      mailca check mail.example.org --port 25 --port 993 --nagios --warn-days 21
      mailca check mail.example.org --baseline /var/lib/mailca-check/mail.json   # from cron
    """
    from ..probe.text import clean

    if dane_domain is not None:
        from ._check_dane import run_dane

        return run_dane(dane_domain, host=host, resolver=resolver, at_date=at_date, nagios=nagios, ports=ports,
                        timeout=timeout, as_json=as_json)
    if not nagios:
        return _audit(host, ports, imap_ports, pop3_ports, name, ca_file, tlsa, timeout, port_deadline, parallel,
                      min_severity, verbose, as_json, warn_days, baseline, False, mx_domain, resolver)
    from ..errors import MailcaError

    try:
        return _audit(host, ports, imap_ports, pop3_ports, name, ca_file, tlsa, timeout, port_deadline, parallel,
                      min_severity, verbose, as_json, warn_days, baseline, True, mx_domain, resolver)
    except MailcaError as exc:  # usage / store problems: UNKNOWN per plugin convention
        click.echo(f"MAILCA CHECK UNKNOWN - {clean(exc.message, 300)}")
        raise SystemExit(3) from None


def _audit(host, ports, imap_ports, pop3_ports, name, ca_file, tlsa, timeout, port_deadline, parallel,
           min_severity, verbose, as_json, warn_days, baseline, nagios, mx_domain=None, resolver=None):
    from ..errors import CheckFindings, ConnectError, UsageError
    from ..core.names import is_ip_literal, normalize_dns_name
    from ..probe import certcheck, monitor, report
    from ..probe.audit import Options, audit
    from ..probe.smtp import Endpoint
    from ..probe.text import clean

    if nagios and as_json:
        raise UsageError("--nagios and --json are two output forms: give one of them")
    if mx_domain is not None:
        if host is not None:
            raise UsageError(f"--mx {mx_domain!r} finds the hosts itself: give no HOST ({host!r}) with it")
        if name is not None:
            raise UsageError("--mx checks each certificate against its MX host name: give no --name with it")
        if baseline:
            raise UsageError("--baseline is not supported with --mx yet: run one --baseline check per MX host")
    elif host is None:
        raise UsageError("give the HOST to audit (or --mx DOMAIN, or --dane DOMAIN)")
    if name is None and host is not None and not is_ip_literal(host):
        name = host
    if name is not None and not is_ip_literal(name):
        name = normalize_dns_name(name, what="--name")
    extra = (("imap", "imaps") if imap_ports else ()) + (("pop3", "pop3s") if pop3_ports else ())
    specs = [_port_spec(p) for p in (tuple(ports) + extra or ("25",))]
    seen = set()
    for p, _ in specs:
        if p in seen:
            raise UsageError(f"--port {p} given twice")
        seen.add(p)
    records = tuple(certcheck.parse_tlsa(t) for t in tlsa)
    ca_certs = tuple(certcheck.load_ca_file(ca_file)) if ca_file else ()

    if mx_domain is not None:
        return _mx(mx_domain, resolver, specs, Options(ca_certs=ca_certs, tlsa=records, timeout=timeout,
                                                        workers=parallel, port_deadline=port_deadline,
                                                        warn_days=warn_days),
                   nagios=nagios, as_json=as_json, min_severity=min_severity, verbose=verbose)
    base = monitor.load_baseline(baseline) if baseline else None
    opts = Options(name=name, ca_certs=ca_certs, tlsa=records, timeout=timeout, workers=parallel,
                   port_deadline=port_deadline, warn_days=warn_days)
    endpoints = [Endpoint(host, p, role, timeout) for p, role in specs]
    rep = audit(host, endpoints, opts)
    if baseline:
        return _with_baseline(rep, base, baseline, nagios=nagios, as_json=as_json)
    if nagios:
        line, code = monitor.nagios_line(rep)
        click.echo(line)
        raise SystemExit(code)

    if as_json:
        emit_json(rep.to_json())
    else:
        text = report.render_text(_filtered(rep, min_severity), verbose=verbose)
        click.echo(text)
    problems = [p.error for p in rep.errors] + [f"{host} port {p.port}: audit incomplete: {p.incomplete[0]}"
                                                for p in rep.incomplete]
    if problems:
        # Server text may be in the message: no escape sequence reaches the terminal.
        raise ConnectError(clean(problems[0]) + ("" if len(problems) == 1 else f" (and {len(problems) - 1} more port(s))"))
    if rep.exit_code == CheckFindings.exit_code:
        bad = [f for f in rep.findings if report.at_least(f.severity)]
        raise CheckFindings(f"{len(bad)} finding(s) rated MEDIUM or worse on {host} (worst: {rep.worst})")


def _filtered(rep, floor: str):
    from dataclasses import replace

    from ..probe.report import rank

    if floor == "OK":
        return rep
    ports = tuple(replace(p, findings=tuple(f for f in p.findings if rank(f.severity) >= rank(floor)))
                  for p in rep.ports)
    return replace(rep, ports=ports)


def _with_baseline(rep, base, path, *, nagios, as_json):
    """--baseline: report only the findings new or resolved since the last run, then make this
    run the baseline.  Exit (and --nagios state) from the new findings only."""
    from types import SimpleNamespace

    from ..errors import CheckFindings, ConnectError
    from ..probe import monitor
    from ..probe.report import at_least, rank
    from ..probe.text import clean

    first = base is None
    new, resolved = (monitor.compare(rep, base) if not first else
                     ([e for e in monitor.entries(rep)], []))
    if not rep.errors:  # a port we could not audit must not erase what we knew about it
        monitor.save_baseline(path, rep)
    new_f = [SimpleNamespace(severity=e["severity"], title=e["title"], port=e["port"], id=e["id"]) for e in new]
    if as_json:
        doc = rep.to_json()
        doc["baseline"] = {"file": path, "first_run": first, "new": new, "resolved": resolved,
                           "written": not rep.errors}
        emit_json(doc)
    elif nagios:
        line, code = monitor.nagios_line(rep, new_f, what=("baseline written" if first else
                                                           f"{len(new)} new, {len(resolved)} resolved since baseline"))
        click.echo(line)
        raise SystemExit(code)
    else:
        head = "first run: baseline written" if first else f"since the baseline: {len(new)} new, {len(resolved)} resolved"
        click.echo(f"{clean(rep.host)}: {head} ({path})")
        for e in sorted(new, key=lambda e: -rank(e["severity"])):
            click.echo(f"  NEW       {e['severity']:<9} port {e['port']}: {clean(e['title'])}")
        for e in resolved:
            click.echo(f"  RESOLVED  {e['severity']:<9} port {e['port']}: {clean(e['title'])}")
    if rep.errors:
        raise ConnectError(clean(rep.errors[0].error) + " (baseline not updated)")
    bad = [e for e in new if at_least(e["severity"])]
    if bad:
        raise CheckFindings(f"{len(bad)} new finding(s) rated MEDIUM or worse on {rep.host} since the baseline")


def _mx(domain, resolver, specs, opts, *, nagios, as_json, min_severity, verbose):
    from ..core.names import normalize_dns_name
    from ..dns.client import parse_server, system_resolver
    from ..errors import CheckFindings, ConnectError
    from ..probe import monitor, report
    from ..probe.mx import audit_mx
    from ..probe.report import Report
    from ..probe.text import clean

    dom = normalize_dns_name(domain, what="--mx")
    srv = parse_server(resolver or system_resolver(), "--resolver")
    try:
        mrep = audit_mx(dom, srv, specs, opts, dns_timeout=min(opts.timeout, 10.0))
    except ConnectError as exc:
        if nagios:
            click.echo(f"MAILCA CHECK UNKNOWN - {clean(exc.message, 300)}")
            raise SystemExit(3) from None
        raise
    # One report over every address: the exit code, --nagios state and summary line.
    allr = Report(dom, None, tuple(p for r in mrep.reports for p in r.ports), "", mrep.elapsed)
    if as_json:
        doc = mrep.to_json()
        doc.update(worst=allr.worst, exit_code=allr.exit_code)
        emit_json(doc)
    elif not nagios:
        mx = mrep.mx
        hosts = ", ".join(f"{h['preference']} {h['name']} ({' '.join(h['addresses']) or 'no address'})"
                          for h in mx["hosts"])
        click.echo(clean(f"MX of {dom} (DNSSEC: {mx['mx_status']}): {hosts}"))
        click.echo("")
        for h, a, r in mrep.targets:
            click.echo(clean(f"== MX {h} at {a}"))
            click.echo(report.render_text(_filtered(r, min_severity), verbose=verbose))
            click.echo("")
    if nagios:
        line, code = monitor.nagios_line(allr, what=f"{len(mrep.targets)} MX address(es)")
        click.echo(line)
        raise SystemExit(code)
    problems = [p.error for p in allr.errors] + [f"port {p.port}: audit incomplete: {p.incomplete[0]}"
                                                 for p in allr.incomplete]
    if problems:
        raise ConnectError(clean(problems[0]) + ("" if len(problems) == 1 else f" (and {len(problems) - 1} more)"))
    if allr.exit_code == CheckFindings.exit_code:
        raise CheckFindings(f"findings rated MEDIUM or worse on the MX hosts of {dom} (worst: {allr.worst})")
