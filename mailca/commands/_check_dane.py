"""(helper of 'mailca check --dane'; not a command of its own)"""

from __future__ import annotations

import click

from .common import emit_json



def run_dane(domain, *, host, resolver, at_date, nagios, ports, timeout, as_json):
    import datetime as dt

    from ..core import certinfo
    from ..core.names import is_ip_literal, normalize_dns_name
    from ..errors import CheckFindings, ConnectError, UsageError
    from ..dns.client import parse_server
    from ..probe import danecheck

    dom = normalize_dns_name(domain, what="--dane")
    if host is not None and not is_ip_literal(host):
        raise UsageError(f"with --dane DOMAIN, HOST may only be an IP address to connect to instead of the MX "
                         f"addresses (got {host!r})")
    if len(ports) > 1:
        raise UsageError("--dane checks one port (default 25); give --port once")
    port_s = (ports[0] if ports else "25").split(":")[0]
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise UsageError(f"--port {port_s!r}: not a port number 1-65535")
    at = certinfo.utcnow()
    if at_date:
        try:
            at = dt.datetime.fromisoformat(at_date.replace("Z", "+00:00"))
            if at.tzinfo is None:
                at = at.replace(tzinfo=dt.timezone.utc)
        except ValueError:
            raise UsageError(f"--at {at_date!r} is not an ISO date like 2027-06-01 or 2027-06-01T12:00:00Z") from None
    from ..dns.client import system_resolver  # shared with check --mx

    srv = parse_server(resolver or system_resolver(), "--resolver")
    try:
        rep = danecheck.check_domain(dom, srv, port=int(port_s), at=at, timeout=min(timeout, 10.0), addr_override=host)
    except ConnectError as exc:
        if nagios:
            click.echo(f"DANE UNKNOWN - {exc.message}")
            raise SystemExit(3)
        raise
    if as_json:
        emit_json(rep.as_dict())
    else:
        click.echo(f"DANE {rep.status} - {dom} (MX {rep.mx_status}; port {rep.port}; at {rep.at})")
        for i in rep.items:
            click.echo(f"  {i.severity:<8} {i.where}: {i.message}")
    if nagios:
        raise SystemExit({"OK": 0, "INFO": 0, "WARNING": 1, "CRITICAL": 2}[rep.status])
    if rep.status in ("WARNING", "CRITICAL"):
        raise CheckFindings(f"DANE {rep.status} for {dom}")
