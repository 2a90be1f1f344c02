"""pkilint on everything mailca issues.

* RFC 5280 (``lint_pkix_cert``): root, intermediate and every kind of leaf (each key
  type, multi-SAN, IDN, empty subject with a long name, IP SANs, CRL distribution point,
  CSR-signed) have no FATAL, ERROR or WARNING finding; issuer/subject pairs pass
  ``lint_pkix_signer_signee_cert_chain``.
* CA/Browser Forum TLS BRs (``lint_cabf_serverauth_cert``): every finding is listed and
  explained in docs/lint.md (a private CA cannot and should not meet some public-CA rules);
  the findings a profile can remove (country in CA subjects, leaf validity > 200 days,
  missing revocation information) disappear when the profile says so.
* Controls: the linters really report problems (a deliberately broken certificate and a
  mismatched issuer/subject pair), so a clean result means something.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, make_ca, tool

pytestmark = pytest.mark.interop

SEVERE = {"FATAL", "ERROR", "WARNING"}
LINT_DOC = ROOT / "docs" / "lint.md"


def linter(name: str) -> str:
    """pkilint's console scripts live next to the Python running the tests (the venv)."""
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install the test extras (pip install -e '.[test]', which has pkilint)")
    return found


def findings(argv: list) -> list[tuple[str, str, str]]:
    """(severity, code, message) of every finding pkilint reports (JSON output)."""
    r = subprocess.run([str(a) for a in argv] + ["-f", "JSON", "-s", "ALL"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), r.stderr
    try:
        data = json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"pkilint output is not JSON ({r.returncode}): {r.stdout[:300]} {r.stderr[-500:]}")
    out = []
    for res in data["results"]:
        for f in res["finding_descriptions"]:
            out.append((f["severity"], f["code"], f.get("message") or ""))
    return out


def severe(fs):
    return [f for f in fs if f[0] in SEVERE]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Every kind of certificate the core issues: name -> PEM path (plus issuer pairs)."""
    tmp = tmp_path_factory.mktemp("lint")
    out: dict[str, Path] = {}
    pairs: list[tuple[str, str]] = []

    main = make_ca(tmp / "main", "example.org", "example.net")
    out["root"], out["intermediate"] = main.root, main.intermediate
    pairs.append(("root", "intermediate"))
    leafs = {
        "leaf-ecdsa-p256-multisan": ("mail.example.org", "--san", "smtp.example.org", "--san", "mx.example.net"),
        "leaf-ecdsa-p384": ("p384.example.org", "--key-type", "ecdsa-p384"),
        "leaf-rsa-2048": ("rsa.example.org", "--key-type", "rsa-2048"),
        "leaf-rsa-3072": ("rsa3.example.org", "--key-type", "rsa-3072"),
        "leaf-idn": ("bücher.example.org",),
        "leaf-empty-subject": ("a" * 60 + ".example.org",),  # > 64 chars: no CN, critical SAN
        "leaf-short-lived": ("short.example.org", "--profile", "short-lived"),
        "leaf-wildcard": ("*.example.org", "--profile", "wildcard"),
        "leaf-rsa-4096": ("rsa4.example.org", "--key-type", "rsa-4096"),
    }
    for name, args in leafs.items():
        [c] = main.issue(*args)
        out[name] = Path(c["paths"]["cert"])
        pairs.append(("intermediate", name))

    csr, key = tmp / "m.csr", tmp / "m.key"
    r = tool("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
             "-subj", "/CN=csr.example.org", "-out", csr)
    assert r.returncode == 0, r.stderr
    out["leaf-csr-rsa"] = Path(json.loads(main.ok("sign", csr, "--json").stdout)["certificates"][0]["paths"]["cert"])
    pairs.append(("intermediate", "leaf-csr-rsa"))

    # A CA whose profile sets a country, permits IP ranges and publishes a CRL URL.
    prof = tmp / "full.toml"
    prof.write_text(
        '[subject]\ncountry = "DE"\n'
        '[ca]\npermitted_ip_ranges = ["192.0.2.0/24", "2001:db8::/32"]\n'
        '[leaf]\nallow_ip = true\n'
        '[crl]\ndistribution_point = "http://mail.example.org/mailca.crl"\n'
    )
    full = make_ca(tmp / "full", "example.org", extra=["--profile", prof])
    out["root-full"], out["intermediate-full"] = full.root, full.intermediate
    [c] = full.issue("ip.example.org", "--ip", "192.0.2.25", "--ip", "2001:db8::25")
    out["leaf-ip-crl"] = Path(c["paths"]["cert"])
    pairs += [("root-full", "intermediate-full"), ("intermediate-full", "leaf-ip-crl")]

    rsa = make_ca(tmp / "rsa", "example.org", extra=["--key-type", "rsa-3072"])
    out["root-rsa"], out["intermediate-rsa"] = rsa.root, rsa.intermediate
    [c] = rsa.issue("mail.example.org", "--key-type", "rsa-3072")
    out["leaf-under-rsa-ca"] = Path(c["paths"]["cert"])
    pairs += [("root-rsa", "intermediate-rsa"), ("intermediate-rsa", "leaf-under-rsa-ca")]
    return out, pairs


def test_rfc5280_no_error_or_warning(certs):
    paths, _ = certs
    lint = linter("lint_pkix_cert")
    bad = {}
    for name, p in paths.items():
        fs = severe(findings([lint, "lint", p]))
        if name == "leaf-wildcard":
            # RFC 5280's dNSName syntax (RFC 1034 preferred name syntax) has no wildcards; they
            # come from RFC 6125 and the CA/B Forum rules.  This finding, and only it, is expected.
            assert fs == [("ERROR", "pkix.invalid_domain_name_syntax", 'Invalid domain name syntax: "*.example.org"')], fs
            continue
        if fs:
            bad[name] = fs
    assert not bad, f"pkilint RFC 5280 findings: {bad}"


def test_rfc5280_issuer_subject_pairs(certs):
    paths, pairs = certs
    lint = linter("lint_pkix_signer_signee_cert_chain")
    bad = {}
    for issuer, subject in pairs:
        fs = severe(findings([lint, "lint", paths[issuer], paths[subject]]))
        if fs:
            bad[f"{issuer} -> {subject}"] = fs
    assert not bad, bad


def test_linters_are_live(certs, tmp_path):
    """Controls: a broken certificate and a mismatched pair produce ERRORs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    k = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    broken = (
        x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name([]))
        .public_key(k.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=3))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("x.example.org")]), critical=False)
        .sign(k, hashes.SHA256())
    )
    p = tmp_path / "broken.pem"
    p.write_bytes(broken.public_bytes(serialization.Encoding.PEM))
    codes = {c for _, c, _ in severe(findings([linter("lint_pkix_cert"), "lint", p]))}
    assert "pkix.san_extension_not_critical_empty_subject" in codes, codes

    paths, _ = certs
    fs = severe(findings([linter("lint_pkix_signer_signee_cert_chain"), "lint", paths["root"], paths["leaf-rsa-2048"]]))
    assert ("ERROR", "pkix.signature_verification_failed") in {(s, c) for s, c, _ in fs}, fs


def documented_codes() -> set[str]:
    return set(re.findall(r"`((?:cabf|msft|pkix)\.[a-z0-9_.]+)`", LINT_DOC.read_text()))


CABF_TYPES = {
    "root": "ROOT-CA", "root-full": "ROOT-CA", "root-rsa": "ROOT-CA",
    "intermediate": "INTERNAL-CONSTRAINED-TLS-CA", "intermediate-full": "INTERNAL-CONSTRAINED-TLS-CA",
}


_cabf_cache: dict[Path, list] = {}


def cabf(path: Path, name: str):
    if path not in _cabf_cache:
        cert_type = CABF_TYPES.get(name, "DV-FINAL-CERTIFICATE")
        _cabf_cache[path] = findings([linter("lint_cabf_serverauth_cert"), "lint", "-t", cert_type, path])
    return _cabf_cache[path]


def test_cabf_findings_are_documented(certs):
    """Every CA/B Forum finding on mailca's certificates is explained in docs/lint.md."""
    paths, _ = certs
    documented = documented_codes()
    assert len(documented) >= 10, "docs/lint.md lists no finding codes"
    seen: dict[str, set[str]] = {}
    for name in ["root", "intermediate", "leaf-ecdsa-p256-multisan", "leaf-rsa-2048", "leaf-short-lived", "leaf-wildcard",
                 "root-full", "intermediate-full", "leaf-ip-crl"]:
        for sev, code, _ in severe(cabf(paths[name], name)):
            seen.setdefault(code, set()).add(name)
    assert seen, "the CA/B Forum linter reported nothing at all: is it running?"
    undocumented = {c: sorted(n) for c, n in seen.items() if c not in documented}
    assert not undocumented, f"CA/B Forum findings missing from docs/lint.md: {undocumented}"


def test_cabf_findings_profiles_can_remove(certs):
    """What docs/lint.md says a profile fixes is really fixed by the profile."""
    paths, _ = certs
    codes = lambda n: {c for _, c, _ in severe(cabf(paths[n], n))}  # noqa: E731
    # country: absent by default, present with [subject] country = "DE"
    assert "cabf.serverauth.ca.country_attribute_absent" in codes("intermediate")
    assert "cabf.serverauth.ca.country_attribute_absent" not in codes("intermediate-full")
    # validity: 365 days by default exceeds the BR maximum; the short-lived profile (90) does not
    assert "cabf.serverauth.certificate_validity_period_exceeds_200_days" in codes("leaf-ecdsa-p256-multisan")
    assert "cabf.serverauth.certificate_validity_period_exceeds_200_days" not in codes("leaf-short-lived")
    # revocation information: a CRL distribution point in the profile supplies it
    assert "cabf.serverauth.subscriber.revocation_information_absent" in codes("leaf-ecdsa-p256-multisan")
    assert "cabf.serverauth.subscriber.revocation_information_absent" not in codes("leaf-ip-crl")
