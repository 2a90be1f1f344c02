"""Dovecot TLS settings in the syntax of Dovecot 2.3 or 2.4 (pure rendering).

2.3 (Debian 12): ``ssl_cert = </path`` (the ``<`` reads the file), ``ssl_alt_cert`` for a second
(RSA/ECDSA) certificate, ``ssl_prefer_server_ciphers = yes``, ``disable_plaintext_auth = yes``.
2.4 renamed them: ``ssl_server_cert_file = /path`` (a path, no ``<``), ``ssl_server_alt_cert_file``,
``ssl_server_prefer_ciphers = server``, ``auth_allow_cleartext = no``; a 2.4 configuration must
start with ``dovecot_config_version``.  ``ssl_min_protocol`` and ``ssl_cipher_list`` exist in both.
"""

from __future__ import annotations

import re
import textwrap

from ..errors import UsageError
from .postfix import CertFiles
from .tlsprofiles import TLSProfile, openssl_cipher_list

__all__ = ["VERSIONS", "parse_version", "detect_version", "render"]

VERSIONS = ("2.3", "2.4")


def parse_version(text: str) -> str:
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)*(?:\s.*)?", (text or "").strip())
    if not m:
        raise UsageError(f"Dovecot version {text!r} is malformed; give 2.3 or 2.4")
    v = f"{m.group(1)}.{m.group(2)}"
    if v not in VERSIONS:
        raise UsageError(f"Dovecot version {text!r} is not supported; mailca renders for 2.3 and 2.4")
    return v


def detect_version() -> str | None:
    import shutil
    import subprocess

    exe = shutil.which("dovecot")
    if exe is None:
        return None
    try:
        from ..core.childenv import child_env

        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20, env=child_env(),
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def render(host: str, *, version: str, profile: TLSProfile, certs: list[CertFiles], postfix_queue: str = "/var/spool/postfix",
           sasl_listener: bool = True, sasl_socket: str | None = None) -> str:
    """``sasl_socket``: the absolute path of Postfix's smtpd_sasl_path (default
    ``<postfix_queue>/private/auth``, so it follows the instance's queue_directory)."""
    if not certs:
        raise UsageError(f"no certificate for {host}; issue one with 'mailca issue {host}'")
    for c in certs:
        if not c.has_key:
            raise UsageError(f"the {c.key_type} certificate of {host} was signed from a CSR, so its key is not in the "
                             "store; set ssl_cert/ssl_key by hand")
    # ECDSA first (primary), RSA as the alternative certificate
    ordered = sorted(certs, key=lambda c: (not c.key_type.startswith("ecdsa"), c.key_type))
    lines: list[tuple[str, str]] = []  # (setting line, why)
    v24 = version == "2.4"
    if v24:
        lines.append(("dovecot_config_version = 2.4.0",
                      "2.4 requires this as the FIRST setting of dovecot.conf (keep the one you have if present)"))
    lines.append(("ssl = required", "IMAP/POP3 only with TLS (implicit or STARTTLS); no login before it"))
    cert_key = ("ssl_server_cert_file", "ssl_server_key_file") if v24 else ("ssl_cert", "ssl_key")
    alt = ("ssl_server_alt_cert_file", "ssl_server_alt_key_file") if v24 else ("ssl_alt_cert", "ssl_alt_key")
    ref = "" if v24 else "<"
    for i, c in enumerate(ordered[:2]):
        names = cert_key if i == 0 else alt
        lines.append((f"{names[0]} = {ref}{c.live_dir / 'fullchain.pem'}",
                      f"{c.key_type} certificate followed by the intermediate" + (" (second, alternative certificate)" if i else "")))
        lines.append((f"{names[1]} = {ref}{c.live_dir / 'key.pem'}", "its private key, read as root before privileges drop"))
    lines.append((f"ssl_min_protocol = {profile.min_protocol_mandatory}", "no SSL and no TLS below " + profile.min_protocol_mandatory))
    lines.append((f"ssl_cipher_list = {openssl_cipher_list(profile.ciphers_mandatory, profile.exclude_ciphers_mandatory, profile.security_level)}",
                  "TLS <= 1.2 suites: strong only (TLS 1.3 suites are all strong and not governed by this)"))
    if profile.prefer_server_ciphers:
        lines.append(("ssl_server_prefer_ciphers = server" if v24 else "ssl_prefer_server_ciphers = yes",
                      "the server's cipher order wins"))
    lines.append(("auth_allow_cleartext = no" if v24 else "disable_plaintext_auth = yes",
                  "no plaintext passwords on a connection without TLS"))
    out = [f"# --- mailca: Dovecot {version} TLS for {host} (profile {profile.name}) ---",
           "# ssl_dh is only used by DHE suites; keep your distribution's line if it has one."]
    for line, why in lines:
        out += ["# " + w for w in textwrap.wrap(why, 90)]
        out.append(line)
    if sasl_listener:
        out += [
            "# SASL for Postfix submission: the socket 'mailca postfix' points smtpd_sasl_path at",
            "service auth {",
            f"  unix_listener {sasl_socket or postfix_queue.rstrip('/') + '/private/auth'} {{",
            "    mode = 0660",
            "    user = postfix",
            "    group = postfix",
            "  }",
            "}",
        ]
    return "\n".join(out) + "\n"
