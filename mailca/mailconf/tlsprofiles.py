"""TLS profiles for the Postfix and Dovecot snippets (``--profile strict|intermediate|FILE``).

A TLS profile is a TOML file with a ``[tls]`` table (and an optional ``[profile]``
description).  The packaged ones are ``mailca/profiles_data/tls-strict.toml`` and
``tls-intermediate.toml``; a user file is merged over ``tls-strict`` so it only needs the keys
it changes.  Validation reuses :func:`mailca.profiles.validate_toml` with the schema below:
an unknown key, a wrong type or an unknown protocol/cipher name is one clear error.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import UsageError

__all__ = ["PROTOCOLS", "TLSProfile", "load_tls_profile", "excluded_protocols", "openssl_cipher_list"]

PROTOCOLS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
# Postfix cipher grades (smtpd_tls_ciphers / smtpd_tls_mandatory_ciphers)
GRADES = ("high", "medium")
# OpenSSL cipher-string classes a profile may exclude
EXCLUDABLE = ("aNULL", "eNULL", "EXPORT", "LOW", "DES", "3DES", "RC4", "MD5", "SHA1", "kRSA", "PSK", "SRP",
              "CAMELLIA", "SEED", "IDEA", "aDSS", "kDHE", "AESCCM8")
PACKAGED = {"strict": "tls-strict", "intermediate": "tls-intermediate"}


def _proto(v):
    return v in PROTOCOLS, "one of " + ", ".join(PROTOCOLS)


def _grade(v):
    return v in GRADES, "one of " + ", ".join(GRADES)


def _excl(v):
    return (isinstance(v, list) and all(x in EXCLUDABLE for x in v),
            "a list drawn from " + ", ".join(EXCLUDABLE))


def _bool(v):
    return isinstance(v, bool), "true or false"


def _loglevel(v):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 4, "an integer from 0 to 4"


def _str(v):
    return isinstance(v, str), "a string"


def _seclevel(v):
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5, "an integer from 1 to 5"


TLS_SCHEMA: dict[str, dict] = {
    "profile": {"description": _str},
    "tls": {
        "min_protocol_opportunistic": _proto,
        "min_protocol_mandatory": _proto,
        "ciphers_opportunistic": _grade,
        "ciphers_mandatory": _grade,
        "exclude_ciphers_opportunistic": _excl,
        "exclude_ciphers_mandatory": _excl,
        "prefer_server_ciphers": _bool,
        "outbound_dane": _bool,
        "session_cache": _bool,
        "loglevel": _loglevel,
        # OpenSSL security level appended to the cipher lists (@SECLEVEL=N); absent: OpenSSL's
        # default.  2 refuses SHA-1 signatures in the TLS 1.2 key exchange (internet.nl's
        # "hash function for key exchange"), RSA/DH below 2048 bits.
        "security_level": _seclevel,
    },
}
OPTIONAL_TLS_KEYS = ("security_level",)


class TLSProfile(NamedTuple):
    name: str
    description: str
    min_protocol_opportunistic: str
    min_protocol_mandatory: str
    ciphers_opportunistic: str
    ciphers_mandatory: str
    exclude_ciphers_opportunistic: tuple[str, ...]
    exclude_ciphers_mandatory: tuple[str, ...]
    prefer_server_ciphers: bool
    outbound_dane: bool
    session_cache: bool
    loglevel: int
    security_level: int | None = None


def _read_packaged(stem: str) -> dict:
    from ..core.profiles import read_packaged

    return read_packaged(stem)


def load_tls_profile(name_or_path: str) -> TLSProfile:
    """``strict``, ``intermediate`` or a path to a TOML file (merged over strict)."""
    from ..core.profiles import read_toml, validate_toml

    base = _read_packaged(PACKAGED["strict"])
    validate_toml(base, TLS_SCHEMA, "tls-strict (packaged)")
    if name_or_path in PACKAGED:
        data = _read_packaged(PACKAGED[name_or_path])
        source = name_or_path
        validate_toml(data, TLS_SCHEMA, source)
    elif "/" in name_or_path or name_or_path.endswith(".toml"):
        data = read_toml(name_or_path)
        source = name_or_path
        validate_toml(data, TLS_SCHEMA, source)
        merged = {k: dict(v) for k, v in base.items()}
        for sec, vals in data.items():
            merged.setdefault(sec, {}).update(vals)
        data = merged
    else:
        raise UsageError(
            f"unknown TLS profile {name_or_path!r}; use strict, intermediate or a path to a .toml file with a [tls] table"
        )
    t = data.get("tls", {})
    missing = [k for k in TLS_SCHEMA["tls"] if k not in t and k not in OPTIONAL_TLS_KEYS]
    if missing:  # only possible for a broken packaged file
        raise UsageError(f"TLS profile {source}: missing key(s) {', '.join('tls.' + m for m in missing)}")
    return TLSProfile(
        name=source,
        description=data.get("profile", {}).get("description", ""),
        min_protocol_opportunistic=t["min_protocol_opportunistic"],
        min_protocol_mandatory=t["min_protocol_mandatory"],
        ciphers_opportunistic=t["ciphers_opportunistic"],
        ciphers_mandatory=t["ciphers_mandatory"],
        exclude_ciphers_opportunistic=tuple(t["exclude_ciphers_opportunistic"]),
        exclude_ciphers_mandatory=tuple(t["exclude_ciphers_mandatory"]),
        prefer_server_ciphers=t["prefer_server_ciphers"],
        outbound_dane=t["outbound_dane"],
        session_cache=t["session_cache"],
        loglevel=t["loglevel"],
        security_level=t.get("security_level"),
    )


def excluded_protocols(minimum: str) -> list[str]:
    """Legacy '!' syntax for "at least ``minimum``": SSLv2/SSLv3 always, then every older TLS."""
    return ["SSLv2", "SSLv3"] + list(PROTOCOLS[: PROTOCOLS.index(minimum)])


def openssl_cipher_list(grade: str, exclude: tuple[str, ...], security_level: int | None = None) -> str:
    """An OpenSSL cipher string for servers that take one (Dovecot)."""
    base = "HIGH" if grade == "high" else "HIGH:MEDIUM"
    return ":".join([base] + [f"!{x}" for x in exclude] + ([f"@SECLEVEL={security_level}"] if security_level else []))
