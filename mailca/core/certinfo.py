"""Facts about a certificate for the index, the summary and ``--json`` output."""

from __future__ import annotations

import datetime as _dt
import hashlib

__all__ = ["iso", "parse_iso", "utcnow", "cert_sha256", "colon_hex", "index_entry", "index_entry_from_pem"]


def iso(t: _dt.datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s: str) -> _dt.datetime:
    return _dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)


def utcnow() -> _dt.datetime:
    """Now, in UTC, to the second.  ``MAILCA_NOW`` (ISO 8601, e.g. 2027-01-01T00:00:00Z)
    overrides it: an injected clock for tests and for dry-running "what renews when"."""
    import os

    fixed = os.environ.get("MAILCA_NOW")
    if fixed:
        try:
            return parse_iso(fixed)
        except ValueError:
            from ..errors import UsageError

            raise UsageError(f"MAILCA_NOW={fixed!r} is not a UTC time like 2027-01-01T00:00:00Z") from None
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def cert_sha256(cert) -> str:
    from .keys import ser

    return hashlib.sha256(cert.public_bytes(ser().Encoding.DER)).hexdigest()


def colon_hex(hexstr: str) -> str:
    return ":".join(hexstr[i : i + 2] for i in range(0, len(hexstr), 2)).upper()


def san_names(cert) -> tuple[list[str], list[str]]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.DNSName), [str(i) for i in san.get_values_for_type(x509.IPAddress)]


def index_entry(cert, *, name: str, key_type: str, path: str, version: int, profile: str = "default",
                source: str = "issue") -> dict:
    from .keys import spki_sha256

    names, ips = san_names(cert)
    return {
        "serial": format(cert.serial_number, "x"),
        "name": name,
        "names": names,
        "ips": ips,
        "key_type": key_type,
        "not_before": iso(cert.not_valid_before_utc),
        "not_after": iso(cert.not_valid_after_utc),
        "spki_sha256": spki_sha256(cert.public_key()),
        "cert_sha256": cert_sha256(cert),
        "status": "active",
        "version": version,
        "path": path,
        "profile": profile,
        "source": source,
        "issued_at": iso(utcnow()),
    }


def index_entry_from_pem(pem: bytes, *, path: str, version: int, extra: dict | None = None) -> dict:
    from cryptography import x509

    from .keys import key_type_of

    cert = x509.load_pem_x509_certificate(pem)
    extra = dict(extra or {})
    names, _ = san_names(cert)
    entry = index_entry(
        cert,
        name=extra.get("name") or (names[0] if names else format(cert.serial_number, "x")),
        key_type=extra.get("key_type") or key_type_of(cert.public_key()),
        path=path,
        version=version,
        profile=extra.get("profile", "default"),
        source=extra.get("source", "issue"),
    )
    if "issued_at" in extra:
        entry["issued_at"] = extra["issued_at"]
    return entry
