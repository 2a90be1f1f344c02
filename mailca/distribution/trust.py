"""Put the root into this machine's trust stores, the way mkcert does.

* System store: the distribution's anchor directory plus its update command
  (Debian/Ubuntu ``update-ca-certificates``, Fedora/RHEL ``update-ca-trust extract``,
  also Arch ``trust extract-compat`` and openSUSE).  "Active" means the extracted bundle
  that OpenSSL, curl, Python and GnuTLS read really contains the root.
* NSS: every ``cert9.db`` of the current user (Chromium ``~/.pki/nssdb``, Firefox and
  Thunderbird profiles, their snap/flatpak variants) via ``certutil``, trust ``C,,``
  (a CA trusted to identify TLS servers, which is what mail clients check).
  ``MAILCA_NSS_DBS`` (``os.pathsep``-separated directories) replaces the discovery, and
  discovery follows ``$HOME``, so tests use throwaway databases.

The root's nickname / anchor file name is :func:`mailca.distribution.bundles.root_nickname`, derived
from the root itself: install is idempotent and uninstall removes exactly what install
added (NSS entries are only deleted if nickname AND certificate match).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..core.childenv import child_env
from ..errors import StoreError, UsageError

__all__ = ["Root", "root_from_cert", "load_root_file", "status", "install", "uninstall"]

NSS_TRUST = "C,,"
TIMEOUT = 120


# ------------------------------------------------------------------ the root
@dataclass(frozen=True)
class Root:
    cert: object
    nickname: str
    pem: bytes
    der: bytes
    sha256: str  # colon form
    common_name: str

    def as_dict(self) -> dict:
        return {"nickname": self.nickname, "common_name": self.common_name, "sha256": self.sha256}


def root_from_cert(cert) -> Root:
    from .bundles import root_facts

    f = root_facts(cert)
    return Root(cert, f.nickname, f.pem, f.der, f.sha256_colon, f.common_name)


def load_root_file(path: str) -> Root:
    """A root given with ``--cert FILE`` (PEM or DER): must be a self-signed CA certificate."""
    from cryptography import x509

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"--cert {path}: cannot read it ({exc.strerror})") from None
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise UsageError(f"--cert {path} is not a PEM or DER certificate; give the root's .crt or .cer file") from None
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = bc.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca or cert.issuer != cert.subject:
        raise UsageError(f"--cert {path} is not a self-signed CA certificate; give the root (e.g. the bundle's .crt), not a server certificate")
    return root_from_cert(cert)


def _b64_body(pem: bytes) -> str:
    lines = [ln.strip() for ln in pem.decode("ascii").splitlines()]
    return "".join(ln for ln in lines if ln and not ln.startswith("-----"))


# -------------------------------------------------------------- system store
@dataclass(frozen=True)
class SystemStore:
    kind: str
    anchor_dir: Path
    suffix: str
    update: tuple[str, ...]
    bundle: Path
    #: after removing an anchor: Debian's plain update-ca-certificates leaves dangling
    #: /etc/ssl/certs links for removed local certificates; --fresh rebuilds them all.
    remove_update: tuple[str, ...] = ()

    def anchor(self, root: Root) -> Path:
        return self.anchor_dir / f"{root.nickname}{self.suffix}"


SYSTEM_STORES = (
    SystemStore("fedora", Path("/etc/pki/ca-trust/source/anchors"), ".pem", ("update-ca-trust", "extract"),
                Path("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")),
    SystemStore("debian", Path("/usr/local/share/ca-certificates"), ".crt", ("update-ca-certificates",),
                Path("/etc/ssl/certs/ca-certificates.crt"), ("update-ca-certificates", "--fresh")),
    SystemStore("arch", Path("/etc/ca-certificates/trust-source/anchors"), ".crt", ("trust", "extract-compat"),
                Path("/etc/ca-certificates/extracted/tls-ca-bundle.pem")),
    SystemStore("suse", Path("/usr/share/pki/trust/anchors"), ".pem", ("update-ca-certificates",),
                Path("/var/lib/ca-certificates/ca-bundle.pem"), ("update-ca-certificates", "--fresh")),
)


def detect_system_store() -> SystemStore | None:
    for s in SYSTEM_STORES:
        if s.anchor_dir.is_dir() and shutil.which(s.update[0]):
            return s
    return None


def bundle_contains(store: SystemStore, root: Root) -> bool:
    try:
        text = store.bundle.read_text("ascii", errors="replace")
    except OSError:
        return False
    return _b64_body(root.pem) in re.sub(r"\s+", "", text)


def system_status(store: SystemStore | None, root: Root) -> dict | None:
    if store is None:
        return None
    anchor = store.anchor(root)
    try:
        ours = anchor.read_bytes() == root.pem
    except OSError:
        ours = False
    return {"kind": store.kind, "anchor": str(anchor), "installed": ours, "active": bundle_contains(store, root),
            "bundle": str(store.bundle), "update_command": list(store.update)}


def _run_update(store: SystemStore, *, removal: bool = False) -> None:
    argv = (store.remove_update or store.update) if removal else store.update
    exe = shutil.which(argv[0])
    if exe is None:
        raise StoreError(f"{argv[0]} is not installed; install the ca-certificates package")
    try:
        r = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=TIMEOUT, env=child_env(),
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StoreError(f"cannot run {' '.join(argv)}: {exc}") from None
    if r.returncode != 0:
        last = (r.stderr.strip() or r.stdout.strip() or "no output").splitlines()[-1]
        raise StoreError(f"{' '.join(argv)} failed (exit {r.returncode}): {last}")


def _need_writable(store: SystemStore, verb: str) -> None:
    if not os.access(store.anchor_dir, os.W_OK | os.X_OK):
        raise StoreError(
            f"{verb} the system store needs write access to {store.anchor_dir}; run it as root "
            f"(sudo mailca trust {verb.split()[0].lower()}) or add --no-system to use only your NSS databases"
        )


def system_install(store: SystemStore, root: Root) -> dict:
    from ..storage.store import atomic_write

    before = system_status(store, root)
    changed = False
    if not before["installed"]:
        _need_writable(store, "Installing into")
        try:
            atomic_write(store.anchor(root), root.pem, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write {store.anchor(root)}: {exc.strerror}") from None
        changed = True
    if changed or not before["active"]:
        _need_writable(store, "Installing into")
        _run_update(store)
        changed = True
    after = system_status(store, root)
    if not after["active"]:
        raise StoreError(
            f"{' '.join(store.update)} ran but {store.bundle} still lacks the root; check {store.anchor(root)} and the tool's output"
        )
    return {"store": "system", **after, "changed": changed}


def system_uninstall(store: SystemStore, root: Root) -> dict:
    from ..storage.store import fsync_dir

    anchor = store.anchor(root)
    changed = False
    if anchor.exists() or anchor.is_symlink():
        _need_writable(store, "Removing from")
        try:
            anchor.unlink()
            fsync_dir(store.anchor_dir)
        except OSError as exc:
            raise StoreError(f"cannot remove {anchor}: {exc.strerror}") from None
        _run_update(store, removal=True)
        changed = True
    after = system_status(store, root)
    if changed and after["active"]:
        raise StoreError(f"removed {anchor}, but {store.bundle} still contains the root; it was also installed by other means")
    return {"store": "system", **after, "changed": changed}


# ----------------------------------------------------------------------- NSS
@dataclass(frozen=True)
class NSSDB:
    path: Path
    label: str

    @property
    def spec(self) -> str:
        return f"sql:{self.path}"


_NSS_PATTERNS = (
    (".pki/nssdb", "Chromium/Chrome"),
    ("snap/chromium/current/.pki/nssdb", "Chromium (snap)"),
    (".mozilla/firefox/*", "Firefox profile"),
    ("snap/firefox/common/.mozilla/firefox/*", "Firefox (snap) profile"),
    (".var/app/org.mozilla.firefox/.mozilla/firefox/*", "Firefox (flatpak) profile"),
    (".thunderbird/*", "Thunderbird profile"),
    ("snap/thunderbird/common/.thunderbird/*", "Thunderbird (snap) profile"),
    (".var/app/org.mozilla.Thunderbird/.thunderbird/*", "Thunderbird (flatpak) profile"),
)


def nss_databases(env=None) -> list[NSSDB]:
    """NSS databases of the current user (``$HOME``), or exactly those in ``$MAILCA_NSS_DBS``."""
    env = os.environ if env is None else env
    explicit = env.get("MAILCA_NSS_DBS")
    if explicit:
        out = []
        for item in explicit.split(os.pathsep):
            item = item.strip()
            if not item:
                continue
            p = Path(item[4:] if item.startswith("sql:") else item)
            if not (p / "cert9.db").is_file():
                raise UsageError(f"MAILCA_NSS_DBS entry {item!r} holds no cert9.db; create one with 'certutil -N -d sql:{p}'")
            out.append(NSSDB(p.absolute(), "MAILCA_NSS_DBS"))
        return out
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    out, seen = [], set()
    for pattern, label in _NSS_PATTERNS:
        for d in sorted(glob.glob(str(home / pattern))):
            p = Path(d)
            if (p / "cert9.db").is_file() and p.resolve() not in seen:
                seen.add(p.resolve())
                name = f"{label} {p.name}" if pattern.endswith("*") else label
                out.append(NSSDB(p, name))
    return out


def certutil_path(required: bool) -> str | None:
    exe = shutil.which("certutil")
    if exe is None and required:
        raise UsageError("--nss needs certutil, which is not installed; install libnss3-tools (Debian) or nss-tools (Fedora)")
    return exe


def _certutil(exe: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([exe, *args], input=input if input is not None else b"", capture_output=True,
                              timeout=TIMEOUT, env=child_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StoreError(f"cannot run certutil {args[0]}: {exc}") from None


def _nss_matches(exe: str, db: NSSDB, root: Root) -> tuple[bool, bool]:
    """(nickname present, nickname holds exactly our root)."""
    from cryptography import x509

    r = _certutil(exe, "-L", "-d", db.spec, "-n", root.nickname, "-a")
    if r.returncode != 0:
        return False, False
    try:
        certs = x509.load_pem_x509_certificates(r.stdout)
    except ValueError:
        return True, False
    from cryptography.hazmat.primitives import serialization

    return True, any(c.public_bytes(serialization.Encoding.DER) == root.der for c in certs)


def _nss_trust(exe: str, db: NSSDB, root: Root) -> str | None:
    r = _certutil(exe, "-L", "-d", db.spec)
    if r.returncode != 0:
        return None
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith(root.nickname + " ") or line.rstrip() == root.nickname:
            return line[len(root.nickname):].strip()
    return None


def nss_status(exe: str | None, db: NSSDB, root: Root) -> dict:
    d = {"store": "nss", "db": db.spec, "label": db.label}
    if exe is None:
        return {**d, "installed": False, "trust": None, "note": "certutil not installed"}
    present, ours = _nss_matches(exe, db, root)
    return {**d, "installed": ours, "trust": _nss_trust(exe, db, root) if ours else None}


def nss_install(exe: str, db: NSSDB, root: Root) -> dict:
    st = nss_status(exe, db, root)
    if st["installed"] and st["trust"] and st["trust"].startswith("C"):
        return {**st, "changed": False}
    r = _certutil(exe, "-A", "-d", db.spec, "-t", NSS_TRUST, "-n", root.nickname, input=root.pem)
    if r.returncode != 0:
        msg = (r.stderr.decode("utf-8", "replace").strip() or "no output").splitlines()[-1]
        raise StoreError(f"certutil could not add the root to {db.spec}: {msg}")
    st = nss_status(exe, db, root)
    if not st["installed"]:
        raise StoreError(f"certutil reported success but {db.spec} does not list {root.nickname}")
    return {**st, "changed": True}


def nss_uninstall(exe: str, db: NSSDB, root: Root) -> dict:
    changed = False
    for _ in range(8):  # a nickname can hold more than one certificate
        present, ours = _nss_matches(exe, db, root)
        if not ours:
            break
        r = _certutil(exe, "-D", "-d", db.spec, "-n", root.nickname)
        if r.returncode != 0:
            msg = (r.stderr.decode("utf-8", "replace").strip() or "no output").splitlines()[-1]
            raise StoreError(f"certutil could not remove {root.nickname} from {db.spec}: {msg}")
        changed = True
    return {**nss_status(exe, db, root), "changed": changed}


# ---------------------------------------------------------------- operations
def status(root: Root, *, nss: bool = True) -> dict:
    sysstore = detect_system_store()
    exe = certutil_path(required=False)
    dbs = nss_databases() if nss else []
    nss_list = [nss_status(exe, db, root) for db in dbs]
    sys_st = system_status(sysstore, root)
    return {
        "root": root.as_dict(),
        "system": sys_st,
        "nss": nss_list,
        "certutil": exe,
        "installed": bool((sys_st and sys_st["installed"]) or any(n["installed"] for n in nss_list)),
    }


def scope_of(root: Root):
    """The root's name constraints (bundles.Scope), read from the certificate itself."""
    from .bundles import root_scope

    return root_scope(root.cert)


def unconstrained_reason(scope) -> str | None:
    """Why a root could vouch for names beyond a private domain list, or None.
    (RFC 5280: permitted subtrees restrict only the name types they list.)"""
    if not scope.constrained:
        return "it has no name constraints, so it can vouch for ANY host name and IP address (your bank's too)"
    if not scope.dns:
        return "its name constraints permit no DNS subtree, so it can vouch for ANY host name"
    if not scope.ip_ranges and not scope.no_ip:
        return "its name constraints neither permit IP ranges nor exclude 0.0.0.0/0 and ::/0, so it can vouch for ANY IP address"
    return None


def install(root: Root, *, system: bool = True, nss: bool = False, allow_unconstrained: bool = False) -> dict:
    """Validate everything first (scope, store found, writable, certutil present), then change."""
    scope = scope_of(root)
    why = unconstrained_reason(scope)
    if why and not allow_unconstrained:
        raise UsageError(f"refusing to trust {root.common_name!r} (SHA-256 {root.sha256}): {why}; "
                         "mailca roots are limited to your mail domains - if you really mean to trust this one "
                         "for everything, add --allow-unconstrained")
    if not system and not nss:
        raise UsageError("--no-system without --nss leaves nothing to do; add --nss")
    sysstore = detect_system_store() if system else None
    if system and sysstore is None:
        raise StoreError(
            "no supported system trust store found (looked for update-ca-certificates, update-ca-trust, trust); "
            "use --no-system --nss, or install the root by hand"
        )
    exe = certutil_path(required=True) if nss else None
    dbs = nss_databases() if nss else []
    if system and not system_status(sysstore, root)["installed"]:
        _need_writable(sysstore, "Installing into")
    if nss and not dbs and not system:
        raise StoreError("no NSS database found for this user (start Firefox, Thunderbird or Chromium once, or set MAILCA_NSS_DBS)")
    results = []
    if system:
        results.append(system_install(sysstore, root))
    for db in dbs:
        results.append(nss_install(exe, db, root))
    warnings = []
    if nss and not dbs:
        warnings.append("no NSS database found for this user (start Firefox, Thunderbird or Chromium once, then re-run with --nss)")
    if why:
        warnings.append(f"{root.common_name} is trusted without limits: {why}")
    return {"root": root.as_dict(), "scope": scope.as_dict(), "results": results,
            "changed": any(r["changed"] for r in results), "warnings": warnings}


def uninstall(root: Root, *, system: bool = True, nss: bool = True) -> dict:
    """Remove the root from every place install puts it (NSS only where nickname and certificate match)."""
    sysstore = detect_system_store() if system else None
    exe = certutil_path(required=False) if nss else None
    dbs = nss_databases() if (nss and exe) else []
    results = []
    if sysstore is not None:
        results.append(system_uninstall(sysstore, root))
    for db in dbs:
        results.append(nss_uninstall(exe, db, root))
    still = [r for r in results if r.get("active") and r["store"] == "system"]
    return {"root": root.as_dict(), "results": results, "changed": any(r["changed"] for r in results),
            "still_trusted_elsewhere": bool(still)}
