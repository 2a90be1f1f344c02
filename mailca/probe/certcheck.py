"""Certificate findings for ``mailca check``: the chain as the server sent it, checked for
trust (against --ca or the system store), host name, expiry, key, signature and DANE.

Trust uses OpenSSL's own path building (pyOpenSSL ``X509StoreContext``) with time checks
switched off -- expiry is judged separately so that one problem gives one finding --
and no purpose or host name: mail clients differ there, and the host name is its own
finding.  The system store is whatever OpenSSL would use (``SSL_CERT_FILE`` /
``SSL_CERT_DIR`` are honoured, never assumed unset).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
from dataclasses import dataclass

from ..errors import UsageError
from .report import Finding, finding

__all__ = ["TLSA", "parse_tlsa", "load_ca_file", "hostname_matches", "analyze"]

_NO_CHECK_TIME = 0x200000      # X509_V_FLAG_NO_CHECK_TIME
_PARTIAL_CHAIN = 0x80000       # X509_V_FLAG_PARTIAL_CHAIN


@dataclass(frozen=True)
class TLSA:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def text(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"


def parse_tlsa(text: str) -> TLSA:
    """'3 1 1 <hex>', or a whole zone-file line as 'mailca dane' prints it (hex may contain spaces)."""
    parts = text.split()
    upper = [p.upper() for p in parts]
    if "TLSA" in upper:  # a whole zone-file line: _25._tcp.mail.example.org. 3600 IN TLSA 3 1 1 ...
        parts = parts[upper.index("TLSA") + 1:]
    bad = f"--tlsa {text!r} is not a TLSA record like '3 1 1 <sha256 hex>' (usage 2 or 3, selector 0 or 1, matching 0, 1 or 2)"
    if len(parts) < 4 or not all(p.isdigit() for p in parts[:3]):
        raise UsageError(bad)
    usage, selector, mtype = (int(p) for p in parts[:3])
    if usage in (0, 1):
        raise UsageError(f"--tlsa {text!r}: usage {usage} (PKIX-TA/EE) is not used for SMTP (RFC 7672); use 2 (DANE-TA) or 3 (DANE-EE)")
    if usage not in (2, 3) or selector not in (0, 1) or mtype not in (0, 1, 2):
        raise UsageError(bad)
    try:
        data = bytes.fromhex("".join(parts[3:]))
    except ValueError:
        raise UsageError(bad) from None
    want = {1: 32, 2: 64}.get(mtype)
    if (want and len(data) != want) or not data:
        raise UsageError(f"--tlsa {text!r}: matching type {mtype} needs {want or 'some'} bytes of data, got {len(data)}")
    return TLSA(usage, selector, mtype, data)


def _tlsa_matches(rec: TLSA, cert) -> bool:
    from cryptography.hazmat.primitives import serialization

    if rec.selector == 0:
        blob = cert.public_bytes(serialization.Encoding.DER)
    else:
        blob = spki_der(cert)
        if blob is None:
            return False
    if rec.mtype == 1:
        blob = hashlib.sha256(blob).digest()
    elif rec.mtype == 2:
        blob = hashlib.sha512(blob).digest()
    return blob == rec.data


def load_ca_file(path: str) -> list:
    from cryptography import x509

    try:
        data = open(path, "rb").read()
    except OSError as exc:
        raise UsageError(f"--ca {path}: cannot read it ({exc.strerror}); give a PEM file with the root certificate(s)") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        try:
            certs = [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise UsageError(f"--ca {path}: no PEM or DER certificate in it; give the root from 'mailca bundle' or ca/root.crt") from None
    return certs


def _store(roots, *, system: bool):
    from OpenSSL import crypto

    store = crypto.X509Store()
    if system:
        import ssl

        paths = ssl.get_default_verify_paths()
        try:
            store.load_locations(paths.cafile, paths.capath)
        except crypto.Error:
            try:
                store.set_default_paths()
            except crypto.Error:
                pass
    for r in roots:
        store.add_cert(crypto.X509.from_cryptography(r))
    return store


def _verify(leaf, intermediates, roots, *, system: bool, partial: bool = False) -> str | None:
    """None if ``leaf`` chains to a trusted root, else OpenSSL's reason."""
    from OpenSSL import crypto

    store = _store(roots, system=system)
    store.set_flags(_NO_CHECK_TIME | (_PARTIAL_CHAIN if partial else 0))
    ctx = crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf),
                                  [crypto.X509.from_cryptography(c) for c in intermediates])
    try:
        ctx.verify_certificate()
    except crypto.X509StoreContextError as exc:
        return str(exc.args[0] if exc.args else exc)
    return None


def _is_self_signed(cert) -> bool:
    """Issuer = subject and the certificate's own key verifies its signature (done by hand:
    cryptography's verify_directly_issued_by refuses SHA-1, which old self-signed certs use)."""
    if cert.issuer != cert.subject:
        return False
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa

    try:
        key, h = cert.public_key(), cert.signature_hash_algorithm
    except Exception:
        # A key type cryptography cannot load (e.g. brainpoolP320r1): ask OpenSSL.
        try:
            return _verify(cert, [], [cert], system=False) is None
        except Exception:
            return False
    try:
        if isinstance(key, rsa.RSAPublicKey):
            pss = cert.signature_algorithm_parameters
            pad = pss if isinstance(pss, padding.PSS) else padding.PKCS1v15()
            key.verify(cert.signature, cert.tbs_certificate_bytes, pad, h)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(h))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, h)
        else:
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        return True
    except Exception:
        return False


def _names(cert) -> tuple[list[str], list[str], str | None]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
        ips = [str(i) for i in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = cns[0].value if cns else None
    return dns, ips, (cn if isinstance(cn, str) else None)


def hostname_matches(cert, name: str) -> bool:
    """RFC 6125 matching as mail clients do it: SAN dNSName (CN only when there is no SAN),
    a wildcard only as the whole left-most label and never matching more than one label."""
    dns, ips, cn = _names(cert)
    try:
        ip = ipaddress.ip_address(name)
        return str(ip) in ips
    except ValueError:
        pass
    name = name.lower().rstrip(".")
    candidates = dns if (dns or ips) else ([cn.lower()] if cn else [])
    for pat in candidates:
        pat = pat.rstrip(".")
        if pat == name:
            return True
        if pat.startswith("*.") and "." in name:
            head, rest = name.split(".", 1)
            if rest == pat[2:] and head and pat[2:].count(".") >= 1:
                return True
    return False


_CURVE_OIDS = {
    "1.3.36.3.3.2.8.1.1.1": "brainpoolP160r1", "1.3.36.3.3.2.8.1.1.3": "brainpoolP192r1",
    "1.3.36.3.3.2.8.1.1.5": "brainpoolP224r1", "1.3.36.3.3.2.8.1.1.7": "brainpoolP256r1",
    "1.3.36.3.3.2.8.1.1.9": "brainpoolP320r1", "1.3.36.3.3.2.8.1.1.11": "brainpoolP384r1",
    "1.3.36.3.3.2.8.1.1.13": "brainpoolP512r1",
}
_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")


def _oid_text(body: bytes) -> str:
    parts, val = [], 0
    for b in body:
        val = (val << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(val)
            val = 0
    if not parts:
        return "?"
    first = min(parts[0] // 40, 2)
    return ".".join(map(str, [first, parts[0] - 40 * first, *parts[1:]]))


def spki_der(cert) -> bytes | None:
    """The SubjectPublicKeyInfo, also for key types cryptography cannot load (OpenSSL can)."""
    from cryptography.hazmat.primitives import serialization

    try:
        return cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    except Exception:
        pass
    try:
        from OpenSSL import crypto

        return crypto.dump_publickey(crypto.FILETYPE_ASN1, crypto.X509.from_cryptography(cert).get_pubkey())
    except Exception:
        return None


def key_info(cert) -> tuple[str, int, str | None]:
    """(type, bits, problem or None) of a certificate's key -- never raises: a key type that
    cryptography cannot load (brainpoolP320r1, ...) is described from OpenSSL's view."""
    try:
        key = cert.public_key()
    except Exception:
        key = None
    if key is not None:
        return _key_desc(key)
    bits, kind = 0, "unknown key type"
    try:
        from OpenSSL import crypto

        pk = crypto.X509.from_cryptography(cert).get_pubkey()
        bits = pk.bits()
        kind = {crypto.TYPE_RSA: "RSA", crypto.TYPE_DSA: "DSA", 408: "EC"}.get(pk.type(), f"key type {pk.type()}")
    except Exception:
        pass
    der = spki_der(cert) or b""
    at = der.find(_EC_PUBLIC_KEY)
    if at >= 0 and der[at + 9:at + 10] == b"\x06":
        ln = der[at + 10]
        oid = _oid_text(der[at + 11:at + 11 + ln])
        kind = f"ECDSA {_CURVE_OIDS.get(oid, oid)}"
    problem = None
    if kind.startswith("RSA") and bits < 2048:
        problem = f"RSA {bits} bits (use 2048 or more)"
    elif kind.startswith(("EC", "ECDSA")) and 0 < bits < 256:
        problem = f"EC {bits} bits (use P-256 or larger)"
    return kind, bits, problem


def _key_desc(key) -> tuple[str, int, str | None]:
    """(type, bits, problem or None)."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        return "RSA", bits, (f"RSA {bits} bits (use 2048 or more)" if bits < 2048 else None)
    if isinstance(key, ec.EllipticCurvePublicKey):
        bits = key.curve.key_size
        return f"ECDSA {key.curve.name}", bits, (f"EC {bits} bits (use P-256 or larger)" if bits < 256 else None)
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size, "DSA key (no longer supported by clients)"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, None
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456, None
    return type(key).__name__, 0, None


def _sig_hash(cert) -> str:
    try:
        h = cert.signature_hash_algorithm
        return h.name if h is not None else "none"
    except Exception:
        return "unknown"


def analyze(chain_der: list[bytes], *, port: int, name: str | None, ca_certs: list | None,
            tlsa: list[TLSA], now: _dt.datetime) -> tuple[dict, list[Finding]]:
    """Facts (for --json) and findings about the chain as sent by the server."""
    from cryptography import x509

    from ..core.certinfo import cert_sha256, iso

    fs: list[Finding] = []
    if not chain_der:
        return {"chain": []}, [finding("cert.none", "the server sent no certificate", port=port)]
    chain = []
    for der in chain_der:
        try:
            chain.append(x509.load_der_x509_certificate(der))
        except ValueError:
            return {"chain": []}, [finding("cert.none", "the server sent a certificate that does not parse", port=port)]
    leaf, rest = chain[0], chain[1:]

    facts_chain = []
    for c in chain:
        ktype, bits, _ = key_info(c)
        dns, ips, cn = _names(c)
        facts_chain.append({
            "subject": c.subject.rfc4514_string(),
            "issuer": c.issuer.rfc4514_string(),
            "not_before": iso(c.not_valid_before_utc),
            "not_after": iso(c.not_valid_after_utc),
            "key": ktype, "key_bits": bits,
            "signature_hash": _sig_hash(c),
            "sha256": cert_sha256(c),
            "names": dns + ips,
            "self_signed": _is_self_signed(c),
        })

    # Trust.
    system = not ca_certs
    why = _verify(leaf, rest, ca_certs or [], system=system)
    store_desc = "--ca" if ca_certs else "the system trust store"
    self_signed = _is_self_signed(leaf)
    if self_signed:
        fs.append(finding("cert.self_signed", f"issuer = subject = {leaf.subject.rfc4514_string()}", port=port))
    if why is not None:
        fs.append(finding("cert.untrusted", f"{why} (checked against {store_desc})", port=port))

    # Host name.
    if name:
        if not hostname_matches(leaf, name):
            dns, ips, cn = _names(leaf)
            have = ", ".join(dns + ips) or (f"CN={cn}" if cn else "no names")
            fs.append(finding("cert.hostname", f"{name} is not in the certificate ({have})", port=port))

    # Validity.
    for i, c in enumerate(chain):
        role = "server certificate" if i == 0 else f"chain certificate {i} ({c.subject.rfc4514_string()})"
        nb, na = c.not_valid_before_utc, c.not_valid_after_utc
        if now > na:
            fs.append(finding("cert.expired", f"{role} expired {iso(na)}", port=port))
        elif now < nb:
            fs.append(finding("cert.expired", f"{role} is not valid before {iso(nb)}", port=port))
        else:
            left = na - now
            life = na - nb
            if left < _dt.timedelta(days=30) and left < life / 3:
                fs.append(finding("cert.expiring", f"{role} expires {iso(na)} ({left.days} days left)", port=port))

    # Keys and signatures.
    for i, c in enumerate(chain):
        role = "server certificate" if i == 0 else f"chain certificate {i}"
        _, _, problem = key_info(c)
        if problem:
            fs.append(finding("cert.weak_key", f"{role}: {problem}", port=port))
        h = _sig_hash(c)
        if h in ("md5", "sha1") and not (i > 0 and _is_self_signed(c)):
            sev = "HIGH" if h == "md5" else "MEDIUM"
            fs.append(finding("cert.weak_signature", f"{role} signed with {h.upper()}", port=port, severity=sev))

    if not fs:
        ktype, bits, _ = key_info(leaf)
        fs.append(finding("cert.ok", f"trusted by {store_desc}" + (f", matches {name}" if name else "")
                          + f", {ktype} {bits}, valid until {iso(leaf.not_valid_after_utc)}", port=port))

    # DANE.
    dane: dict = {}
    if tlsa:
        matched = []
        for rec in tlsa:
            if rec.usage == 3:
                if _tlsa_matches(rec, leaf):
                    matched.append(rec.text)
            else:
                for ta in rest:
                    if _tlsa_matches(rec, ta) and _verify(leaf, rest, [ta], system=False, partial=True) is None:
                        matched.append(rec.text)
                        break
        dane = {"records": [r.text for r in tlsa], "matched": matched}
        if matched:
            fs.append(finding("dane.match", f"{matched[0]}", port=port))
        else:
            der = spki_der(leaf)
            have = f"; the server's key is 3 1 1 {hashlib.sha256(der).hexdigest()}" if der else ""
            fs.append(finding("dane.mismatch", f"{len(tlsa)} record(s) given, none matches{have}", port=port))

    facts = {"chain": facts_chain, "trusted": why is None, "trust_error": why, "trust_store": store_desc,
             "hostname_checked": name, "hostname_ok": (hostname_matches(leaf, name) if name else None)}
    if dane:
        facts["dane"] = dane
    return facts, fs
