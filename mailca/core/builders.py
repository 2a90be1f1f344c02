"""Pure X.509 builders: inputs + time + serial -> signed certificate.  No I/O.

Profiles follow RFC 5280 and what mail software checks:

* Root: self-signed, BasicConstraints CA critical (no path length), KeyUsage keyCertSign +
  cRLSign critical, SKI, name constraints.
* Intermediate: BasicConstraints CA pathlen 0 critical, same KeyUsage, SKI + AKI, the same
  name constraints (so either certificate alone limits what the chain can vouch for).
* Leaf: SAN carries every name, EKU serverAuth, KeyUsage digitalSignature critical (plus
  keyEncipherment for RSA keys only), BasicConstraints CA:FALSE critical, SKI + AKI.

Name constraints: ``permitted dNSName`` subtrees for each CA domain.  IP addresses are
excluded entirely (0.0.0.0/0 and ::/0) unless the profile lists permitted IP ranges, so an
installed root can vouch neither for other domains nor for arbitrary addresses.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["SubjectFields", "Constraints", "signature_hash", "build_root", "build_intermediate", "aki",
           "build_leaf"]


class SubjectFields(NamedTuple):
    """Subject attributes for CA certificates (immutable; NamedTuple: cheap to define)."""

    organization: str = ""
    organizational_unit: str = ""
    country: str = ""
    state: str = ""
    locality: str = ""

    def attributes(self, common_name: str | None) -> list[x509.NameAttribute]:
        attrs = []
        if self.country:
            attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, self.country))
        if self.state:
            attrs.append(x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, self.state))
        if self.locality:
            attrs.append(x509.NameAttribute(NameOID.LOCALITY_NAME, self.locality))
        if self.organization:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization))
        if self.organizational_unit:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, self.organizational_unit))
        if common_name:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        return attrs


class Constraints(NamedTuple):
    """Name constraints: permitted DNS domains, permitted IP ranges (none: all IPs excluded)."""

    domains: tuple[str, ...]
    ip_ranges: tuple[str, ...] = ()

    def extension(self) -> x509.NameConstraints:
        permitted: list[x509.GeneralName] = [x509.DNSName(d) for d in self.domains]
        excluded: list[x509.GeneralName] | None = None
        if self.ip_ranges:
            permitted += [x509.IPAddress(ipaddress.ip_network(r, strict=False)) for r in self.ip_ranges]
        else:
            excluded = [
                x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                x509.IPAddress(ipaddress.ip_network("::/0")),
            ]
        return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)


def signature_hash(issuer_key):
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(issuer_key, ec.EllipticCurvePrivateKey) and issuer_key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )


def build_root(key, *, common_name: str, subject: SubjectFields, constraints: Constraints,
               not_before: _dt.datetime, not_after: _dt.datetime, serial: int) -> x509.Certificate:
    name = x509.Name(subject.attributes(common_name))
    pub = key.public_key()
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pub)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(constraints.extension(), critical=True)
    )
    return b.sign(key, signature_hash(key))


def build_intermediate(public_key, *, issuer_cert: x509.Certificate, issuer_key, common_name: str,
                       subject: SubjectFields, constraints: Constraints, not_before: _dt.datetime,
                       not_after: _dt.datetime, serial: int) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject.attributes(common_name)))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki(issuer_cert), critical=False)
        .add_extension(constraints.extension(), critical=True)
    )
    return b.sign(issuer_key, signature_hash(issuer_key))


def aki(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())


def build_leaf(public_key, *, issuer_cert: x509.Certificate, issuer_key, dns_names: list[str],
               ip_addresses: list[str], not_before: _dt.datetime, not_after: _dt.datetime, serial: int,
               subject: SubjectFields | None = None, crl_url: str | None = None) -> x509.Certificate:
    general: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    general += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if not general:
        raise ValueError("a server certificate needs at least one name")
    cn = dns_names[0] if dns_names and len(dns_names[0]) <= 64 else None
    subject_name = x509.Name(x509.Name([]).rdns if cn is None else [x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki(issuer_cert), critical=False)
        # RFC 5280 4.2.1.6: with an empty subject the SAN must be critical.
        .add_extension(x509.SubjectAlternativeName(general), critical=cn is None)
    )
    if crl_url:
        b = b.add_extension(
            x509.CRLDistributionPoints([x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)]),
            critical=False,
        )
    return b.sign(issuer_key, signature_hash(issuer_key))
