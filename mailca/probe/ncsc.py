"""NCSC-NL TLS guideline ratings ("good" / "sufficient" / "phase-out" / "insufficient"), as
internet.nl's mail test applies them (internetstandards/Internet.nl, checks/tasks/tls/
tls_constants.py and evaluation.py, NCSC-NL "ICT-beveiligingsrichtlijnen voor TLS" 2025,
appendix B and sections 3.3.x).  Pure data and functions: no I/O.

- cipher suites: by IANA name; anything not listed is insufficient (this covers static RSA
  key exchange, CBC with SHA-1, 3DES, RC4, NULL, anonymous and export suites);
- key-exchange groups: ECDHE curves and hybrid post-quantum groups by their TLS code point;
- finite-field DH: by the prime itself (an RFC 7919 ffdhe group is recognised by the
  SHA-256 of its prime, so a server-chosen group of the same size is not mistaken for it).
  internet.nl (NCSC 2025) rates ffdhe3072 and larger "phase-out" and every other group
  -- ffdhe2048 included -- "insufficient".  mailca keeps that rating in the facts but
  reports ffdhe2048 at LOW and a self-generated group at MEDIUM: the standard group cannot
  hide a backdoor or a weak structure, a self-generated one can;
- certificates: key type and size, signature hash.
"""

from __future__ import annotations

import hashlib

__all__ = ["GOOD", "SUFFICIENT", "PHASE_OUT", "INSUFFICIENT", "RATINGS", "rate_suite", "rate_group",
           "GROUP_NAMES", "dh_group_name", "rate_dh", "rate_cert_key", "rate_cert_hash", "worst"]

GOOD, SUFFICIENT, PHASE_OUT, INSUFFICIENT = "good", "sufficient", "phase-out", "insufficient"
RATINGS = (GOOD, SUFFICIENT, PHASE_OUT, INSUFFICIENT)

_SUITES_GOOD = frozenset({"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"})
_SUITES_SUFFICIENT = frozenset({
    "TLS_AES_128_GCM_SHA256", "TLS_AES_128_CCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CCM", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CCM", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CCM", "TLS_ECDHE_RSA_WITH_AES_128_CCM",
})
_SUITES_PHASE_OUT = frozenset(
    [f"TLS_ECDHE_{a}_WITH_{c}" for a in ("ECDSA", "RSA") for c in (
        "CAMELLIA_256_GCM_SHA384", "CAMELLIA_256_CBC_SHA384", "CAMELLIA_128_GCM_SHA256",
        "CAMELLIA_128_CBC_SHA256", "ARIA_256_GCM_SHA384", "ARIA_256_CBC_SHA384", "ARIA_128_GCM_SHA256",
        "ARIA_128_CBC_SHA256", "AES_256_CBC_SHA384", "AES_128_CBC_SHA256")]
    + [f"TLS_DHE_RSA_WITH_{c}" for c in (
        "CHACHA20_POLY1305_SHA256", "CAMELLIA_256_GCM_SHA384", "CAMELLIA_256_CBC_SHA256",
        "CAMELLIA_128_GCM_SHA256", "CAMELLIA_128_CBC_SHA256", "ARIA_256_GCM_SHA384", "ARIA_256_CBC_SHA384",
        "ARIA_128_GCM_SHA256", "ARIA_128_CBC_SHA256", "AES_256_GCM_SHA384", "AES_256_CCM",
        "AES_256_CBC_SHA256", "AES_128_GCM_SHA256", "AES_128_CCM", "AES_128_CBC_SHA256")])


def rate_suite(name: str) -> str:
    """NCSC rating of a cipher suite given by its IANA name (unlisted = insufficient)."""
    if name in _SUITES_GOOD:
        return GOOD
    if name in _SUITES_SUFFICIENT:
        return SUFFICIENT
    if name in _SUITES_PHASE_OUT:
        return PHASE_OUT
    return INSUFFICIENT


# TLS supported_groups code points (IANA) that the group probes offer one at a time.
GROUP_NAMES = {
    19: "secp192r1", 21: "secp224r1", 23: "secp256r1", 24: "secp384r1", 25: "secp521r1",
    26: "brainpoolP256r1", 27: "brainpoolP384r1", 28: "brainpoolP512r1",
    29: "x25519", 30: "x448", 31: "brainpoolP256r1tls13", 32: "brainpoolP384r1tls13",
    33: "brainpoolP512r1tls13",
    256: "ffdhe2048", 257: "ffdhe3072", 258: "ffdhe4096", 259: "ffdhe6144", 260: "ffdhe8192",
    0x11EB: "SecP256r1MLKEM768", 0x11EC: "X25519MLKEM768", 0x11ED: "SecP384r1MLKEM1024",
}
_GROUPS_GOOD = frozenset({23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 0x11EB, 0x11EC, 0x11ED})
_GROUPS_PHASE_OUT = frozenset({21, 257, 258, 259, 260})


def rate_group(code: int) -> str:
    if code in _GROUPS_GOOD:
        return GOOD
    if code in _GROUPS_PHASE_OUT:
        return PHASE_OUT
    return INSUFFICIENT


# SHA-256 of the big-endian prime -> name.  RFC 7919 ffdhe groups; the RFC 3526 / RFC 2409
# MODP groups are recognised by name too (they are well-known but not RFC 7919 groups).
_PRIMES = {
    "9cd3b7f336872f46c09428d1bbc19877a4d440512cda8d1c1cf0cd6e33698966": "ffdhe2048",
    "0eaf67db3a839156d5013494a5318a772b5697d270d721f37f092efc69ea5a17": "ffdhe3072",
    "4648414224ac881b3d0dc59b466f96d06a558278776807797ecf1f66ff397b3e": "ffdhe4096",
    "227ac9066b3ddd9e193670cda2388fa884f65ba0cf98b742d1fe77a6687c79c7": "ffdhe6144",
    "770b14efaf6f049929c523113b3fa99a8d11dab1b18af3609590122075d19833": "ffdhe8192",
    "3f35a3f5f6c4376a744acad409bb22f8d897f949d2311d885adaa890981b67a0": "RFC 2409 Oakley group 2 (1024-bit MODP)",
    "64fcc83ec403930bf18393dbc883ccaa1fbb08ac876f77f7aa99748ca945019b": "RFC 3526 1536-bit MODP",
    "d66436f79bbd6b2e38c0ffbd079be904d2641415e2e67140e09448be9a60890e": "RFC 3526 2048-bit MODP",
    "48cf8b092fbce4359d9871abf74f98e25b6163379eaa15cd9087e800c6d1c55c": "RFC 3526 3072-bit MODP",
    "4ee95187682bcb230ad26a95205f6920e84708f6251b3894329b09ec23919e33": "RFC 3526 4096-bit MODP",
}


def dh_group_name(p: bytes) -> str | None:
    """The name of a well-known group given its prime (big-endian bytes), else None."""
    return _PRIMES.get(hashlib.sha256(p.lstrip(b"\x00")).hexdigest())


def rate_dh(p: bytes, g: bytes) -> str:
    """internet.nl's rule: generator 2 and an RFC 7919 prime of >= 3072 bits is phase-out;
    everything else (ffdhe2048, a self-generated or any other group) is insufficient."""
    name = dh_group_name(p)
    if int.from_bytes(g, "big") == 2 and name in ("ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192"):
        return PHASE_OUT
    return INSUFFICIENT


def rate_cert_key(key_type: str, bits: int) -> str:
    """NCSC 3.3.2.1: RSA >= 3072 good, 2048 phase-out (still accepted by internet.nl),
    smaller insufficient; EC on P-256/384/521, Brainpool or Ed25519/Ed448 good."""
    kt = key_type.lower()
    if kt.startswith("rsa") or kt == "dsa":
        if bits >= 3072:
            return GOOD
        return PHASE_OUT if bits >= 2048 else INSUFFICIENT
    if kt.startswith(("ec", "ed")):
        if bits >= 256 or kt.startswith("ed"):
            return GOOD
        return PHASE_OUT if bits >= 224 else INSUFFICIENT
    return INSUFFICIENT


def rate_cert_hash(hash_name: str) -> str:
    """NCSC 3.3.5: SHA-256/384/512 (or none, for Ed25519/Ed448) good; SHA-224 phase-out;
    SHA-1, MD5 insufficient."""
    h = hash_name.lower().replace("-", "")
    if h in ("sha256", "sha384", "sha512", "none"):
        return GOOD
    if h == "sha224":
        return PHASE_OUT
    return INSUFFICIENT


def worst(ratings) -> str | None:
    rs = list(ratings)
    return max(rs, key=RATINGS.index) if rs else None
