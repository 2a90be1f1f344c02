"""Hand-built TLS ClientHello probes and a ServerHello / alert parser.

OpenSSL 3 cannot speak SSLv3 or offer export, DES or RC4 suites, so -- like testssl.sh's
socket mode -- the probes build ClientHello records byte by byte, send them on a socket
that is ready for TLS (after STARTTLS, or straight away for implicit TLS / a bare TLS
server) and read only as far as the server's answer: ServerHello (and, for TLS <= 1.2,
Certificate and ServerKeyExchange, which are still in the clear), an alert, or a close.
No handshake is ever completed, so no cryptography is needed here.

Cipher suite code points and names are those of the IANA "TLS Cipher Suites" registry
(plus the historical export-1024 suites), without PSK, SRP, Kerberos and GOST suites,
which a mail server never selects for a client that does not offer those mechanisms.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

from ..core.names import is_ip_literal

__all__ = ["VERSION_NAMES", "VERSIONS", "CIPHER_NAMES", "suite", "CIPHER_CLASSES", "TLS13_SUITES",
           "FS_SUITES", "DHE_SUITES", "ADH_SUITES", "ALL_SUITES", "GROUP_NAMES", "client_hello",
           "HelloResult", "ProbeTimeout", "probe"]

# --- protocol versions ---------------------------------------------------------------

SSL3, TLS1_0, TLS1_1, TLS1_2, TLS1_3 = 0x0300, 0x0301, 0x0302, 0x0303, 0x0304
VERSION_NAMES = {SSL3: "SSLv3", TLS1_0: "TLSv1.0", TLS1_1: "TLSv1.1", TLS1_2: "TLSv1.2", TLS1_3: "TLSv1.3"}
VERSIONS = (SSL3, TLS1_0, TLS1_1, TLS1_2, TLS1_3)

# --- cipher suites ---------------------------------------------------------------------

_IANA = """
0001 TLS_RSA_WITH_NULL_MD5
0002 TLS_RSA_WITH_NULL_SHA
0003 TLS_RSA_EXPORT_WITH_RC4_40_MD5
0004 TLS_RSA_WITH_RC4_128_MD5
0005 TLS_RSA_WITH_RC4_128_SHA
0006 TLS_RSA_EXPORT_WITH_RC2_CBC_40_MD5
0007 TLS_RSA_WITH_IDEA_CBC_SHA
0008 TLS_RSA_EXPORT_WITH_DES40_CBC_SHA
0009 TLS_RSA_WITH_DES_CBC_SHA
000A TLS_RSA_WITH_3DES_EDE_CBC_SHA
000B TLS_DH_DSS_EXPORT_WITH_DES40_CBC_SHA
000C TLS_DH_DSS_WITH_DES_CBC_SHA
000D TLS_DH_DSS_WITH_3DES_EDE_CBC_SHA
000E TLS_DH_RSA_EXPORT_WITH_DES40_CBC_SHA
000F TLS_DH_RSA_WITH_DES_CBC_SHA
0010 TLS_DH_RSA_WITH_3DES_EDE_CBC_SHA
0011 TLS_DHE_DSS_EXPORT_WITH_DES40_CBC_SHA
0012 TLS_DHE_DSS_WITH_DES_CBC_SHA
0013 TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA
0014 TLS_DHE_RSA_EXPORT_WITH_DES40_CBC_SHA
0015 TLS_DHE_RSA_WITH_DES_CBC_SHA
0016 TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA
0017 TLS_DH_anon_EXPORT_WITH_RC4_40_MD5
0018 TLS_DH_anon_WITH_RC4_128_MD5
0019 TLS_DH_anon_EXPORT_WITH_DES40_CBC_SHA
001A TLS_DH_anon_WITH_DES_CBC_SHA
001B TLS_DH_anon_WITH_3DES_EDE_CBC_SHA
002F TLS_RSA_WITH_AES_128_CBC_SHA
0030 TLS_DH_DSS_WITH_AES_128_CBC_SHA
0031 TLS_DH_RSA_WITH_AES_128_CBC_SHA
0032 TLS_DHE_DSS_WITH_AES_128_CBC_SHA
0033 TLS_DHE_RSA_WITH_AES_128_CBC_SHA
0034 TLS_DH_anon_WITH_AES_128_CBC_SHA
0035 TLS_RSA_WITH_AES_256_CBC_SHA
0036 TLS_DH_DSS_WITH_AES_256_CBC_SHA
0037 TLS_DH_RSA_WITH_AES_256_CBC_SHA
0038 TLS_DHE_DSS_WITH_AES_256_CBC_SHA
0039 TLS_DHE_RSA_WITH_AES_256_CBC_SHA
003A TLS_DH_anon_WITH_AES_256_CBC_SHA
003B TLS_RSA_WITH_NULL_SHA256
003C TLS_RSA_WITH_AES_128_CBC_SHA256
003D TLS_RSA_WITH_AES_256_CBC_SHA256
003E TLS_DH_DSS_WITH_AES_128_CBC_SHA256
003F TLS_DH_RSA_WITH_AES_128_CBC_SHA256
0040 TLS_DHE_DSS_WITH_AES_128_CBC_SHA256
0041 TLS_RSA_WITH_CAMELLIA_128_CBC_SHA
0042 TLS_DH_DSS_WITH_CAMELLIA_128_CBC_SHA
0043 TLS_DH_RSA_WITH_CAMELLIA_128_CBC_SHA
0044 TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA
0045 TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA
0046 TLS_DH_anon_WITH_CAMELLIA_128_CBC_SHA
0060 TLS_RSA_EXPORT1024_WITH_RC4_56_MD5
0061 TLS_RSA_EXPORT1024_WITH_RC2_56_MD5
0062 TLS_RSA_EXPORT1024_WITH_DES_CBC_SHA
0063 TLS_DHE_DSS_EXPORT1024_WITH_DES_CBC_SHA
0064 TLS_RSA_EXPORT1024_WITH_RC4_56_SHA
0065 TLS_DHE_DSS_EXPORT1024_WITH_RC4_56_SHA
0066 TLS_DHE_DSS_WITH_RC4_128_SHA
0067 TLS_DHE_RSA_WITH_AES_128_CBC_SHA256
0068 TLS_DH_DSS_WITH_AES_256_CBC_SHA256
0069 TLS_DH_RSA_WITH_AES_256_CBC_SHA256
006A TLS_DHE_DSS_WITH_AES_256_CBC_SHA256
006B TLS_DHE_RSA_WITH_AES_256_CBC_SHA256
006C TLS_DH_anon_WITH_AES_128_CBC_SHA256
006D TLS_DH_anon_WITH_AES_256_CBC_SHA256
0084 TLS_RSA_WITH_CAMELLIA_256_CBC_SHA
0085 TLS_DH_DSS_WITH_CAMELLIA_256_CBC_SHA
0086 TLS_DH_RSA_WITH_CAMELLIA_256_CBC_SHA
0087 TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA
0088 TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA
0089 TLS_DH_anon_WITH_CAMELLIA_256_CBC_SHA
0096 TLS_RSA_WITH_SEED_CBC_SHA
0097 TLS_DH_DSS_WITH_SEED_CBC_SHA
0098 TLS_DH_RSA_WITH_SEED_CBC_SHA
0099 TLS_DHE_DSS_WITH_SEED_CBC_SHA
009A TLS_DHE_RSA_WITH_SEED_CBC_SHA
009B TLS_DH_anon_WITH_SEED_CBC_SHA
009C TLS_RSA_WITH_AES_128_GCM_SHA256
009D TLS_RSA_WITH_AES_256_GCM_SHA384
009E TLS_DHE_RSA_WITH_AES_128_GCM_SHA256
009F TLS_DHE_RSA_WITH_AES_256_GCM_SHA384
00A0 TLS_DH_RSA_WITH_AES_128_GCM_SHA256
00A1 TLS_DH_RSA_WITH_AES_256_GCM_SHA384
00A2 TLS_DHE_DSS_WITH_AES_128_GCM_SHA256
00A3 TLS_DHE_DSS_WITH_AES_256_GCM_SHA384
00A4 TLS_DH_DSS_WITH_AES_128_GCM_SHA256
00A5 TLS_DH_DSS_WITH_AES_256_GCM_SHA384
00A6 TLS_DH_anon_WITH_AES_128_GCM_SHA256
00A7 TLS_DH_anon_WITH_AES_256_GCM_SHA384
00BA TLS_RSA_WITH_CAMELLIA_128_CBC_SHA256
00BB TLS_DH_DSS_WITH_CAMELLIA_128_CBC_SHA256
00BC TLS_DH_RSA_WITH_CAMELLIA_128_CBC_SHA256
00BD TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA256
00BE TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA256
00BF TLS_DH_anon_WITH_CAMELLIA_128_CBC_SHA256
00C0 TLS_RSA_WITH_CAMELLIA_256_CBC_SHA256
00C1 TLS_DH_DSS_WITH_CAMELLIA_256_CBC_SHA256
00C2 TLS_DH_RSA_WITH_CAMELLIA_256_CBC_SHA256
00C3 TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA256
00C4 TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA256
00C5 TLS_DH_anon_WITH_CAMELLIA_256_CBC_SHA256
1301 TLS_AES_128_GCM_SHA256
1302 TLS_AES_256_GCM_SHA384
1303 TLS_CHACHA20_POLY1305_SHA256
1304 TLS_AES_128_CCM_SHA256
1305 TLS_AES_128_CCM_8_SHA256
C001 TLS_ECDH_ECDSA_WITH_NULL_SHA
C002 TLS_ECDH_ECDSA_WITH_RC4_128_SHA
C003 TLS_ECDH_ECDSA_WITH_3DES_EDE_CBC_SHA
C004 TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA
C005 TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA
C006 TLS_ECDHE_ECDSA_WITH_NULL_SHA
C007 TLS_ECDHE_ECDSA_WITH_RC4_128_SHA
C008 TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA
C009 TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA
C00A TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA
C00B TLS_ECDH_RSA_WITH_NULL_SHA
C00C TLS_ECDH_RSA_WITH_RC4_128_SHA
C00D TLS_ECDH_RSA_WITH_3DES_EDE_CBC_SHA
C00E TLS_ECDH_RSA_WITH_AES_128_CBC_SHA
C00F TLS_ECDH_RSA_WITH_AES_256_CBC_SHA
C010 TLS_ECDHE_RSA_WITH_NULL_SHA
C011 TLS_ECDHE_RSA_WITH_RC4_128_SHA
C012 TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA
C013 TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA
C014 TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA
C015 TLS_ECDH_anon_WITH_NULL_SHA
C016 TLS_ECDH_anon_WITH_RC4_128_SHA
C017 TLS_ECDH_anon_WITH_3DES_EDE_CBC_SHA
C018 TLS_ECDH_anon_WITH_AES_128_CBC_SHA
C019 TLS_ECDH_anon_WITH_AES_256_CBC_SHA
C023 TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256
C024 TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384
C025 TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA256
C026 TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA384
C027 TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256
C028 TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384
C029 TLS_ECDH_RSA_WITH_AES_128_CBC_SHA256
C02A TLS_ECDH_RSA_WITH_AES_256_CBC_SHA384
C02B TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
C02C TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
C02D TLS_ECDH_ECDSA_WITH_AES_128_GCM_SHA256
C02E TLS_ECDH_ECDSA_WITH_AES_256_GCM_SHA384
C02F TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
C030 TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
C031 TLS_ECDH_RSA_WITH_AES_128_GCM_SHA256
C032 TLS_ECDH_RSA_WITH_AES_256_GCM_SHA384
C03C TLS_RSA_WITH_ARIA_128_CBC_SHA256
C03D TLS_RSA_WITH_ARIA_256_CBC_SHA384
C03E TLS_DH_DSS_WITH_ARIA_128_CBC_SHA256
C03F TLS_DH_DSS_WITH_ARIA_256_CBC_SHA384
C040 TLS_DH_RSA_WITH_ARIA_128_CBC_SHA256
C041 TLS_DH_RSA_WITH_ARIA_256_CBC_SHA384
C042 TLS_DHE_DSS_WITH_ARIA_128_CBC_SHA256
C043 TLS_DHE_DSS_WITH_ARIA_256_CBC_SHA384
C044 TLS_DHE_RSA_WITH_ARIA_128_CBC_SHA256
C045 TLS_DHE_RSA_WITH_ARIA_256_CBC_SHA384
C046 TLS_DH_anon_WITH_ARIA_128_CBC_SHA256
C047 TLS_DH_anon_WITH_ARIA_256_CBC_SHA384
C048 TLS_ECDHE_ECDSA_WITH_ARIA_128_CBC_SHA256
C049 TLS_ECDHE_ECDSA_WITH_ARIA_256_CBC_SHA384
C04A TLS_ECDH_ECDSA_WITH_ARIA_128_CBC_SHA256
C04B TLS_ECDH_ECDSA_WITH_ARIA_256_CBC_SHA384
C04C TLS_ECDHE_RSA_WITH_ARIA_128_CBC_SHA256
C04D TLS_ECDHE_RSA_WITH_ARIA_256_CBC_SHA384
C04E TLS_ECDH_RSA_WITH_ARIA_128_CBC_SHA256
C04F TLS_ECDH_RSA_WITH_ARIA_256_CBC_SHA384
C050 TLS_RSA_WITH_ARIA_128_GCM_SHA256
C051 TLS_RSA_WITH_ARIA_256_GCM_SHA384
C052 TLS_DHE_RSA_WITH_ARIA_128_GCM_SHA256
C053 TLS_DHE_RSA_WITH_ARIA_256_GCM_SHA384
C054 TLS_DH_RSA_WITH_ARIA_128_GCM_SHA256
C055 TLS_DH_RSA_WITH_ARIA_256_GCM_SHA384
C056 TLS_DHE_DSS_WITH_ARIA_128_GCM_SHA256
C057 TLS_DHE_DSS_WITH_ARIA_256_GCM_SHA384
C058 TLS_DH_DSS_WITH_ARIA_128_GCM_SHA256
C059 TLS_DH_DSS_WITH_ARIA_256_GCM_SHA384
C05A TLS_DH_anon_WITH_ARIA_128_GCM_SHA256
C05B TLS_DH_anon_WITH_ARIA_256_GCM_SHA384
C05C TLS_ECDHE_ECDSA_WITH_ARIA_128_GCM_SHA256
C05D TLS_ECDHE_ECDSA_WITH_ARIA_256_GCM_SHA384
C05E TLS_ECDH_ECDSA_WITH_ARIA_128_GCM_SHA256
C05F TLS_ECDH_ECDSA_WITH_ARIA_256_GCM_SHA384
C060 TLS_ECDHE_RSA_WITH_ARIA_128_GCM_SHA256
C061 TLS_ECDHE_RSA_WITH_ARIA_256_GCM_SHA384
C062 TLS_ECDH_RSA_WITH_ARIA_128_GCM_SHA256
C063 TLS_ECDH_RSA_WITH_ARIA_256_GCM_SHA384
C072 TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_CBC_SHA256
C073 TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384
C074 TLS_ECDH_ECDSA_WITH_CAMELLIA_128_CBC_SHA256
C075 TLS_ECDH_ECDSA_WITH_CAMELLIA_256_CBC_SHA384
C076 TLS_ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256
C077 TLS_ECDHE_RSA_WITH_CAMELLIA_256_CBC_SHA384
C078 TLS_ECDH_RSA_WITH_CAMELLIA_128_CBC_SHA256
C079 TLS_ECDH_RSA_WITH_CAMELLIA_256_CBC_SHA384
C07A TLS_RSA_WITH_CAMELLIA_128_GCM_SHA256
C07B TLS_RSA_WITH_CAMELLIA_256_GCM_SHA384
C07C TLS_DHE_RSA_WITH_CAMELLIA_128_GCM_SHA256
C07D TLS_DHE_RSA_WITH_CAMELLIA_256_GCM_SHA384
C07E TLS_DH_RSA_WITH_CAMELLIA_128_GCM_SHA256
C07F TLS_DH_RSA_WITH_CAMELLIA_256_GCM_SHA384
C080 TLS_DHE_DSS_WITH_CAMELLIA_128_GCM_SHA256
C081 TLS_DHE_DSS_WITH_CAMELLIA_256_GCM_SHA384
C082 TLS_DH_DSS_WITH_CAMELLIA_128_GCM_SHA256
C083 TLS_DH_DSS_WITH_CAMELLIA_256_GCM_SHA384
C084 TLS_DH_anon_WITH_CAMELLIA_128_GCM_SHA256
C085 TLS_DH_anon_WITH_CAMELLIA_256_GCM_SHA384
C086 TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_GCM_SHA256
C087 TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_GCM_SHA384
C088 TLS_ECDH_ECDSA_WITH_CAMELLIA_128_GCM_SHA256
C089 TLS_ECDH_ECDSA_WITH_CAMELLIA_256_GCM_SHA384
C08A TLS_ECDHE_RSA_WITH_CAMELLIA_128_GCM_SHA256
C08B TLS_ECDHE_RSA_WITH_CAMELLIA_256_GCM_SHA384
C08C TLS_ECDH_RSA_WITH_CAMELLIA_128_GCM_SHA256
C08D TLS_ECDH_RSA_WITH_CAMELLIA_256_GCM_SHA384
C09C TLS_RSA_WITH_AES_128_CCM
C09D TLS_RSA_WITH_AES_256_CCM
C09E TLS_DHE_RSA_WITH_AES_128_CCM
C09F TLS_DHE_RSA_WITH_AES_256_CCM
C0A0 TLS_RSA_WITH_AES_128_CCM_8
C0A1 TLS_RSA_WITH_AES_256_CCM_8
C0A2 TLS_DHE_RSA_WITH_AES_128_CCM_8
C0A3 TLS_DHE_RSA_WITH_AES_256_CCM_8
C0AC TLS_ECDHE_ECDSA_WITH_AES_128_CCM
C0AD TLS_ECDHE_ECDSA_WITH_AES_256_CCM
C0AE TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8
C0AF TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8
CCA8 TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
CCA9 TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
CCAA TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256
"""

CIPHER_NAMES: dict[int, str] = {}
for _line in _IANA.split("\n"):
    if _line.strip():
        _code, _name = _line.split()
        CIPHER_NAMES[int(_code, 16)] = _name
del _line, _code, _name

SCSV_RENEGOTIATION = 0x00FF


@dataclass(frozen=True)
class Suite:
    """What a cipher suite's IANA name says about it."""

    code: int
    name: str
    kx: str          # RSA, DHE, DH, ECDHE, ECDH, DH_anon, ECDH_anon, TLS13
    enc: str         # NULL, RC4, RC2, DES, DES40, 3DES, IDEA, SEED, AES, CAMELLIA, ARIA, CHACHA20
    export: bool
    anon: bool
    aead: bool
    cbc: bool

    @property
    def forward_secret(self) -> bool:
        """Ephemeral, authenticated key exchange (anonymous suites do not count: no one is authenticated)."""
        return self.kx in ("DHE", "ECDHE", "TLS13") and not self.export

    @property
    def hexcode(self) -> str:
        return f"0x{self.code >> 8:02X},0x{self.code & 0xFF:02X}"


def _parse_suite(code: int, name: str) -> Suite:
    body = name.split("_", 1)[1]  # drop TLS_ / SSL_
    if "_WITH_" not in body:  # TLS 1.3: TLS_AES_128_GCM_SHA256
        return Suite(code, name, "TLS13", body.split("_")[0], False, False, True, False)
    kxpart, encpart = body.split("_WITH_", 1)
    export = "EXPORT" in kxpart or "_40" in encpart or encpart.startswith("DES40")
    anon = "anon" in kxpart
    kxtok = kxpart.split("_")
    kx = kxtok[0] + ("_anon" if anon else "")
    e = encpart.split("_")[0]
    if e == "DES40":
        e = "DES"
    aead = any(t in encpart for t in ("GCM", "CCM", "POLY1305"))
    return Suite(code, name, kx, e, export, anon, aead, "CBC" in encpart)


SUITES: dict[int, Suite] = {c: _parse_suite(c, n) for c, n in CIPHER_NAMES.items()}


def suite(code: int) -> Suite | None:
    return SUITES.get(code)


def suite_name(code: int | None) -> str | None:
    if code is None:
        return None
    s = SUITES.get(code)
    return s.name if s else f"0x{code:04X}"


def _select(pred) -> tuple[int, ...]:
    return tuple(c for c, s in SUITES.items() if s.kx != "TLS13" and pred(s))


# Cipher classes, each probed with a ClientHello offering all of its code points.  The
# weak ones mirror testssl.sh's standard cipher lists (NULL, aNULL, EXPORT, LOW, 3DES/IDEA,
# obsolete CBC); RC4 is its own class.  LOW/3DES/RC4/CBC leave out anonymous, NULL and
# export suites, which have their own classes.
def _plain(s: Suite) -> bool:
    return not (s.anon or s.export or s.enc == "NULL")


CIPHER_CLASSES: dict[str, tuple[int, ...]] = {
    "NULL": _select(lambda s: s.enc == "NULL"),
    "aNULL": _select(lambda s: s.anon),
    "EXPORT": _select(lambda s: s.export),
    "LOW": _select(lambda s: _plain(s) and s.enc in ("DES", "RC2")),
    "3DES": _select(lambda s: _plain(s) and s.enc in ("3DES", "IDEA")),
    "RC4": _select(lambda s: _plain(s) and s.enc == "RC4"),
    "CBC": _select(lambda s: _plain(s) and s.cbc and s.enc in ("AES", "CAMELLIA", "ARIA", "SEED")),
    "AEAD": _select(lambda s: _plain(s) and s.aead),
}

TLS13_SUITES: tuple[int, ...] = tuple(c for c, s in SUITES.items() if s.kx == "TLS13")
FS_SUITES: tuple[int, ...] = _select(lambda s: _plain(s) and s.forward_secret)
DHE_SUITES: tuple[int, ...] = _select(lambda s: s.kx == "DHE" and not s.export)
ADH_SUITES: tuple[int, ...] = _select(lambda s: s.kx == "DH_anon" and not s.export)
ECDHE_SUITES: tuple[int, ...] = _select(lambda s: s.kx in ("ECDHE", "ECDH_anon"))


def _strength(s: Suite) -> tuple:
    """Sort key, strongest first: AEAD+FS, FS, AEAD, CBC, ..., export, NULL, anonymous last."""
    weak = {"NULL": 9, "DES": 7, "RC2": 7, "RC4": 6, "3DES": 5, "IDEA": 5}.get(s.enc, 0)
    return (s.anon, s.enc == "NULL", s.export, weak, not s.forward_secret, not s.aead, s.kx != "ECDHE", s.code)


# Every TLS <= 1.2 suite, strongest first: the protocol probes offer all of them.
ALL_SUITES: tuple[int, ...] = tuple(sorted(_select(lambda s: True), key=lambda c: _strength(SUITES[c])))

# Named groups.
GROUP_NAMES = {
    19: "secp192r1", 21: "secp224r1", 23: "secp256r1", 24: "secp384r1", 25: "secp521r1",
    29: "x25519", 30: "x448", 256: "ffdhe2048", 257: "ffdhe3072", 258: "ffdhe4096",
    259: "ffdhe6144", 260: "ffdhe8192",
}
_OFFERED_GROUPS = (29, 23, 30, 25, 24, 256, 257, 258)
# RSA, ECDSA, RSA-PSS, EdDSA; SHA-1 last so that old certificates can still be chosen.
_SIG_ALGS = (0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0807, 0x0808, 0x0401, 0x0501, 0x0601,
             0x0402, 0x0303, 0x0203, 0x0201, 0x0202)

ALERT_NAMES = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
    40: "handshake_failure", 42: "bad_certificate", 47: "illegal_parameter", 50: "decode_error",
    51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
    86: "inappropriate_fallback", 90: "user_canceled", 109: "missing_extension",
    110: "unsupported_extension", 112: "unrecognized_name", 120: "no_application_protocol",
}

_HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")


# --- ClientHello ------------------------------------------------------------------------

def _u8(b: bytes) -> bytes:
    return struct.pack("!B", len(b)) + b


def _u16(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def _u24(b: bytes) -> bytes:
    return struct.pack("!I", len(b))[1:] + b


def _ext(kind: int, data: bytes) -> bytes:
    return struct.pack("!H", kind) + _u16(data)




def client_hello(version: int, suites, *, sni: str | None = None) -> bytes:
    """One TLS record holding a ClientHello for ``version`` offering exactly ``suites``.

    For TLS 1.3 the hello carries supported_versions (1.3 only) and an X25519 key share
    (32 random bytes are a valid X25519 public value); for SSLv3 it carries no extensions.
    """
    if version not in VERSIONS:
        raise ValueError(f"unknown protocol version 0x{version:04X}")
    suites = list(suites)
    tls13 = version == TLS1_3
    if version != TLS1_3:
        suites.append(SCSV_RENEGOTIATION)
    exts = b""
    if version >= TLS1_0:
        if sni and not is_ip_literal(sni):
            host = sni.encode("idna") if not sni.isascii() else sni.encode("ascii")
            exts += _ext(0, _u16(b"\x00" + _u16(host)))
        exts += _ext(10, _u16(b"".join(struct.pack("!H", g) for g in _OFFERED_GROUPS)))
        exts += _ext(11, _u8(b"\x00"))
        if version >= TLS1_2:
            exts += _ext(13, _u16(b"".join(struct.pack("!H", a) for a in _SIG_ALGS)))
        exts += _ext(23, b"")  # extended_master_secret
        exts += _ext(35, b"")  # session_ticket
        if tls13:
            exts += _ext(43, _u8(struct.pack("!H", TLS1_3)))
            exts += _ext(45, _u8(b"\x01"))
            exts += _ext(51, _u16(struct.pack("!HH", 29, 32) + os.urandom(32)))
    body = struct.pack("!H", TLS1_2 if tls13 else version) + os.urandom(32)
    body += _u8(os.urandom(32) if tls13 else b"")
    body += _u16(b"".join(struct.pack("!H", c) for c in suites))
    body += _u8(b"\x00")
    if exts:
        body += _u16(exts)
    hs = b"\x01" + _u24(body)
    return struct.pack("!BHH", 22, SSL3 if version == SSL3 else TLS1_0, len(hs)) + hs


# --- the answer -------------------------------------------------------------------------

@dataclass(frozen=True)
class HelloResult:
    """What the server said to one ClientHello.

    ``outcome`` is "accepted" (a ServerHello), "alert" (a fatal alert), "closed" (the
    server hung up without a word), "garbage" (not TLS at all), "timeout" (no answer in
    time: unknown, never accepted) or "protocol_error" (a malformed ServerHello, or one that
    picks what was not offered).  ``version`` and ``cipher`` are the ServerHello's choice."""

    outcome: str
    version: int | None = None
    cipher: int | None = None
    alert: int | None = None
    certs: tuple[bytes, ...] = ()
    dh_bits: int | None = None        # size of p in a DHE / DH_anon ServerKeyExchange
    curve: int | None = None          # named group in an ECDHE ServerKeyExchange (or TLS 1.3 key share)
    export_rsa_bits: int | None = None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"

    @property
    def version_name(self) -> str | None:
        return VERSION_NAMES.get(self.version, None if self.version is None else f"0x{self.version:04X}")

    @property
    def cipher_name(self) -> str | None:
        return suite_name(self.cipher)


class ProbeTimeout(Exception):
    """The server sent nothing (more) within the timeout."""


class _Reader:
    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.deadline = deadline
        self.buf = b""
        self.eof = False

    def fill(self, n: int) -> bool:
        """Make ``n`` bytes available; False if the peer closed first."""
        while len(self.buf) < n:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ProbeTimeout()
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(16384)
            except socket.timeout:
                raise ProbeTimeout() from None
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.eof = True
                return False
            self.buf += chunk
        return True

    def take(self, n: int) -> bytes:
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class Malformed(Exception):
    """The server's answer breaks the TLS grammar (truncated or inconsistent message)."""


# Upper bound on what one probe reads: a certificate chain of a mail server is a few KB;
# a hostile server streaming endless handshake records must not make us buffer it all.
MAX_ANSWER_BYTES = 256 * 1024


def _parse_server_hello(body: bytes) -> tuple[int, int, bool, int | None, int]:
    """(version, cipher, is_hrr, key-share group, compression) from a ServerHello body.

    Every length is checked: a truncated or inconsistent ServerHello raises ``Malformed``."""
    if len(body) < 35:
        raise Malformed(f"truncated ServerHello ({len(body)} bytes, at least 38 needed)")
    version = struct.unpack("!H", body[0:2])[0]
    random = body[2:34]
    sid_len = body[34]
    if sid_len > 32:
        raise Malformed(f"ServerHello session id of {sid_len} bytes (at most 32 allowed)")
    pos = 35 + sid_len
    if pos + 3 > len(body):
        raise Malformed(f"truncated ServerHello ({len(body)} bytes, {pos + 3} needed)")
    cipher = struct.unpack("!H", body[pos:pos + 2])[0]
    compression = body[pos + 2]
    pos += 3  # cipher + compression
    group = None
    if pos + 2 <= len(body):
        ext_len = struct.unpack("!H", body[pos:pos + 2])[0]
        pos += 2
        if pos + ext_len != len(body):
            raise Malformed("ServerHello extensions length does not match the message")
        end = pos + ext_len
        while pos < end:
            if pos + 4 > end:
                raise Malformed("truncated extension in the ServerHello")
            kind, ln = struct.unpack("!HH", body[pos:pos + 4])
            if pos + 4 + ln > end:
                raise Malformed(f"ServerHello extension {kind} overruns the message")
            data = body[pos + 4:pos + 4 + ln]
            if kind == 43 and len(data) >= 2:
                version = struct.unpack("!H", data[:2])[0]
            elif kind == 51 and len(data) >= 2:
                group = struct.unpack("!H", data[:2])[0]
            pos += 4 + ln
    elif pos != len(body):
        raise Malformed("trailing byte after the ServerHello compression method")
    return version, cipher, random == _HRR_RANDOM, group, compression


def _parse_certificates(body: bytes) -> tuple[bytes, ...]:
    if len(body) < 3:
        raise Malformed("truncated Certificate message")
    total = int.from_bytes(body[0:3], "big")
    pos, end, out = 3, min(len(body), 3 + total), []
    while pos + 3 <= end:
        ln = int.from_bytes(body[pos:pos + 3], "big")
        if pos + 3 + ln > end:
            raise Malformed("certificate overruns the Certificate message")
        out.append(body[pos + 3:pos + 3 + ln])
        pos += 3 + ln
    return tuple(out)


def _parse_ske(body: bytes, cipher: int) -> dict:
    s = SUITES.get(cipher)
    if s is None or len(body) < 4:
        return {}
    if s.kx in ("DHE", "DH_anon"):
        plen = struct.unpack("!H", body[0:2])[0]
        p = int.from_bytes(body[2:2 + plen], "big")
        return {"dh_bits": p.bit_length()}
    if s.kx in ("ECDHE", "ECDH_anon") and body[0] == 3:
        return {"curve": struct.unpack("!H", body[1:3])[0]}
    if s.kx == "RSA" and s.export:
        mlen = struct.unpack("!H", body[0:2])[0]
        return {"export_rsa_bits": int.from_bytes(body[2:2 + mlen], "big").bit_length()}
    return {}


def read_answer(sock: socket.socket, *, timeout: float, full: bool = False) -> HelloResult:
    """Read the server's answer to a ClientHello already sent on ``sock``.

    With ``full`` (TLS <= 1.2) keep reading to ServerHelloDone to collect the certificate
    chain and the ServerKeyExchange parameters; otherwise stop at the ServerHello.
    At most ``MAX_ANSWER_BYTES`` are read; a malformed answer is a "protocol_error"."""
    rd = _Reader(sock, time.monotonic() + timeout)
    hs = b""
    hello: HelloResult | None = None
    extra: dict = {}
    certs: tuple[bytes, ...] = ()
    total = 0
    try:
        while True:
            if not rd.fill(5):
                break
            head = rd.buf[:5]
            ctype, rver, rlen = struct.unpack("!BHH", head)
            if ctype not in (20, 21, 22, 23) or (rver >> 8) != 3 or rlen > 18432:
                if hello is None:
                    snippet = rd.buf[:40].decode("latin-1").encode("unicode_escape").decode()
                    return HelloResult("garbage", detail=f"not a TLS record: {snippet!r}")
                break
            total += 5 + rlen
            if total > MAX_ANSWER_BYTES:
                raise Malformed(f"answer longer than {MAX_ANSWER_BYTES // 1024} KiB without finishing the handshake")
            if not rd.fill(5 + rlen):
                break
            rd.take(5)
            payload = rd.take(rlen)
            if ctype == 21:
                if hello is not None:
                    break
                level, desc = (payload + b"\x00\x00")[:2]
                return HelloResult("alert", alert=desc, detail=ALERT_NAMES.get(desc, f"alert {desc}"))
            if ctype != 22:
                if hello is not None:
                    break
                continue
            hs += payload
            while len(hs) >= 4:
                mtype = hs[0]
                mlen = int.from_bytes(hs[1:4], "big")
                if mlen > MAX_ANSWER_BYTES:
                    raise Malformed(f"handshake message of {mlen} bytes announced")
                if len(hs) < 4 + mlen:
                    break
                body, hs = hs[4:4 + mlen], hs[4 + mlen:]
                if mtype == 2 and hello is None:
                    version, cipher, hrr, group, comp = _parse_server_hello(body)
                    if comp != 0:
                        raise Malformed(f"ServerHello chose compression method {comp}, only 0 (none) was offered")
                    hello = HelloResult("accepted", version=version, cipher=cipher, curve=group,
                                        detail="HelloRetryRequest" if hrr else "")
                    if not full or version >= TLS1_3:
                        return hello
                elif hello is None:
                    raise Malformed(f"handshake message type {mtype} before the ServerHello")
                elif mtype == 11:
                    certs = _parse_certificates(body)
                elif mtype == 12:
                    extra = _parse_ske(body, hello.cipher)
                elif mtype == 14:
                    return _merge(hello, certs, extra)
    except ProbeTimeout:
        if hello is not None:
            return _merge(hello, certs, extra)
        return HelloResult("timeout", detail=f"no answer within {timeout:g} s")
    except Malformed as exc:
        return HelloResult("protocol_error", detail=str(exc))
    if hello is not None:
        return _merge(hello, certs, extra)
    return HelloResult("closed", detail="connection closed without an answer")


def _merge(hello: HelloResult, certs, extra) -> HelloResult:
    from dataclasses import replace

    return replace(hello, certs=certs, **extra)


def check_choice(r: HelloResult, version: int, suites) -> HelloResult:
    """A ServerHello must pick a version no higher than asked and one of the offered suites
    (valid for that version).  Anything else is a protocol error, never a finding: a server
    that "accepts" a NULL suite nobody offered has not shown that it offers NULL suites."""
    from dataclasses import replace

    if not r.accepted:
        return r
    offered = set(suites)
    why = None
    if r.version not in VERSIONS:
        why = f"ServerHello with unknown protocol version 0x{r.version:04X}"
    elif r.version > version:
        why = f"ServerHello for {VERSION_NAMES[r.version]} to a ClientHello that offered at most {VERSION_NAMES[version]}"
    elif r.cipher not in offered:
        why = f"ServerHello chose cipher {suite_name(r.cipher)}, which the ClientHello did not offer"
    else:
        s = SUITES.get(r.cipher)
        if s is not None and (s.kx == "TLS13") != (r.version == TLS1_3):
            why = f"ServerHello chose {s.name}, which is not valid for {VERSION_NAMES[r.version]}"
        elif s is not None and r.version < TLS1_2 and (s.aead or s.name.endswith(("SHA256", "SHA384"))):
            why = f"ServerHello chose {s.name}, which needs TLS 1.2, for {VERSION_NAMES[r.version]}"
    if why is None:
        return r
    return replace(r, outcome="protocol_error", detail=why)


def probe(sock: socket.socket, version: int, suites, *, sni: str | None = None, timeout: float = 10.0,
          full: bool = False) -> HelloResult:
    """Send one hand-built ClientHello on ``sock`` (ready for TLS) and read the answer.

    A ServerHello for a lower version than asked is still returned as "accepted"; callers
    compare ``result.version`` with what they asked for.  A ServerHello that picks what was
    not offered, or a malformed answer, is "protocol_error"; silence is "timeout"."""
    suites = tuple(suites)
    sock.settimeout(timeout)
    try:
        sock.sendall(client_hello(version, suites, sni=sni))
    except socket.timeout:
        return HelloResult("timeout", detail=f"could not send the ClientHello within {timeout:g} s")
    except OSError as exc:
        return HelloResult("closed", detail=f"send failed: {exc.strerror or exc}")
    return check_choice(read_answer(sock, timeout=timeout, full=full), version, suites)
