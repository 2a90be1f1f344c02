"""Private keys: generation, PEM (de)serialisation, passphrase sources.

Key types mail software accepts: ECDSA P-256 (default) and P-384, RSA 2048/3072/4096.
Ed25519 is refused: no mainstream MUA (Outlook, Apple Mail, Thunderbird) nor most MTAs
accept Ed25519 server certificates today.
"""

from __future__ import annotations

import hashlib
import os
import sys

from ..errors import StoreError, UsageError

__all__ = ["ser", "check_key_type", "generate", "key_type_of", "is_rsa", "spki_der", "spki_sha256",
           "private_pem", "load_private_pem", "load_private", "read_passphrase"]

KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096")
DEFAULT_KEY_TYPE = "ecdsa-p256"
PASSPHRASE_ENV = "MAILCA_PASSPHRASE"
MIN_PASSPHRASE = 12

# Encrypted CA keys: PKCS#8 PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC.  cryptography's
# BestAvailableEncryption uses 2,048 PBKDF2 rounds (~3,500 guesses/s/core); OWASP 2023
# asks 600,000 for PBKDF2-SHA256.  scrypt N=2^17,r=8 needs 128 MiB, above OpenSSL 3's
# 32 MiB PBE limit, so `openssl pkey` could not open it: PBKDF2 it is.
KDF_ITERATIONS = 600_000
WEAK_KDF_ITERATIONS = KDF_ITERATIONS  # below this a key is reported as needing 'mailca ca rewrap-key'


def ser():
    """The serialization enums (Encoding, PrivateFormat, ...).

    ``cryptography.hazmat.primitives.serialization`` costs ~10 ms to import (its ssh
    submodule) - a sixth of a whole ``mailca issue`` run.  The enums live in
    ``_serialization``, which cryptography.x509 has loaded already; fall back to the public
    module if a future cryptography moves them."""
    try:
        from cryptography.hazmat.primitives import _serialization as s

        s.Encoding.PEM, s.PrivateFormat.PKCS8, s.PublicFormat.SubjectPublicKeyInfo, s.NoEncryption
        return s
    except (ImportError, AttributeError):  # pragma: no cover
        from cryptography.hazmat.primitives import serialization as s

        return s


def _load_pem_key(data: bytes, password: bytes | None):
    """load_pem_private_key without importing the (slow) serialization package."""
    try:
        from cryptography.hazmat.bindings._rust import keys as rust_keys

        loader = rust_keys.load_pem_private_key
    except (ImportError, AttributeError):  # pragma: no cover
        from cryptography.hazmat.primitives.serialization import load_pem_private_key as loader
    return loader(data, password)


def check_key_type(value: str) -> str:
    v = (value or "").strip().lower()
    aliases = {"ec": "ecdsa-p256", "ecdsa": "ecdsa-p256", "p256": "ecdsa-p256", "p-256": "ecdsa-p256",
               "p384": "ecdsa-p384", "p-384": "ecdsa-p384", "rsa": "rsa-2048", "rsa2048": "rsa-2048",
               "rsa3072": "rsa-3072", "rsa4096": "rsa-4096"}
    v = aliases.get(v, v)
    if v in ("ed25519", "ed448"):
        raise UsageError(
            f"key type {value!r} is refused: mail clients and most MTAs do not accept {v} server "
            f"certificates; use one of {', '.join(KEY_TYPES)}"
        )
    if v not in KEY_TYPES:
        raise UsageError(f"unknown key type {value!r}; valid: {', '.join(KEY_TYPES)}")
    return v


def generate(key_type: str):
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    kt = check_key_type(key_type)
    if kt == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kt == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=int(kt.split("-")[1]))


def key_type_of(key) -> str:
    """The mailca key-type name of a private or public key (raises UsageError if unsupported)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        name = key.curve.name
        if name == "secp256r1":
            return "ecdsa-p256"
        if name == "secp384r1":
            return "ecdsa-p384"
        raise UsageError(f"EC curve {name} is not supported; use P-256 or P-384")
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size in (2048, 3072, 4096):
            return f"rsa-{key.key_size}"
        raise UsageError(f"RSA key size {key.key_size} is not supported; use 2048, 3072 or 4096")
    raise UsageError(
        f"key algorithm {type(key).__name__} is not accepted by mail clients; use ECDSA P-256/P-384 or RSA"
    )


def is_rsa(key) -> bool:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey))


def spki_der(public_key) -> bytes:
    s = ser()
    return public_key.public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo)


def spki_sha256(public_key) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo: the DANE 3 1 1 / 2 1 1 digest and key id."""
    return hashlib.sha256(spki_der(public_key)).hexdigest()


def private_pem(key, passphrase: bytes | None = None, *, iterations: int = KDF_ITERATIONS) -> bytes:
    """PKCS#8 PEM; with a passphrase an EncryptedPrivateKeyInfo using PBES2 /
    PBKDF2-HMAC-SHA256 (``iterations`` rounds) / AES-256-CBC, which OpenSSL
    (``openssl pkey -passin``) and cryptography both read."""
    s = ser()
    if not passphrase:
        return key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
    from . import pkcs8

    plain_der = key.private_bytes(s.Encoding.DER, s.PrivateFormat.PKCS8, s.NoEncryption())
    return pkcs8.encrypt_pem(plain_der, passphrase, iterations=iterations)


def load_private_pem(data: bytes, path: str, passphrase: bytes | None = None):
    encrypted = b"ENCRYPTED" in data[:200]
    if encrypted and not passphrase:
        raise UsageError(
            f"{path} is encrypted and no passphrase was given; use --passphrase-file FILE or set {PASSPHRASE_ENV}"
        )
    try:
        return _load_pem_key(data, passphrase if encrypted else None)
    except ValueError as exc:
        if encrypted:
            raise UsageError(f"wrong passphrase for {path} (or the key file is damaged)") from None
        raise StoreError(f"{path} is not a readable private key ({exc}); restore it from a backup") from None
    except TypeError as exc:
        raise UsageError(f"{path}: {exc}") from None


def load_private(path: str, passphrase: bytes | None = None):
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise StoreError(f"key file {path} is missing; restore it from a backup or re-run 'mailca init'") from None
    except PermissionError:
        raise StoreError(f"cannot read key file {path}: permission denied (run as the store's owner)") from None
    return load_private_pem(data, path, passphrase)


def read_passphrase(passphrase_file: str | None, *, confirm: bool = False, purpose: str = "root CA key") -> bytes:
    """Passphrase from --passphrase-file, else $MAILCA_PASSPHRASE, else an interactive prompt.

    Never echoes or logs the value.  Raises UsageError when none is available (no tty)."""
    value: str | None = None
    if passphrase_file:
        try:
            with open(passphrase_file, "r", encoding="utf-8") as fh:
                value = fh.readline().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read --passphrase-file {passphrase_file!r}: {exc.strerror}") from None
        if not value:
            raise UsageError(f"--passphrase-file {passphrase_file!r} is empty; put the passphrase on its first line")
    elif os.environ.get(PASSPHRASE_ENV) is not None:
        value = os.environ[PASSPHRASE_ENV]
        if not value:
            raise UsageError(f"{PASSPHRASE_ENV} is set but empty; give a passphrase of at least {MIN_PASSPHRASE} characters")
    elif sys.stdin is not None and sys.stdin.isatty():
        import click

        value = click.prompt(f"Passphrase for the {purpose}", hide_input=True, confirmation_prompt=confirm)
    else:
        raise UsageError(
            f"a passphrase for the {purpose} is needed: use --passphrase-file FILE or set {PASSPHRASE_ENV} "
            "(no terminal to prompt on)"
        )
    if confirm:
        check_new_passphrase(value)
    return value.encode("utf-8")


# ------------------------------------------------------------ passphrase policy
# The most common passwords/base words of public breach lists (top entries), compared after
# lower-casing and dropping everything but letters, so "Password2024!" counts as "password".
_TOP_WORDS = frozenset("""
password passw passwd pass qwerty qwertz azerty letmein welcome admin administrator root toor
iloveyou monkey dragon football baseball soccer hockey sunshine princess master shadow superman
batman trustno whatever changeme secret default login test testing guest hello freedom computer
internet michael jennifer charlie jordan thomas daniel jessica ashley hunter killer pepper ginger
summer winter spring autumn flower flowers money starwars pokemon matrix access mustang cheese
chocolate cookie banana orange apple purple silver golden lovely loveme mylove angel angels
blink tigger zaq qazwsx qwe asdf asdfgh zxcvbn abc abcd mailca postfix dovecot example server
mail email letmeinplease welcomeback secretpassword rootpassword adminadmin
""".split())
_SEQUENCES = ("0123456789" * 3, "abcdefghijklmnopqrstuvwxyz" * 2, "qwertyuiopasdfghjklzxcvbnm",
              "qwertzuiopasdfghjklyxcvbnm", "azertyuiopqsdfghjklmwxcvbn", "1qaz2wsx3edc4rfv5tgb6yhn7ujm")
PASSPHRASE_ADVICE = (f"use at least {MIN_PASSPHRASE} characters that are not a common password, a keyboard or "
                     "digit sequence or a repeated pattern, e.g. four random words ('correct horse battery "
                     "staple' style) or the output of 'head -c 18 /dev/urandom | base64'")


def _repeat_unit(s: str) -> str:
    """The shortest unit u such that s is u repeated (possibly cut short): 'abcabcab' -> 'abc'."""
    for n in range(1, len(s) // 2 + 1):
        if all(s[i] == s[i % n] for i in range(len(s))):
            return s[:n]
    return s


def passphrase_problem(value: str) -> str | None:
    """Why ``value`` is too weak for a CA key, or None.  Never includes the value itself."""
    if len(value) < MIN_PASSPHRASE:
        return f"it is {len(value)} characters long"
    if len(set(value)) == 1:
        return "it is one character repeated"
    if len(set(value)) < 5:
        return f"it uses only {len(set(value))} different characters"
    if value.isdigit():
        return "it is all digits"
    low = value.lower()
    if len(_repeat_unit(low)) <= len(low) // 2:
        return "it is a repeated pattern"
    for seq in _SEQUENCES:
        if low in seq or low in seq[::-1]:
            return "it is a keyboard or alphabet/digit sequence"
    letters = "".join(c for c in low if c.isalpha())
    if letters and (letters in _TOP_WORDS or _repeat_unit(letters) in _TOP_WORDS):
        return "it is built on one of the most common passwords"
    return None


def check_new_passphrase(value: str) -> None:
    """The policy for every NEW passphrase (init, rewrap-key): refuse the obviously weak."""
    why = passphrase_problem(value)
    if why:
        raise UsageError(f"the new passphrase is refused: {why}; {PASSPHRASE_ADVICE}")
