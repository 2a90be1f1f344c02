"""PKCS#8 EncryptedPrivateKeyInfo with a strong PBKDF2 count (RFC 5958 + RFC 8018).

cryptography (50.x) can write encrypted PKCS#8 only through ``BestAvailableEncryption``,
which fixes PBKDF2-HMAC-SHA256 at 2,048 rounds.  This module writes the same structure
with a chosen round count -- PBES2 { PBKDF2 { salt(16), rounds, prf hmacWithSHA256 },
aes256-CBC { iv(16) } } -- and reads back which KDF a key file uses, so ``mailca ca
rewrap-key`` knows whether a key needs upgrading.  Decryption is left to cryptography /
OpenSSL (both read this format).  Pure: no I/O.
"""

from __future__ import annotations

import base64
import os
from typing import NamedTuple

__all__ = ["KdfInfo", "encrypt_pem", "kdf_info"]

OID_PBES2 = "1.2.840.113549.1.5.13"
OID_PBKDF2 = "1.2.840.113549.1.5.12"
OID_SCRYPT = "1.3.6.1.4.1.11591.4.11"
OID_HMAC_SHA256 = "1.2.840.113549.2.9"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"


# ------------------------------------------------------------------ DER, just enough
def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _len(len(content)) + content


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _int(n: int) -> bytes:
    return _tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    arcs = [int(x) for x in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _octets(b: bytes) -> bytes:
    return _tlv(0x04, b)


NULL = b"\x05\x00"


def _read(buf: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """(tag, content, next position); raises ValueError on anything malformed."""
    if pos + 2 > len(buf):
        raise ValueError("truncated DER")
    tag, first = buf[pos], buf[pos + 1]
    pos += 2
    if first < 0x80:
        n = first
    else:
        k = first & 0x7F
        if k == 0 or k > 4 or pos + k > len(buf):
            raise ValueError("bad DER length")
        n = int.from_bytes(buf[pos:pos + k], "big")
        pos += k
    if pos + n > len(buf):
        raise ValueError("truncated DER")
    return tag, buf[pos:pos + n], pos + n


def _items(content: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(content):
        tag, val, pos = _read(content, pos)
        out.append((tag, val))
        if len(out) > 16:
            raise ValueError("too many DER items")
    return out


def _oid_str(content: bytes) -> str:
    if not content:
        raise ValueError("empty OID")
    arcs, cur = [content[0] // 40, content[0] % 40], 0
    for b in content[1:]:
        cur = (cur << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(cur)
            cur = 0
    return ".".join(map(str, arcs))


# ----------------------------------------------------------------- public API
def encrypt_pem(plain_pkcs8_der: bytes, passphrase: bytes, *, iterations: int) -> bytes:
    """Encrypt an unencrypted PKCS#8 DER blob into an ENCRYPTED PRIVATE KEY PEM."""
    import hashlib

    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    salt, iv = os.urandom(16), os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", passphrase, salt, iterations, dklen=32)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain_pkcs8_der) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(padded) + enc.finalize()
    alg = _seq(
        _oid(OID_PBES2),
        _seq(
            _seq(_oid(OID_PBKDF2), _seq(_octets(salt), _int(iterations), _seq(_oid(OID_HMAC_SHA256), NULL))),
            _seq(_oid(OID_AES256_CBC), _octets(iv)),
        ),
    )
    der = _seq(alg, _octets(ciphertext))
    b64 = base64.b64encode(der).decode("ascii")
    body = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}\n-----END ENCRYPTED PRIVATE KEY-----\n".encode("ascii")


class KdfInfo(NamedTuple):
    """How a PEM private key is protected: kdf is 'none', 'pbkdf2', 'scrypt' or 'other'."""

    kdf: str
    iterations: int | None = None  # PBKDF2 rounds or scrypt N
    prf: str | None = None

    def describe(self) -> str:
        if self.kdf == "pbkdf2":
            return f"PBKDF2-{self.prf or 'HMAC-SHA1'} with {self.iterations:,} iterations"
        if self.kdf == "scrypt":
            return f"scrypt N={self.iterations}"
        return {"none": "not encrypted", "other": "an old or unknown encryption scheme"}[self.kdf]


def kdf_info(pem: bytes) -> KdfInfo:
    """Parse the encryption parameters of a PEM key (never decrypts). ValueError if unparsable."""
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" not in pem:
        if b"ENCRYPTED" in pem[:200] or b"Proc-Type: 4,ENCRYPTED" in pem:
            return KdfInfo("other")
        return KdfInfo("none")
    body = pem.split(b"-----BEGIN ENCRYPTED PRIVATE KEY-----", 1)[1].split(b"-----END", 1)[0]
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except ValueError:
        raise ValueError("bad base64") from None
    tag, epki, _ = _read(der)
    (t_alg, alg), _data = _items(epki)[:2]
    alg_items = _items(alg)
    if _oid_str(alg_items[0][1]) != OID_PBES2:
        return KdfInfo("other")
    kdf_seq, _scheme = _items(alg_items[1][1])[:2]
    kdf_items = _items(kdf_seq[1])
    kdf_oid = _oid_str(kdf_items[0][1])
    params = _items(kdf_items[1][1])
    if kdf_oid == OID_PBKDF2:
        rounds = int.from_bytes(params[1][1], "big")
        prf = "HMAC-SHA1"
        for tag_p, val in params[2:]:
            if tag_p == 0x30:
                prf_oid = _oid_str(_items(val)[0][1])
                prf = {OID_HMAC_SHA256: "HMAC-SHA256", "1.2.840.113549.2.10": "HMAC-SHA384",
                       "1.2.840.113549.2.11": "HMAC-SHA512"}.get(prf_oid, prf_oid)
        return KdfInfo("pbkdf2", rounds, prf)
    if kdf_oid == OID_SCRYPT:
        return KdfInfo("scrypt", int.from_bytes(params[1][1], "big"))
    return KdfInfo("other")
