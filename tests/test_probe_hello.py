"""The hand-built ClientHello probes against real `openssl s_server` instances (pure TLS, no
SMTP): protocol detection, cipher classes, DH group size, ECDHE group, the certificate as
sent, and a peer that is not TLS at all."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from conftest import require, tool
from mailca.probe import hello as H

pytestmark = pytest.mark.interop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# RFC 2409 Oakley group 2 (1024-bit MODP): a well-known weak group, so no slow dhparam run.
DH1024_PEM = """-----BEGIN DH PARAMETERS-----
MIGHAoGBAP//////////yQ/aoiFowjTExmKLgNwc0SkCTgiKZ8x0Agu+pjsTmyJR
Sgh5jjQE3e+VGbPNOkMbMCsKbfJfFDdP4TVtbVHCReSFtXZiXn7G9ExC6aY37WsL
/1y29Aa37e44a/taiZ+lrp8kEXxLH+ZJKGZR7OZTgf//////////AgEC
-----END DH PARAMETERS-----
"""


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    """A self-signed RSA certificate and a 1024-bit DH group."""
    openssl = require("openssl")
    d = tmp_path_factory.mktemp("hello")
    tool(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "key.pem", "-out",
         d / "cert.pem", "-days", "30", "-subj", "/CN=probe.example.org", check=True)
    (d / "dh1024.pem").write_text(DH1024_PEM)
    return d


class SServer:
    def __init__(self, material, *args):
        self.port = _free_port()
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-cert", str(material / "cert.pem"),
             "-key", str(material / "key.pem"), "-quiet", "-naccept", "200", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read().decode())
                time.sleep(0.05)
        raise RuntimeError("s_server did not start")

    def probe(self, version, suites, **kw) -> H.HelloResult:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            return H.probe(s, version, suites, timeout=5, **kw)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def weak_tls1(material):
    """TLS 1.0 only, everything including NULL and anonymous suites, 1024-bit DH."""
    s = SServer(material, "-tls1", "-cipher", "ALL:eNULL:@SECLEVEL=0", "-dhparam", str(material / "dh1024.pem"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def modern(material):
    """OpenSSL defaults: TLS 1.2 and 1.3, no weak suites."""
    s = SServer(material)
    yield s
    s.stop()


def test_protocol_probes_tls1_only_server(weak_tls1):
    got = {}
    for v in H.VERSIONS:
        r = weak_tls1.probe(v, H.TLS13_SUITES if v == H.TLS1_3 else H.ALL_SUITES)
        got[H.VERSION_NAMES[v]] = r.accepted and r.version == v
    assert got == {"SSLv3": False, "TLSv1.0": True, "TLSv1.1": False, "TLSv1.2": False, "TLSv1.3": False}
    # A TLS 1.2 hello is answered with a TLS 1.0 ServerHello (a downgrade, not acceptance of 1.2).
    r = weak_tls1.probe(H.TLS1_2, H.ALL_SUITES)
    assert r.accepted and r.version == H.TLS1_0
    # OpenSSL 3 has no SSLv3 at all: it refuses with an alert.
    r = weak_tls1.probe(H.SSL3, H.ALL_SUITES)
    assert r.outcome == "alert"


def test_cipher_classes_on_weak_server(weak_tls1):
    offered = {}
    for k, codes in H.CIPHER_CLASSES.items():
        r = weak_tls1.probe(H.TLS1_0, codes)
        offered[k] = r.accepted
        if r.accepted:
            assert r.cipher in codes, (k, r.cipher_name)
    # OpenSSL 3 keeps NULL, anonymous and CBC suites at SECLEVEL 0 but has no export/DES/RC4/3DES.
    assert offered == {"NULL": True, "aNULL": True, "EXPORT": False, "LOW": False, "3DES": False,
                       "RC4": False, "CBC": True, "AEAD": False}


def test_dh_group_size_from_server_key_exchange(weak_tls1):
    adh = weak_tls1.probe(H.TLS1_0, H.ADH_SUITES, full=True)
    assert adh.accepted and H.suite(adh.cipher).anon
    assert adh.dh_bits == 1024
    assert adh.certs == ()  # anonymous: no certificate
    dhe = weak_tls1.probe(H.TLS1_0, H.DHE_SUITES, full=True)
    assert dhe.accepted and dhe.dh_bits == 1024


def test_certificate_as_sent(weak_tls1, material):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    r = weak_tls1.probe(H.TLS1_0, H.FS_SUITES, full=True)
    assert r.accepted
    sent = x509.load_pem_x509_certificate((material / "cert.pem").read_bytes())
    assert r.certs == (sent.public_bytes(serialization.Encoding.DER),)


def test_modern_server(modern):
    r13 = modern.probe(H.TLS1_3, H.TLS13_SUITES)
    assert r13.accepted and r13.version == H.TLS1_3 and r13.cipher in H.TLS13_SUITES
    assert H.GROUP_NAMES[r13.curve] == "x25519"
    for v in (H.TLS1_0, H.TLS1_1):
        r = modern.probe(v, H.ALL_SUITES)
        assert not (r.accepted and r.version == v), H.VERSION_NAMES[v]
    r12 = modern.probe(H.TLS1_2, H.ALL_SUITES, full=True)
    assert r12.accepted and r12.version == H.TLS1_2
    assert H.suite(r12.cipher).forward_secret and H.suite(r12.cipher).aead
    assert r12.curve in H.GROUP_NAMES
    for k in ("NULL", "aNULL", "EXPORT", "LOW", "RC4"):
        r = modern.probe(H.TLS1_2, H.CIPHER_CLASSES[k])
        assert r.outcome == "alert" and r.alert == 40, (k, r)


def test_not_tls_is_garbage_and_silence_times_out():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    import threading

    def serve():
        c, _ = srv.accept()
        c.recv(1024)
        c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        time.sleep(0.5)
        c.close()
        c2, _ = srv.accept()  # stalls: never answers
        time.sleep(3)
        c2.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        r = H.probe(s, H.TLS1_2, H.ALL_SUITES, timeout=3)
    assert r.outcome == "garbage" and "HTTP/1.1 400" in r.detail
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        r = H.probe(s, H.TLS1_2, H.ALL_SUITES, timeout=1)
    # Silence is "no answer" (never "accepted"), within the timeout (+1 s margin for a busy machine).
    assert r.outcome == "timeout" and not r.accepted
    assert time.monotonic() - t0 < 2
    srv.close()


def test_cipher_tables():
    # Every class member really has the property the class is named after.
    for c in H.CIPHER_CLASSES["NULL"]:
        assert "_NULL_" in H.CIPHER_NAMES[c] or H.CIPHER_NAMES[c].endswith("NULL_SHA")
    for c in H.CIPHER_CLASSES["aNULL"]:
        assert "_anon_" in H.CIPHER_NAMES[c]
    for c in H.CIPHER_CLASSES["EXPORT"]:
        assert "EXPORT" in H.CIPHER_NAMES[c]
    for c in H.CIPHER_CLASSES["RC4"]:
        assert "RC4_128" in H.CIPHER_NAMES[c]
    assert 0x000A in H.CIPHER_CLASSES["3DES"] and 0x0009 in H.CIPHER_CLASSES["LOW"]
    assert 0xC02F in H.CIPHER_CLASSES["AEAD"] and 0xC02F in H.FS_SUITES
    assert 0x0034 in H.ADH_SUITES and 0x0033 in H.DHE_SUITES
    assert set(H.TLS13_SUITES) == {0x1301, 0x1302, 0x1303, 0x1304, 0x1305}
    # The hello is a well-formed record: type, version, lengths add up.
    rec = H.client_hello(H.TLS1_2, H.ALL_SUITES, sni="mail.example.org")
    assert rec[0] == 22 and rec[1:3] == b"\x03\x01"
    assert int.from_bytes(rec[3:5], "big") == len(rec) - 5
    assert int.from_bytes(rec[6:9], "big") == len(rec) - 9
    assert b"mail.example.org" in rec
    assert b"127.0.0.1" not in H.client_hello(H.TLS1_2, H.ALL_SUITES, sni="127.0.0.1")  # no SNI for IPs
