"""Certificate profiles: TOML files validated into a frozen :class:`Profile`.

Profiles are data, not a search path: a bare NAME means a packaged profile
(``mailca/profiles_data/NAME.toml``) and nothing else -- a file called ``dual`` in the
current directory does not replace the packaged ``dual``.  A file must be given as a path
(containing ``/`` or ending in ``.toml``: ``./site.toml``, ``/etc/mailca/site.toml``); its
validated, merged content is snapshotted into the store when it is used (ca.json at
``init``, ``ca/profiles/<digest>.json`` at ``issue``/``sign``), and renewal uses the
snapshot, never the file again.  A user profile is merged over the packaged ``default``
profile, so it only needs the keys it changes.  Unknown sections or keys, and values of
the wrong type or range, are errors that name the key and the file; subject fields obey
the X.520 length limits and must be printable, a CRL URL must be an absolute ``http://``
URL with an ASCII (A-label) host.

``validate_toml`` is the generic checker; other profile kinds (e.g. the TLS profiles of
``mailca postfix``) reuse it with their own schema.
"""

from __future__ import annotations

import os
from typing import NamedTuple
from pathlib import Path

from ..errors import UsageError

__all__ = ["Profile", "build_profile", "load_profile", "validate_toml", "read_toml", "read_packaged",
           "resolve"]

PACKAGE_PROFILES = "mailca.profiles_data"


def _int_range(lo: int, hi: int):
    def check(v):
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi, f"an integer from {lo} to {hi}"

    return check


def _float_range(lo: float, hi: float):
    def check(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi, f"a number from {lo} to {hi}"

    return check


def _bool(v):
    return isinstance(v, bool), "true or false"


def _str(v):
    return isinstance(v, str), "a string"


def _duration(v):
    """'1y', '6m', '90d', '12h' (rekey.every: how old a key may get before 'mailca dane rotate' replaces it)."""
    ok = isinstance(v, str) and len(v) >= 2 and v[:-1].isdigit() and int(v[:-1]) > 0 and v[-1] in "ymwdhs"
    return ok, 'a duration like "1y", "6m" or "90d"'


def _str_list(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"


def _one_of(*choices):
    def check(v):
        return v in choices, "one of " + ", ".join(map(str, choices))

    return check


CERT_SCHEMA: dict[str, dict] = {
    "profile": {"description": _str},
    "ca": {
        "key_type": _str,
        "root_days": _int_range(30, 36500),
        "intermediate_days": _int_range(30, 36500),
        "permitted_ip_ranges": _str_list,
    },
    "leaf": {
        "days": _int_range(1, 3650),
        "key_types": _str_list,
        "allowed_key_types": _str_list,
        "allow_wildcard": _bool,
        "allow_ip": _bool,
        "backdate_minutes": _int_range(0, 1440),
        "max_sans": _int_range(1, 1000),
    },
    "subject": {
        "organization": _str,
        "organizational_unit": _str,
        "country": _str,
        "state": _str,
        "locality": _str,
    },
    "crl": {
        "next_update_days": _int_range(1, 366),
        "distribution_point": _str,
    },
    "renew": {
        "fraction": _float_range(0.05, 0.95),
        "intermediate_warn_days": _int_range(1, 3650),
    },
    "rekey": {
        "every": _duration,
    },
}


def validate_toml(data: dict, schema: dict[str, dict], source: str) -> None:
    for section, values in data.items():
        if section not in schema:
            raise UsageError(
                f"profile {source}: unknown section [{section}]; valid sections: {', '.join(sorted(schema))}"
            )
        if not isinstance(values, dict):
            raise UsageError(f"profile {source}: [{section}] must be a table")
        for key, value in values.items():
            check = schema[section].get(key)
            if check is None:
                raise UsageError(
                    f"profile {source}: unknown key '{section}.{key}'; valid keys in [{section}]: "
                    f"{', '.join(sorted(schema[section]))}"
                )
            ok, expected = check(value)
            if not ok:
                raise UsageError(f"profile {source}: '{section}.{key}' = {value!r} is invalid; expected {expected}")


def _toml():
    """tomllib on 3.11+, tomli before (imported lazily: most commands never parse TOML)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover
        import tomli as tomllib  # type: ignore
    return tomllib


def read_toml(path: str | os.PathLike) -> dict:
    toml = _toml()
    try:
        with open(path, "rb") as fh:
            return toml.load(fh)
    except FileNotFoundError:
        raise UsageError(f"profile file {path} does not exist") from None
    except PermissionError:
        raise UsageError(f"profile file {path} is not readable (permission denied)") from None
    except IsADirectoryError:
        raise UsageError(f"profile {path} is a directory, not a TOML file") from None
    except toml.TOMLDecodeError as exc:
        raise UsageError(f"profile {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"profile {path} is not UTF-8 text") from None


def packaged_names() -> list[str]:
    from importlib import resources

    # tls-*.toml are TLS profiles for 'mailca postfix/dovecot' (mailca.mailconf.tlsprofiles), not certificate profiles
    return sorted(p.name[:-5] for p in resources.files(PACKAGE_PROFILES).iterdir()
                  if p.name.endswith(".toml") and not p.name.startswith("tls-"))


def read_packaged(name: str) -> dict:
    from importlib import resources

    res = resources.files(PACKAGE_PROFILES).joinpath(f"{name}.toml")
    if not res.is_file():
        return {}
    return _toml().loads(res.read_text(encoding="utf-8"))


def is_path(name_or_path: str) -> bool:
    """A profile argument names a file only when it looks like one (never by existing)."""
    return "/" in name_or_path or name_or_path.endswith(".toml")


def resolve(name_or_path: str, *, kind: str = "certificate", names: list[str] | None = None) -> tuple[str, dict]:
    """Return (display name, raw TOML dict) for a profile name or file path."""
    if is_path(name_or_path):
        return str(Path(name_or_path)), read_toml(name_or_path)
    available = names if names is not None else packaged_names()
    if name_or_path not in available:
        raise UsageError(
            f"unknown {kind} profile {name_or_path!r}; packaged: {', '.join(available)} (or give a path to a .toml file)"
        )
    return name_or_path, read_packaged(name_or_path)


def _merge(base: dict, over: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = v
    return out


class Profile(NamedTuple):
    """A validated certificate profile (all defaults live in profiles/default.toml).
    Immutable; a NamedTuple rather than a frozen dataclass because defining one costs a
    millisecond of every command's start-up."""

    name: str
    ca_key_type: str
    root_days: int
    intermediate_days: int
    permitted_ip_ranges: tuple[str, ...]
    leaf_days: int
    leaf_key_types: tuple[str, ...]
    allowed_key_types: tuple[str, ...]
    allow_wildcard: bool
    allow_ip: bool
    backdate_minutes: int
    subject: dict = {}
    crl_next_update_days: int = 7
    crl_url: str = ""
    renew_fraction: float = 2 / 3
    intermediate_warn_days: int = 90
    raw: dict = {}
    max_sans: int = 100
    snapshot_id: str = ""  # set for a profile read from a file: the digest of its merged content


MAX_SANS_DEFAULT = 100
# X.520 upper bounds (RFC 5280 appendix A): ub-state-name/ub-locality-name 128,
# ub-organization-name/ub-organizational-unit-name 64; countryName is 2 letters.
SUBJECT_LIMITS = {"organization": 64, "organizational_unit": 64, "state": 128, "locality": 128}
_URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%")


def snapshot_digest(merged: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(merged, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def check_crl_url(url: str, source: str) -> str:
    """An absolute http:// URL with an ASCII (A-label) host and no spaces or control
    characters; returns it unchanged or raises UsageError naming the value."""
    from urllib.parse import urlsplit

    def bad(why: str):
        return UsageError(f"profile {source}: 'crl.distribution_point' = {url!r} {why}; "
                          "give an absolute http:// URL with an ASCII host, e.g. http://mail.example.org/ca.crl")

    if len(url) > 1024:
        raise bad("is longer than 1024 characters")
    if not url.lower().startswith("http://"):
        raise bad("is not an http:// URL (relying parties fetch CRLs over plain HTTP; https:// would need its own trust)")
    odd = sorted({c for c in url if c not in _URL_CHARS})
    if odd:
        raise bad(f"contains {', '.join(repr(c) for c in odd[:3])} (non-ASCII hosts must be written as A-labels "
                  "xn--..., other characters percent-encoded)")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise bad("is not a valid URL") from None
    if parts.username is not None or parts.password is not None:
        raise bad("carries a user name or password")
    if not host:
        raise bad("has no host")
    from . import names as namesmod

    if not namesmod.is_ip_literal(host):
        try:
            namesmod.normalize_dns_name(host, what="CRL host")
        except UsageError:
            raise bad(f"has an invalid host {host!r}") from None
    return url


def build_profile(name: str, data: dict, *, merged: bool = False) -> Profile:
    """Validate ``data`` and merge it over the packaged default profile (``merged=True``:
    ``data`` is already a complete, merged profile, e.g. the snapshot in ca.json)."""
    from .keys import check_key_type

    validate_toml(data, CERT_SCHEMA, name)
    merged = data if merged else _merge(read_packaged("default"), data)
    ca, leaf, crl, renew = merged["ca"], merged["leaf"], merged.get("crl", {}), merged.get("renew", {})

    def kt(value, key):
        try:
            return check_key_type(value)
        except UsageError as exc:
            raise UsageError(f"profile {name}: '{key}': {exc}") from None

    allowed = tuple(kt(v, "leaf.allowed_key_types") for v in leaf["allowed_key_types"])
    defaults = tuple(kt(v, "leaf.key_types") for v in leaf["key_types"])
    if not defaults:
        raise UsageError(f"profile {name}: 'leaf.key_types' must name at least one key type")
    for d in defaults:
        if d not in allowed:
            raise UsageError(f"profile {name}: 'leaf.key_types' has {d}, which 'leaf.allowed_key_types' does not allow")
    import ipaddress

    for r in ca.get("permitted_ip_ranges", []):
        try:
            ipaddress.ip_network(r, strict=False)
        except ValueError:
            raise UsageError(f"profile {name}: 'ca.permitted_ip_ranges' entry {r!r} is not a CIDR range like 192.0.2.0/24") from None
        net = ipaddress.ip_network(r, strict=False)
        if net.prefixlen == 0:
            raise UsageError(f"profile {name}: 'ca.permitted_ip_ranges' entry {r!r} permits every address; "
                             "list the specific ranges your servers use, like 192.0.2.0/24")
    subj = merged.get("subject", {})
    country = subj.get("country", "")
    if country and (len(country) != 2 or not (country.isascii() and country.isalpha())):
        raise UsageError(f"profile {name}: 'subject.country' = {country!r} must be a two-letter ISO 3166 code like DE")
    for field, limit in SUBJECT_LIMITS.items():
        v = subj.get(field, "")
        if not v:
            continue
        if len(v) > limit:
            raise UsageError(f"profile {name}: 'subject.{field}' is {len(v)} characters; X.520 allows at most {limit}")
        if not v.isprintable() or v != v.strip():
            raise UsageError(f"profile {name}: 'subject.{field}' = {v!r} must be printable text without control "
                             "characters, newlines or leading/trailing spaces")
    desc = merged.get("profile", {}).get("description", "")
    if len(desc) > 200 or not desc.isprintable():
        raise UsageError(f"profile {name}: 'profile.description' must be at most 200 printable characters")
    url = crl.get("distribution_point", "")
    if url:
        check_crl_url(url, name)
    if leaf["days"] > ca["intermediate_days"]:
        raise UsageError(f"profile {name}: 'leaf.days' ({leaf['days']}) exceeds 'ca.intermediate_days' ({ca['intermediate_days']})")
    return Profile(
        name=name,
        ca_key_type=kt(ca["key_type"], "ca.key_type"),
        root_days=ca["root_days"],
        intermediate_days=ca["intermediate_days"],
        permitted_ip_ranges=tuple(ca.get("permitted_ip_ranges", [])),
        leaf_days=leaf["days"],
        leaf_key_types=defaults,
        allowed_key_types=allowed,
        allow_wildcard=leaf["allow_wildcard"],
        allow_ip=leaf["allow_ip"],
        backdate_minutes=leaf.get("backdate_minutes", 5),
        subject=dict(merged.get("subject", {})),
        crl_next_update_days=crl.get("next_update_days", 7),
        crl_url=url,
        renew_fraction=float(renew.get("fraction", 2 / 3)),
        intermediate_warn_days=renew.get("intermediate_warn_days", 90),
        raw=merged,
        max_sans=leaf.get("max_sans", MAX_SANS_DEFAULT),
    )


def load_profile(name_or_path: str | None) -> Profile:
    """A packaged profile by NAME, or a file given as a path.  A file profile gets a
    ``snapshot_id`` and the name ``PATH@DIGEST``, so that what was approved can be stored
    and found again (renewal never re-reads the file)."""
    name, data = resolve(name_or_path or "default")
    prof = build_profile(name, data)
    if is_path(name_or_path or "default"):
        digest = snapshot_digest(prof.raw)
        prof = prof._replace(name=f"{name}@{digest}", snapshot_id=digest)
    return prof


def snapshot_id_of(profile_name: str) -> str | None:
    """The digest in a snapshotted profile name ``PATH@DIGEST``, else None."""
    import re

    m = re.search(r"@([0-9a-f]{16})$", profile_name or "")
    return m.group(1) if m else None
