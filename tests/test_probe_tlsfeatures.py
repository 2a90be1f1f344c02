"""probe/tlsfeatures.py and probe/ncsc.py on their own: the NCSC tables, DH group
recognition by the prime (groups made by the real openssl), and the feature probes against
real `openssl s_server` instances on 127.0.0.1 (bare TLS: the probes run in-process, with an
implicit-TLS endpoint, since s_server speaks no SMTP for `mailca check`'s session)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import require, tool
from postfix_harness import free_port

from mailca.probe import hello as H
from mailca.probe import ncsc, tlsfeatures as T
from mailca.probe.smtp import Endpoint


def test_ncsc_suite_and_group_tables():
    assert ncsc.rate_suite("TLS_AES_256_GCM_SHA384") == ncsc.GOOD
    assert ncsc.rate_suite("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256") == ncsc.SUFFICIENT
    assert ncsc.rate_suite("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384") == ncsc.PHASE_OUT
    for bad in ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_AES_128_CCM_8_SHA256", "TLS_RSA_WITH_3DES_EDE_CBC_SHA"):
        assert ncsc.rate_suite(bad) == ncsc.INSUFFICIENT, bad
    # Every suite the probes know gets a rating.
    assert {ncsc.rate_suite(H.suite_name(c)) for c in H.ALL_SUITES + H.TLS13_SUITES} == set(ncsc.RATINGS)
    assert ncsc.rate_group(0x11EC) == ncsc.GOOD and ncsc.GROUP_NAMES[0x11EC] == "X25519MLKEM768"
    assert ncsc.rate_group(29) == ncsc.GOOD and ncsc.rate_group(21) == ncsc.PHASE_OUT
    assert ncsc.rate_group(256) == ncsc.INSUFFICIENT and ncsc.rate_group(257) == ncsc.PHASE_OUT
    assert ncsc.rate_group(19) == ncsc.INSUFFICIENT
    assert ncsc.rate_cert_key("RSA", 2048) == ncsc.PHASE_OUT and ncsc.rate_cert_key("RSA", 1024) == ncsc.INSUFFICIENT
    assert ncsc.rate_cert_key("ECDSA secp256r1", 256) == ncsc.GOOD
    assert ncsc.rate_cert_hash("sha1") == ncsc.INSUFFICIENT and ncsc.rate_cert_hash("sha256") == ncsc.GOOD


def _prime(pem: Path) -> tuple[bytes, bytes]:
    import warnings

    from cryptography.hazmat.primitives.serialization import load_pem_parameters

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nums = load_pem_parameters(pem.read_bytes()).parameter_numbers()
    return nums.p.to_bytes((nums.p.bit_length() + 7) // 8, "big"), nums.g.to_bytes((nums.g.bit_length() + 7) // 8, "big")


@pytest.mark.parametrize("group", ["ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192"])
def test_rfc7919_groups_recognised_by_prime(tmp_path, group):
    openssl = require("openssl")
    pem = tmp_path / "dh.pem"
    tool(openssl, "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", f"group:{group}", "-out", pem, check=True)
    p, g = _prime(pem)
    assert ncsc.dh_group_name(p) == group
    assert ncsc.dh_group_name(b"\x00" + p) == group  # a leading zero byte changes nothing
    assert ncsc.rate_dh(p, g) == (ncsc.INSUFFICIENT if group == "ffdhe2048" else ncsc.PHASE_OUT)


def test_self_generated_group_is_not_rfc7919(tmp_path):
    openssl = require("openssl")
    pem = tmp_path / "own.pem"
    tool(openssl, "dhparam", "-dsaparam", "-out", pem, "1024", check=True, timeout=120)
    p, g = _prime(pem)
    assert ncsc.dh_group_name(p) is None and ncsc.rate_dh(p, g) == ncsc.INSUFFICIENT


def test_feature_hello_knobs():
    raw = T.feature_hello(H.TLS1_2, (0xC02F,), compression=(1, 0), fallback=True, sni="mail.example.org")
    assert raw[0] == 22 and raw[5] == 1
    body = raw[9:]
    sid_end = 2 + 32 + 1 + body[34]
    n = int.from_bytes(body[sid_end:sid_end + 2], "big")
    suites = [int.from_bytes(body[sid_end + 2 + i:sid_end + 4 + i], "big") for i in range(0, n, 2)]
    assert suites == [0xC02F, 0x00FF, 0x5600]
    comp = body[sid_end + 2 + n:]
    assert comp[0] == 2 and comp[1:3] == b"\x01\x00"
    # TLS 1.3 without a key share for the group probes: the key_share list is empty.
    r13 = T.feature_hello(H.TLS1_3, H.TLS13_SUITES, groups=(24,), key_share=False)
    assert b"\x00\x33\x00\x02\x00\x00" in r13


# --- against real openssl s_server -------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    openssl = require("openssl")
    d = tmp_path_factory.mktemp("sserver")
    tool(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "key.pem", "-out", d / "cert.pem",
         "-days", "30", "-subj", "/CN=mail.example.org", "-addext", "subjectAltName=DNS:mail.example.org",
         check=True)
    tool(openssl, "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe3072",
         "-out", d / "ffdhe3072.pem", check=True)
    return d


def _s_server(certs: Path, *args: str):
    port = free_port()
    # stdin stays open: s_server ends a connection when its stdin reaches EOF.
    proc = subprocess.Popen([require("openssl"), "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
                             str(certs / "cert.pem"), "-key", str(certs / "key.pem"), "-quiet", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < end, "s_server did not start"
            time.sleep(0.05)
    return proc, port


def _features(port: int):
    ep = Endpoint("127.0.0.1", port, "submissions", 5.0, time.monotonic() + 30, 30.0)
    raw = T._collect(ep, "mail.example.org")
    return T.evaluate(raw, port=port, name="mail.example.org", chain=[], chain_facts=[])


@pytest.fixture(scope="module")
def lax(certs):
    """Client renegotiation allowed, early data on, an ffdhe3072 DHE group, no tickets."""
    proc, port = _s_server(certs, "-client_renegotiation", "-early_data", "-dhparam", str(certs / "ffdhe3072.pem"),
                           "-groups", "X25519:P-384:ffdhe3072")
    try:
        yield _features(port)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def default(certs):
    """OpenSSL 3's defaults: client renegotiation refused, no early data."""
    proc, port = _s_server(certs, "-cipher", "ECDHE+AESGCM:DHE+AESGCM")
    try:
        yield _features(port)
    finally:
        proc.kill()
        proc.wait()


def test_lax_server(lax):
    facts, fs = lax
    ids = {f.id: f for f in fs}
    assert facts["client_renegotiation"] is True and "tls.client_renegotiation" in ids
    assert facts["early_data"]["accepted"] is True and ids["tls.early_data"].severity == "MEDIUM"
    assert facts["dhe_group"] == {"bits": 3072, "group": "ffdhe3072", "generator": 2, "ncsc": "phase-out"}
    assert "kex.dh_custom" not in ids and "kex.dh_ffdhe2048" not in ids
    # -groups limits the supported groups: exactly these, each found by its own probe.
    assert facts["groups"] == {"secp384r1": "good", "x25519": "good", "ffdhe3072": "phase-out"}
    assert ids["kex.group_phase_out"].detail == "ffdhe3072"
    assert facts["resumption"]["ticket"] is True
    assert facts["secure_renegotiation"] is True and facts["extended_master_secret"] is True
    assert facts["compression"] is False and "tls.compression" not in ids
    assert facts["fallback_scsv"] is True  # TLS 1.2 flagged as a fallback from 1.3: refused
    assert facts["no_sni_certificate"]["matches_name"] is True
    # Static RSA suites are on by default in s_server: insufficient, and named.
    assert facts["rsa_key_exchange"] is True and "kex.rsa" in ids
    assert "TLS_RSA_WITH_AES_256_GCM_SHA384" in facts["ncsc_suites"]["insufficient"]


def test_default_server(default):
    facts, fs = default
    ids = {f.id for f in fs}
    assert facts["client_renegotiation"] is False and "tls.client_renegotiation" not in ids
    assert facts["early_data"] == {"max_early_data": 0, "accepted": False} and "tls.early_data" not in ids
    # TLS 1.2 suites: exactly the ones the -cipher string allows (RSA certificate), each rated.
    assert sorted(facts["ncsc_suites"]["sufficient"]) == [
        "TLS_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]
    assert sorted(facts["ncsc_suites"]["phase-out"]) == [
        "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384"]
    assert facts["ncsc_suites"]["insufficient"] == [] and facts["rsa_key_exchange"] is False
    # OpenSSL 3 with no -dhparam (DH "auto", also what Postfix's "auto" does) picks the RFC 3526
    # MODP group of the key's strength: well known, but no RFC 7919 group, so NCSC-insufficient.
    assert facts["dhe_group"]["group"] == "RFC 3526 2048-bit MODP" and facts["dhe_group"]["ncsc"] == "insufficient"
    assert "kex.dh_custom" in ids and "kex.dh_ffdhe2048" not in ids
    assert [f.detail for f in fs if f.id == "kex.dh_custom"] == ["TLS 1.2 DHE uses the well-known RFC 3526 2048-bit MODP"]
    # OpenSSL's default TLS 1.3 groups include ffdhe2048: insufficient per NCSC-NL.
    # Supported but never picked for a usual offer: LOW, not MEDIUM.
    assert facts["groups"]["ffdhe2048"] == "insufficient" and facts["preferred_group"] == "x25519"
    assert [(f.severity, f.detail) for f in fs if f.id == "kex.group_insufficient"] == [
        ("LOW", "ffdhe2048 (supported; the server picks x25519 when a client offers the usual groups)")]
    assert "X25519MLKEM768" not in facts["groups"]  # OpenSSL 3.0 has no ML-KEM


# --- what no stock server does any more: a purpose-built pre-2010 TLS 1.2 stack ---------------

def _pre_rfc5746_stack(cert_der: bytes):
    """An on_probe hook for tests/test_probe_hostile.py's Hostile server: hand-built TLS 1.2
    ClientHellos get the answer of an old TLS stack -- it picks the first offered suite, takes
    DEFLATE when offered, knows neither renegotiation_info (RFC 5746) nor TLS_FALLBACK_SCSV,
    but does Extended Master Secret; TLS 1.3 and older versions go to the real TLS server."""
    import struct

    def answer(sock, hello):
        if hello["asked"] != 0x0303 or 43 in hello["exts"]:
            return True
        data = sock.recv(65536)
        body = data[9:]
        pos = 34
        pos += 1 + body[pos]
        pos += 2 + struct.unpack("!H", body[pos:pos + 2])[0]
        comps = body[pos + 1:pos + 1 + body[pos]]
        cipher = next(s for s in hello["suites"] if s != 0x5600)
        exts = struct.pack("!HH", 23, 0)  # EMS, and no 0xff01
        sh = (struct.pack("!H", 0x0303) + b"\x22" * 32 + b"\x00" + struct.pack("!HB", cipher, 1 if 1 in comps else 0)
              + struct.pack("!H", len(exts)) + exts)
        certs = len(cert_der).to_bytes(3, "big") + cert_der
        msgs = [b"\x02" + len(sh).to_bytes(3, "big") + sh,
                b"\x0b" + (len(certs) + 3).to_bytes(3, "big") + len(certs).to_bytes(3, "big") + certs,
                b"\x0e\x00\x00\x00"]
        sock.sendall(b"".join(struct.pack("!BHH", 22, 0x0303, len(m)) + m for m in msgs))
        return None

    return answer


def test_compression_and_no_secure_renegotiation_on_an_old_stack(tmp_path):
    """mailca check end to end: TLS compression (HIGH), no secure renegotiation (HIGH) and no
    TLS_FALLBACK_SCSV (MEDIUM) are reported, from the raw ServerHellos."""
    import json

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from conftest import make_ca, run
    from test_probe_hostile import Hostile, _ctx

    ca = make_ca(tmp_path / "store", "example.org")
    ca.issue("mail.example.org")
    leaf = {"dir": ca.live("mail.example.org"), "root": ca.root}
    der = x509.load_pem_x509_certificate((leaf["dir"] / "cert.pem").read_bytes()).public_bytes(Encoding.DER)
    with Hostile(_ctx(leaf), on_probe=_pre_rfc5746_stack(der)) as srv:
        r = run(["check", "127.0.0.1", "--port", srv.port, "--name", "mail.example.org", "--ca", ca.root,
                 "--timeout", "5", "--json"])
    rep = json.loads(r.stdout)
    port = rep["ports"][0]
    assert port["error"] is None, port["error"]
    feat, ids = port["tls_features"], {f["id"]: f for f in port["findings"]}
    assert feat["compression"] is True and ids["tls.compression"]["severity"] == "HIGH"
    assert "method 1 (DEFLATE)" in ids["tls.compression"]["detail"]
    assert feat["secure_renegotiation"] is False and ids["tls.no_secure_renegotiation"]["severity"] == "HIGH"
    assert feat["extended_master_secret"] is True and "tls.no_ems" not in ids
    # TLS 1.3 (the real server) is the highest version: a TLS 1.2 hello flagged as a fallback
    # must be refused, this stack accepts it.
    assert feat["fallback_scsv"] is False and ids["tls.no_fallback_scsv"]["severity"] == "MEDIUM"
    assert "NO_COMPRESSION" in ids["tls.compression"]["fix"] and "no_compression" in ids["tls.compression"]["fix"]
