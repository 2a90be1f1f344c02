"""The files that hand the root to users' devices: PEM, DER, an Apple configuration
profile, fingerprints.txt and one self-contained, offline ``index.html``.

Everything here is pure (root certificate in, bytes out) except :func:`write_bundle`,
which checks the output directory and writes the files atomically.  The bundle holds
public material only: :func:`check_out_dir` refuses a directory that contains anything
that looks like a private key, and a directory inside the store.

File names derive from the root (``mailca-<org>-<first 8 hex of its SHA-256>``), so a
new root never overwrites the files of the old one and ``mailca trust`` uses the very
same name as its nickname / anchor file name.
"""

from __future__ import annotations

import hashlib
import html
import os
import plistlib
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StoreError, UsageError

__all__ = ["bundle_from_store", "make_bundle", "build_bundle", "root_facts", "root_scope", "Scope",
           "root_nickname", "colon"]

#: uuid5 namespace for the payload UUIDs of the .mobileconfig (fixed forever: changing it
#: would make re-downloaded profiles install next to the old ones instead of replacing them).
PROFILE_NAMESPACE = uuid.UUID("6f1c3a52-8a4e-5b9e-9c7d-6d61696c6361")

#: Content types a web server should send (documented in docs/trust.md).
CONTENT_TYPES = {
    ".crt": "application/x-x509-ca-cert",
    ".cer": "application/pkix-cert",
    ".mobileconfig": "application/x-apple-aspen-config",
    ".txt": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}

_KEY_MARKER = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_KEY_NAME = re.compile(r"(\.key$|^key\.pem$|keyfullchain|\.p12$|\.pfx$|^id_(rsa|ecdsa|ed25519)$)", re.I)
SCAN_LIMIT = 2000  # files; a bigger directory is not a dedicated bundle directory
SCAN_BYTES = 1 << 20


# ------------------------------------------------------------------ facts
def slug(text: str, maxlen: int = 32) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:maxlen].strip("-") or "root"


def root_nickname(root) -> str:
    """Stable name for this root: ``mailca-<org slug>-<first 8 hex of SHA-256>``.

    Used for the bundle file names, the system anchor file and the NSS nickname, so that
    install is idempotent and uninstall removes exactly what install added."""
    from cryptography.x509.oid import NameOID

    org = root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    cn = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    label = (org[0].value if org else (cn[0].value if cn else "root"))
    return f"mailca-{slug(str(label))}-{_sha256(root)[:8]}"


def _der(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.DER)


def _sha256(cert) -> str:
    return hashlib.sha256(_der(cert)).hexdigest()


def colon(hexstr: str) -> str:
    return ":".join(hexstr[i:i + 2] for i in range(0, len(hexstr), 2)).upper()


def spaced(hexstr: str, group: int = 2) -> str:
    return " ".join(hexstr[i:i + group] for i in range(0, len(hexstr), group)).upper()


@dataclass(frozen=True)
class Scope:
    """What the root's name constraints let it vouch for."""

    constrained: bool
    dns: tuple[str, ...] = ()
    ip_ranges: tuple[str, ...] = ()
    excluded_dns: tuple[str, ...] = ()
    excluded_ip: tuple[str, ...] = ()

    @property
    def no_ip(self) -> bool:
        return not self.ip_ranges and {"0.0.0.0/0", "::/0"} <= set(self.excluded_ip)

    def sentence(self) -> str:
        if not self.constrained or not (self.dns or self.ip_ranges):
            return ("This root has no name constraints: it can vouch for ANY name. "
                    "Install it only if you trust its owner like a public CA.")
        doms = ", ".join(self.dns) if self.dns else "no host names"
        s = f"This root can only vouch for {doms} (and names under them)"
        if self.ip_ranges:
            s += f" and the IP addresses in {', '.join(self.ip_ranges)}"
        elif self.no_ip:
            s += ", and for no IP address"
        return s + "."

    def as_dict(self) -> dict:
        return {"constrained": self.constrained, "permitted_dns": list(self.dns),
                "permitted_ip": list(self.ip_ranges), "excluded_dns": list(self.excluded_dns),
                "excluded_ip": list(self.excluded_ip), "summary": self.sentence()}


def root_scope(root) -> Scope:
    """Read the scope from the certificate itself (not from ca.json): it is what clients enforce."""
    from cryptography import x509

    try:
        nc = root.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return Scope(constrained=False)

    def split(subtrees):
        dns, ips = [], []
        for g in subtrees or ():
            if isinstance(g, x509.DNSName):
                dns.append(g.value)
            elif isinstance(g, x509.IPAddress):
                ips.append(str(g.value))
        return tuple(dns), tuple(ips)

    pd, pi = split(nc.permitted_subtrees)
    ed, ei = split(nc.excluded_subtrees)
    return Scope(True, pd, pi, ed, ei)


@dataclass(frozen=True)
class RootFacts:
    nickname: str
    subject: str
    common_name: str
    organization: str
    sha256: str  # lower-case hex, no separators
    sha1: str
    serial: str
    not_before: str
    not_after: str
    pem: bytes = field(repr=False)
    der: bytes = field(repr=False)
    scope: Scope = Scope(False)

    @property
    def sha256_colon(self) -> str:
        return colon(self.sha256)

    @property
    def sha1_colon(self) -> str:
        return colon(self.sha1)

    def as_dict(self) -> dict:
        return {"nickname": self.nickname, "subject": self.subject, "common_name": self.common_name,
                "organization": self.organization, "sha256": self.sha256_colon, "sha1": self.sha1_colon,
                "serial": self.serial, "not_before": self.not_before, "not_after": self.not_after,
                "scope": self.scope.as_dict()}


def root_facts(root) -> RootFacts:
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    from ..core.certinfo import iso

    der = _der(root)

    def attr(oid):
        a = root.subject.get_attributes_for_oid(oid)
        return str(a[0].value) if a else ""

    return RootFacts(
        nickname=root_nickname(root), subject=root.subject.rfc4514_string(),
        common_name=attr(NameOID.COMMON_NAME) or root.subject.rfc4514_string(),
        organization=attr(NameOID.ORGANIZATION_NAME),
        sha256=hashlib.sha256(der).hexdigest(), sha1=hashlib.sha1(der).hexdigest(),  # noqa: S324 - display only
        serial=format(root.serial_number, "x"), not_before=iso(root.not_valid_before_utc),
        not_after=iso(root.not_valid_after_utc), pem=root.public_bytes(serialization.Encoding.PEM), der=der,
        scope=root_scope(root),
    )


# ----------------------------------------------------------------- renders
def file_names(f: RootFacts) -> dict[str, str]:
    return {"pem": f"{f.nickname}.crt", "der": f"{f.nickname}.cer", "mobileconfig": f"{f.nickname}.mobileconfig",
            "fingerprints": "fingerprints.txt", "html": "index.html"}


def render_fingerprints(f: RootFacts) -> str:
    """The fingerprints in every form an OS dialog shows them, so users can compare by eye."""
    lines = [
        f"Root certificate: {f.common_name}",
        f"Subject:          {f.subject}",
        f"Valid:            {f.not_before} until {f.not_after}",
        f"Scope:            {f.scope.sentence()}",
        "",
        "SHA-256 fingerprint (Firefox, Thunderbird, Chrome, Android, openssl):",
        f"  {f.sha256_colon}",
        "SHA-1 fingerprint (older dialogs):",
        f"  {f.sha1_colon}",
        "",
        "As macOS and iOS show them (Keychain Access, Settings > ... > More Details):",
        f"  SHA-256: {spaced(f.sha256)}",
        f"  SHA-1:   {spaced(f.sha1)}",
        "As Windows shows them:",
        f"  install warning 'Thumbprint (sha1)': {spaced(f.sha1, 8)}",
        f"  certificate Details > Thumbprint:    {f.sha1}",
        "",
        "Check with openssl:",
        f"  openssl x509 -in {f.nickname}.crt -noout -fingerprint -sha256",
        "",
    ]
    return "\n".join(lines)


def payload_uuid(f: RootFacts, what: str) -> str:
    return str(uuid.uuid5(PROFILE_NAMESPACE, f"{f.sha256}:{what}")).upper()


def profile_identifier(f: RootFacts, domains: list[str] | tuple[str, ...] = ()) -> str:
    """Reverse-DNS identifier, stable for this root (re-installing replaces, not duplicates)."""
    base = ".".join(reversed(domains[0].split("."))) if domains else "mailca"
    base = re.sub(r"[^A-Za-z0-9.-]", "-", base)
    return f"{base}.mailca.root.{f.sha256[:16]}"


def render_mobileconfig(f: RootFacts, domains: list[str] | tuple[str, ...] = ()) -> bytes:
    """An (unsigned) Apple configuration profile with one ``com.apple.security.root`` payload."""
    ident = profile_identifier(f, domains)
    root_payload = {
        "PayloadCertificateFileName": f"{f.nickname}.cer",
        "PayloadContent": f.der,
        "PayloadDescription": "Adds the mail server's root certificate",
        "PayloadDisplayName": f.common_name,
        "PayloadIdentifier": f"{ident}.certificate",
        "PayloadType": "com.apple.security.root",
        "PayloadUUID": payload_uuid(f, "certificate"),
        "PayloadVersion": 1,
    }
    profile = {
        "PayloadContent": [root_payload],
        "PayloadDescription": f"Trusts {f.common_name} for your mail server. {f.scope.sentence()} "
                              f"SHA-256 {f.sha256_colon}",
        "PayloadDisplayName": f.common_name,
        "PayloadIdentifier": ident,
        "PayloadOrganization": f.organization or f.common_name,
        "PayloadRemovalDisallowed": False,
        "PayloadType": "Configuration",
        "PayloadUUID": payload_uuid(f, "profile"),
        "PayloadVersion": 1,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


_CSS = """
:root{color-scheme:light dark;--fg:#1b1f23;--bg:#fff;--mut:#5a6470;--box:#f3f6f9;--acc:#0b5cad;--warn:#8a5300}
@media (prefers-color-scheme:dark){:root{--fg:#e6e6e6;--bg:#16181b;--mut:#a0a8b0;--box:#22262b;--acc:#6fb0ff;--warn:#ffc266}}
*{box-sizing:border-box}
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0 auto;max-width:52rem;padding:1rem 1.25rem 3rem}
h1{font-size:1.6rem;margin:.5rem 0}
h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid var(--box);padding-bottom:.25rem}
h3{font-size:1.05rem;margin:1.25rem 0 .25rem}
.box{background:var(--box);border-radius:.5rem;padding:.75rem 1rem;margin:.75rem 0}
.fp{font:600 .95rem/1.6 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.mut{color:var(--mut);font-size:.9rem}
.scope{border-left:4px solid var(--warn);padding-left:.75rem}
a{color:var(--acc)}
ul.dl{list-style:none;padding:0}
ul.dl li{margin:.4rem 0}
ul.dl a{font-weight:600}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9rem}
pre{background:var(--box);padding:.75rem;border-radius:.5rem;overflow-x:auto}
ol li{margin:.2rem 0}
"""


def render_index_html(f: RootFacts, names: dict[str, str], domains: list[str] | tuple[str, ...] = ()) -> str:
    """One self-contained page: no scripts, no external assets; works offline and from any server."""
    e = html.escape
    cn = e(f.common_name)
    crt, cer, mc, fp = (e(names[k]) for k in ("pem", "der", "mobileconfig", "fingerprints"))
    scope_items = "".join(f"<li><code>{e(d)}</code> and every name under it</li>" for d in f.scope.dns)
    if f.scope.ip_ranges:
        scope_items += "".join(f"<li>IP addresses in <code>{e(r)}</code></li>" for r in f.scope.ip_ranges)
    elif f.scope.constrained and f.scope.no_ip:
        scope_items += "<li>no IP address at all</li>"
    if f.scope.constrained and (f.scope.dns or f.scope.ip_ranges):
        scope_html = (
            f'<div class="box scope" id="scope"><p>{e(f.scope.sentence())}</p><ul>{scope_items}</ul>'
            "<p class=\"mut\">These name constraints are part of the certificate itself. Clients that honour "
            "X.509 name constraints (current OpenSSL, Firefox/Thunderbird, Chrome, Apple and Windows) reject "
            "anything it might sign for other names, so installing it does not let its owner impersonate "
            "other web sites or mail servers.</p></div>"
        )
    else:
        scope_html = f'<div class="box scope" id="scope"><p><strong>{e(f.scope.sentence())}</strong></p></div>'
    pem_text = e(f.pem.decode("ascii").strip())
    what = f"{e(f.organization)}'s" if f.organization else "this"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Install {cn}</title>
<link rel="icon" href="data:,">
<style>{_CSS}</style>
</head>
<body>
<h1>Install {cn}</h1>
<p>{what} mail server uses certificates from a private certificate authority. Install this
root certificate once on each device you read or send mail from, and your mail program will
trust the server without warnings &mdash; and will warn you if anyone else pretends to be it.</p>

<h2 id="check">1. Check that you got the right certificate</h2>
<p>Before you trust it, compare this fingerprint with the one your administrator gave you
by another channel (in person, on paper, by phone). Your device shows it during installation.</p>
<div class="box">
<div>SHA-256 fingerprint</div>
<div class="fp" id="sha256">{f.sha256_colon}</div>
<div class="mut" style="margin-top:.5rem">SHA-1 (older dialogs, e.g. the Windows install warning)</div>
<div class="fp" id="sha1">{f.sha1_colon}</div>
</div>
<p class="mut">Subject: {e(f.subject)}<br>Valid from {e(f.not_before)} until {e(f.not_after)}.
All fingerprint forms are in <a href="{fp}" download="{fp}">{fp}</a>.</p>

<h2 id="scope-h">2. What it can vouch for</h2>
{scope_html}

<h2 id="downloads">3. Download</h2>
<ul class="dl">
<li><a href="{crt}" download="{crt}" type="{CONTENT_TYPES['.crt']}">{crt}</a> &mdash; PEM: Linux, Thunderbird, Firefox, Android, macOS Keychain</li>
<li><a href="{cer}" download="{cer}" type="{CONTENT_TYPES['.cer']}">{cer}</a> &mdash; DER: Windows, Android</li>
<li><a href="{mc}" download="{mc}" type="{CONTENT_TYPES['.mobileconfig']}">{mc}</a> &mdash; configuration profile: iPhone, iPad, Mac</li>
<li><a href="{fp}" download="{fp}" type="text/plain">{fp}</a> &mdash; the fingerprints as text</li>
</ul>

<h2 id="install">4. Install</h2>

<h3 id="windows">Windows</h3>
<ol>
<li>Download <code>{cer}</code> and double-click it, then choose <em>Install Certificate&hellip;</em>.</li>
<li>Pick <em>Local Machine</em> (all users; needs administrator) or <em>Current User</em>, then <em>Next</em>.</li>
<li>Choose <em>Place all certificates in the following store</em> &rarr; <em>Browse&hellip;</em> &rarr; <em>Trusted Root Certification Authorities</em>.</li>
<li><em>Next</em>, <em>Finish</em>. If a security warning appears, check that its SHA-1 thumbprint matches the one above, then <em>Yes</em>.</li>
<li>Outlook and Windows Mail now trust the server. (PowerShell as administrator: <code>Import-Certificate -FilePath {cer} -CertStoreLocation Cert:\\LocalMachine\\Root</code>)</li>
</ol>

<h3 id="macos">macOS</h3>
<ol>
<li>Download <code>{mc}</code> and open it; macOS says the profile was downloaded.</li>
<li>Open <em>System Settings &rarr; General &rarr; Device Management</em> (older: <em>System Preferences &rarr; Profiles</em>).</li>
<li>Double-click the profile <em>{cn}</em>, check the fingerprint under <em>More Details</em>, and click <em>Install</em>; enter your password.</li>
<li>Terminal alternative: <code>sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {crt}</code></li>
</ol>

<h3 id="ios">iPhone and iPad</h3>
<ol>
<li>Open this page in Safari and tap <code>{mc}</code>; allow the download.</li>
<li>Open <em>Settings &rarr; General &rarr; VPN &amp; Device Management</em>, tap the downloaded profile <em>{cn}</em> and <em>Install</em> (enter your passcode).</li>
<li>Then turn on full trust: <em>Settings &rarr; General &rarr; About &rarr; Certificate Trust Settings</em>, switch on <em>{cn}</em>.</li>
<li>The profile is not signed, so iOS labels it &ldquo;Not Verified&rdquo;: that is why you compare the fingerprint.</li>
</ol>

<h3 id="android">Android</h3>
<ol>
<li>Download <code>{crt}</code>.</li>
<li>Open <em>Settings &rarr; Security &rarr; More security settings &rarr; Encryption &amp; credentials &rarr; Install a certificate &rarr; CA certificate</em> (the exact path differs between vendors; search Settings for &ldquo;CA certificate&rdquo;).</li>
<li>Confirm <em>Install anyway</em>, unlock, and pick the downloaded file.</li>
<li>Since Android 7 each app decides whether it accepts certificates installed by the user; if a mail app still rejects the server, check its documentation.</li>
</ol>

<h3 id="thunderbird">Thunderbird (and Firefox)</h3>
<ol>
<li>Thunderbird keeps its own list of authorities. Download <code>{crt}</code>.</li>
<li>Open <em>Settings &rarr; Privacy &amp; Security &rarr; Certificates &rarr; Manage Certificates&hellip; &rarr; Authorities &rarr; Import&hellip;</em> and choose the file.</li>
<li>Tick <em>Trust this CA to identify websites</em> (Thunderbird uses it for mail servers too) and click <em>OK</em>.</li>
<li>Firefox: the same under <em>Settings &rarr; Privacy &amp; Security &rarr; Certificates &rarr; View Certificates&hellip;</em></li>
</ol>

<h3 id="linux">Debian, Ubuntu and Fedora</h3>
<ol>
<li>Download <code>{crt}</code>.</li>
<li>Debian and Ubuntu: <code>sudo cp {crt} /usr/local/share/ca-certificates/ &amp;&amp; sudo update-ca-certificates</code></li>
<li>Fedora, RHEL and derivatives: <code>sudo cp {crt} /etc/pki/ca-trust/source/anchors/ &amp;&amp; sudo update-ca-trust</code></li>
<li>Check: <code>openssl x509 -in {crt} -noout -fingerprint -sha256</code> prints the fingerprint above. On a machine with mailca: <code>sudo mailca trust install --nss</code>.</li>
</ol>

<h2 id="pem">The certificate as text</h2>
<pre>{pem_text}</pre>
<p class="mut">Generated by mailca. This page contains only public information.</p>
</body>
</html>
"""


@dataclass(frozen=True)
class Bundle:
    facts: RootFacts
    names: dict[str, str]
    files: dict[str, bytes]  # file name -> bytes, in write order (index.html last)


def build_bundle(root, domains: list[str] | tuple[str, ...] = ()) -> Bundle:
    f = root_facts(root)
    names = file_names(f)
    files = {
        names["pem"]: f.pem,
        names["der"]: f.der,
        names["mobileconfig"]: render_mobileconfig(f, domains),
        names["fingerprints"]: render_fingerprints(f).encode("utf-8"),
        names["html"]: render_index_html(f, names, domains).encode("utf-8"),
    }
    return Bundle(f, names, files)


# ---------------------------------------------------------------- writing
def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def find_private_key(directory: Path) -> Path | None:
    """First file below ``directory`` that is or looks like a private key (by name or PEM
    marker).  Raises UsageError if the directory is too big to be a bundle directory."""
    count = 0
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            count += 1
            if count > SCAN_LIMIT:
                raise UsageError(
                    f"--out {directory} holds more than {SCAN_LIMIT} files; use an empty or dedicated directory for the bundle"
                )
            p = Path(root) / name
            if _KEY_NAME.search(name):
                return p
            try:
                if not p.is_file():  # follows symlinks: a link to a key is a key
                    continue
                with open(p, "rb") as fh:
                    head = fh.read(SCAN_BYTES)
            except OSError:
                continue
            if _KEY_MARKER.search(head):
                return p
    return None


def check_out_dir(out: Path, store_path: Path) -> Path:
    """Validate the bundle directory before anything is written; returns its absolute path."""
    out = Path(os.path.abspath(out))
    real = Path(os.path.realpath(out))
    store_real = Path(os.path.realpath(store_path))
    if _inside(real, store_real) or _inside(store_real, real):
        raise UsageError(
            f"--out {out} overlaps the store {store_path}, which holds private keys; choose a directory outside it"
        )
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory; give a directory for the bundle files")
    if out.is_dir():
        key = find_private_key(out)
        if key is not None:
            raise UsageError(
                f"--out {out} contains a private key ({key}); refusing to put public files next to it, use another directory"
            )
    # nearest existing ancestor must be a directory we can write into
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise StoreError(f"cannot create --out {out}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StoreError(f"--out {out}: {probe} is not writable by this user; choose another directory or run as its owner")
    return out


def write_bundle(bundle: Bundle, out: Path) -> dict:
    """Create ``out`` (0755) and write every file atomically, index.html last (so the page
    never links to a file that is not there yet)."""
    from ..storage.store import atomic_write

    from ..storage.outpaths import make_public_dirs

    make_public_dirs(out)  # every missing level 0755, whatever the umask
    written = {}
    for name, data in bundle.files.items():
        p = out / name
        try:
            atomic_write(p, data, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write {p}: {exc.strerror}; the files written so far are complete") from None
        written[name] = {"path": str(p), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return written


def make_bundle(ca, out: str | os.PathLike) -> dict:
    """Build, check, write.  Returns the ``--json`` summary."""
    bundle = build_bundle(ca.root, ca.domains)
    outp = check_out_dir(Path(out), ca.store.path)
    written = write_bundle(bundle, outp)
    kinds = {v: k for k, v in bundle.names.items()}
    return {
        "out": str(outp),
        "root": bundle.facts.as_dict(),
        "files": {kinds[n]: w for n, w in written.items()},
    }


def bundle_from_store(store, out: str | os.PathLike) -> dict:
    """``mailca bundle``: the store's root, written to ``out`` under the store lock (so that
    a concurrent ``ca renew-intermediate``/``init`` cannot change the CA mid-write)."""
    from ..issuance.ca import load_ca

    store.require_ca()  # before the lock: a wrong --dir must not create a store
    with store.lock():
        return make_bundle(load_ca(store), out)
