"""Verification before anything is written: built-in lint plus chain and hostname checks
with cryptography's ``x509.verification`` (the same RFC 5280 / CA/B path validation that
pyca tests against x509-limbo).  This is the only module that uses the verifier."""

from __future__ import annotations

import datetime as _dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..errors import VerificationError

__all__ = ["lint", "check_lint", "verify_server_chain", "verify_ca_pair"]


def _ext(cert, cls):
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None


def lint(cert: x509.Certificate, role: str, *, max_days: int | None = None) -> list[str]:
    """Problems found in ``cert`` for ``role`` ('root', 'intermediate' or 'leaf')."""
    problems: list[str] = []
    serial = cert.serial_number
    if serial <= 0:
        problems.append("serial number is not positive")
    if (serial.bit_length() + 8) // 8 > 20:
        problems.append("serial number is longer than 20 octets")
    if serial.bit_length() < 64:
        problems.append("serial number has fewer than 64 bits of entropy")
    if cert.not_valid_after_utc <= cert.not_valid_before_utc:
        problems.append("notAfter is not after notBefore")
    if max_days is not None:
        days = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400
        if days > max_days + 1:
            problems.append(f"validity of {days:.0f} days exceeds the profile's {max_days}")
    if _ext(cert, x509.SubjectKeyIdentifier) is None:
        problems.append("SubjectKeyIdentifier missing")
    if role != "root" and _ext(cert, x509.AuthorityKeyIdentifier) is None:
        problems.append("AuthorityKeyIdentifier missing")
    bc = _ext(cert, x509.BasicConstraints)
    ku = _ext(cert, x509.KeyUsage)
    pub = cert.public_key()
    if role in ("root", "intermediate"):
        if bc is None or not bc.critical or not bc.value.ca:
            problems.append("BasicConstraints CA:TRUE critical missing")
        if role == "intermediate" and bc is not None and bc.value.path_length != 0:
            problems.append("intermediate must have pathLenConstraint 0")
        if ku is None or not ku.critical or not (ku.value.key_cert_sign and ku.value.crl_sign):
            problems.append("KeyUsage keyCertSign+cRLSign critical missing")
        if _ext(cert, x509.NameConstraints) is None:
            problems.append("NameConstraints missing")
    else:
        if bc is None or bc.value.ca:
            problems.append("BasicConstraints CA:FALSE missing")
        if ku is None or not ku.critical or not ku.value.digital_signature:
            problems.append("KeyUsage digitalSignature critical missing")
        elif isinstance(pub, ec.EllipticCurvePublicKey) and ku.value.key_encipherment:
            problems.append("keyEncipherment set on an EC key")
        eku = _ext(cert, x509.ExtendedKeyUsage)
        if eku is None or ExtendedKeyUsageOID.SERVER_AUTH not in eku.value:
            problems.append("ExtendedKeyUsage serverAuth missing")
        san = _ext(cert, x509.SubjectAlternativeName)
        if san is None or len(san.value) == 0:
            problems.append("SubjectAlternativeName missing")
        elif len(cert.subject) == 0 and not san.critical:
            problems.append("empty subject requires a critical SubjectAlternativeName")
    if isinstance(pub, rsa.RSAPublicKey) and pub.key_size < 2048:
        problems.append("RSA key shorter than 2048 bits")
    return problems


def check_lint(cert: x509.Certificate, role: str, *, max_days: int | None = None) -> None:
    problems = lint(cert, role, max_days=max_days)
    if problems:
        raise VerificationError(f"{role} certificate failed lint: {'; '.join(problems)}; nothing was written")


def _subject_for(name: str):
    """A verifier subject for a SAN entry; a wildcard is checked through a concrete label."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if name.startswith("*."):
        name = "w" + name[1:]  # one character, as "*": stays within 253 octets
    return x509.DNSName(name)


def verify_server_chain(leaf: x509.Certificate, intermediates: list[x509.Certificate], root: x509.Certificate,
                        names: list[str], *, now: _dt.datetime | None = None) -> None:
    """Path-validate ``leaf`` to ``root`` for every name in ``names`` (serverAuth policy).

    Raises VerificationError naming the first name that fails.

    One full path validation costs time linear in the leaf's SANs (the verifier checks
    every SAN against the name constraints), so validating once per name was quadratic
    (8,000 SANs: 47 s).  The chain, signatures, validity, EKU and the name constraints of
    *every* SAN are proven by one validation per kind of name (first plain DNS name, first
    wildcard, first IP); each other name is then checked to be in the leaf's SAN exactly,
    which is what the verifier's hostname match would establish for it."""
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError as VErr

    when = now or _dt.datetime.now(_dt.timezone.utc)
    builder = PolicyBuilder().store(Store([root])).time(when)
    san_dns, san_ips = _san_sets(leaf)
    validated_kinds: set[str] = set()
    for name in names:
        kind = _kind(name)
        if kind in validated_kinds:
            if not _in_san(name, kind, san_dns, san_ips):
                raise VerificationError(f"certificate for {name} does not carry {name} in its SAN; nothing was written")
            continue
        validated_kinds.add(kind)
        try:
            verifier = builder.build_server_verifier(_subject_for(name))
            verifier.verify(leaf, intermediates)
        except VErr as exc:
            raise VerificationError(
                f"certificate for {name} does not verify against the CA ({exc}); nothing was written"
            ) from None
        except ValueError as exc:
            raise VerificationError(f"cannot verify {name}: {exc}; nothing was written") from None


def _kind(name: str) -> str:
    try:
        ipaddress.ip_address(name)
        return "ip"
    except ValueError:
        return "wildcard" if name.startswith("*.") else "dns"


def _san_sets(leaf: x509.Certificate) -> tuple[set[str], set]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return ({n.lower() for n in san.get_values_for_type(x509.DNSName)},
            set(san.get_values_for_type(x509.IPAddress)))


def _in_san(name: str, kind: str, san_dns: set[str], san_ips: set) -> bool:
    if kind == "ip":
        return ipaddress.ip_address(name) in san_ips
    return name.lower() in san_dns


def verify_ca_pair(intermediate: x509.Certificate, root: x509.Certificate) -> None:
    """The intermediate is signed by the root (signature and issuer name)."""
    try:
        intermediate.verify_directly_issued_by(root)
    except Exception as exc:  # ValueError / InvalidSignature / TypeError
        raise VerificationError(f"intermediate is not issued by the root ({exc})") from None
