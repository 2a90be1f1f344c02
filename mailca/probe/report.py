"""Findings of ``mailca check``: severities, the catalogue of what can be found and which
Postfix setting fixes it, and the text / JSON renderings.

The JSON schema (``schema: "mailca-check/1"``) is documented in docs/check.md and is
stable: fields are only ever added, never renamed or removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .text import clean

__all__ = ["rank", "at_least", "Check", "CATALOG", "Finding", "finding", "PortReport", "Report", "render_text", "clean"]

SCHEMA = "mailca-check/1"

SEVERITIES = ("OK", "LOW", "MEDIUM", "HIGH", "CRITICAL")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def rank(severity: str) -> int:
    return _RANK[severity]


def at_least(severity: str, floor: str = "MEDIUM") -> bool:
    return _RANK[severity] >= _RANK[floor]


_PROTO_FIX = ("smtpd_tls_protocols = >=TLSv1.2 and smtpd_tls_mandatory_protocols = >=TLSv1.2 in main.cf "
              "(Postfix < 3.6: !SSLv2, !SSLv3, !TLSv1, !TLSv1.1)")
_CIPHER_FIX = ("smtpd_tls_exclude_ciphers = aNULL, eNULL, EXPORT, DES, RC4, 3DES, IDEA, MD5 in main.cf, "
               "and keep eNULL / @SECLEVEL=0 out of tls_*_cipherlist (smtpd_tls_ciphers = medium, "
               "smtpd_tls_mandatory_ciphers = high)")
_CERT_FIX = ("smtpd_tls_chain_files = /etc/mailca/certs/HOST/ecdsa-p256/live/keyfullchain.pem "
             "(a certificate from 'mailca issue HOST'; clients trust it once they install the root "
             "from 'mailca bundle')")


@dataclass(frozen=True)
class Check:
    """One kind of finding: its id, default severity, title and the setting that fixes it."""

    id: str
    severity: str
    title: str
    fix: str = ""


CATALOG: dict[str, Check] = {c.id: c for c in (
    # protocols
    Check("protocol.sslv3", "HIGH", "SSLv3 offered (POODLE)", _PROTO_FIX),
    Check("protocol.tls1_0", "LOW", "TLS 1.0 offered (deprecated, RFC 8996)", _PROTO_FIX),
    Check("protocol.tls1_1", "LOW", "TLS 1.1 offered (deprecated, RFC 8996)", _PROTO_FIX),
    Check("protocol.no_tls1_2", "MEDIUM", "neither TLS 1.2 nor TLS 1.3 offered",
          "smtpd_tls_protocols = >=TLSv1.2 and a Postfix linked against OpenSSL >= 1.0.1"),
    Check("protocol.tls1_3", "OK", "TLS 1.3 offered"),
    Check("protocol.no_tls1_3", "LOW", "TLS 1.3 not offered",
          "Postfix >= 3.4 with OpenSSL >= 1.1.1; do not exclude TLSv1.3 in smtpd_tls_protocols"),
    # cipher classes
    Check("cipher.null", "CRITICAL", "NULL ciphers (no encryption) offered", _CIPHER_FIX),
    Check("cipher.anull", "HIGH", "anonymous (aNULL: ADH/AECDH) ciphers offered: no server authentication",
          _CIPHER_FIX),
    Check("cipher.export", "CRITICAL", "EXPORT ciphers (40/56 bit) offered", _CIPHER_FIX),
    Check("cipher.low", "HIGH", "LOW ciphers (DES, RC2) offered", _CIPHER_FIX),
    Check("cipher.3des", "MEDIUM", "Triple DES / IDEA ciphers offered (SWEET32)", _CIPHER_FIX),
    Check("cipher.rc4", "HIGH", "RC4 ciphers offered", _CIPHER_FIX),
    Check("cipher.cbc", "LOW", "obsolete CBC ciphers (AES/Camellia/ARIA/SEED in CBC mode) offered",
          "AEAD only: tls_high_cipherlist = ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20 with "
          "smtpd_tls_ciphers = high and smtpd_tls_mandatory_ciphers = high (costs old clients; LOW on purpose)"),
    Check("cipher.beast", "MEDIUM", "CBC ciphers offered over TLS 1.0 (BEAST)", _PROTO_FIX),
    Check("cipher.no_aead", "MEDIUM", "no AEAD cipher (AES-GCM, ChaCha20-Poly1305) offered",
          "smtpd_tls_protocols = >=TLSv1.2 with smtpd_tls_ciphers = medium (OpenSSL >= 1.0.1)"),
    Check("cipher.order", "MEDIUM", "server does not enforce its own cipher order",
          "tls_preempt_cipherlist = yes in main.cf (Dovecot: ssl_prefer_server_ciphers = yes)"),
    Check("cipher.no_fs", "MEDIUM", "no forward-secret (ECDHE/DHE) cipher offered",
          "smtpd_tls_eecdh_grade = auto (default) and do not exclude kEECDH/kEDH"),
    Check("cipher.fs_not_preferred", "LOW", "server prefers a cipher without forward secrecy",
          "tls_preempt_cipherlist = yes with the default (ECDHE-first) cipher order"),
    Check("kex.dh_small", "MEDIUM", "Diffie-Hellman group smaller than 2048 bits",
          "smtpd_tls_dh1024_param_file = auto or empty (Postfix >= 3.7 with OpenSSL 3 lets OpenSSL pick; the "
          "compiled-in group is 2048 bits since 3.1); else a file from 'openssl dhparam -out dh2048.pem 2048'"),
    Check("kex.dh_weak", "HIGH", "Diffie-Hellman group smaller than 1024 bits",
          "smtpd_tls_dh1024_param_file = auto or empty (Postfix >= 3.7) or a 2048-bit dhparam file"),
    Check("kex.export_rsa", "CRITICAL", "temporary export RSA key offered (FREAK)", _CIPHER_FIX),
    # certificate
    Check("cert.untrusted", "HIGH", "certificate chain does not verify against the trusted roots", _CERT_FIX),
    Check("cert.self_signed", "HIGH", "self-signed server certificate", _CERT_FIX),
    Check("cert.hostname", "HIGH", "certificate does not match the host name", _CERT_FIX),
    Check("cert.expired", "CRITICAL", "certificate expired or not yet valid",
          "renew: 'mailca renew' (then 'postfix reload')"),
    Check("cert.expiring", "MEDIUM", "certificate expires soon",
          "renew: 'mailca renew' (then 'postfix reload')"),
    Check("cert.weak_key", "HIGH", "weak certificate key", _CERT_FIX),
    Check("cert.weak_signature", "HIGH", "certificate signed with MD5 or SHA-1", _CERT_FIX),
    Check("cert.none", "HIGH", "no certificate could be obtained", _CERT_FIX),
    Check("cert.ok", "OK", "certificate chain"),
    # DANE
    Check("dane.match", "OK", "DANE: a TLSA record matches the presented chain"),
    Check("dane.mismatch", "HIGH", "DANE: no TLSA record matches the presented chain",
          "publish the records 'mailca dane HOST' prints, or deploy the certificate they name "
          "(smtpd_tls_chain_files)"),
    # SMTP policy
    Check("smtp.no_starttls", "HIGH", "STARTTLS not offered",
          "smtpd_tls_security_level = may (port 25) or encrypt (submission), with smtpd_tls_chain_files set"),
    Check("smtp.auth_before_tls", "HIGH", "AUTH advertised before STARTTLS (passwords may travel in clear)",
          "smtpd_tls_auth_only = yes in main.cf (or -o smtpd_tls_security_level=encrypt on submission)"),
    Check("smtp.mail_before_tls", "MEDIUM", "MAIL FROM accepted before STARTTLS on a submission port",
          "-o smtpd_tls_security_level=encrypt on the submission service in master.cf"),
    Check("smtp.vrfy", "LOW", "VRFY answers (address harvesting)", "disable_vrfy_command = yes in main.cf"),
    Check("smtp.no_auth", "LOW", "submission port offers no AUTH after TLS",
          "-o smtpd_sasl_auth_enable=yes on the submission service in master.cf"),
    Check("smtp.auth", "OK", "AUTH mechanisms"),
    # vulnerabilities (probe/vulns.py)
    Check("vuln.heartbleed", "CRITICAL", "Heartbleed (CVE-2014-0160): the heartbeat echo leaks server memory",
          "update OpenSSL (>= 1.0.1g, any supported distribution) and restart Postfix/Dovecot; then treat the key "
          "as stolen: 'mailca rekey HOST' and 'mailca revoke' the old certificate"),
    Check("vuln.ccs_injection", "CRITICAL", "OpenSSL CCS injection (CVE-2014-0224): early ChangeCipherSpec accepted",
          "update OpenSSL (>= 1.0.1h / 1.0.0m / 0.9.8za) and restart Postfix/Dovecot"),
    Check("vuln.robot", "CRITICAL", "ROBOT: Bleichenbacher oracle on RSA key exchange",
          "drop RSA key exchange: smtpd_tls_exclude_ciphers = kRSA (plus the usual aNULL, eNULL, EXPORT, ...) in "
          "main.cf (Dovecot: ssl_cipher_list without kRSA), and update the TLS library"),
    Check("vuln.sslv2", "CRITICAL", "SSLv2 offered (DROWN)",
          "smtpd_tls_protocols = >=TLSv1.2 and smtpd_tls_mandatory_protocols = >=TLSv1.2 with a current "
          "OpenSSL (no SSLv2 at all); a key ever used on an SSLv2 server must be replaced: 'mailca rekey HOST'"),
    Check("vuln.checked", "OK", "vulnerability probes"),
    Check("vuln.starttls_injection", "HIGH",
          "STARTTLS command injection (CVE-2011-0411 class): plaintext pipelined after STARTTLS runs inside TLS",
          "update the SMTP server (Postfix >= 2.8.1 / 2.7.3 / 2.6.9 discards input buffered before TLS); "
          "IMAP/POP3: update the server (Dovecot discards it; Cyrus, Courier and others were fixed in 2011)"),

    # IMAP / POP3 policy (probe/imap.py)
    Check("imap.plaintext_auth", "HIGH", "IMAP allows a password in clear before STARTTLS (no LOGINDISABLED)",
          "Dovecot: disable_plaintext_auth = yes (2.4: auth_allow_cleartext = no) in conf.d/10-auth.conf and "
          "ssl = required in conf.d/10-ssl.conf"),
    Check("pop3.plaintext_auth", "HIGH", "POP3 offers USER/PASS or SASL PLAIN/LOGIN before STLS",
          "Dovecot: disable_plaintext_auth = yes (2.4: auth_allow_cleartext = no) in conf.d/10-auth.conf and "
          "ssl = required in conf.d/10-ssl.conf"),
    Check("imap.no_starttls", "HIGH", "IMAP STARTTLS not offered",
          "Dovecot: ssl = required with ssl_cert/ssl_key set in conf.d/10-ssl.conf (or use port 993 only)"),
    Check("pop3.no_stls", "HIGH", "POP3 STLS not offered",
          "Dovecot: ssl = required with ssl_cert/ssl_key set in conf.d/10-ssl.conf (or use port 995 only)"),
    # monitoring (probe/monitor.py)
    Check("cert.expiry_warning", "MEDIUM", "certificate expires within --warn-days",
          "renew: 'mailca renew' (then 'postfix reload' / 'doveadm reload')"),
    Check("check.rate_limited", "MEDIUM", "incomplete: rate limited (the server stopped answering new connections)",
          "rerun with --parallel 1 and a longer --port-deadline, or from an address the server's limits "
          "exempt (Postfix: smtpd_client_connection_rate_limit / anvil, postscreen; Dovecot: "
          "mail_max_userip_connections, login_processes)"),
    Check("tls.handshake", "OK", "TLS handshake"),
)}


# TLS features of issue #13 part A (probe/tlsfeatures.py); ids and fixes in docs/check.md.
_FIX_SUITES = ("Postfix: tls_high_cipherlist = ECDHE+AESGCM:ECDHE+CHACHA20 with smtpd_tls_ciphers = high and "
               "smtpd_tls_mandatory_ciphers = high (port 25 talks to any MTA: RFC 7435 keeps weaker suites better "
               "than plaintext, so there a finding is a choice); Dovecot: ssl_cipher_list = the same list, "
               "ssl_min_protocol = TLSv1.2")
_FIX_GROUPS = ("Postfix: tls_eecdh_auto_curves = X25519 X448 prime256v1 secp521r1 secp384r1 (Postfix >= 3.8: "
               "tls_ffdhe_auto_groups = ffdhe3072 ffdhe4096, or empty); Dovecot: ssl_curve_list = "
               "X25519:X448:P-256:P-384:P-521")
_FIX_DH = ("Postfix: smtpd_tls_dh1024_param_file = a file from 'openssl genpkey -genparam -algorithm DH -pkeyopt "
           "group:ffdhe3072' (\"auto\" lets OpenSSL 3 pick, and it picks the RFC 3526 MODP group, not an RFC 7919 "
           "one), or drop DHE: smtpd_tls_exclude_ciphers = kDHE (ECDHE remains); Dovecot: ssl_dh = that file")

_TLS_FEATURE_CHECKS = (
    Check("ncsc.suite_insufficient", "MEDIUM", "cipher suites rated insufficient by NCSC-NL (internet.nl)", _FIX_SUITES),
    Check("ncsc.suite_phase_out", "LOW", "cipher suites rated phase-out by NCSC-NL (internet.nl)", _FIX_SUITES),
    Check("kex.rsa", "MEDIUM", "static RSA key exchange accepted (no forward secrecy; NCSC-NL: insufficient)",
     "Postfix: smtpd_tls_exclude_ciphers = kRSA (keep ECDHE); Dovecot: ssl_cipher_list without kRSA"),
    Check("kex.group_insufficient", "MEDIUM", "key-exchange groups rated insufficient by NCSC-NL", _FIX_GROUPS),
    Check("kex.group_phase_out", "LOW", "key-exchange groups rated phase-out by NCSC-NL", _FIX_GROUPS),
    Check("kex.dh_custom", "MEDIUM", "DHE with a group that is not an RFC 7919 ffdhe group (NCSC-NL: insufficient)",
     _FIX_DH),
    Check("kex.dh_ffdhe2048", "LOW", "DHE with ffdhe2048 (NCSC-NL 2025 / internet.nl: insufficient; use ffdhe3072+)",
     _FIX_DH),
    Check("kex.sha1", "LOW", "key exchange signed with SHA-1 when the client offers only SHA-1 (internet.nl: bad)",
     "Postfix: tls_high_cipherlist = aNULL:-aNULL:HIGH:@STRENGTH:@SECLEVEL=2 ('mailca postfix --profile strict' "
     "sets it); Dovecot: ssl_cipher_list = ...:@SECLEVEL=2"),
    Check("tls.compression", "HIGH", "TLS compression accepted (CRIME)",
     "Postfix: tls_ssl_options = NO_COMPRESSION; Dovecot: ssl_options = no_compression (OpenSSL >= 1.1.0 "
     "builds without zlib have none)"),
    Check("tls.no_secure_renegotiation", "HIGH", "secure renegotiation (RFC 5746) not supported",
     "a TLS library from this decade (OpenSSL >= 0.9.8m); do not add LEGACY_SERVER_CONNECT / "
     "legacy renegotiation options (Postfix tls_ssl_options, Dovecot ssl_options)"),
    Check("tls.client_renegotiation", "MEDIUM", "client-initiated renegotiation accepted (CPU DoS)",
     "Postfix: tls_ssl_options = NO_RENEGOTIATION (and no 0x100 = ALLOW_CLIENT_RENEGOTIATION); OpenSSL >= 3.0 "
     "refuses it by default, so does Dovecot on it"),
    Check("tls.no_ems", "MEDIUM", "Extended Master Secret (RFC 7627) not supported",
     "Postfix: remove 0x1 (NO_EXTENDED_MASTER_SECRET) from tls_ssl_options; OpenSSL >= 1.1.0 has it on by default"),
    Check("tls.early_data", "MEDIUM", "TLS 1.3 0-RTT early data accepted (replayable SMTP commands)",
     "Postfix and Dovecot never accept early data: remove it from the TLS front in between (haproxy "
     "allow-0rtt, openssl s_server -early_data, max_early_data in the proxy)"),
    Check("tls.no_fallback_scsv", "MEDIUM", "TLS_FALLBACK_SCSV not honoured (downgrade protection)",
     "a TLS library from this decade (OpenSSL >= 1.0.1j); smtpd_tls_protocols = >=TLSv1.2 removes the "
     "versions to downgrade to"),
    Check("cert.no_sni_mismatch", "LOW", "certificate served without SNI does not match the host name",
     "Postfix: smtpd_tls_chain_files is the no-SNI certificate (tls_server_sni_maps only adds SNI ones): "
     "make it the certificate for the MX name; Dovecot: ssl_cert outside local_name blocks"),
)
CATALOG.update({c.id: c for c in _TLS_FEATURE_CHECKS})

@dataclass(frozen=True)
class Finding:
    """One thing ``check`` found on one port.  ``fix`` names the Postfix setting that fixes it."""

    id: str
    severity: str
    title: str
    detail: str = ""
    fix: str = ""
    port: int | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "severity": self.severity, "title": self.title, "detail": self.detail,
                "fix": self.fix, "port": self.port}


def finding(check_id: str, detail: str = "", *, port: int | None = None, severity: str | None = None) -> Finding:
    c = CATALOG[check_id]
    sev = severity or c.severity
    return Finding(check_id, sev, c.title, detail, c.fix if sev != "OK" else "", port)


@dataclass(frozen=True)
class PortReport:
    """Everything learned about one port: facts for --json and the findings."""

    port: int
    role: str
    tls: str                     # "starttls" or "implicit"
    error: str | None = None
    facts: dict = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    elapsed: float = 0.0
    # Why the audit of this port is not complete (probes without an answer, the port
    # deadline): the findings cover only what the server answered.
    incomplete: tuple[str, ...] = ()

    def to_json(self) -> dict:
        # "tls_mode" is how the port speaks TLS (starttls/implicit); "tls" is what the real
        # handshake gave (version and cipher, or its error), null when it was never reached
        return {"port": self.port, "role": self.role, "tls_mode": self.tls, "error": self.error,
                "incomplete": list(self.incomplete),
                "elapsed_seconds": round(self.elapsed, 3), "tls": None, **self.facts,
                "findings": [f.to_json() for f in self.findings]}


@dataclass(frozen=True)
class Report:
    host: str
    name: str | None
    ports: tuple[PortReport, ...]
    started: str
    elapsed: float

    @property
    def findings(self) -> list[Finding]:
        return [f for p in self.ports for f in p.findings]

    @property
    def worst(self) -> str:
        sevs = [f.severity for f in self.findings]
        return max(sevs, key=rank) if sevs else "OK"

    @property
    def errors(self) -> list[PortReport]:
        return [p for p in self.ports if p.error]

    @property
    def incomplete(self) -> list[PortReport]:
        return [p for p in self.ports if p.incomplete and not p.error]

    @property
    def exit_code(self) -> int:
        from ..errors import ExitCode

        if self.errors or self.incomplete:
            return int(ExitCode.CONNECT)
        return int(ExitCode.CHECK_FINDINGS if at_least(self.worst) else ExitCode.OK)

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "host": self.host,
            "name": self.name,
            "started": self.started,
            "elapsed_seconds": round(self.elapsed, 3),
            "worst": self.worst,
            "exit_code": self.exit_code,
            "ports": [p.to_json() for p in self.ports],
            "findings": [f.to_json() for f in self.findings],
        }


def render_text(report: Report, *, verbose: bool = False) -> str:
    """The human table: one line per finding, worst first within a port, each problem
    followed by the setting that fixes it.  Every string that may come from the server
    (details, errors) goes through ``clean``: no escape sequence reaches the terminal."""
    out = []
    for p in report.ports:
        head = clean(f"{report.host} port {p.port} ({p.role}, {'implicit TLS' if p.tls == 'implicit' else 'STARTTLS'})")
        out.append(head)
        out.append("-" * len(head))
        if p.error:
            out.append(f"  ERROR     {clean(p.error)}")
        for why in p.incomplete:
            out.append(f"  INCOMPLETE {clean(why)}")
        fs = sorted(p.findings, key=lambda f: -rank(f.severity))
        for f in fs:
            if f.severity == "OK" and not verbose and f.id not in ("cert.ok", "dane.match", "protocol.tls1_3",
                                                                    "tls.handshake", "smtp.auth"):
                continue
            text = f.title + (f": {f.detail}" if f.detail else "")
            out.append(f"  {f.severity:<9} {clean(text)}")
            if f.fix:
                out.append(f"  {'':<9}   fix: {f.fix}")
        out.append("")
    counts = {s: 0 for s in SEVERITIES}
    for f in report.findings:
        counts[f.severity] += 1
    summary = ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITIES[1:]) if counts[s])
    line = f"Worst: {report.worst}" + (f" ({summary})" if summary else "")
    if report.errors:
        line = f"{len(report.errors)} of {len(report.ports)} port(s) could not be audited; " + line
    if report.incomplete:
        line = f"{len(report.incomplete)} of {len(report.ports)} port(s) audited incompletely; " + line
    out.append(line + f"; {len(report.ports)} port(s) in {report.elapsed:.2f} s")
    return "\n".join(out)
