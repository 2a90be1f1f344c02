"""Monitoring forms of ``mailca check``: ``--warn-days`` (expiry within N days is a WARNING),
``--nagios`` (one Nagios/Icinga plugin line, exit 0/1/2/3) and ``--baseline FILE`` (a cron job
reports only what changed since the last run).

Nagios state of a report: UNKNOWN (3) when a port could not be audited (connect / protocol
error); else CRITICAL (2) for a HIGH or CRITICAL finding; WARNING (1) for a MEDIUM one or an
incomplete audit (rate limited, no answer, port deadline); else OK (0).
"""

from __future__ import annotations

import datetime as _dt
import json
import os

from ..errors import UsageError
from .report import SEVERITIES, Finding, Report, finding, rank
from .text import clean

__all__ = ["expiry_warnings", "days_left", "nagios_state", "nagios_line", "load_baseline", "compare", "entries", "save_baseline"]

NAGIOS_CODES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
BASELINE_SCHEMA = "mailca-check-baseline/1"


def expiry_warnings(chain_der: list[bytes], warn_days: int | None, now: _dt.datetime, *, port: int,
                    already: list[Finding]) -> list[Finding]:
    """A ``cert.expiry_warning`` for every certificate of the chain that is valid now but ends
    within ``warn_days`` days (unless certcheck already reported it expiring or expired)."""
    if not warn_days or not chain_der:
        return []
    from cryptography import x509

    from ..core.certinfo import iso

    seen = " ".join(f.detail for f in already if f.id in ("cert.expired", "cert.expiring"))
    out = []
    for i, der in enumerate(chain_der):
        try:
            c = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        na = c.not_valid_after_utc
        role = "server certificate" if i == 0 else f"chain certificate {i}"
        if c.not_valid_before_utc <= now <= na and na - now <= _dt.timedelta(days=warn_days) \
                and f"{role} expires" not in seen and f"{role} (" not in seen:
            left = na - now
            out.append(finding("cert.expiry_warning", f"{role} expires {iso(na)} ({left.days} days left; "
                                                      f"--warn-days {warn_days})", port=port))
    return out


def days_left(chain_der: list[bytes], now: _dt.datetime) -> int | None:
    """Whole days until the server certificate ends (negative once expired)."""
    if not chain_der:
        return None
    from cryptography import x509

    try:
        c = x509.load_der_x509_certificate(chain_der[0])
    except ValueError:
        return None
    return (c.not_valid_after_utc - now).days


def _counts(findings) -> dict[str, int]:
    counts = {s: 0 for s in SEVERITIES}
    for f in findings:
        counts[f.severity] += 1
    return counts


def nagios_state(report: Report, findings=None) -> str:
    findings = report.findings if findings is None else findings
    if report.errors:
        return "UNKNOWN"
    worst = max((rank(f.severity) for f in findings), default=0)
    if worst >= rank("HIGH"):
        return "CRITICAL"
    if worst >= rank("MEDIUM") or report.incomplete:
        return "WARNING"
    return "OK"


def nagios_line(report: Report, findings=None, *, what: str | None = None) -> tuple[str, int]:
    """One line ``MAILCA CHECK STATE - summary | perfdata`` and the plugin exit code."""
    findings = report.findings if findings is None else findings
    state = nagios_state(report, findings)
    c = _counts(findings)
    bad = sorted((f for f in findings if rank(f.severity) >= rank("MEDIUM")), key=lambda f: -rank(f.severity))
    if report.errors:
        summary = clean(report.errors[0].error, 200)
    elif bad:
        summary = f"{len(bad)} problem(s), worst: {bad[0].title} (port {bad[0].port})"
    else:
        summary = "no problem rated MEDIUM or worse"
    if report.incomplete and not report.errors:
        summary += f"; incomplete: {clean(report.incomplete[0].incomplete[0], 120)}"
    if what:
        summary = f"{what}: {summary}"
    summary = summary.replace("|", "/")
    perf = " ".join(f"{s.lower()}={c[s]}" for s in ("CRITICAL", "HIGH", "MEDIUM", "LOW")) + \
        f" ports={len(report.ports)} errors={len(report.errors)} incomplete={len(report.incomplete)}" \
        f" time={report.elapsed:.3f}s"
    days = _min_days_left(report)
    if days is not None:
        perf += f" cert_days_left={days}"
    return f"MAILCA CHECK {state} - {report.host} {summary} | {perf}", NAGIOS_CODES[state]


def _min_days_left(report: Report) -> int | None:
    vals = []
    for p in report.ports:
        v = (p.facts.get("certificate") or {}).get("days_left") if isinstance(p.facts.get("certificate"), dict) else None
        if isinstance(v, (int, float)):
            vals.append(int(v))
    return min(vals) if vals else None


# --- baseline ------------------------------------------------------------------------------

def _key(f) -> tuple:
    return (f["port"], f["id"], f["severity"])


def load_baseline(path: str) -> dict | None:
    """The previous run's findings, or None if the file does not exist yet (first run)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(16 * 1024 * 1024)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"--baseline {path!r}: cannot read it ({exc.strerror or exc})") from None
    try:
        doc = json.loads(data)
        if doc.get("schema") != BASELINE_SCHEMA or not isinstance(doc.get("findings"), list):
            raise ValueError
        for f in doc["findings"]:
            _key(f)
    except (ValueError, AttributeError, KeyError, TypeError):
        raise UsageError(f"--baseline {path!r}: not a mailca check baseline (schema {BASELINE_SCHEMA}); "
                         "give a new file name or remove it to start a new baseline") from None
    return doc


def entries(report: Report) -> list[dict]:
    out = {}
    for f in report.findings:
        if f.severity == "OK":
            continue
        e = {"port": f.port, "id": f.id, "severity": f.severity, "title": f.title}
        out.setdefault(_key(e), e)
    return [out[k] for k in sorted(out, key=lambda k: (k[0] or 0, k[1], k[2]))]


def compare(report: Report, base: dict) -> tuple[list[dict], list[dict]]:
    """(new, resolved) findings against the baseline (OK facts are not tracked)."""
    cur = {_key(e): e for e in entries(report)}
    old = {_key(e): e for e in base["findings"]}
    new = [cur[k] for k in cur if k not in old]
    resolved = [old[k] for k in old if k not in cur]
    return new, resolved


def save_baseline(path: str, report: Report) -> None:
    """Write the findings of ``report`` as the new baseline, atomically (0644). A port that could
    not be audited keeps nothing: the next run then reports its findings as new."""
    from ..core.certinfo import iso, utcnow
    from ..storage.store import atomic_write

    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise UsageError(f"--baseline {path!r}: directory {d} does not exist")
    doc = {"schema": BASELINE_SCHEMA, "host": report.host, "written": iso(utcnow()),
           "ports": [p.port for p in report.ports], "findings": entries(report)}
    atomic_write(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), 0o644)
