"""Postfix TLS settings (main.cf) and service entries (master.cf), per Postfix version.

Pure: inputs (host, version, TLS profile, certificate paths, CA facts) -> a
:class:`PostfixConfig`; formatting to text is separate.  Every setting carries a short "why".

Version awareness comes from two tables sourced from Postfix's own documentation
(``proto/postconf.proto`` of postfix-3.12-20260821, the "This feature is available in Postfix
X.Y and later" notes, plus RELEASE_NOTES/HISTORY for value syntax):

* :data:`PARAM_SINCE`: the first Postfix version that knows each parameter mailca may emit;
* :data:`SYNTAX_SINCE`: value syntax that is newer than its parameter (``>=TLSv1.2``,
  security level ``dane``, ``texthash:`` tables, the ``TLSv1.1`` protocol name, ...).

:func:`check_version` verifies a rendered config against both, so a rendering for 2.9 cannot
contain a 3.4 parameter by accident (the tests run it for 2.9, 3.3, 3.4, 3.6 and the
installed version, which is also checked with ``postconf -n``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from .tlsprofiles import PROTOCOLS, TLSProfile, excluded_protocols

__all__ = ["PARAM_SINCE", "ROLES", "POLICY_FILE", "Service", "CertFiles", "PostfixConfig", "parse_version",
           "detect_version", "parse_ports", "check_version", "render", "format_main", "format_master",
           "format_policy", "format_snippet", "format_postconf", "write_config_files"]

# First Postfix version with each parameter (postconf(5): "available in Postfix X.Y and later";
# parameters without such a note predate 2.2).
PARAM_SINCE: dict[str, tuple[int, int]] = {
    "smtpd_tls_security_level": (2, 3),
    "smtpd_tls_cert_file": (2, 2),
    "smtpd_tls_key_file": (2, 2),
    "smtpd_tls_eccert_file": (2, 6),
    "smtpd_tls_eckey_file": (2, 6),
    "smtpd_tls_chain_files": (3, 4),
    "smtpd_tls_protocols": (2, 6),
    "smtpd_tls_mandatory_protocols": (2, 3),
    "smtpd_tls_ciphers": (2, 6),
    "smtpd_tls_mandatory_ciphers": (2, 3),
    "smtpd_tls_exclude_ciphers": (2, 3),
    "smtpd_tls_mandatory_exclude_ciphers": (2, 3),
    "tls_preempt_cipherlist": (2, 8),
    "tls_high_cipherlist": (2, 3),
    "tls_medium_cipherlist": (2, 3),
    "smtpd_tls_auth_only": (2, 2),
    "smtpd_tls_wrappermode": (2, 2),
    "smtpd_tls_session_cache_database": (2, 2),
    "smtp_tls_session_cache_database": (2, 2),
    "smtpd_tls_loglevel": (2, 2),
    "smtp_tls_loglevel": (2, 2),
    "smtpd_tls_received_header": (2, 2),
    "smtp_tls_security_level": (2, 3),
    "smtp_dns_support_level": (2, 11),
    "smtp_tls_CAfile": (2, 2),
    "smtp_tls_policy_maps": (2, 3),
    "disable_vrfy_command": (2, 0),
    "smtpd_sasl_security_options": (2, 0),
    "smtpd_sasl_tls_security_options": (2, 2),
    "smtpd_sasl_auth_enable": (2, 0),
    "smtpd_sasl_type": (2, 3),
    "smtpd_sasl_path": (2, 3),
    "smtpd_client_restrictions": (2, 0),
    "smtpd_recipient_restrictions": (2, 0),
    "smtpd_relay_restrictions": (2, 10),
    "smtp_tls_mandatory_protocols": (2, 3),
    "smtp_tls_mandatory_ciphers": (2, 3),
    "smtp_tls_mandatory_exclude_ciphers": (2, 3),
    "syslog_name": (2, 0),
}

# Value syntax newer than the parameter itself: (regex on "name = value", since, source).
SYNTAX_SINCE: list[tuple[str, tuple[int, int], str]] = [
    (r"_protocols = .*[<>]=", (3, 6), "'>=TLSv1.2' range syntax: postconf(5) 'As of Postfix 3.6'"),
    (r"_protocols = .*TLSv1\.[12]", (2, 9), "TLSv1.1/TLSv1.2 names: Postfix 2.9.2/2.8.10 (HISTORY 20120422)"),
    (r"_protocols = .*!TLSv1\.3", (3, 4), "'!TLSv1.3': postconf(5) 'supported since Postfix 3.4'"),
    (r"^smtp_tls_security_level = dane", (2, 11), "DANE levels: Postfix 2.11 (RELEASE_NOTES-2.11)"),
    (r"= texthash:", (2, 8), "texthash tables: Postfix 2.8 (texthash_table)"),
    (r"^smtp_dns_support_level = dnssec", (2, 11), "DNSSEC support: Postfix 2.11"),
]

KNOWN_MAJOR = {2: range(9, 12), 3: range(0, 13)}  # 2.9-2.11, 3.0-3.12
ROLES = {25: "smtp", 587: "submission", 465: "submissions"}
POLICY_FILE = "mailca-tls-policy"


def parse_version(text: str) -> tuple[int, int]:
    """'3.7', '3.7.11' or '3.7-20220101' -> (3, 7); rejects malformed and unknown versions."""
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?(?:-\d{8})?", (text or "").strip())
    if not m:
        raise UsageError(f"Postfix version {text!r} is malformed; give MAJOR.MINOR like 3.7 (or 3.7.11)")
    v = (int(m.group(1)), int(m.group(2)))
    if v[0] not in KNOWN_MAJOR or v[1] not in KNOWN_MAJOR[v[0]]:
        raise UsageError(f"Postfix version {text!r} is unknown to mailca; known: 2.9-2.11 and 3.0-3.12")
    return v


def detect_version() -> str | None:
    """``postconf -h mail_version`` of the installed Postfix, or None."""
    import shutil
    import subprocess

    exe = shutil.which("postconf")
    if exe is None:
        return None
    try:
        from ..core.childenv import child_env

        r = subprocess.run([exe, "-h", "mail_version"], capture_output=True, text=True, timeout=20, env=child_env(),
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def parse_ports(spec: str) -> list[int]:
    out: list[int] = []
    for part in (spec or "").replace(" ", "").split(","):
        if not part.isdigit() or int(part) not in ROLES:
            raise UsageError(
                f"port {part!r} in --ports {spec!r} is not one of 25 (smtp, MX), 587 (submission), 465 (submissions)"
            )
        if int(part) not in out:
            out.append(int(part))
    return out


@dataclass(frozen=True)
class Setting:
    name: str
    value: str
    why: str


@dataclass(frozen=True)
class Service:
    name: str
    type: str
    fields: tuple[str, ...]  # private unpriv chroot wakeup maxproc command
    options: tuple[Setting, ...]
    why: str
    port: int


@dataclass(frozen=True)
class CertFiles:
    """One lineage's live directory (``certs/<name>/<key-type>/live``)."""

    key_type: str
    live_dir: Path
    has_key: bool = True


@dataclass
class PostfixConfig:
    host: str
    version: tuple[int, int]
    profile: str
    main: list[Setting] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # comment-only lines for main.cf
    master: list[Service] = field(default_factory=list)
    policy_path: str | None = None
    policy_lines: list[str] = field(default_factory=list)

    def params(self) -> list[tuple[str, str]]:
        """Every (parameter, value) used: main.cf settings and master.cf -o overrides."""
        return [(s.name, s.value) for s in self.main] + [(o.name, o.value) for svc in self.master for o in svc.options]


def _vs(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def check_version(cfg: PostfixConfig) -> list[str]:
    """Parameters/syntax in ``cfg`` that its Postfix version does not have (empty: fine)."""
    problems = []
    for name, value in cfg.params():
        since = PARAM_SINCE.get(name)
        if since is None:
            problems.append(f"{name}: not in mailca's parameter table")
        elif cfg.version < since:
            problems.append(f"{name} needs Postfix {_vs(since)}")
        line = f"{name} = {value}"
        for rx, need, src in SYNTAX_SINCE:
            if re.search(rx, line) and cfg.version < need:
                problems.append(f"{line!r} needs Postfix {_vs(need)} ({src})")
    return problems


def _protocols(version: tuple[int, int], minimum: str) -> str:
    if version >= (3, 6):
        return f">={minimum}"
    return ", ".join("!" + p for p in excluded_protocols(minimum))


def render(host: str, *, version: tuple[int, int], profile: TLSProfile, certs: list[CertFiles], root_path: Path,
           domains: list[str], ports: list[int], dane_ta: str = "intermediate",
           policy_dir: str = "/etc/postfix", sasl_path: str = "private/auth") -> PostfixConfig:
    if not certs:
        raise UsageError(f"no certificate for {host}; issue one with 'mailca issue {host}'")
    for c in certs:
        if not c.has_key:
            raise UsageError(
                f"the {c.key_type} certificate of {host} was signed from a CSR, so its key is not in the store; "
                f"set smtpd_tls_cert_file = {c.live_dir / 'fullchain.pem'} and your own key by hand"
            )
    if dane_ta not in ("intermediate", "root"):
        raise UsageError(f"--dane-ta {dane_ta!r}: use intermediate or root")
    cfg = PostfixConfig(host=host, version=version, profile=profile.name)
    m = cfg.main
    suffix = "-root" if dane_ta == "root" else ""
    chain_why = ("leaf + intermediate" if not suffix else
                 "leaf + intermediate + root (the root is the DANE-TA trust anchor, so it must be sent)")
    # RSA first, then ECDSA: both are offered, OpenSSL picks per client.
    ordered = sorted(certs, key=lambda c: (not c.key_type.startswith("rsa"), c.key_type))
    if version >= (3, 4):
        files = ", ".join(str(c.live_dir / f"keyfullchain{suffix}.pem") for c in ordered)
        m.append(Setting("smtpd_tls_chain_files", files,
                         f"key, then {chain_why}, read from ONE file so a renewal can never pair a new "
                         f"certificate with an old key ({'RSA and ECDSA' if len(ordered) > 1 else ordered[0].key_type})"))
        for legacy in ("smtpd_tls_cert_file", "smtpd_tls_key_file"):
            m.append(Setting(legacy, "",
                             "empty on purpose: Debian's main.cf sets the snakeoil pair here, and with "
                             "smtpd_tls_chain_files set Postfix ignores it and warns at every start"))
    else:
        rsa = [c for c in ordered if c.key_type.startswith("rsa")]
        ec = [c for c in ordered if c.key_type.startswith("ecdsa")]
        if len(ordered) == 1:
            c = ordered[0]
            m.append(Setting("smtpd_tls_cert_file", str(c.live_dir / f"fullchain{suffix}.pem"),
                             f"{c.key_type} certificate followed by its chain ({chain_why}); smtpd_tls_chain_files needs Postfix 3.4"))
            m.append(Setting("smtpd_tls_key_file", str(c.live_dir / "key.pem"), "its private key (0600, read as root at start-up)"))
        else:
            m.append(Setting("smtpd_tls_cert_file", str(rsa[0].live_dir / f"fullchain{suffix}.pem"),
                             f"RSA certificate followed by its chain ({chain_why})"))
            m.append(Setting("smtpd_tls_key_file", str(rsa[0].live_dir / "key.pem"), "RSA private key"))
            m.append(Setting("smtpd_tls_eccert_file", str(ec[0].live_dir / f"fullchain{suffix}.pem"),
                             "ECDSA certificate + chain: dual certificates, clients get the one they support"))
            m.append(Setting("smtpd_tls_eckey_file", str(ec[0].live_dir / "key.pem"), "ECDSA private key"))
    cfg.notes.append("smtpd_tls_CAfile is deliberately not set: the SMTP server uses it only to request and "
                     "verify CLIENT certificates, which this configuration does not ask for.")
    m.append(Setting("smtpd_tls_security_level", "may",
                     "port 25: offer STARTTLS, never require it - a public MX must accept mail from senders without TLS (RFC 3207)"))
    opp_why = ("port 25 too: old senders that cannot meet this send in PLAINTEXT instead (strict trades them for a clean audit)"
               if PROTOCOLS.index(profile.min_protocol_opportunistic) >= PROTOCOLS.index("TLSv1.2") else
               "port 25 keeps old TLS versions: refusing them would only push old senders to plaintext")
    m.append(Setting("smtpd_tls_protocols", _protocols(version, profile.min_protocol_opportunistic), opp_why))
    m.append(Setting("smtpd_tls_ciphers", profile.ciphers_opportunistic, "cipher grade with opportunistic TLS (port 25)"))
    if profile.exclude_ciphers_opportunistic:
        m.append(Setting("smtpd_tls_exclude_ciphers", ", ".join(profile.exclude_ciphers_opportunistic),
                         "never negotiate these on port 25 (unauthenticated, unencrypted or broken suites)"))
    m.append(Setting("smtpd_tls_mandatory_protocols", _protocols(version, profile.min_protocol_mandatory),
                     "where TLS is required (587, 465): no SSL, no TLS below " + profile.min_protocol_mandatory))
    m.append(Setting("smtpd_tls_mandatory_ciphers", profile.ciphers_mandatory, "cipher grade where TLS is required"))
    if profile.exclude_ciphers_mandatory:
        m.append(Setting("smtpd_tls_mandatory_exclude_ciphers", ", ".join(profile.exclude_ciphers_mandatory),
                         "no anonymous, NULL, EXPORT, DES, 3DES, RC4 or MD5 suites where TLS is required"))
    if profile.prefer_server_ciphers:
        m.append(Setting("tls_preempt_cipherlist", "yes", "the server's cipher order wins, not the client's"))
    if profile.security_level:
        for grade in dict.fromkeys((profile.ciphers_opportunistic, profile.ciphers_mandatory)):
            base = "HIGH" if grade == "high" else "HIGH:MEDIUM:+RC4"
            m.append(Setting(f"tls_{grade}_cipherlist", f"aNULL:-aNULL:{base}:@STRENGTH:@SECLEVEL={profile.security_level}",
                             f"Postfix's default '{grade}' list at OpenSSL security level {profile.security_level}: "
                             "no SHA-1 signatures in the key exchange, no RSA/DH keys below 2048 bits"))
    m.append(Setting("smtpd_tls_auth_only", "yes", "never offer AUTH before STARTTLS: no passwords in the clear"))
    m.append(Setting("smtpd_tls_loglevel", str(profile.loglevel), "log a summary of each TLS handshake"))
    m.append(Setting("smtpd_tls_received_header", "yes", "record protocol and cipher in the Received: header"))
    if profile.session_cache:
        m.append(Setting("smtpd_tls_session_cache_database", "btree:${data_directory}/smtpd_scache",
                         "TLS session resumption for repeat clients"))
        m.append(Setting("smtp_tls_session_cache_database", "btree:${data_directory}/smtp_scache",
                         "TLS session resumption for outbound connections"))
    m.append(Setting("disable_vrfy_command", "yes", "VRFY would let anyone probe which addresses exist"))
    m.append(Setting("smtpd_sasl_type", "dovecot", "authenticate submission users against Dovecot ('mailca dovecot' emits the listener)"))
    m.append(Setting("smtpd_sasl_path", sasl_path, "Dovecot's auth socket, relative to the Postfix queue directory"))
    m.append(Setting("smtpd_sasl_auth_enable", "no", "no AUTH on port 25; 587/465 switch it on in master.cf"))
    m.append(Setting("smtpd_sasl_security_options", "noanonymous, noplaintext",
                     "before TLS: no anonymous login and no plaintext mechanisms"))
    m.append(Setting("smtpd_sasl_tls_security_options", "noanonymous", "after TLS: PLAIN/LOGIN are fine, anonymous is not"))
    # outbound
    if profile.outbound_dane and version >= (2, 11):
        m.append(Setting("smtp_tls_security_level", "dane",
                         "outbound: authenticate receivers that publish DNSSEC-signed TLSA records, opportunistic TLS otherwise"))
        m.append(Setting("smtp_dns_support_level", "dnssec", "DANE needs DNSSEC-validated answers (run a validating resolver)"))
    else:
        why = ("outbound: opportunistic TLS (DANE needs Postfix 2.11)" if profile.outbound_dane else
               "outbound: opportunistic TLS; the profile does not ask for DANE")
        m.append(Setting("smtp_tls_security_level", "may", why))
    m.append(Setting("smtp_tls_loglevel", str(profile.loglevel), "log outbound TLS summaries"))
    m.append(Setting("smtp_tls_mandatory_protocols", _protocols(version, profile.min_protocol_mandatory),
                     "outbound where TLS is required (dane, secure): no TLS below " + profile.min_protocol_mandatory))
    m.append(Setting("smtp_tls_mandatory_ciphers", profile.ciphers_mandatory, "outbound cipher grade where TLS is required"))
    if profile.exclude_ciphers_mandatory:
        m.append(Setting("smtp_tls_mandatory_exclude_ciphers", ", ".join(profile.exclude_ciphers_mandatory),
                         "outbound: the same weak suites excluded"))
    if domains:  # opt-in (--secure-domain): a next hop without a mailca certificate would defer mail
        table = "texthash" if version >= (2, 8) else "hash"
        cfg.policy_path = str(Path(policy_dir) / POLICY_FILE)
        m.append(Setting("smtp_tls_policy_maps", f"{table}:{cfg.policy_path}",
                         "mail to the --secure-domain domains must present a certificate from your CA (level secure)"
                         + ("" if table == "texthash" else "; run 'postmap' on the file after editing")))
        # tafile= (Postfix 2.11): for these lookups ONLY the mailca root is trusted - smtp_tls_CAfile
        # and Debian's smtp_tls_CApath=/etc/ssl/certs stay as they are for everything else
        ta = f" tafile={root_path}" if version >= (2, 11) else ""
        if not ta:
            m.append(Setting("smtp_tls_CAfile", str(root_path),
                             "Postfix < 2.11 has no per-destination tafile: your root verifies the 'secure' lookups"))
        for d in domains:
            for key in (d, "." + d):
                cfg.policy_lines.append(f"{key:<30} secure match=nexthop:dot-nexthop{ta}")
    # master.cf
    relay = ("smtpd_relay_restrictions" if version >= (2, 10) else "smtpd_recipient_restrictions")
    for port in ports:
        role = ROLES[port]
        if role == "smtp":
            cfg.master.append(Service("smtp", "inet", ("n", "-", "-", "-", "-", "smtpd"), (),
                                      "port 25, MX: opportunistic STARTTLS, no AUTH (settings from main.cf)", port))
            continue
        name = role if (role == "submission" or version >= (3, 6)) else "smtps"
        opts = [Setting("syslog_name", f"postfix/{name}", "tell this service apart in the log")]
        if role == "submissions":
            opts.append(Setting("smtpd_tls_wrappermode", "yes", "implicit TLS from the first byte (RFC 8314)"))
        opts += [
            Setting("smtpd_tls_security_level", "encrypt",
                    "TLS is mandatory: nothing but EHLO/STARTTLS before it" if role == "submission" else
                    "TLS is mandatory (and the mandatory protocol/cipher limits apply)"),
            Setting("smtpd_sasl_auth_enable", "yes", "users authenticate here (only after TLS, see smtpd_tls_auth_only)"),
            Setting("smtpd_tls_auth_only", "yes", "no AUTH before TLS, even if main.cf is changed"),
            Setting("smtpd_client_restrictions", "permit_sasl_authenticated,reject", "only authenticated users may use this port"),
            Setting(relay, "permit_sasl_authenticated,reject", "and only they may relay"),
        ]
        why = ("port 587, submission: STARTTLS required, AUTH after TLS only" if role == "submission" else
               "port 465, submissions: implicit TLS, AUTH required"
               + ("" if name == "submissions" else " ('smtps' in /etc/services before Postfix 3.6)"))
        cfg.master.append(Service(name, "inet", ("n", "-", "-", "-", "-", "smtpd"), tuple(opts), why, port))
    return cfg


# ---------------------------------------------------------------------------- formatting
def _comment(text: str, indent: str = "") -> list[str]:
    import textwrap

    return [indent + "# " + ln for ln in textwrap.wrap(text, 92 - len(indent))]


def format_main(cfg: PostfixConfig) -> str:
    out = [f"# --- mailca: TLS for {cfg.host} (profile {cfg.profile}, Postfix {_vs(cfg.version)}) ---"]
    for note in cfg.notes:
        out += _comment(note)
    for s in cfg.main:
        out += _comment(s.why)
        out.append(f"{s.name} = {s.value}")
    return "\n".join(out) + "\n"


def format_master(cfg: PostfixConfig) -> str:
    out = [f"# --- mailca: services for {cfg.host} ---",
           "# Add an entry only if master.cf has none of that name; for an existing one keep its columns",
           "# (chroot!) and set just these -o lines.  'mailca deploy' does exactly that for you."]
    for svc in cfg.master:
        if svc.name == "smtp" and svc.type == "inet" and not svc.options:
            # never emit an 'smtp inet' line: merged as told it would replace a postscreen set-up
            # (postscreen, smtpd pass, dnsblog, tlsproxy; chroot y) without a word
            out.append("# port 25: keep your existing 'smtp inet' line (smtpd or postscreen) exactly as it is;")
            out.append("# it takes all its TLS settings from main.cf.")
            continue
        out += _comment(svc.why)
        out.append(f"{svc.name:<11} {svc.type:<5} " + " ".join(f"{f:<7}" for f in svc.fields).rstrip())
        for o in svc.options:
            out += _comment(o.why, "  ")
            out.append(f"  -o {o.name}={o.value}")
    return "\n".join(out) + "\n"


def format_policy(cfg: PostfixConfig) -> str:
    out = [f"# mailca: TLS policy for mail to your own domains ({cfg.policy_path})",
           "# level secure = TLS required, the certificate must chain to the mailca root named by tafile=",
           "# (only that root: the system CAs are not trusted for these lookups) and name the next-hop",
           "# domain or a subdomain of it.  Only the domains given with --secure-domain are listed."]
    return "\n".join(out + cfg.policy_lines) + "\n"


def format_snippet(cfg: PostfixConfig) -> str:
    parts = ["# ===== main.cf =====", format_main(cfg), "# ===== master.cf =====", format_master(cfg)]
    if cfg.policy_path:
        parts += [f"# ===== {cfg.policy_path} =====", format_policy(cfg)]
    return "\n".join(parts)


def format_postconf(cfg: PostfixConfig) -> str:
    if cfg.version < (2, 11):
        raise UsageError(f"--format postconf needs Postfix 2.11 or later (postconf -M/-P); "
                         f"for {_vs(cfg.version)} use --format snippet")
    q = shlex.quote
    out = [f"# mailca: TLS for {cfg.host} (profile {cfg.profile}, Postfix {_vs(cfg.version)}) as postconf commands"]
    for s in cfg.main:
        out += _comment(s.why)
        out.append(f"postconf -e {q(f'{s.name} = {s.value}')}")
    for svc in cfg.master:
        out += _comment(svc.why)
        if svc.name == "smtp" and svc.type == "inet" and not svc.options:
            # Port 25 takes all its TLS settings from main.cf.  'postconf -M smtp/inet=...' would
            # replace the existing line - a postscreen set-up, chroot, or -o options would be lost.
            out.append("# (your existing 'smtp inet' line - smtpd or postscreen - stays as it is)")
            continue
        entry = f"{svc.name} {svc.type} " + " ".join(svc.fields)
        out.append(f"postconf -M {q(f'{svc.name}/{svc.type}={entry}')}")
        for o in svc.options:
            out.append(f"postconf -P {q(f'{svc.name}/{svc.type}/{o.name}={o.value}')}")
    if cfg.policy_path:
        out.append("# the TLS policy table for the --secure-domain domains")
        out.append(f"printf '%s\\n' {' '.join(q(ln) for ln in cfg.policy_lines)} > {q(cfg.policy_path)}")
    out.append("postfix reload")
    return "\n".join(out) + "\n"


def write_config_files(cfg: PostfixConfig, write_dir: str, *, postconf_text: str | None = None) -> list[str]:
    """``postfix --write DIR``: main.cf.mailca, master.cf.mailca, the policy map (and
    postconf.sh), each written atomically (0644: no secrets in them).  Returns the file names."""
    import os

    from ..storage.store import atomic_write, ensure_dir

    ensure_dir(write_dir, 0o755)
    files = {"main.cf.mailca": format_main(cfg), "master.cf.mailca": format_master(cfg)}
    if cfg.policy_path:  # only with --secure-domain
        files[POLICY_FILE] = format_policy(cfg)
    if postconf_text is not None:
        files["postconf.sh"] = postconf_text
    for name, content in files.items():
        atomic_write(os.path.join(write_dir, name), content.encode(), 0o644)
    return list(files)
