"""mailca bundle: every file parses with the tool its platform uses, the page is valid
self-contained HTML, and bad input writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import plistlib
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from conftest import base_env, make_ca, require, run, snapshot, tool, mailca_argv


def bundle(ca, out: Path) -> dict:
    r = ca.ok("bundle", "--out", out, "--json")
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def built(shared_ca, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "for-users"
    return shared_ca, out, bundle(shared_ca, out)


def openssl_fp(path: Path, alg: str, inform: str = "PEM") -> str:
    r = tool(require("openssl"), "x509", "-inform", inform, "-in", path, "-noout", "-fingerprint", f"-{alg}", check=True)
    return r.stdout.strip().split("=", 1)[1]


def test_pem_and_der_are_the_root(built):
    ca, out, summary = built
    files = {k: Path(v["path"]) for k, v in summary["files"].items()}
    assert set(files) == {"pem", "der", "mobileconfig", "fingerprints", "html"}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files.values())
    assert files["pem"].read_bytes() == ca.root.read_bytes()
    openssl = require("openssl")
    # openssl parses the DER file, and converting the PEM gives exactly the same bytes
    der = subprocess.run([openssl, "x509", "-in", str(files["pem"]), "-outform", "DER"], capture_output=True,
                         check=True, timeout=60).stdout
    assert files["der"].read_bytes() == der
    text = tool(openssl, "x509", "-inform", "DER", "-in", files["der"], "-noout", "-subject", "-ext", "nameConstraints", check=True).stdout
    assert "Test Mail Root CA" in text and "DNS:example.org" in text and "DNS:example.net" in text
    # public files 0644 in a 0755 directory, nothing private
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
        assert b"PRIVATE KEY" not in p.read_bytes()
    sha = hashlib.sha256(der).hexdigest()
    assert files["pem"].name == f"mailca-test-mail-{sha[:8]}.crt"
    assert summary["root"]["nickname"] == f"mailca-test-mail-{sha[:8]}"
    for kind, p in files.items():
        assert summary["files"][kind]["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()


def test_fingerprints_equal_openssl(built):
    _, out, summary = built
    pem = Path(summary["files"]["pem"]["path"])
    der = Path(summary["files"]["der"]["path"])
    sha256, sha1 = openssl_fp(pem, "sha256"), openssl_fp(pem, "sha1")
    assert openssl_fp(der, "sha256", "DER") == sha256
    txt = (out / "fingerprints.txt").read_text()
    lines = [ln.strip() for ln in txt.splitlines()]
    assert lines[lines.index("SHA-256 fingerprint (Firefox, Thunderbird, Chrome, Android, openssl):") + 1] == sha256
    assert lines[lines.index("SHA-1 fingerprint (older dialogs):") + 1] == sha1
    # the other renderings are the same digits
    assert f"SHA-256: {sha256.replace(':', ' ')}" in txt
    assert f"Thumbprint:    {sha1.replace(':', '').lower()}" in txt
    win = re.search(r"Thumbprint \(sha1\)': ([0-9A-F ]+)", txt).group(1)
    assert win.replace(" ", "") == sha1.replace(":", "") and len(win.split()) == 5
    assert summary["root"]["sha256"] == sha256 and summary["root"]["sha1"] == sha1
    assert "example.org, example.net" in txt


def test_mobileconfig_is_a_root_payload(built, ca, tmp_path):
    shared, out, summary = built
    mc = Path(summary["files"]["mobileconfig"]["path"])
    plist = plistlib.loads(mc.read_bytes())
    assert plist["PayloadType"] == "Configuration"
    assert plist["PayloadVersion"] == 1
    assert len(plist["PayloadContent"]) == 1
    p = plist["PayloadContent"][0]
    assert p["PayloadType"] == "com.apple.security.root"
    assert p["PayloadContent"] == Path(summary["files"]["der"]["path"]).read_bytes()
    sha = hashlib.sha256(p["PayloadContent"]).hexdigest()
    for u in (plist["PayloadUUID"], p["PayloadUUID"]):
        assert uuid.UUID(u).version == 5 and u == u.upper()
    assert plist["PayloadUUID"] != p["PayloadUUID"]
    assert plist["PayloadIdentifier"] == f"org.example.mailca.root.{sha[:16]}"
    assert p["PayloadIdentifier"].startswith(plist["PayloadIdentifier"] + ".")
    assert p["PayloadCertificateFileName"].endswith(".cer")
    # stable: a second bundle of the same root is byte-identical; another root gets other UUIDs
    again = bundle(shared, tmp_path / "again")
    assert Path(again["files"]["mobileconfig"]["path"]).read_bytes() == mc.read_bytes()
    other = plistlib.loads(Path(bundle(ca, tmp_path / "other")["files"]["mobileconfig"]["path"]).read_bytes())
    assert other["PayloadUUID"] != plist["PayloadUUID"]
    assert other["PayloadContent"][0]["PayloadUUID"] != p["PayloadUUID"]


def _elements(doc):
    stack = [doc]
    while stack:
        el = stack.pop()
        yield el
        stack.extend(list(el))


def test_index_html_is_valid_and_self_contained(built):
    import html5lib

    _, out, summary = built
    page = out / "index.html"
    data = page.read_bytes()
    doc = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(data)  # raises on any parse error
    r = tool(require("tidy"), "-errors", "-quiet", page)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
    files = {Path(v["path"]).name for v in summary["files"].values()}
    tags = [el for el in _elements(doc) if isinstance(el.tag, str)]
    names = {el.tag for el in tags}
    assert not names & {"script", "img", "iframe", "object", "embed", "base"}, names
    # the only <link> is an empty inline icon (stops the browser asking the server for /favicon.ico)
    assert [(el.attrib.get("rel"), el.attrib.get("href")) for el in tags if el.tag == "link"] == [("icon", "data:,")]
    for el in tags:
        assert "src" not in el.attrib
        assert not any(a.startswith("on") for a in el.attrib), el.attrib
        href = el.attrib.get("href")
        if href is not None and el.tag != "link":
            assert href.startswith("#") or href in files, href
    style = "".join(el.text or "" for el in tags if el.tag == "style")
    assert "url(" not in style and "@import" not in style
    text = data.decode()
    assert summary["root"]["sha256"] in text and summary["root"]["sha1"] in text
    for section in ("windows", "macos", "ios", "android", "thunderbird", "linux", "scope"):
        assert f'id="{section}"' in text, section
    assert "<code>example.org</code> and every name under it" in text
    assert "<code>example.net</code> and every name under it" in text
    assert "no IP address" in text
    assert "update-ca-certificates" in text and "update-ca-trust" in text
    linked = {el.attrib["href"] for el in tags if el.tag == "a" and not el.attrib["href"].startswith("#")}
    assert linked == files - {"index.html"}


def test_hostile_org_name_is_escaped(tmp_path):
    import html5lib

    evil = '<script>alert("x")</script> & Co'
    ca = make_ca(tmp_path / "store", "example.org", extra=["--org", evil])
    summary = bundle(ca, tmp_path / "out")
    page = Path(summary["files"]["html"]["path"]).read_bytes()
    doc = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(page)
    assert not any(el.tag == "script" for el in _elements(doc) if isinstance(el.tag, str))
    assert b"&lt;script&gt;" in page
    assert re.fullmatch(r"mailca-script-alert-x-script-co-[0-9a-f]{8}", summary["root"]["nickname"])
    plist = plistlib.loads(Path(summary["files"]["mobileconfig"]["path"]).read_bytes())
    assert plist["PayloadOrganization"] == evil


def test_rerun_rewrites_same_bytes_and_keeps_other_files(built):
    ca, out, _ = built
    (out / "README").write_text("served by nginx\n")
    before = snapshot(out)
    bundle(ca, out)
    assert snapshot(out) == before


# ------------------------------------------------------------------ bad input
def _one_line_error(r, code):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mailca: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_no_ca_yet(tmp_path):
    out = tmp_path / "out"
    r = run(["--dir", tmp_path / "nostore", "bundle", "--out", out])
    assert "mailca init" in _one_line_error(r, 3)
    assert not out.exists()


@pytest.mark.parametrize("name,content", [
    ("server.key", b"whatever"),
    ("notes.txt", b"x\n-----BEGIN EC PRIVATE KEY-----\nMHc=\n-----END EC PRIVATE KEY-----\n"),
    ("sub/key.pem", b"-----BEGIN PRIVATE KEY-----\n"),
])
def test_refuses_directory_with_a_private_key(shared_ca, tmp_path, name, content):
    out = tmp_path / "out"
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(content)
    before = snapshot(out)
    msg = _one_line_error(shared_ca.run("bundle", "--out", out), 2)
    assert "private key" in msg and name.split("/")[-1] in msg
    assert snapshot(out) == before


def test_refuses_directory_inside_the_store(ca):
    target = ca.dir / "bundle"
    before = snapshot(ca.dir)
    msg = _one_line_error(ca.run("bundle", "--out", target), 2)
    assert "store" in msg
    assert not target.exists()
    after = snapshot(ca.dir)
    after.pop(".lock", None)
    before.pop(".lock", None)
    assert after == before


def test_out_is_a_file_or_under_a_file(shared_ca, tmp_path):
    f = tmp_path / "plain"
    f.write_text("x")
    assert "not a directory" in _one_line_error(shared_ca.run("bundle", "--out", f), 2)
    assert "not a directory" in _one_line_error(shared_ca.run("bundle", "--out", f / "sub"), 3)
    assert f.read_text() == "x"


def test_unwritable_directory(shared_ca):
    """As an unprivileged user (root ignores mode bits), a 0555 directory is refused."""
    setpriv = require("setpriv")
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the nobody user")
    base = Path(tempfile.mkdtemp(prefix="mailca-bundle-ro-"))
    try:
        os.chmod(base, 0o755)
        store = base / "store"
        shutil.copytree(shared_ca.dir, store)
        for p in [store, *store.rglob("*")]:
            os.lchown(p, 65534, 65534)
        out = base / "out"
        out.mkdir(mode=0o555)
        os.chmod(out, 0o555)
        before = snapshot(out)
        env = base_env(HOME=str(base))
        r = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *mailca_argv(),
                            "--dir", str(store), "bundle", "--out", str(out)],
                           capture_output=True, text=True, env=env, cwd=base, timeout=60)
        msg = _one_line_error(r, 3)
        assert "not writable" in msg and str(out) in msg
        assert snapshot(out) == before == {}
    finally:
        shutil.rmtree(base, ignore_errors=True)
