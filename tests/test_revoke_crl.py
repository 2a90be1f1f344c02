"""mailca revoke / mailca crl, checked with real verifiers: openssl crl -verify, openssl verify
-crl_check (and -crl_download from a CRL distribution point served on 127.0.0.1), GnuTLS
certtool --verify-crl, pkilint's lint_crl, and cryptography's CRL parser."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import random
import shutil
import threading
from pathlib import Path

import pytest

from conftest import make_ca, require, tool, mailca_argv

REASONS_SEEN = {"keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged", "privilegeWithdrawn"}


# ----------------------------------------------------------------- helpers
def chain_file(ca, tmp_path: Path) -> Path:
    p = tmp_path / "chain.pem"
    p.write_bytes(ca.root.read_bytes() + ca.intermediate.read_bytes())
    return p


def crl_pem(ca) -> Path:
    return ca.dir / "crl" / "intermediate.crl.pem"


def load_crl(path: Path):
    from cryptography import x509

    data = path.read_bytes()
    return x509.load_pem_x509_crl(data) if data.startswith(b"-----") else x509.load_der_x509_crl(data)


def intermediate_pub(ca):
    from cryptography import x509

    return x509.load_pem_x509_certificate(ca.intermediate.read_bytes()).public_key()


def index(ca) -> list[dict]:
    return json.loads((ca.dir / "index.json").read_text())["certs"]


def entry(ca, serial: str) -> dict:
    return next(e for e in index(ca) if e["serial"] == serial)


def openssl_verify(ca, cert: Path, crl: Path | None = None, *extra):
    args = ["openssl", "verify", "-CAfile", ca.root, "-untrusted", ca.intermediate]
    if crl is not None:
        args += ["-crl_check", "-CRLfile", crl]
    return tool(*args, *extra, cert)


def crl_verify_ok(ca, tmp_path, path: Path, inform: str = "PEM") -> None:
    require("openssl")
    r = tool("openssl", "crl", "-in", path, "-inform", inform, "-CAfile", chain_file(ca, tmp_path), "-noout", "-verify")
    assert r.returncode == 0 and "verify OK" in (r.stdout + r.stderr), r.stdout + r.stderr


def reason_of(revoked) -> str:
    from cryptography import x509

    try:
        return revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
    except x509.ExtensionNotFound:
        return "unspecified"


# ------------------------------------------------------------------- tests
def test_revoke_by_name_then_openssl_rejects_only_the_revoked(ca, tmp_path):
    require("openssl")
    a = ca.issue("a.example.org")[0]
    b = ca.issue("b.example.org", "--san", "smtp.example.org")[0]
    a_cert = ca.live("a.example.org") / "cert.pem"
    b_cert = ca.live("b.example.org") / "cert.pem"
    live_before = os.readlink(ca.live("a.example.org"))

    r = ca.ok("revoke", "a.example.org", "--reason", "KEYCOMPROMISE", "--json")
    res = json.loads(r.stdout)
    assert [x["serial"] for x in res["revoked"]] == [a["serial"]]
    assert res["revoked"][0]["reason"] == "keyCompromise"

    e = entry(ca, a["serial"])
    assert e["status"] == "revoked" and e["revocation_reason"] == "keyCompromise"
    assert dt.datetime.strptime(e["revoked_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert entry(ca, b["serial"])["status"] == "active"
    # live/ is left on the revoked certificate (no silent fall-back)
    assert os.readlink(ca.live("a.example.org")) == live_before

    # the CRL that revoke wrote: openssl accepts it, and uses it
    crl_verify_ok(ca, tmp_path, crl_pem(ca))
    bad = openssl_verify(ca, a_cert, crl_pem(ca))
    assert bad.returncode != 0 and "certificate revoked" in (bad.stdout + bad.stderr), bad.stdout + bad.stderr
    good = openssl_verify(ca, b_cert, crl_pem(ca))
    assert good.returncode == 0 and f"{b_cert}: OK" in good.stdout, good.stdout + good.stderr
    # without a CRL openssl has no way to know: the revoked one still verifies
    assert openssl_verify(ca, a_cert).returncode == 0

    # cryptography: signature, the single entry, its reason and date
    crl = load_crl(crl_pem(ca))
    assert crl.is_signature_valid(intermediate_pub(ca))
    assert [rc.serial_number for rc in crl] == [int(a["serial"], 16)]
    rc = crl.get_revoked_certificate_by_serial_number(int(a["serial"], 16))
    assert reason_of(rc) == "keyCompromise"
    assert rc.revocation_date_utc.strftime("%Y-%m-%dT%H:%M:%SZ") == e["revoked_at"]

    # default profile: no CRL distribution point in issued certificates
    txt = tool("openssl", "x509", "-in", b_cert, "-noout", "-text").stdout
    assert "CRL Distribution Points" not in txt


def test_crl_passes_gnutls_and_pkilint(ca, tmp_path):
    require("certtool")
    ca.issue("a.example.org")
    ca.issue("b.example.org")
    ca.ok("revoke", "a.example.org", "--reason", "superseded")
    ca.ok("revoke", "b.example.org")  # unspecified: no reasonCode extension (RFC 5280 5.3.1)
    r = tool("certtool", "--verify-crl", "--load-ca-certificate", ca.intermediate, "--infile", crl_pem(ca))
    assert r.returncode == 0 and "Verified. The certificate is trusted" in r.stdout, r.stdout + r.stderr
    # a CRL checked against the wrong issuer must fail (the check can fail)
    r = tool("certtool", "--verify-crl", "--load-ca-certificate", ca.root, "--infile", crl_pem(ca))
    assert "Not verified" in r.stdout and "issuer is unknown" in r.stdout, r.stdout + r.stderr
    lint = shutil.which("lint_crl") or str(Path(os.sys.executable).with_name("lint_crl"))
    for prof in ("PKIX", "BR"):
        r = tool(lint, "lint", "-t", "CRL", "-p", prof, "-s", "NOTICE", crl_pem(ca))
        assert r.returncode == 0 and r.stdout.strip() == "", f"pkilint {prof}: {r.stdout}{r.stderr}"
    crl = load_crl(crl_pem(ca))
    from cryptography import x509

    for rc in crl:
        if reason_of(rc) == "unspecified":
            with pytest.raises(x509.ExtensionNotFound):
                rc.extensions.get_extension_for_class(x509.CRLReason)


def test_revoke_by_serial_in_any_spelling_revokes_exactly_that_version(ca, tmp_path):
    first = ca.issue("mail.example.org")[0]
    second = ca.issue("mail.example.org", "--replace")[0]  # version 2, a new key
    assert first["version"] == 1 and second["version"] == 2
    hexs = first["serial"]
    colon = ":".join(hexs.rjust(len(hexs) + len(hexs) % 2, "0")[i:i + 2] for i in range(0, len(hexs) + len(hexs) % 2, 2))
    r = ca.ok("revoke", colon.upper(), "--reason", "superseded", "--json")
    assert [x["serial"] for x in json.loads(r.stdout)["revoked"]] == [hexs]
    assert entry(ca, hexs)["status"] == "revoked"
    assert entry(ca, second["serial"])["status"] == "active"
    # 0x prefix and upper case name the same certificate.  Revoking it again is idempotent
    # (a re-run after a crash completes: it refreshes the CRL), a different reason is refused.
    number = json.loads((ca.dir / "crl" / "state.json").read_text())["crl_number"]
    r = ca.ok("revoke", "0x" + hexs.upper(), "--json")
    res = json.loads(r.stdout)
    assert res["revoked"] == [] and [x["serial"] for x in res["already_revoked"]] == [hexs]
    assert res["crl"]["crl_number"] == number + 1
    assert entry(ca, hexs)["revocation_reason"] == "superseded"
    r = ca.run("revoke", hexs, "--reason", "keyCompromise")
    assert r.returncode == 2 and "already revoked as superseded" in r.stderr
    # the current version is still valid with the CRL
    crl_verify_ok(ca, tmp_path, crl_pem(ca))
    good = openssl_verify(ca, ca.live("mail.example.org") / "cert.pem", crl_pem(ca))
    assert good.returncode == 0, good.stdout + good.stderr


def test_dual_pair_needs_key_type(ca, tmp_path):
    pair = {c["key_type"]: c for c in ca.issue("mx.example.org", "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")}
    r = ca.run("revoke", "mx.example.org")
    assert r.returncode == 2 and "--key-type" in r.stderr
    ca.ok("revoke", "mx.example.org", "--key-type", "RSA-2048", "--reason", "cessationOfOperation")
    assert entry(ca, pair["rsa-2048"]["serial"])["status"] == "revoked"
    assert entry(ca, pair["ecdsa-p256"]["serial"])["status"] == "active"
    rsa_cert = ca.live("mx.example.org", "rsa-2048") / "cert.pem"
    ec_cert = ca.live("mx.example.org", "ecdsa-p256") / "cert.pem"
    r = openssl_verify(ca, rsa_cert, crl_pem(ca))
    assert r.returncode != 0 and "certificate revoked" in r.stdout + r.stderr
    assert openssl_verify(ca, ec_cert, crl_pem(ca)).returncode == 0
    # --all-key-types takes what is left, and notes the one already revoked
    r = ca.ok("revoke", "mx.example.org", "--all-key-types", "--json")
    res = json.loads(r.stdout)
    assert [x["key_type"] for x in res["revoked"]] == ["ecdsa-p256"]
    assert any("already revoked" in n for n in res["notes"])
    assert len(load_crl(crl_pem(ca))) == 2


def test_key_compromise_revokes_every_certificate_with_that_key(ca, tmp_path):
    first = ca.issue("mail.example.org")[0]
    ca.ok("renew", "mail.example.org", "--force")  # keeps the key by default
    second = index(ca)[-1]
    assert second["version"] == 2 and second["spki_sha256"] == first["spki_sha256"]
    other = ca.issue("other.example.org")[0]
    r = ca.ok("revoke", "mail.example.org", "--reason", "keyCompromise", "--json")
    rows = {x["serial"]: x for x in json.loads(r.stdout)["revoked"]}
    assert set(rows) == {first["serial"], second["serial"]}
    assert rows[first["serial"]]["same_key"] and not rows[second["serial"]]["same_key"]
    r = ca.ok("revoke", "mail.example.org", "--dry-run")
    assert "already revoked" in r.stdout and "Would revoke" not in r.stdout
    crl = load_crl(crl_pem(ca))
    assert {rc.serial_number for rc in crl} == {int(first["serial"], 16), int(second["serial"], 16)}
    assert entry(ca, other["serial"])["status"] == "active"
    # superseded (not keyCompromise) does not spread to the same key
    ca.ok("renew", "other.example.org", "--force")
    r = ca.ok("revoke", "other.example.org", "--reason", "superseded", "--json")
    assert len(json.loads(r.stdout)["revoked"]) == 1


def test_dry_run_changes_nothing(ca):
    from conftest import snapshot

    ca.issue("a.example.org")
    before = snapshot(ca.dir)
    r = ca.ok("revoke", "a.example.org", "--reason", "superseded", "--dry-run")
    assert "Would revoke a.example.org" in r.stdout and "Nothing was changed" in r.stdout
    assert snapshot(ca.dir) == before


def test_crl_number_grows_times_and_out_formats(ca, tmp_path):
    require("openssl")
    from conftest import T0, base_env, iso

    when = T0 + dt.timedelta(days=30, hours=3)
    env_now = iso(when)

    from cryptography.hazmat.primitives.serialization import Encoding

    env = base_env(MAILCA_NOW=env_now)
    a = ca.issue("a.example.org")[0]
    ca.ok("revoke", a["serial"], env=env)
    numbers = []
    for out, fmt in ((tmp_path / "ca.crl", None), (tmp_path / "ca.pem", None), (tmp_path / "x.bin", "der")):
        args = ["crl", "--json", "--out", out] + (["--format", fmt] if fmt else [])
        res = json.loads(ca.ok(*args, env=env).stdout)
        numbers.append(res["crl_number"])
        assert res["out"] == str(out) and res["revoked"] == 1
        data = out.read_bytes()
        assert data.startswith(b"-----BEGIN X509 CRL-----") == (res["out_format"] == "pem")
        assert res["out_format"] == ("pem" if out.suffix == ".pem" else "der")
        crl_verify_ok(ca, tmp_path, out, "PEM" if res["out_format"] == "pem" else "DER")
        # the store copy is the same CRL
        assert load_crl(out).public_bytes(Encoding.DER) == (ca.dir / "crl" / "intermediate.crl.der").read_bytes()
    assert numbers == sorted(numbers) and len(set(numbers)) == 3 and numbers[0] == 2  # revoke wrote #1
    crl = load_crl(crl_pem(ca))
    from cryptography import x509

    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == numbers[-1]
    assert crl.last_update_utc == when
    assert crl.next_update_utc == when + dt.timedelta(days=7)  # default next_update_days = 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    inter = x509.load_pem_x509_certificate(ca.intermediate.read_bytes())
    assert aki == inter.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    state = json.loads((ca.dir / "crl" / "state.json").read_text())
    assert state["crl_number"] == numbers[-1]
    # the number keeps growing even when state.json is lost: it continues after the CRL on disk
    (ca.dir / "crl" / "state.json").unlink()
    res = json.loads(ca.ok("crl", "--json").stdout)
    assert res["crl_number"] == numbers[-1] + 1


def test_empty_crl_and_rsa_and_p384_cas(tmp_path):
    require("openssl")
    for kt, alg in (("ecdsa-p256", "ecdsa-with-SHA256"), ("rsa-2048", "sha256WithRSAEncryption"),
                    ("ecdsa-p384", "ecdsa-with-SHA384")):
        c = make_ca(tmp_path / kt, "example.org", extra=["--key-type", kt, "--no-root-passphrase"])
        c.ok("crl")
        txt = tool("openssl", "crl", "-in", crl_pem(c), "-noout", "-text").stdout
        assert "No Revoked Certificates" in txt and alg in txt, txt
        crl_verify_ok(c, tmp_path, crl_pem(c))
        if kt != "ecdsa-p256":
            leaf = c.issue("mail.example.org")[0]
            c.ok("revoke", leaf["serial"], "--reason", "privilegeWithdrawn")
            crl_verify_ok(c, tmp_path, crl_pem(c))
            r = openssl_verify(c, c.live("mail.example.org") / "cert.pem", crl_pem(c))
            assert "certificate revoked" in r.stdout + r.stderr
            assert reason_of(next(iter(load_crl(crl_pem(c))))) == "privilegeWithdrawn"


def test_large_crl_long_lengths_and_generalized_time(ca, tmp_path):
    """5,000 extra entries in the journal (multi-byte DER lengths), revocation dates after
    2049 (GeneralizedTime) - openssl still finds the one real revoked certificate."""
    require("openssl")
    leaf = ca.issue("mail.example.org")[0]
    keep = ca.issue("keep.example.org")[0]
    ca.ok("revoke", "mail.example.org", "--reason", "affiliationChanged")
    journal = ca.dir / "crl" / "revocations.tsv"
    rng = random.Random(6)
    extra = {}
    lines = []
    for i in range(5000):
        s = rng.getrandbits(159) | 1
        when = f"{2030 + i % 40}-0{1 + i % 9}-1{i % 10}T0{i % 10}:1{i % 6}:2{i % 10}Z"  # 2030..2069
        reason = sorted(REASONS_SEEN | {"unspecified"})[i % 6]
        extra[s] = (when, reason)
        lines.append(f"{s:x}\t{when}\t{reason}\tbulk{i}.example.org\tecdsa-p256\t1\n")
    journal.write_text(journal.read_text() + "".join(lines))
    ca.ok("crl")
    crl_verify_ok(ca, tmp_path, crl_pem(ca))
    r = openssl_verify(ca, ca.live("mail.example.org") / "cert.pem", crl_pem(ca))
    assert "certificate revoked" in r.stdout + r.stderr
    assert openssl_verify(ca, ca.live("keep.example.org") / "cert.pem", crl_pem(ca)).returncode == 0
    crl = load_crl(crl_pem(ca))
    assert crl.is_signature_valid(intermediate_pub(ca))
    assert len(crl) == 5001
    for s, (when, reason) in list(extra.items())[::250]:
        rc = crl.get_revoked_certificate_by_serial_number(s)
        assert rc.revocation_date_utc.strftime("%Y-%m-%dT%H:%M:%SZ") == when
        assert reason_of(rc) == reason
    # RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 on
    der = (ca.dir / "crl" / "intermediate.crl.der").read_bytes()
    assert b"\x17\x0d49" in der and b"\x18\x0f2069" in der
    assert b"\x18\x0f204" not in der and b"\x17\x0d690" not in der
    from mailca.lifecycle import crl as crlmod

    assert crlmod.der_time_from_iso("2049-12-31T23:59:59Z") == b"\x17\x0d491231235959Z"
    assert crlmod.der_time_from_iso("2050-01-01T00:00:00Z") == b"\x18\x0f20500101000000Z"
    assert keep["serial"] and leaf["serial"]


def test_crash_between_journal_and_index_is_reconciled(ca, tmp_path):
    """Journal first, index second: a crash in between (simulated by restoring the old
    index) still lists the certificate on the CRL, and the next revoke repairs the index."""
    a = ca.issue("a.example.org")[0]
    ca.issue("b.example.org")
    saved = (ca.dir / "index.json").read_bytes()
    ca.ok("revoke", "a.example.org", "--reason", "superseded")
    (ca.dir / "index.json").write_bytes(saved)  # as if killed before the index was replaced
    assert entry(ca, a["serial"])["status"] == "active"
    ca.ok("crl")
    assert int(a["serial"], 16) in {rc.serial_number for rc in load_crl(crl_pem(ca))}
    r = ca.ok("revoke", "b.example.org", "--json")
    assert any("re-applied" in n and a["serial"] in n for n in json.loads(r.stdout)["notes"])
    assert entry(ca, a["serial"])["status"] == "revoked"
    assert entry(ca, a["serial"])["revocation_reason"] == "superseded"
    # and the journal is rebuilt from the index when it is missing
    (ca.dir / "crl" / "revocations.tsv").unlink()
    ca.ok("crl")
    assert len(load_crl(crl_pem(ca))) == 2
    assert (ca.dir / "crl" / "revocations.tsv").exists()


def test_doctor_is_happy_after_revoking_the_current_version(ca):
    ca.issue("mail.example.org")
    ca.issue("mail.example.org", "--replace")  # v2 current, v1 superseded but valid
    ca.ok("revoke", "mail.example.org", "--reason", "superseded")
    assert os.readlink(ca.live("mail.example.org")) == "archive/0002"
    r = ca.run("doctor", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    findings = json.loads(r.stdout).get("findings", [])
    assert not [f for f in findings if "live" in json.dumps(f)], findings
    ca.ok("doctor", "--fix")
    assert os.readlink(ca.live("mail.example.org")) == "archive/0002"  # not moved back to v1
    # a revoked lineage is not renewed; a new issue moves live forward
    ca.ok("issue", "mail.example.org")
    assert os.readlink(ca.live("mail.example.org")) == "archive/0003"


class _CRLHandler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self):  # noqa: N802
        if self.path != "/ca.crl":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/pkix-crl")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *a):
        pass


def test_crl_distribution_point_from_profile_and_openssl_crl_download(tmp_path):
    """profile crl.distribution_point -> CDP extension in issued certificates; openssl
    verify -crl_download fetches the CRL from it (an HTTP server on 127.0.0.1)."""
    require("openssl")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CRLHandler)
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}/ca.crl"
    prof = tmp_path / "cdp.toml"
    prof.write_text(f'[crl]\ndistribution_point = "{url}"\nnext_update_days = 3\n')
    c = make_ca(tmp_path / "store", "example.org", extra=["--profile", prof, "--no-root-passphrase"])
    bad = c.issue("bad.example.org")[0]
    c.issue("good.example.org")
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((c.live("bad.example.org") / "cert.pem").read_bytes())
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert not cdp.critical and cdp.value[0].full_name[0].value == url
    c.ok("revoke", "bad.example.org", "--reason", "keyCompromise")
    out = tmp_path / "www" / "ca.crl"
    out.parent.mkdir()
    res = json.loads(c.ok("crl", "--out", out, "--json").stdout)
    assert res["out_format"] == "der"
    crl = load_crl(out)
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(days=3)
    _CRLHandler.payload = out.read_bytes()
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        r = openssl_verify(c, c.live("bad.example.org") / "cert.pem", None, "-crl_check", "-crl_download")
        assert r.returncode != 0 and "certificate revoked" in (r.stdout + r.stderr), r.stdout + r.stderr
        r = openssl_verify(c, c.live("good.example.org") / "cert.pem", None, "-crl_check", "-crl_download")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert bad["serial"]


def test_help_teaches():
    from conftest import run

    for cmd, words in (("revoke", ["keyCompromise", "--key-type", "Examples"]), ("crl", ["--out", "Examples", "openssl crl"])):
        r = run([cmd, "--help"])
        assert r.returncode == 0 and all(w in r.stdout for w in words), r.stdout


def test_concurrent_crl_runs_get_distinct_growing_numbers(ca):
    """The CRL number is taken under the store lock: parallel runs never share one."""
    import subprocess
    import sys

    from conftest import base_env

    ca.issue("a.example.org")
    ca.ok("revoke", "a.example.org")  # CRL #1
    procs = [subprocess.Popen([*mailca_argv(), "--dir", str(ca.dir), "crl", "--json"],
                              env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    numbers = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        numbers.append(json.loads(out)["crl_number"])
    assert sorted(numbers) == list(range(2, 8))
    from cryptography import x509

    on_disk = load_crl(crl_pem(ca)).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert on_disk == 7 == json.loads((ca.dir / "crl" / "state.json").read_text())["crl_number"]


def test_journal_restores_revocations_after_index_rebuild(ca):
    """'mailca doctor --fix' rebuilds a corrupt index from the archive (which knows nothing
    of revocations); the revocation journal puts the marks back."""
    a = ca.issue("a.example.org")[0]
    b = ca.issue("b.example.org")[0]
    ca.ok("revoke", "a.example.org", "--reason", "cessationOfOperation")
    (ca.dir / "index.json").write_text("{ not json")
    r = ca.run("doctor", "--fix")
    assert "revocation mark" in r.stdout + r.stderr, r.stdout + r.stderr
    e = entry(ca, a["serial"])
    assert e["status"] == "revoked" and e["revocation_reason"] == "cessationOfOperation"
    assert entry(ca, b["serial"])["status"] == "active"  # only what the journal names
    # and status shows it
    rows = json.loads(ca.ok("status", "--json").stdout)["certificates"]
    assert {r["serial"]: r["state"] for r in rows}[a["serial"]] == "revoked"
