"""Drive the real verifiers (OpenSSL, GnuTLS certtool, NSS, pyca/cryptography) on a chain.

Each function takes PEM file paths and a host name and returns a :class:`Verdict`
(``ok`` plus the tool's output), so tests can assert both acceptance and the exact
reason for a rejection.  Nothing here decides pass/fail on its own.

NSS: ``vfychain -u 1`` (classic verifier) and ``vfychain -pp -u 1`` (libpkix) validate
the chain for SSL-server usage against a throw-away certutil database in which only the
root is trusted (``-t C,,``);
vfychain has no host name option, so the host name is checked with NSS's own
``CERT_VerifyCertName`` (the function NSS's TLS client calls) through ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as _dt
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_AUTH_OID = "1.3.6.1.5.5.7.3.1"


@dataclass
class Verdict:
    tool: str
    ok: bool
    output: str

    def __bool__(self) -> bool:  # pragma: no cover - use .ok explicitly
        raise TypeError("use Verdict.ok")


def _run(argv, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)


def split_pem(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    out, cur = [], []
    for line in data.splitlines(keepends=True):
        if line.startswith(b"-----BEGIN CERTIFICATE"):
            cur = [line]
        elif line.startswith(b"-----END CERTIFICATE"):
            cur.append(line)
            out.append(b"".join(cur))
            cur = []
        elif cur:
            cur.append(line)
    return out


# ------------------------------------------------------------------ OpenSSL
def openssl(root: Path, intermediate: Path, leaf: Path, host: str, *, ip: bool = False) -> Verdict:
    argv = ["openssl", "verify", "-x509_strict", "-purpose", "sslserver",
            "-verify_ip" if ip else "-verify_hostname", host,
            "-CAfile", root, "-untrusted", intermediate, leaf]
    r = _run(argv)
    ok = r.returncode == 0 and r.stdout.strip().endswith(": OK")
    return Verdict("openssl", ok, r.stdout + r.stderr)


# ------------------------------------------------------------------- GnuTLS
def gnutls(root: Path, chain: Path, host: str, *, ip: bool = False) -> Verdict:
    """``chain``: leaf first, then the intermediate (fullchain.pem).  certtool's
    --verify-hostname also matches IP addresses given in textual form."""
    argv = ["certtool", "--verify", "--load-ca-certificate", root, "--verify-hostname", host,
            "--verify-purpose", SERVER_AUTH_OID, "--infile", chain]
    r = _run(argv)
    out = r.stdout + r.stderr
    ok = r.returncode == 0 and "Chain verification output: Verified." in out
    return Verdict("gnutls", ok, out)


# ---------------------------------------------------------------------- NSS
_nss_dbs: dict[str, Path] = {}


def nss_db(root: Path, workdir: Path) -> Path:
    """A certutil database trusting exactly ``root`` as an SSL CA (cached per root)."""
    digest = hashlib.sha256(Path(root).read_bytes()).hexdigest()[:16]
    if digest in _nss_dbs and _nss_dbs[digest].exists():
        return _nss_dbs[digest]
    db = Path(workdir) / f"nssdb-{digest}"
    db.mkdir(parents=True, exist_ok=True)
    r = _run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"])
    assert r.returncode == 0, r.stderr
    r = _run(["certutil", "-A", "-d", f"sql:{db}", "-n", "mailca-test-root", "-t", "C,,", "-a", "-i", root])
    assert r.returncode == 0, r.stderr
    _nss_dbs[digest] = db
    return db


class _SECItem(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("data", ctypes.c_void_p), ("len", ctypes.c_uint)]


_nss_lib = None


def _libnss():
    global _nss_lib
    if _nss_lib is None:
        lib = ctypes.CDLL(ctypes.util.find_library("nss3") or "libnss3.so")
        lib.NSS_NoDB_Init.argtypes = [ctypes.c_char_p]
        lib.NSS_IsInitialized.restype = ctypes.c_int
        lib.CERT_GetDefaultCertDB.restype = ctypes.c_void_p
        lib.CERT_NewTempCertificate.restype = ctypes.c_void_p
        lib.CERT_NewTempCertificate.argtypes = [ctypes.c_void_p, ctypes.POINTER(_SECItem), ctypes.c_char_p,
                                                ctypes.c_int, ctypes.c_int]
        lib.CERT_VerifyCertName.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.CERT_DestroyCertificate.argtypes = [ctypes.c_void_p]
        if not lib.NSS_IsInitialized():
            assert lib.NSS_NoDB_Init(None) == 0, "NSS_NoDB_Init failed"
        _nss_lib = lib
    return _nss_lib


def nss_hostname(leaf: Path, host: str) -> Verdict:
    """NSS's own host-name match (CERT_VerifyCertName: SAN dNSName/iPAddress, wildcards)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(split_pem(leaf)[0]).public_bytes(Encoding.DER)
    lib = _libnss()
    buf = ctypes.create_string_buffer(der, len(der))
    item = _SECItem(0, ctypes.cast(buf, ctypes.c_void_p), len(der))
    cert = lib.CERT_NewTempCertificate(lib.CERT_GetDefaultCertDB(), ctypes.byref(item), None, 0, 1)
    assert cert, "NSS could not decode the certificate"
    try:
        rv = lib.CERT_VerifyCertName(cert, host.encode("ascii"))
        err = lib.PORT_GetError() if rv != 0 else 0
    finally:
        lib.CERT_DestroyCertificate(cert)
    return Verdict("nss-hostname", rv == 0, f"CERT_VerifyCertName({host}) = {rv}, PORT_GetError = {err}")


def nss_chain(root: Path, intermediate: Path, leaf: Path, workdir: Path) -> Verdict:
    """vfychain twice: NSS's classic verifier (CERT_VerifyCert, which names a name-constraint
    violation precisely: -8080 SEC_ERROR_CERT_NOT_IN_NAME_SPACE) and libpkix (``-pp``,
    CERT_PKIXVerifyCert).  ``ok`` only if both accept the chain for SSL server usage."""
    db = nss_db(root, workdir)
    outs, ok = [], True
    for mode in ([], ["-pp"]):
        r = _run(["vfychain", "-d", f"sql:{db}", *mode, "-u", "1", "-a", leaf, "-a", intermediate])
        out = r.stdout + r.stderr
        outs.append(f"[vfychain {' '.join(mode) or '(classic)'}] rc={r.returncode}\n{out}")
        ok = ok and r.returncode == 0 and "Chain is good!" in out
    return Verdict("nss", ok, "\n".join(outs))


def nss(root: Path, intermediate: Path, leaf: Path, host: str, workdir: Path) -> Verdict:
    """Chain (vfychain, SSL server usage) AND host name (CERT_VerifyCertName)."""
    chain = nss_chain(root, intermediate, leaf, workdir)
    name = nss_hostname(leaf, host)
    return Verdict("nss", chain.ok and name.ok, chain.output + "\n" + name.output)


# -------------------------------------------------------------- cryptography
def pyca(root: Path, intermediate: Path, leaf: Path, host: str, *, ip: bool = False,
         now: _dt.datetime | None = None) -> Verdict:
    import ipaddress

    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    def load(p):
        return x509.load_pem_x509_certificate(split_pem(p)[0])

    subject = x509.IPAddress(ipaddress.ip_address(host)) if ip else x509.DNSName(host)
    builder = PolicyBuilder().store(Store([load(root)])).time(now or _dt.datetime.now(_dt.timezone.utc))
    try:
        builder.build_server_verifier(subject).verify(load(leaf), [load(intermediate)])
    except VerificationError as exc:
        return Verdict("cryptography", False, str(exc))
    return Verdict("cryptography", True, "ok")


def all_verifiers(root: Path, intermediate: Path, leaf: Path, fullchain: Path, host: str, workdir: Path,
                  *, ip: bool = False) -> dict[str, Verdict]:
    out = {
        "openssl": openssl(root, intermediate, leaf, host, ip=ip),
        "gnutls": gnutls(root, fullchain, host, ip=ip),
        "cryptography": pyca(root, intermediate, leaf, host, ip=ip),
    }
    out["nss"] = nss(root, intermediate, leaf, host, workdir)  # CERT_VerifyCertName also matches IP SANs
    return out
