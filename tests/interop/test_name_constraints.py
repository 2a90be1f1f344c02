"""Name constraints hold in every verifier: the CA cannot vouch for other sites.

The test builds certificates itself with cryptography, bypassing mailca's own name
checks, and signs them directly with the intermediate key from the store (the attack:
someone who obtained the intermediate key).  OpenSSL, GnuTLS, NSS and cryptography
must reject every name outside the permitted domains with a name-constraint error,
and must accept an in-domain certificate built the same way (so the test could fail).

A second attacker holds the *root* key and mints a fresh intermediate without any
name constraints: the root's own constraints must still stop the forged leaf.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import PASSPHRASE, make_ca, require

import _verifiers as V

pytestmark = pytest.mark.interop

NOW = _dt.datetime.now(_dt.timezone.utc)


@pytest.fixture(scope="module")
def nc_ca(tmp_path_factory):
    for t in ("openssl", "certtool", "vfychain", "certutil"):
        require(t)
    return make_ca(tmp_path_factory.mktemp("nc") / "store", "example.org")


def _load(ca):
    d = ca.dir / "ca"
    inter = x509.load_pem_x509_certificate((d / "intermediate.crt").read_bytes())
    inter_key = serialization.load_pem_private_key((d / "intermediate.key").read_bytes(), None)
    root = x509.load_pem_x509_certificate((d / "root.crt").read_bytes())
    return root, inter, inter_key


def forge_leaf(issuer: x509.Certificate, issuer_key, dns: list[str], ips: list[str] = (), cn: str | None = None):
    """A server certificate built and signed by the test, not by mailca."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or (dns or ips)[0])])
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - _dt.timedelta(minutes=5))
        .not_valid_after(NOW + _dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
    )
    return b.sign(issuer_key, hashes.SHA256())


def forge_unconstrained_intermediate(root: x509.Certificate, root_key):
    key = ec.generate_private_key(ec.SECP256R1())
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rogue Intermediate")]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - _dt.timedelta(minutes=5))
        .not_valid_after(NOW + _dt.timedelta(days=60))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
    )
    return b.sign(root_key, hashes.SHA256()), key


def write_chain(tmp: Path, leaf, inter) -> tuple[Path, Path, Path]:
    pem = serialization.Encoding.PEM
    lp, ip, fp = tmp / "leaf.pem", tmp / "int.pem", tmp / "full.pem"
    lp.write_bytes(leaf.public_bytes(pem))
    ip.write_bytes(inter.public_bytes(pem))
    fp.write_bytes(leaf.public_bytes(pem) + inter.public_bytes(pem))
    return lp, ip, fp


# Expected failure markers per verifier for a name-constraint violation.
# A DNS name outside the permitted subtrees / an IP address inside the excluded 0.0.0.0/0, ::/0.
PERMITTED = {"openssl": "error 47 at 0 depth lookup: permitted subtree violation",
             "cryptography": "no permitted name constraints matched"}
EXCLUDED = {"openssl": "error 48 at 0 depth lookup: excluded subtree violation",
            "cryptography": "excluded name constraint matched"}
GNUTLS_NC = "violates the signer's constraints"
# NSS: the classic verifier says -8080 (SEC_ERROR_CERT_NOT_IN_NAME_SPACE); libpkix (-pp)
# also refuses the chain but maps the violation to a generic code (-8187 / -8157).
NSS_NC = "ERROR -8080"


def assert_rejected_for_nc(verdicts: dict, what: str, expect: dict):
    o, g, n, p = verdicts["openssl"], verdicts["gnutls"], verdicts["nss"], verdicts["cryptography"]
    problems = []
    if o.ok or expect["openssl"] not in o.output:
        problems.append(f"openssl did not reject {what} for name constraints:\n{o.output}")
    if g.ok or GNUTLS_NC not in g.output:
        problems.append(f"gnutls did not reject {what} for name constraints:\n{g.output}")
    classic, pkix = n.output.split("[vfychain -pp]")[:2] if "[vfychain -pp]" in n.output else (n.output, "")
    if n.ok or NSS_NC not in classic or "Chain is bad!" not in pkix:
        problems.append(f"nss did not reject {what} for name constraints:\n{n.output}")
    if p.ok or expect["cryptography"] not in p.output:
        problems.append(f"cryptography did not reject {what} for name constraints:\n{p.output}")
    assert not problems, "\n\n".join(problems)


def verdicts_for(root_path: Path, leaf, inter, host: str, tmp: Path, *, ip=False):
    lp, ip_, fp = write_chain(tmp, leaf, inter)
    out = V.all_verifiers(root_path, ip_, lp, fp, host, tmp, ip=ip)
    if ip:
        # vfychain validates the chain (name constraints included); the host is an address
        out["nss"] = V.nss_chain(root_path, ip_, lp, tmp)
    return out


def test_in_domain_forged_leaf_is_accepted(nc_ca, tmp_path):
    """Control: the same forging code with an in-domain name passes every verifier."""
    root, inter, key = _load(nc_ca)
    leaf = forge_leaf(inter, key, ["forged-ok.example.org", "deep.sub.example.org"])
    v = verdicts_for(nc_ca.root, leaf, inter, "forged-ok.example.org", tmp_path)
    bad = {k: x.output for k, x in v.items() if not x.ok}
    assert not bad, bad


@pytest.mark.parametrize(
    "dns,host",
    [
        (["mail.evil.com"], "mail.evil.com"),
        (["example.org.evil.com"], "example.org.evil.com"),  # look-alike: suffix in the wrong place
        (["evilexample.org"], "evilexample.org"),  # label boundary: not a subdomain of example.org
        (["mail.example.org", "mail.evil.com"], "mail.example.org"),  # one bad SAN spoils the chain
        (["example.com"], "example.com"),
    ],
    ids=["other-domain", "lookalike-suffix", "label-boundary", "mixed-san", "sibling-tld"],
)
def test_out_of_domain_dns_rejected(nc_ca, tmp_path, dns, host):
    root, inter, key = _load(nc_ca)
    leaf = forge_leaf(inter, key, dns)
    assert_rejected_for_nc(verdicts_for(nc_ca.root, leaf, inter, host, tmp_path), f"SAN {dns}", PERMITTED)


@pytest.mark.parametrize("addr", ["192.0.2.25", "127.0.0.1", "2001:db8::25"])
def test_ip_san_rejected(nc_ca, tmp_path, addr):
    """The CA excludes every IP address unless its profile permits ranges."""
    root, inter, key = _load(nc_ca)
    leaf = forge_leaf(inter, key, [], [addr])
    assert_rejected_for_nc(verdicts_for(nc_ca.root, leaf, inter, addr, tmp_path, ip=True), f"IP SAN {addr}", EXCLUDED)


def test_in_domain_name_plus_ip_san_rejected(nc_ca, tmp_path):
    root, inter, key = _load(nc_ca)
    leaf = forge_leaf(inter, key, ["mail.example.org"], ["192.0.2.25"])
    assert_rejected_for_nc(verdicts_for(nc_ca.root, leaf, inter, "mail.example.org", tmp_path),
                           "an in-domain name with an IP SAN", EXCLUDED)


def test_root_constraints_stop_an_unconstrained_rogue_intermediate(nc_ca, tmp_path):
    """Whoever holds the root key cannot escape the domains by minting an intermediate
    without name constraints: the root's constraints apply to the whole chain."""
    root, _, _ = _load(nc_ca)
    root_key = serialization.load_pem_private_key((nc_ca.dir / "ca" / "root.key").read_bytes(), PASSPHRASE.encode())
    rogue, rogue_key = forge_unconstrained_intermediate(root, root_key)
    # control: in-domain leaf under the rogue intermediate is fine
    good = forge_leaf(rogue, rogue_key, ["rogue-ok.example.org"])
    v = verdicts_for(nc_ca.root, good, rogue, "rogue-ok.example.org", tmp_path)
    bad = {k: x.output for k, x in v.items() if not x.ok}
    assert not bad, bad
    evil = forge_leaf(rogue, rogue_key, ["mail.evil.com"])
    assert_rejected_for_nc(verdicts_for(nc_ca.root, evil, rogue, "mail.evil.com", tmp_path),
                           "mail.evil.com under an unconstrained intermediate", PERMITTED)
